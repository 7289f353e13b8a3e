"""The speed the user asks for is the speed they get (issue 12), side by side in one script.

    python benchmarks/speed_you_get.py                    # all parts (hours: the cycle part trains 10 runs)
    python benchmarks/speed_you_get.py --parts speedup,budget
    python benchmarks/speed_you_get.py --parts cycle --seeds 0 --work DIR   # resumable, run by run

Parts (each writes its section of benchmarks/results/speed_you_get.json, keeping the others):
* ``speedup``: ResNet-56 (3x32x32), Eq. 2 scores of random-init weights, 50% budget, five
  partitions side by side: ranking or knapsack x FLOPs or latency budget, and the knapsack on
  the FLOPs budget with channels priced by the measured latency table (``pruning.price``). The
  two variants with a measured table in the summary run 3 times, each with its own table; the
  summary holds the median and every trial. Every pruned model is
  timed against the dense one through ``ocspruner bench`` (interleaved calls, paired ratios) at
  batch 64 and 1: inference and training-step speed-up, by the clock the output names.
* ``budget``: the latency budget at 30% and 50%, 6 independent trials each (3 at 1 thread, 3
  at 2 threads); each trial builds its own table and calibrates it, then ``bench`` measures the
  pruned model against the dense one. A trial hits when the measured latency is within +-10% of
  dense x (1 - target).
* ``partition``: time of one partition call, ranking vs knapsack (ResNet-56, MobileNetV2, ResNet-50).
* ``cycle``: one training cycle on Fashion-MNIST (10k images, 15 epochs, ResNet-20, the shipped
  recipe), dense and four OCSPruner variants (paper ranking on FLOPs, knapsack on FLOPs,
  knapsack on the measured training-step latency, knapsack on FLOPs priced by the training-step
  latency table), 2 seeds, one thread per run; cost is the
  process CPU time of the whole run (set-up, latency table and evaluation included) against
  dense with the same seed. Runs are resumable (benchmarks/_runs.py).
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
sys.path.insert(0, os.path.dirname(__file__))

OUT = "benchmarks/results/speed_you_get.json"
TARGET = 0.5

# (partition, budget metric, price, trials) of the speed-up part; price None: the budget metric.
# A variant with a measured table runs `trials` times, each with a table of its own: the headline
# is the median, and the spread shows what a noisy table measurement does to the result
SPEEDUP_VARIANTS = [("ranking", "flops", None, 1), ("knapsack", "flops", None, 1), ("knapsack", "flops", "latency", 3),
                    ("ranking", "latency", None, 1), ("knapsack", "latency", None, 3)]

# (name, pruning keys) of the cycle variants; dense is the reference
CYCLE_VARIANTS = {
    "dense": None,
    "ranking_flops": {"pruning.partition": "ranking", "pruning.metric": "flops"},
    "knapsack_flops": {"pruning.partition": "knapsack", "pruning.metric": "flops"},
    # the table is measured on forward + backward at batch 32 (a quarter of the training batch:
    # per-layer cost ratios hold, and the table + calibration stay a few % of the cycle's CPU time)
    "knapsack_train_latency": {"pruning.partition": "knapsack", "pruning.metric": "train_latency",
                               "pruning.latency_batch": 32},
    # the same with the prune capped at epoch 6 instead of the recipe's 8: what an earlier t* buys
    "knapsack_train_latency_cap6": {"pruning.partition": "knapsack", "pruning.metric": "train_latency",
                                    "pruning.latency_batch": 32, "pruning.max_prune_epoch": 6},
    # the FLOPs budget exactly, priced by the measured training step (no calibration needed)
    "knapsack_flops_priced_train_latency": {"pruning.partition": "knapsack", "pruning.metric": "flops",
                                            "pruning.price": "train_latency", "pruning.latency_batch": 32},
}


def _load(path: str) -> dict:
    return json.load(open(path)) if os.path.exists(path) else {}


def _save(path: str, section: str, value: dict) -> None:
    from ocspruner.checkpoint import atomic_write_text

    data = _load(path)
    data[section] = value
    data["summary"] = {**data.get("summary", {}), **value.get("summary", {})}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, default=str))


# ------------------------------------------------------------------------------------------------
def part_speedup(args) -> dict:
    from ocspruner.bench import bench_named

    rows = []
    for partition, metric, price, trials in SPEEDUP_VARIANTS:
        for trial in range(trials):
            t0 = time.time()
            res = bench_named("resnet56", target=TARGET, batch_sizes=(64, 1), partition=partition, metric=metric,
                              price=price, threads=args.threads, repeats=args.repeats, training=True)
            for r in res["rows"]:
                if r["model"] == "pruned":
                    rows.append({"partition": partition, "metric": metric, "price": price or metric, "trial": trial, **r,
                                 "clock": res["clock"], "setup": res.get("setup", {}), "seconds": time.time() - t0})
            print(f"[speedup] {partition:8s} {metric:8s} priced by {price or metric:8s} trial {trial}: " + ", ".join(
                f"b{r['batch']} inference {r['speedup']:.2f}x train {r['train_speedup']:.2f}x "
                f"(FLOPs {r['theoretical_speedup']:.2f}x, eff. {100 * r['efficiency']:.0f}%)"
                for r in res["rows"] if r["model"] == "pruned"), flush=True)

    def pick(partition, metric, batch, key, price=None, every=False):
        """The median over the variant's trials (``every``: the list of all of them)."""
        values = [r[key] for r in rows if r["partition"] == partition and r["metric"] == metric
                  and r["price"] == (price or metric) and r["batch"] == batch]
        return values if every else statistics.median(values)

    # cost-aware on a FLOPs budget: the knapsack meets the FLOPs budget exactly and prices the
    # channels by the measured latency table (priced by FLOPs itself: knapsack_flops_priced_by_flops_efficiency)
    summary = {"knapsack_latency_speedup_b64": pick("knapsack", "latency", 64, "speedup"),
               "ranking_flops_speedup_b64": pick("ranking", "flops", 64, "speedup"),
               "cost_aware_flops_efficiency": pick("knapsack", "flops", 64, "efficiency", "latency"),
               "cost_aware_flops_efficiency_trials": pick("knapsack", "flops", 64, "efficiency", "latency", every=True),
               "knapsack_latency_speedup_b64_trials": pick("knapsack", "latency", 64, "speedup", every=True),
               "knapsack_flops_priced_by_flops_efficiency": pick("knapsack", "flops", 64, "efficiency"),
               "ranking_flops_efficiency": pick("ranking", "flops", 64, "efficiency"),
               "speedup_clock": rows[0]["clock"]}
    return {"model": "resnet56", "target": TARGET, "threads": args.threads, "rows": rows, "summary": summary,
            "goals": {"knapsack_latency_speedup_b64": ">= 1.7", "cost_aware_flops_efficiency": ">= 0.85"}}


