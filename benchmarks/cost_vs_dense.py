"""Cost of one OCSPruner cycle against dense training on the same loop and recipe (issue 3).

Fashion-MNIST (apt-get install dataset-fashion-mnist), ResNet-20, 50% FLOPs. Runs dense, then
OCSPruner, in one invocation with identical data, seed and recipe, and prints the wall-time ratio
(goal <= 0.8), both accuracies and both FLOPs/params. Writes JSON.

    python benchmarks/cost_vs_dense.py                       # full: 60k images, 30 epochs
    python benchmarks/cost_vs_dense.py --subset 10000 --epochs 15   # quicker
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from ocspruner.config import load_config  # noqa: E402
from ocspruner.trainer import Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="fashion_mnist_resnet20")
    ap.add_argument("--subset", type=int, default=None, help="training examples (default: all)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/cost_vs_dense.json")
    ap.add_argument("--runs", default="/tmp/ocspruner-bench-runs")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    results = {}
    for method in ("dense", "ocspruner"):
        updates = {"method": method, "threads": args.threads, "progress": False, "seed": args.seed,
                   "out_dir": args.runs, "name": f"{method}-s{args.seed}"}
        if args.subset:
            updates["data.subset"] = args.subset
        if args.epochs:
            updates["epochs"] = args.epochs
        cfg = load_config(args.config, overrides=args.overrides, updates=updates)
        t0 = time.perf_counter()
        summary = Trainer(cfg).fit()
        summary["total_time_incl_setup"] = time.perf_counter() - t0
        results[method] = summary
        print(f"{method:10s} wall {summary['wall_time']:8.1f}s  test {summary['final_test_acc']:.2f}%  "
              f"FLOPs {summary['final_flops'] / 1e6:.2f}M  params {summary['final_params'] / 1e6:.3f}M  "
              f"t*={summary.get('t_star')}", flush=True)
    d, o = results["dense"], results["ocspruner"]
    report = {
        "wall_time_ratio": o["wall_time"] / d["wall_time"],
        "goal_wall_time_ratio": 0.8,
        "dense": {k: d[k] for k in ("wall_time", "final_test_acc", "best_test_acc", "final_flops", "final_params")},
        "ocspruner": {k: o[k] for k in ("wall_time", "final_test_acc", "best_test_acc", "final_flops", "final_params",
                                        "t_sl_start", "t_star", "time_to_prune")},
        "flops_reduction": 1 - o["final_flops"] / d["final_flops"],
        "params_reduction": 1 - o["final_params"] / d["final_params"],
        "accuracy_drop": d["final_test_acc"] - o["final_test_acc"],
        "settings": {"config": args.config, "subset": args.subset, "epochs": cfg.epochs, "threads": args.threads,
                     "seed": args.seed, "overrides": args.overrides},
        "machine": {"torch": torch.__version__, "processor": platform.processor() or platform.machine(),
                    "date": time.strftime("%Y-%m-%d %H:%M")},
    }
    print(f"\nwall-time ratio OCSPruner/dense = {report['wall_time_ratio']:.3f} (goal <= 0.8)")
    print(f"test accuracy: dense {d['final_test_acc']:.2f}%  OCSPruner {o['final_test_acc']:.2f}%  "
          f"(drop {report['accuracy_drop']:+.2f})")
    print(f"FLOPs {d['final_flops'] / 1e6:.2f}M -> {o['final_flops'] / 1e6:.2f}M ({100 * report['flops_reduction']:.1f}% removed); "
          f"params {d['final_params'] / 1e6:.3f}M -> {o['final_params'] / 1e6:.3f}M")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
