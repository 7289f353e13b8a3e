"""Table 4: varying the sparsity-learning start epoch, ResNet50 on ImageNet (48% FLOPs) -- see scripts/paper_table.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper_table import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("table4"))
