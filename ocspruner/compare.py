"""``ocspruner compare``: methods x seeds on one dataset, model and budget, on the one loop.

Writes compare.md / compare.csv / compare.json and fig1.png (accuracy vs FLOPs, marker size =
training speed-up vs dense, as the paper's Fig. 1). With ``fig4_epochs`` it also trains
sub-networks pruned at fixed epochs and plots their final accuracy beside the stability score
J_avg of an OCSPruner run (the paper's Fig. 4).

A method is given as ``name`` or ``name:key=value,key=value`` (method options or pruning keys),
e.g. ``ocspruner:criterion=layer_l2`` or ``ocspruner:use_eq8=false``.
"""
from __future__ import annotations

import csv
import json
import os
import statistics
from typing import Callable, Optional

import yaml

from .config import ConfigError, load_config


def parse_method_spec(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        if "=" not in item:
            raise ConfigError(f"method option {item!r} in {spec!r} must look like key=value")
        k, v = item.split("=", 1)
        options[k.strip()] = yaml.safe_load(v)
    return name.strip(), options


def _mean_std(values: list) -> tuple[Optional[float], Optional[float]]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def run_compare(methods: list[str], seeds: list[int], out_dir: str, config: Optional[str] = None,
                overrides: Optional[list] = None, updates: Optional[dict] = None,
                fig4_epochs: Optional[list[int]] = None, trainer_factory: Optional[Callable] = None,
                resume: bool = False, overwrite: bool = False) -> dict:
    """``resume``: reuse the finished runs under ``out_dir/runs`` and continue the interrupted ones;
    ``overwrite``: replace them; neither: refuse (before anything trains) when one exists."""
    from .trainer import Trainer

    make = trainer_factory or Trainer
    plan = []   # every run's config first: a bad method, option or existing run stops before any training
    for spec in methods:
        name, options = parse_method_spec(spec)
        for seed in seeds:
            label = spec.replace(":", "_").replace(",", "_").replace("=", "-")
            plan.append((spec, load_config(config, overrides=overrides,
                                           updates={**(updates or {}), "method": name, "method_options": options,
                                                    "seed": seed, "out_dir": os.path.join(out_dir, "runs"),
                                                    "name": f"{label}-s{seed}"})))
    _check_plan([cfg for _, cfg in plan], resume, overwrite)
    os.makedirs(out_dir, exist_ok=True)
    runs: dict[str, list[dict]] = {}
    for spec, cfg in plan:
        runs.setdefault(spec, []).append(_run_one(make, cfg, resume, overwrite))
    rows = summarize(runs)
    write_tables(rows, out_dir)
    result = {"rows": rows, "runs": {k: v for k, v in runs.items()}}
    result["fig1"] = plot_fig1(rows, os.path.join(out_dir, "fig1.png"))
    if fig4_epochs:
        result["fig4"] = run_fig4(fig4_epochs, seeds[0], out_dir, config, overrides, updates, make, resume, overwrite)
    with open(os.path.join(out_dir, "compare.json"), "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    return result


def _check_plan(cfgs: list, resume: bool, overwrite: bool) -> None:
    from .rundir import RunDir

    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other; drop one")
    if not resume and not overwrite:
        for cfg in cfgs:
            RunDir(os.path.join(cfg.out_dir, cfg.name)).check_fresh(False, flag="--resume (reuse it) or --overwrite")


def _run_one(make, cfg, resume: bool, overwrite: bool) -> dict:
    """One run of the table: reused when finished and ``resume``, continued when interrupted."""
    from .rundir import RunDir

    rd = RunDir(os.path.join(cfg.out_dir, cfg.name))
    if resume and rd.is_finished():
        summary = rd.read_json(RunDir.SUMMARY)
        if summary is not None:
            return summary
    if resume and rd.checkpoints() and not rd.is_finished():
        trainer = make(cfg, run_dir=rd.path)
        trainer.resume()
        return trainer.fit()
    return make(cfg, overwrite=overwrite).fit()


def summarize(runs: dict[str, list[dict]]) -> list[dict]:
    """One row per method: means over seeds, drop and speed-up relative to the dense rows.

    The speed-up is dense CPU time / method CPU time: process CPU time counts only this run's
    work, while wall time on a shared machine also counts every moment another process held the
    core (wall time is reported beside it, and its ratio as ``wall_speedup_vs_dense``).
    ``off_budget`` lists the seeds whose result misses the budget by more than 1 point."""
    dense = next((v for k, v in runs.items() if parse_method_spec(k)[0] == "dense"), None)
    dense_acc, _ = _mean_std([s["final_test_acc"] for s in dense]) if dense else (None, None)
    dense_time, _ = _mean_std([s["wall_time"] for s in dense]) if dense else (None, None)
    dense_cpu, _ = _mean_std([s.get("cpu_time") for s in dense]) if dense else (None, None)
    rows = []
    for spec, summaries in runs.items():
        acc, std = _mean_std([s["final_test_acc"] for s in summaries])
        wall, _ = _mean_std([s["wall_time"] for s in summaries])
        cpu, _ = _mean_std([s.get("cpu_time") for s in summaries])
        flops = _mean_std([s["final_flops"] / s["dense_flops"] for s in summaries if s.get("dense_flops")])[0]
        params = _mean_std([s["final_params"] / s["dense_params"] for s in summaries if s.get("dense_params")])[0]
        t_stars = [s.get("t_star") for s in summaries if s.get("t_star") is not None]
        rows.append({
            "method": spec, "seeds": len(summaries),
            "flops_pct": None if flops is None else 100 * flops,
            "params_pct": None if params is None else 100 * params,
            "acc_mean": acc, "acc_std": std,
            "drop_vs_dense": None if dense_acc is None or acc is None else dense_acc - acc,
            "wall_time_s": wall, "cpu_time_s": cpu,
            "speedup_vs_dense": None if not dense_cpu or not cpu else dense_cpu / cpu,
            "wall_speedup_vs_dense": None if not dense_time or not wall else dense_time / wall,
            "t_star": ",".join(str(t) for t in t_stars) if t_stars else "-",
            "off_budget": ",".join(str(s.get("seed")) for s in summaries if _off_budget(s)) or "-",
        })
    return rows


def _off_budget(summary: dict, points: float = 1.0) -> bool:
    """The run removed more or less than its target by more than ``points`` percentage points."""
    target, metric = summary.get("target"), summary.get("metric") or "flops"
    dense, final = summary.get(f"dense_{metric}"), summary.get(f"final_{metric}")
    if not target or not dense or final is None:
        return False
    return abs((1 - final / dense) - target) * 100 > points


def _fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def write_tables(rows: list[dict], out_dir: str) -> None:
    header = ["method", "FLOPs %", "params %", "accuracy (mean ± std)", "drop vs dense", "CPU time (s)",
              "wall time (s)", "speed-up vs dense (CPU)", "t*", "off budget (seeds)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        acc = "-" if r["acc_mean"] is None else f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f}"
        lines.append("| " + " | ".join([r["method"], _fmt(r["flops_pct"], ".1f"), _fmt(r["params_pct"], ".1f"), acc,
                                         _fmt(r["drop_vs_dense"], "+.2f"), _fmt(r["cpu_time_s"], ".1f"),
                                         _fmt(r["wall_time_s"], ".1f"),
                                         _fmt(r["speedup_vs_dense"], ".2f") + ("x" if r["speedup_vs_dense"] else ""),
                                         r["t_star"], r["off_budget"]]) + " |")
    with open(os.path.join(out_dir, "compare.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "compare.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()) if rows else ["method"])
        writer.writeheader()
        writer.writerows(rows)


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def plot_fig1(rows: list[dict], path: str) -> Optional[str]:
    """Accuracy vs remaining FLOPs; marker area grows with the training speed-up vs dense (CPU time)."""
    pts = [r for r in rows if r["acc_mean"] is not None and r["flops_pct"] is not None]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in pts:
        size = 80 * (r["speedup_vs_dense"] or 1.0) ** 2
        ax.scatter(r["flops_pct"], r["acc_mean"], s=size, alpha=0.6)
        ax.errorbar(r["flops_pct"], r["acc_mean"], yerr=r["acc_std"] or 0, fmt="none", ecolor="gray", capsize=3)
        ax.annotate(r["method"], (r["flops_pct"], r["acc_mean"]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("remaining FLOPs (% of dense)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs FLOPs (marker size: training speed-up vs dense, CPU time)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_fig4(epochs: list[int], seed: int, out_dir: str, config, overrides, updates, make,
             resume: bool = False, overwrite: bool = False) -> dict:
    """Final accuracy of sub-networks pruned at each given epoch, beside J_avg of OCSPruner."""
    base = {**(updates or {}), "seed": seed, "out_dir": os.path.join(out_dir, "runs")}
    ocs = _run_one(make, load_config(config, overrides=overrides, updates={
        **base, "method": "ocspruner", "name": f"fig4-ocspruner-s{seed}"}), resume, overwrite)
    metrics = [json.loads(line) for line in open(os.path.join(ocs["run_dir"], "metrics.jsonl"))]
    j_avg = {m["epoch"]: m["similarity_avg"] for m in metrics}
    points = []
    for k in epochs:
        cfg = load_config(config, overrides=overrides,
                          updates={**base, "method": "ocspruner_fixed", "method_options": {"prune_epoch": int(k)},
                                   "name": f"fig4-prune-at-{k}-s{seed}"})
        s = _run_one(make, cfg, resume, overwrite)
        points.append({"prune_epoch": int(k), "final_test_acc": s["final_test_acc"], "j_avg": j_avg.get(int(k))})
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([p["prune_epoch"] for p in points], [p["final_test_acc"] for p in points], "o-", label="final accuracy")
    ax.set_xlabel("pruning epoch")
    ax.set_ylabel("final test accuracy (%)")
    ax2 = ax.twinx()
    xs = [e for e, v in sorted(j_avg.items()) if v is not None]
    ax2.plot(xs, [j_avg[e] for e in xs], "--", color="gray", label="J_avg (OCSPruner)")
    ax2.set_ylabel("stability score J_avg")
    if ocs.get("t_star") is not None:
        ax.axvline(ocs["t_star"], color="red", ls=":", label="automatic t*")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Final accuracy vs pruning epoch (Fig. 4)")
    fig.tight_layout()
    path = os.path.join(out_dir, "fig4.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"points": points, "t_star": ocs.get("t_star"), "path": path}