# ------------------------------------------------------------------------------------------------
def part_budget(args) -> dict:
    from ocspruner.bench import bench_named

    rows = []
    for target in (0.3, 0.5):
        for threads, trial in [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]:
            t0 = time.time()
            res = bench_named(args.budget_model, target=target, batch_sizes=(64,), partition="knapsack",
                              metric="latency", threads=threads, repeats=args.repeats, seed=trial,
                              round_to=1, training=False)
            r = next(r for r in res["rows"] if r["model"] == "pruned")
            ratio = 1.0 / r["speedup"]                  # measured pruned / dense latency
            deviation = ratio / (1.0 - target) - 1.0    # against the budgeted latency
            row = {"target": target, "threads": threads, "trial": trial, "measured_ratio": ratio,
                   "deviation_from_budget": deviation, "within_10pct": abs(deviation) <= 0.10,
                   "flops_reduction": 1.0 - 1.0 / r["theoretical_speedup"], "clock": res["clock"],
                   "calibration": res.get("setup", {}).get("calibration"), "seconds": time.time() - t0}
            rows.append(row)
            print(f"[budget] target {target:.0%} threads {threads} trial {trial}: measured ratio {ratio:.3f} "
                  f"({100 * deviation:+.1f}% vs budget, {'hit' if row['within_10pct'] else 'MISS'}) "
                  f"by {res['clock']}; calibration {row['calibration']}", flush=True)
    hits = sum(r["within_10pct"] for r in rows)
    return {"model": args.budget_model, "batch": 64, "partition": "knapsack", "rows": rows,
            "summary": {"latency_budget_within10": hits, "latency_budget_trials": len(rows)},
            "goals": {"latency_budget_within10": ">= 11 of 12"}}


