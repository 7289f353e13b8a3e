"""Supplement Table 8 (training and pruning hyper-parameters): the shipped recipes checked
against the paper's values. Nothing is trained; exits 1 if a shipped config disagrees."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ocspruner.paper_tables import check_table8  # noqa: E402


def main() -> int:
    rows = check_table8()
    print("| column | config | key | paper | ours | match |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['column']} | {r['config']} | {r['key']} | {r['paper']} | {r['ours']} | {'yes' if r['ok'] else 'NO'} |")
    bad = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} values match the paper's Table 8")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
