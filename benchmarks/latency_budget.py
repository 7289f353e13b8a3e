"""A latency budget, measured (issue 5): predicted vs measured latency reduction on this device.

    python benchmarks/latency_budget.py [--model resnet20] [--batch 64] [--targets 0.3,0.5] [--round-to 8] [--trials 3]

For each target and each of ``--trials`` independent trials: build the engine with
metric="latency" (per-layer table measured here, closed-loop calibration), partition at the
target with Eq. 2 scores, prune physically, and time dense and pruned models interleaved (medians
of 5 rounds). Independent trials show whether hitting the budget is repeatable, not luck.
Goal: the measured latency is within +-10% of
the budgeted latency (dense x (1 - target)), both ways: over-pruning misses it too. Writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from ocspruner import OCSPruner  # noqa: E402
from ocspruner.latency import measure_model  # noqa: E402
from ocspruner.models import create_model  # noqa: E402
from ocspruner.surgery import prune_to  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--targets", default="0.3,0.5")
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/latency_budget.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    rows = []
    trials = [(float(t), k) for t in args.targets.split(",") for k in range(args.trials)]
    for target, trial in trials:
        torch.manual_seed(trial)
        model = create_model(args.model).eval()
        t0 = time.perf_counter()
        pruner = OCSPruner(model, torch.randn(1, 3, 32, 32), target=target, metric="latency",
                           latency_batch=args.batch, max_prune_fraction=0.9, round_to=args.round_to)
        setup = time.perf_counter() - t0
        part = pruner.partition()
        cm = pruner.cost_model
        predicted = 1 - float(cm.evaluate(part.keep, "latency")) / cm.dense["latency"]
        flops = 1 - float(cm.evaluate(part.keep, "flops")) / cm.dense["flops"]
        dense = create_model(args.model).eval()
        prune_to(model, pruner.space, part.keep)
        x = torch.randn(args.batch, 3, 32, 32)
        d_t, p_t = [], []
        for _ in range(5):
            d_t.append(measure_model(dense, x, 10))
            p_t.append(measure_model(model, x, 10))
        D, P = statistics.median(d_t), statistics.median(p_t)
        budget = D * (1 - target)
        row = {"target": target, "trial": trial, "predicted_reduction": predicted, "measured_reduction": 1 - P / D,
               "dense_ms": 1e3 * D, "pruned_ms": 1e3 * P, "budget_ms": 1e3 * budget,
               "deviation_from_budget": P / budget - 1, "within_10pct": abs(P / budget - 1) <= 0.1, "flops_reduction": flops,
               "setup_s": setup, "calibration": pruner.latency_calibration}
        rows.append(row)
        print(f"target {target:.0%} trial {trial}: predicted {predicted:.1%}, measured {1 - P / D:.1%} "
              f"(dense {1e3 * D:.1f} ms -> {1e3 * P:.1f} ms; budget {1e3 * budget:.1f} ms, "
              f"{100 * (P / budget - 1):+.1f}%: {'PASS' if abs(P / budget - 1) <= 0.1 else 'FAIL'} within +-10%); "
              f"FLOPs -{flops:.1%}; setup {setup:.1f}s; calibration rounds "
              f"{[(round(a, 3), round(b, 3)) for a, b in pruner.latency_calibration]}", flush=True)
    hits = sum(r["within_10pct"] for r in rows)
    print(f"within +-10% of the latency budget: {hits}/{len(rows)} trials")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"model": args.model, "batch": args.batch, "round_to": args.round_to, "threads": args.threads,
                   "torch": torch.__version__, "within_10pct": f"{hits}/{len(rows)}", "rows": rows}, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