# ------------------------------------------------------------------------------------------------
def part_cycle(args) -> dict:
    from _runs import finished_summary, run_or_reuse

    from ocspruner.config import load_config

    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",") if args.variants else list(CYCLE_VARIANTS)
    for name in variants:
        if name not in CYCLE_VARIANTS:
            raise SystemExit(f"error: unknown cycle variant {name!r}; use some of {','.join(CYCLE_VARIANTS)}")
    runs = {}
    for seed in seeds:
        for name in variants:
            keys = CYCLE_VARIANTS[name]
            def make(name=name, keys=keys, seed=seed):
                updates = {"method": "dense" if keys is None else "ocspruner", "threads": 1, "progress": False,
                           "seed": seed, "data.subset": args.subset, "epochs": args.epochs,
                           "out_dir": os.path.join(args.work, "runs"), "name": f"{name}-s{seed}", **(keys or {})}
                return load_config("fashion_mnist_resnet20", updates=updates)
            runs[(name, seed)] = run_or_reuse(f"{name} seed {seed}", os.path.join(args.work, "runs", f"{name}-s{seed}"),
                                              make)
    for seed in seeds:          # variants run elsewhere (another process) that have finished
        for name in CYCLE_VARIANTS:
            done = finished_summary(os.path.join(args.work, "runs", f"{name}-s{seed}"))
            if (name, seed) not in runs and done is not None:
                runs[(name, seed)] = done
    table = []
    for name in CYCLE_VARIANTS:
        done = [s for s in seeds if (name, s) in runs and ("dense", s) in runs]
        if not done:
            continue
        acc = [runs[(name, s)]["final_test_acc"] for s in done]
        cpu_ratio = [runs[(name, s)]["cpu_time"] / runs[("dense", s)]["cpu_time"] for s in done]
        wall_ratio = [runs[(name, s)]["wall_time"] / runs[("dense", s)]["wall_time"] for s in done]
        drop = [runs[("dense", s)]["final_test_acc"] - runs[(name, s)]["final_test_acc"] for s in done]
        table.append({"variant": name, "seeds": done, "test_acc": acc, "acc_mean": statistics.fmean(acc),
                      "acc_drop_mean": statistics.fmean(drop), "cpu_ratio_mean": statistics.fmean(cpu_ratio),
                      "cpu_ratio": cpu_ratio, "wall_ratio": wall_ratio,
                      "cpu_time_s": [runs[(name, s)]["cpu_time"] for s in done],
                      # parts of it, where the run's code recorded them (set-up includes a latency
                      # table and its calibration; the report times a latency-budget model)
                      "cpu_setup_s": [runs[(name, s)].get("cpu_setup") for s in done],
                      "cpu_report_s": [runs[(name, s)].get("cpu_report") for s in done],
                      "flops_kept": [runs[(name, s)].get("final_flops", 0) / runs[("dense", s)]["final_flops"]
                                     for s in done],
                      "params_kept": [runs[(name, s)].get("final_params", 0) / runs[("dense", s)]["final_params"]
                                      for s in done],
                      "t_sl_start": [runs[(name, s)].get("t_sl_start") for s in done],
                      "t_star": [runs[(name, s)].get("t_star") for s in done]})
        print(f"[cycle] {name:24s} acc {statistics.fmean(acc):.2f} (drop {statistics.fmean(drop):+.2f}) "
              f"CPU {statistics.fmean(cpu_ratio):.3f}x dense, t* {table[-1]['t_star']}", flush=True)
    # the headline: the cheapest cost-aware variant among those finished for every seed asked for
    cost_aware = [r for r in table if r["variant"].startswith("knapsack") and len(r["seeds"]) == len(seeds)]
    if not cost_aware:     # nothing to summarise yet (a dense run of the same seed still trains)
        return {"rows": table, "summary": {}, "pending": "no cost-aware run with its dense run finished"}
    best = min(cost_aware, key=lambda r: r["cpu_ratio_mean"])
    return {"dataset": "fashion_mnist", "subset": args.subset, "epochs": args.epochs, "model": "resnet20",
            "recipe": "fashion_mnist_resnet20", "threads_per_run": 1, "clock": "process CPU time", "rows": table,
            "summary": {"cycle_cpu_ratio": best["cpu_ratio_mean"], "cycle_acc_drop": best["acc_drop_mean"],
                        "cycle_variant": best["variant"]},
            "goals": {"cycle_cpu_ratio": "<= 0.8"}}


