"""Latency speedup of a pruned ResNet-56 as a fraction of its theoretical (FLOPs) speedup (issue 7).

    python3 benchmarks/latency_speedup.py                 # for the record, on a quiet machine
    python3 benchmarks/latency_speedup.py --quick         # smoke test of the script (seconds)

ResNet-56 (CIFAR, 3x32x32, 10 classes) is partitioned at 50% FLOPs by Eq. 2 saliency of its
random initial weights (seed 0; the engine's default cap of 75% per group) and pruned physically;
a second variant is re-partitioned at the same budget with every pruned width a multiple of
``--round-to`` (default 8; the found channels preferred, refilled in whole blocks up to the
budget). Dense, pruned and rounded models are timed interleaved call by call
(``ocspruner.bench``) at each batch size; speedup = median over rounds of the dense/model time
ratio of the same round; theoretical = dense FLOPs / model FLOPs; efficiency = speedup /
theoretical. Goal: efficiency >= 0.85. Writes benchmarks/results/latency_speedup.json
(``--quick``: latency_speedup_quick.json in the temp directory, not a result).

Weights do not change the timing of dense convolutions, so random-init partitions are as good as
trained ones for latency; which layers lose channels does matter, and a trained model's Eq. 2
saliency may pick other layers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ocspruner.bench import bench_models, format_table, pruned_variant  # noqa: E402
from ocspruner.models import create_model  # noqa: E402

GOAL = 0.85


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--batch-sizes", default=None, help="comma list (default 1,64; --quick: 1,8)")
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=60, help="interleaved rounds per batch size")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--quick", action="store_true", help="batch 1 and 8, 2 warm-up, 5 rounds (checks the script)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    if args.quick:
        args.warmup, args.repeats = 2, 5
    args.batch_sizes = args.batch_sizes or ("1,8" if args.quick else "1,64")
    # a quick run checks the script; its numbers are no result, so they stay out of results/
    out = args.out or (os.path.join(tempfile.gettempdir(), "latency_speedup_quick.json") if args.quick else
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "latency_speedup.json"))
    batches = [int(b) for b in args.batch_sizes.split(",")]

    torch.manual_seed(0)
    dense = create_model(args.model, num_classes=10).eval()
    ex = torch.randn(1, 3, 32, 32)
    t0 = time.perf_counter()
    pruned, _, red = pruned_variant(dense, ex, None, args.target, round_to=1)
    models = {"dense": dense, "pruned": pruned}
    if args.round_to > 1:
        models[f"pruned_r{args.round_to}"], _, red_r = pruned_variant(dense, ex, None, args.target, round_to=args.round_to)
    setup = time.perf_counter() - t0
    result = bench_models(models, (3, 32, 32), batches, warmup=args.warmup, repeats=args.repeats,
                          threads=args.threads, channels_last=args.channels_last)
    print(format_table(result))
    summary = []
    for r in result["rows"]:
        if r["model"] == "dense":
            continue
        summary.append({"variant": r["model"], "round_to": args.round_to if r["model"] != "pruned" else 1,
                        "batch": r["batch"], "speedup": r["speedup"], "theoretical": r["theoretical_speedup"],
                        "efficiency": r["efficiency"], "meets_goal": r["efficiency"] >= GOAL})
    for s in summary:
        print(f"{s['variant']:<10} batch {s['batch']:>3}: {s['speedup']:.2f}x of {s['theoretical']:.2f}x theoretical = "
              f"{100 * s['efficiency']:.0f}% ({'PASS' if s['meets_goal'] else 'FAIL'} >= {100 * GOAL:.0f}%)")
    record = {"benchmark": "latency_speedup", "quick": args.quick, "model": args.model, "input_shape": [3, 32, 32],
              "target": args.target, "achieved_reduction": red,
              "achieved_reduction_rounded": red_r if args.round_to > 1 else None,
              "partition": "Eq. 2 saliency of random-init weights (seed 0), max_prune_fraction 0.75",
              "goal_efficiency": GOAL, "summary": summary, "setup_s": setup, **result,
              "command": " ".join(["python3", "benchmarks/latency_speedup.py", *sys.argv[1:]])}
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(record, fh, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
