"""Run one of the paper's tables and write it beside the paper's numbers.

    python scripts/table1.py --data-root /data/cifar                  # all rows, 3 seeds
    python scripts/table1.py --dry-run                                # print the commands only
    python scripts/table2.py --rows 0,1 --seeds 0 --out runs/t2 epochs=2   # overrides for every run

The rows, recipes and reported numbers live in ``ocspruner/paper_tables.py``. Finished runs
(summary.json present) are not run again, so an interrupted table continues where it stopped.
The table is written to OUT/<table>.md (ours / paper in every cell) and OUT/<table>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(table_name: str, argv=None) -> int:
    from ocspruner.checkpoint import atomic_write_text
    from ocspruner.config import ConfigError
    from ocspruner.paper_tables import format_table, get_table, measured, run_table

    table = get_table(table_name)
    ap = argparse.ArgumentParser(prog=f"{table_name}.py", description=table.title)
    ap.add_argument("--data-root", dest="data_root", action="append", metavar="[DATASET=]DIR",
                    help="dataset directory for every row (a CIFAR folder may hold both cifar-10-batches-py and "
                         "cifar-100-python), or DATASET=DIR per dataset (cifar10, cifar100, imagefolder); repeatable")
    ap.add_argument("--out", default=os.path.join("runs", "paper", table_name), help="run directories and the table")
    ap.add_argument("--seeds", default=",".join(str(s) for s in table.seeds), help="comma list of seeds")
    ap.add_argument("--rows", help="comma list of row indices (default: all; dense baselines of pre-trained rows are added)")
    ap.add_argument("--dry-run", action="store_true", help="print the ocspruner train commands, run nothing")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value for every run, e.g. epochs=2")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        rows = None if not args.rows else [int(r) for r in args.rows.split(",")]
    except ValueError:
        print(f"error: --seeds and --rows take comma lists of integers, got {args.seeds!r} / {args.rows!r}", file=sys.stderr)
        return 2
    data_root = None
    for item in args.data_root or []:
        name, sep, path = item.partition("=")
        if sep and name in ("cifar10", "cifar100", "imagefolder", "fashion_mnist", "mnist", "synthetic"):
            data_root = {**(data_root if isinstance(data_root, dict) else {}), name: path}
        else:
            data_root = item
    if rows is not None and any(not 0 <= r < len(table.rows) for r in rows):
        print(f"error: --rows must be in 0..{len(table.rows) - 1} for {table_name}", file=sys.stderr)
        return 2
    try:
        results = run_table(table, seeds, args.out, data_root, args.overrides, rows, dry_run=args.dry_run)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        return 0
    ours = measured(table, results, seeds)
    text = format_table(table, ours)
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(os.path.join(args.out, f"{table_name}.md"), text)
    atomic_write_text(os.path.join(args.out, f"{table_name}.json"),
                      json.dumps({"table": table_name, "seeds": seeds, "rows": ours}, indent=1, default=str))
    print(text)
    return 0
