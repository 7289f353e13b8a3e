"""Open questions 2 and 3 measured on real data (issue 8): Fashion-MNIST (and digits), ResNet-20.

    python benchmarks/open_questions.py                 # both, threads=1
    python benchmarks/open_questions.py --parts oq3     # only the learning-rate schedule study

OQ2 (self-adaptive tau / epsilon / lambda): the recipe's hand-tuned values, the paper's ImageNet
values (untuned for this scale), and ``pruning.adaptive=true`` (which replaces all of them) on
Fashion-MNIST (2 seeds), then the same three on sklearn digits without re-tuning anything.

OQ3 (StepLR vs cosine): "probe" runs train the dense network while the engine records J every
epoch (sparsity learning never starts, so the curve is the undisturbed one), under a multi-step
schedule with drops at epochs 4 and 8 (x0.2) and under cosine, 12 epochs. From the recorded raw J
(offset i = 1) the Eq. 5/6 decisions are recomputed with and without the lr-phase reset (pure
functions of the curve). Then full OCSPruner runs: multistep, multistep + lr_phase_reset, cosine.

Resumable like fashion_repro.py (finished runs are skipped). Writes
benchmarks/results/open_questions.json; docs/open_questions.md is written by hand from it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from ocspruner import stability  # noqa: E402
from ocspruner.checkpoint import atomic_write_text  # noqa: E402
from ocspruner.config import load_config  # noqa: E402

from _runs import run_or_reuse  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONFIG = "fashion_mnist_repro"
PAPER = {"pruning.tau": 1e-4, "pruning.epsilon": 1e-3, "pruning.lambda0": 1e-4, "pruning.delta": 1e-4}
DIGITS = {"data.name": "digits", "data.subset": None, "data.val_fraction": 0.1}
MULTISTEP = {"schedule.name": "multistep", "schedule.milestones": [4, 8], "schedule.gamma": 0.2, "epochs": 12,
             "pruning.max_prune_epoch": 10}
COSINE12 = {"epochs": 12, "pruning.max_prune_epoch": 10}
PROBE = {"pruning.sl_start_epoch": 999}     # never regularise: J is recorded over the whole run


def plan(parts) -> list[dict]:
    runs = []
    if "oq2" in parts:
        for seed in (0, 1):
            runs += [{"key": f"oq2-fashion-tuned-s{seed}", "seed": seed, "updates": {}},
                     {"key": f"oq2-fashion-paper-s{seed}", "seed": seed, "updates": dict(PAPER)},
                     {"key": f"oq2-fashion-adaptive-s{seed}", "seed": seed, "updates": {"pruning.adaptive": True}}]
        runs += [{"key": "oq2-digits-dense-s0", "seed": 0, "updates": {**DIGITS, "method": "dense"}},
                 {"key": "oq2-digits-tuned-s0", "seed": 0, "updates": dict(DIGITS)},
                 {"key": "oq2-digits-paper-s0", "seed": 0, "updates": {**DIGITS, **PAPER}},
                 {"key": "oq2-digits-adaptive-s0", "seed": 0, "updates": {**DIGITS, "pruning.adaptive": True}}]
    if "oq2b" in parts:
        # sensitivity: tau = 0.5 x the steepest earlier rise (a first version's default) instead
        # of 1.0; in an 8-epoch cosine cycle J_avg rises almost linearly, so it is reached late
        r05 = {"pruning.adaptive": True, "pruning.adaptive_tau_ratio": 0.5}
        runs += [{"key": "oq2-fashion-adaptive-r05-s0", "seed": 0, "updates": dict(r05)},
                 {"key": "oq2-fashion-adaptive-r05-s1", "seed": 1, "updates": dict(r05)},
                 {"key": "oq2-digits-adaptive-r05-s0", "seed": 0, "updates": {**DIGITS, **r05}}]
    if "oq3" in parts:
        runs += [{"key": "oq3-probe-multistep-s0", "seed": 0, "updates": {**MULTISTEP, **PROBE}},
                 {"key": "oq3-probe-cosine-s0", "seed": 0, "updates": {**COSINE12, **PROBE}},
                 {"key": "oq3-multistep-s0", "seed": 0, "updates": dict(MULTISTEP)},
                 {"key": "oq3-multistep-reset-s0", "seed": 0, "updates": {**MULTISTEP, "pruning.lr_phase_reset": True}},
                 {"key": "oq3-cosine-s0", "seed": 0, "updates": dict(COSINE12)}]
    return runs


def execute(run: dict, args) -> dict:
    upd = {"method": "ocspruner", "pruning.target": 0.5, "seed": run["seed"], "threads": args.threads,
           "progress": False, "out_dir": args.work, "name": run["key"], "keep_checkpoints": 1, **run["updates"]}
    return run_or_reuse(run["key"], os.path.join(args.work, run["key"]), lambda: load_config(CONFIG, updates=upd))


def curve(summary: dict) -> list[dict]:
    rows = [json.loads(line) for line in open(os.path.join(summary["run_dir"], "metrics.jsonl"))]
    return [{k: r.get(k) for k in ("epoch", "stage", "lr", "similarity", "similarity_avg", "lambda", "val_acc", "events")}
            for r in rows]


def replay(rows: list[dict], tau: float, eps: float, window: int, lag: int, reset: bool, drop_ratio: float = 0.5) -> dict:
    """Eq. 4-6 recomputed from a probe's raw J (offset 1), with or without the lr-phase reset.
    The lr logged for epoch t is the one epoch t trained with, so M_{t+1} is the first
    sub-network of a phase that starts at epoch t."""
    raw = [r["similarity"] for r in rows]
    lrs = [r["lr"] for r in rows]
    phase_starts = [t + 1 for t in range(1, len(lrs)) if stability.lr_dropped(lrs[t - 1], lrs[t], drop_ratio)]
    if reset:
        for p in phase_starts:        # J(M_{p-1}, M_p) crosses the boundary: not computed
            if p < len(raw):
                raw[p] = None
    avg = stability.windowed_average(raw, window)
    t_sl = stability.first_sl_start(avg, tau, lag)
    stable = stability.first_stable(avg, eps, t_sl) if t_sl is not None else None
    return {"phase_starts": phase_starts, "avg": avg, "t_sl_start": t_sl, "t_star": stable}


def _f(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def report(data: dict) -> str:
    """Markdown tables of a results file (``--report``)."""
    runs = data["runs"]
    out = []
    oq2 = [k for k in runs if k.startswith("oq2")]
    if oq2:
        out += ["| run | test acc | FLOPs removed | t_sl-start | t* | adapted values (events) | CPU s |", "|---|---|---|---|---|---|---|"]
        for k in oq2:
            r = runs[k]
            ev = "; ".join(e for row in r["curve"] for e in (row.get("events") or []) if e.startswith("adaptive"))
            red = None if r.get("flops_ratio") is None else 100 * (1 - r["flops_ratio"])
            out.append(f"| {k} | {_f(r['final_test_acc'])} | {_f(red, '.1f')}% | {r['t_sl_start']} | {r['t_star']} | "
                       f"{ev or '-'} | {_f(r.get('cpu_time'), '.0f')} |")
        out.append("")
    for k in [k for k in runs if k.startswith("oq3")]:
        r = runs[k]
        out.append(f"{k}: acc {_f(r['final_test_acc'])}, t_sl-start {r['t_sl_start']}, t* {r['t_star']}, "
                   f"CPU {_f(r.get('cpu_time'), '.0f')} s")
        out.append("  epoch: lr / raw J / J_avg / stage: " + ", ".join(
            f"{c['epoch']}: {_f(c['lr'], '.4f')} / {_f(c['similarity'], '.3f')} / {_f(c['similarity_avg'], '.3f')} / {c['stage']}"
            for c in r["curve"]))
        for name, rp in (r.get("replay") or {}).items():
            out.append(f"  replay {name}: phase starts {rp['phase_starts']}, Eq. 5 t_sl-start {rp['t_sl_start']}, "
                       f"Eq. 6 t* {rp['t_star']}, J_avg " + ", ".join(_f(v, '.3f') for v in rp["avg"]))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="oq2,oq3,oq2b")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/ocspruner-open-questions")
    ap.add_argument("--report", action="store_true", help="print the tables of the results file and exit")
    args = ap.parse_args()
    if args.report:
        print(report(json.load(open(os.path.join(ROOT, "benchmarks/results/open_questions.json")))))
        return
    warnings.filterwarnings("ignore")
    os.makedirs(args.work, exist_ok=True)
    out_path = os.path.join(ROOT, "benchmarks/results/open_questions.json")
    results = {}
    t_start = time.time()
    for run in plan(args.parts.split(",")):
        s = execute(run, args)
        results[run["key"]] = {**{k: s.get(k) for k in ("final_test_acc", "flops_ratio", "params_ratio", "t_sl_start",
                                                        "t_star", "wall_time", "cpu_time")},
                               "updates": run["updates"], "curve": curve(s)}
        cfg = load_config(CONFIG)
        p = cfg.pruning
        if run["key"].startswith("oq3-probe"):
            results[run["key"]]["replay"] = {
                ("reset" if reset else "no_reset"): replay(results[run["key"]]["curve"], p.tau, p.epsilon, p.window,
                                                           p.sl_start_lag or p.window, reset)
                for reset in (False, True)}
        atomic_write_text(out_path, json.dumps({"command": "python benchmarks/open_questions.py"
                                                + ("" if args.parts == "oq2,oq3,oq2b" else f" --parts {args.parts}"),
                                                "config": CONFIG, "elapsed_s": time.time() - t_start,
                                                "runs": results}, indent=1, default=str))
    print(f"done in {(time.time() - t_start) / 60:.1f} min; results in {out_path}")


if __name__ == "__main__":
    main()