def part_partition(args) -> dict:
    """Time of one partition call, ranking vs knapsack, per-thread CPU time (torch.utils.benchmark
    with time.thread_time, one thread): the knapsack must stay a millisecond-scale pure function."""
    import torch.utils.benchmark as tb

    from ocspruner.cost import CostModel
    from ocspruner.dependency import ChannelSpace
    from ocspruner.importance import group_l2
    from ocspruner.models import create_model
    from ocspruner.partition import Partitioner

    torch.set_num_threads(1)
    rows = []
    for name, size in (("resnet56", 32), ("mobilenetv2_cifar", 32), ("resnet50", 224)):
        model = create_model(name).eval()
        space = ChannelSpace(model, torch.randn(1, 3, size, size))
        cost = CostModel(space)
        scores = group_l2(dict(model.named_parameters()), space)
        for strategy in ("ranking", "knapsack"):
            part = Partitioner(cost, "flops", 0.75, 1, strategy)
            timer = tb.Timer("part.partition(scores, 0.5)", globals={"part": part, "scores": scores},
                             timer=time.thread_time, num_threads=1)
            m = timer.blocked_autorange(min_run_time=2.0)
            result = part.partition(scores, 0.5)
            rows.append({"model": name, "partition": strategy, "median_ms": 1e3 * m.median, "iqr_ms": 1e3 * m.iqr,
                         "reduction": result.reduction,
                         "kept_value": float((scores * part.value_scale)[result.keep].sum()),
                         "kept_saliency": float(scores[result.keep].sum())})
            print(f"[partition] {name:18s} {strategy:8s} {1e3 * m.median:8.1f} ms (thread CPU), "
                  f"{result.reduction:.4f} removed, kept saliency {rows[-1]['kept_saliency']:.1f}", flush=True)
    return {"clock": "per-thread CPU time (time.thread_time), torch.utils.benchmark blocked_autorange",
            "target": 0.5, "rows": rows, "summary": {}}


PARTS = {"speedup": part_speedup, "budget": part_budget, "cycle": part_cycle, "partition": part_partition}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="speedup,budget,cycle")
    ap.add_argument("--threads", type=int, default=1, help="threads of the speedup part")
    ap.add_argument("--repeats", type=int, default=30, help="interleaved timed calls per model in bench")
    ap.add_argument("--budget-model", default="resnet20")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--variants", default=None, help=f"cycle variants (default: all of {','.join(CYCLE_VARIANTS)})")
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--work", default="benchmarks/work/speed_you_get")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    for part in args.parts.split(","):
        if part not in PARTS:
            raise SystemExit(f"error: unknown part {part!r}; use some of {','.join(PARTS)}")
    for part in args.parts.split(","):
        t0 = time.time()
        result = PARTS[part](args)
        result["seconds"] = time.time() - t0
        result["command"] = "python benchmarks/speed_you_get.py " + " ".join(sys.argv[1:])
        _save(args.out, part, result)
        print(f"[{part}] written to {args.out}: {result['summary']}", flush=True)


if __name__ == "__main__":
    main()
