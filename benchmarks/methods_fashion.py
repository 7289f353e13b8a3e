"""All methods on one harness (issue 4): Fashion-MNIST, ResNet-20, 50% FLOPs, 3 seeds.

    python benchmarks/methods_fashion.py --quick      # 3k images, 8 epochs (about 25 min on 2 cores)
    python benchmarks/methods_fashion.py              # 10k images, 15 epochs

Writes the table to docs/methods_fashion[_quick].md (with the command and wall time) and the
raw results to benchmarks/results/methods_fashion[_quick].json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from ocspruner.compare import run_compare  # noqa: E402

METHODS = ["dense", "ocspruner", "ocspruner_fixed", "pat", "random", "pai", "prune_finetune", "greg", "ato"]
# ATO's controller steps every 20 iterations in the paper; a quick run has ~24 iterations per epoch,
# so it would get ~6 updates in all. The quick mode steps it every 2 iterations instead.
QUICK_OVERRIDES = {"ato": "ato:controller_every=2"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3k training images, 8 epochs, small val split")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/ocspruner-methods-fashion")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    tag = "_quick" if args.quick else ""
    updates = {"threads": args.threads, "progress": False,
               "data.subset": 3000 if args.quick else 10000, "epochs": 8 if args.quick else 15}
    if args.quick:
        updates["data.val_fraction"] = 0.02
        updates["pruning.max_prune_epoch"] = 5
    shutil.rmtree(args.work, ignore_errors=True)
    t0 = time.time()
    methods = [QUICK_OVERRIDES.get(m, m) if args.quick else m for m in args.methods.split(",")]
    result = run_compare(methods, [int(s) for s in args.seeds.split(",")], args.work,
                         config="fashion_mnist_resnet20", updates=updates)
    total = time.time() - t0
    table = open(os.path.join(args.work, "compare.md")).read()
    os.makedirs("docs", exist_ok=True)
    cmd = "python benchmarks/methods_fashion.py" + (" --quick" if args.quick else "") + \
        (f" --threads {args.threads}" if args.threads != 2 else "")
    doc = (f"# All methods on Fashion-MNIST, ResNet-20, 50% FLOPs ({'quick' if args.quick else 'full'} mode)\n\n"
           f"Command: `{cmd}`  \nSettings: config `fashion_mnist_resnet20` with {updates}; seeds {args.seeds}.  \n"
           f"Total wall time: {total / 60:.1f} min on this machine (2 CPU cores; torch threads {args.threads}).  \n"
           "Accuracy is the final model's test accuracy (mean ± std over seeds); FLOPs/params in % of dense; "
           "wall time is the whole training cost of the method (both cycles for prune_finetune/greg); t* lists "
           "the pruning epoch of each seed.\n\n" + table)
    path = f"docs/methods_fashion{tag}.md"
    with open(path, "w") as fh:
        fh.write(doc)
    os.makedirs("benchmarks/results", exist_ok=True)
    with open(f"benchmarks/results/methods_fashion{tag}.json", "w") as fh:
        json.dump({"rows": result["rows"], "settings": updates, "total_wall_time_s": total}, fh, indent=1)
    if result.get("fig1"):
        shutil.copy(result["fig1"], f"docs/methods_fashion{tag}_fig1.png")
    print(doc)


if __name__ == "__main__":
    main()
