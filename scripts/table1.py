"""Table 1: pruning VGG16/19 on CIFAR-10/100 (mean of three trials) -- see scripts/paper_table.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper_table import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("table1"))
