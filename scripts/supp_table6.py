"""Supplement Table 6: Eq. 8 and Eq. 9 alone and together -- see scripts/paper_table.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper_table import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("supp_table6"))
