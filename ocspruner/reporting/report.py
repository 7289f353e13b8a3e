"""One self-contained report per run: ``report.md`` beside the PNGs in ``plots/``.

Sections: budget vs achieved, accuracy, cost (wall time, against a dense run when one is given),
the stability curve with t_sl-start and t* (paper Fig. 3), the group-norm distribution of the
pruning vs kept set during sparsity learning (supplement Fig. 5), retained channels per layer
(supplement Fig. 6), training curves, the latency table (supplement Table 9; from ``bench.json``,
measured at the end of a run with a latency budget) and the export checks (``export/export.json``).

Everything is read from the run directory's files, so ``python3 -m ocspruner report RUN_DIR``
regenerates the report of any finished run. Every path in the report is relative to the report
(the run directory can be moved or copied whole).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

from ..rundir import RunDir
from .plots import load_run, write_all_plots


class ReportError(ValueError):
    """A directory that is not a finished run."""


def _read(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
        return obj if isinstance(obj, dict) else None
    except (OSError, ValueError):
        return None


def _mega(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v / 1e6:.{digits}f} M"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}%"


def _secs(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.2f} h"


def _img(plots_dir: str, run_dir: str, name: str, caption: str) -> list:
    path = os.path.join(plots_dir, name)
    if not os.path.isfile(path):
        return [f"_{caption}: no data for this run._", ""]
    return [f"![{caption}]({os.path.relpath(path, run_dir)})", ""]


def budget_section(s: dict) -> list:
    metric = s.get("metric") or "flops"
    lines = ["## Budget and result", "",
             "| | dense | final | removed | target |", "| --- | ---: | ---: | ---: | ---: |"]
    for key in ("flops", "params"):
        dense, final = s.get(f"dense_{key}"), s.get(f"final_{key}")
        removed = (1 - final / dense) if dense and final is not None else None
        target = s.get("target") if metric == key else None
        lines.append(f"| {'FLOPs' if key == 'flops' else 'params'} | {_mega(dense)} | {_mega(final)} | "
                     f"{'-' if removed is None else f'{100 * removed:.2f}%'} | "
                     f"{'-' if target is None else f'{100 * target:.1f}%'} |")
    lines.append("")
    target = s.get("target")
    if target is not None and metric in ("flops", "params") and s.get(f"dense_{metric}"):
        removed = 1 - s[f"final_{metric}"] / s[f"dense_{metric}"]
        ok = removed >= target - 1e-9
        lines.append(f"Budget ({metric}): remove {100 * target:.1f}%; achieved {100 * removed:.2f}% "
                     f"({'met' if ok else 'NOT met'}).")
    elif target is not None:
        lines.append(f"Budget ({metric}): remove {100 * target:.1f}% of the measured {metric}; "
                     f"see the latency table below for the measured result.")
    if s.get("partition"):
        price = s.get("price") or metric
        lines.append(f"Partition: {s['partition']}" + (f", channels priced by the measured {price}" if price != metric
                                                       else "") + ".")
    if s.get("pruned") is False:
        lines.append("The model was not pruned in this run.")
    lines.append("")
    return lines


def accuracy_section(s: dict) -> list:
    return ["## Accuracy", "",
            "| | final model | best-on-validation model |", "| --- | ---: | ---: |",
            f"| validation | {_pct(s.get('final_val_acc'))} | {_pct(s.get('best_val_acc'))} "
            f"(epoch {s.get('best_epoch')}) |",
            f"| test | {_pct(s.get('final_test_acc'))} | {_pct(s.get('best_test_acc'))} |", "",
            f"Stages: t_sl-start = {s.get('t_sl_start')}, t* = {s.get('t_star')} (epochs, 0-based).", ""]


def cost_section(s: dict, metrics: list, dense: Optional[dict], dense_rel: Optional[str] = None) -> list:
    lines = ["## Cost", "", f"Training wall time {_secs(s.get('wall_time'))} for {s.get('epochs')} epochs"
             + (f"; {_secs(s['time_to_prune'])} until the prune at t*." if s.get("time_to_prune") else ".")]
    times = [m.get("epoch_time") for m in metrics if isinstance(m.get("epoch_time"), (int, float))]
    t_star = s.get("t_star")
    if times and t_star is not None:
        before = [m["epoch_time"] for m in metrics if isinstance(m.get("epoch_time"), (int, float))
                  and m.get("epoch", -1) < t_star]
        after = [m["epoch_time"] for m in metrics if isinstance(m.get("epoch_time"), (int, float))
                 and m.get("epoch", -1) > t_star]
        if before and after:
            lines.append(f"Mean epoch time {sum(before) / len(before):.2f} s before t*, "
                         f"{sum(after) / len(after):.2f} s after (the pruned model trains faster).")
    if dense and dense.get("wall_time"):
        ratio = s.get("wall_time", 0) / dense["wall_time"]
        lines += ["", "| | dense run | this run | ratio |", "| --- | ---: | ---: | ---: |",
                  f"| wall time | {_secs(dense['wall_time'])} | {_secs(s.get('wall_time'))} | {ratio:.2f}x |"]
        if dense.get("final_test_acc") is not None and s.get("final_test_acc") is not None:
            lines.append(f"| test accuracy (final) | {_pct(dense['final_test_acc'])} | {_pct(s['final_test_acc'])} | "
                         f"{s['final_test_acc'] - dense['final_test_acc']:+.2f} pt |")
        lines.append(f"\nDense run: `{dense_rel or dense.get('run_dir', '?')}` (relative to this report).")
    else:
        lines.append("No dense run given (`ocspruner report RUN_DIR --dense DENSE_RUN_DIR` adds the comparison).")
    lines.append("")
    return lines


def group_norm_lines(metrics: list, s: dict) -> list:
    """Median group norm of the pruning set vs the kept set at t_sl-start and at t*."""
    rows = []
    for label, epoch in (("t_sl-start", s.get("t_sl_start")), ("t*", s.get("t_star"))):
        rec = next((m for m in metrics if m.get("epoch") == epoch and isinstance(m.get("group_norms"), dict)), None)
        if rec is None:
            continue
        gn = rec["group_norms"]
        if not gn.get("pruning") or not gn.get("kept"):
            continue
        mid = min(range(len(gn["q"])), key=lambda i: abs(gn["q"][i] - 0.5))
        p, k = gn["pruning"][mid], gn["kept"][mid]
        rows.append(f"| {label} (epoch {epoch}) | {p:.3g} | {k:.3g} | {p / k if k else float('nan'):.3g} |")
    if not rows:
        return []
    return ["| | median norm, pruning set | median norm, kept set | ratio |", "| --- | ---: | ---: | ---: |",
            *rows, ""]


def latency_section(run_dir: str, s: dict) -> list:
    from ..bench import format_markdown

    lines = ["## Latency (supplement Table 9)", ""]
    bench = _read(os.path.join(run_dir, "bench.json"))
    if bench and bench.get("rows"):
        lines += [f"Measured on {bench.get('device')} with {bench.get('threads')} threads (torch {bench.get('torch')}), "
                  f"{bench.get('repeats')} interleaved rounds after {bench.get('warmup')} warm-up calls; speedup = "
                  f"median of per-round dense/model time ratios; theoretical = FLOPs ratio; efficiency = "
                  f"speedup / theoretical.", "", format_markdown(bench), ""]
        for note in bench.get("notes", []):
            lines.append(f"Note: {note}")
        if bench.get("round_to", 1) > 1:
            lines.append(f"`pruned_r{bench['round_to']}`: the same model re-partitioned at the same FLOPs budget "
                         f"with widths rounded to multiples of {bench['round_to']} (untrained; timing only).")
        lines.append("")
    else:
        lines += ["Not measured for this run: `python3 -m ocspruner bench RUN_DIR [--round-to 8]` writes "
                  "`bench.json`, then `python3 -m ocspruner report RUN_DIR` adds the table.", ""]
    return lines


def _export_file(run_dir: str, r: dict) -> str:
    """An exported file's path relative to the run directory (older export.json: absolute paths)."""
    if r.get("file"):
        return os.path.join(RunDir.EXPORT, r["file"])
    p = r.get("path", "?")
    return os.path.relpath(p, os.path.abspath(run_dir)) if os.path.isabs(p) else p


def export_section(run_dir: str) -> list:
    exp = _read(os.path.join(run_dir, RunDir.EXPORT, "export.json"))
    if not exp or not isinstance(exp.get("formats"), dict):
        return ["## Export", "", "Not exported: `python3 -m ocspruner export RUN_DIR` writes TorchScript and ONNX "
                "files, each checked against the PyTorch model.", ""]
    lines = ["## Export", "", "| format | file | max abs diff | check |", "| --- | --- | ---: | --- |"]
    for fmt, r in exp["formats"].items():
        lines.append(f"| {fmt} | `{_export_file(run_dir, r)}` | "
                     f"{r['max_abs_diff']:.2e} | {'ok' if r.get('ok') else 'FAILED'} (<= {r.get('atol')}) |")
    return lines + [""]


def write_report(run_dir: str, plots: Optional[list] = None, dense_run: Optional[str] = None,
                 measure_latency: Optional[bool] = None) -> str:
    """Write ``run_dir/report.md`` (figures in ``run_dir/plots``) and return its path.

    ``plots``: figures already written by :func:`write_all_plots` (None: draw them now).
    ``dense_run``: a dense run directory of the same task, for the cost comparison.
    ``measure_latency``: time dense vs pruned now (``bench.json``: FLOPs ratio, inference and
    training-step speed-ups, the clock); by default only for a run with a latency budget that has
    no ``bench.json`` yet; ``"if_missing"``: for any pruned run without one (``ocspruner report``).
    """
    rd = RunDir(run_dir)
    for name in (RunDir.METRICS, RunDir.SUMMARY):
        if not rd.exists(name):
            raise ReportError(f"{run_dir!r} has no {name}; give the directory of a finished run")
    with rd.writing():
        return _write_report(rd, plots, dense_run, measure_latency)


def _write_report(rd: RunDir, plots, dense_run, measure_latency) -> str:
    run_dir = rd.path
    run = load_run(run_dir)
    metrics, s = run["metrics"], run["summary"]
    if plots is None:
        write_all_plots(run_dir)
    missing = bool(s.get("pruned")) and not rd.exists(RunDir.BENCH)
    if measure_latency is None:      # after training: only a run whose budget is a latency
        measure_latency = missing and s.get("metric") in ("latency", "train_latency")
    elif measure_latency == "if_missing":   # `ocspruner report`: any pruned run without bench.json
        measure_latency = missing
    if measure_latency:
        from ..bench import bench_run
        cfg = _read_yaml(rd.file(RunDir.CONFIG))
        if s.get("metric") in ("latency", "train_latency"):   # where the budget was measured
            batch = ((cfg.get("pruning") or {}).get("latency_batch")) or 1
        else:                                                 # the batch the model trained at
            batch = ((cfg.get("data") or {}).get("batch_size")) or 1
        bench_run(run_dir, batch_sizes=(batch,), warmup=3, repeats=20)
    dense = None
    if dense_run:
        dense = RunDir(dense_run).read_json(RunDir.SUMMARY)
        if dense is None:
            raise ReportError(f"{dense_run!r} has no summary.json; give the directory of a finished dense run")
    plots_dir = rd.file(RunDir.PLOTS)
    lines = [f"# Run report: {s.get('model')} on {s.get('dataset')}, method {s.get('method')}", "",
             f"Run `{os.path.basename(os.path.abspath(run_dir))}` (this report's directory); {s.get('epochs')} "
             f"epochs, seed {s.get('seed')}. Paths below are relative to this report.", ""]
    lines += budget_section(s)
    lines += accuracy_section(s)
    lines += cost_section(s, metrics, dense, rd.relpath(dense_run) if dense_run else None)
    lines += ["## Sub-network stability (Fig. 3)", "",
              "Jaccard similarity J of the temporary sub-network with the one i epochs earlier (Eq. 3) and its "
              "window average J_avg (Eq. 4); sparsity learning starts after t_sl-start (Eq. 5), the model is "
              "pruned at t* (Eq. 6).", ""]
    lines += _img(plots_dir, run_dir, "stability.png", "stability")
    lines += ["## Group norms of the pruning set vs the kept set (supplement Fig. 5)", "",
              "Per epoch, the Eq. 2 group norm of every channel of the temporary sub-network's pruning set "
              "(red) and kept set (blue): median line, 25-75% and 5-95% bands. Sparsity learning (Eq. 8-9) "
              "drives the pruning set towards zero before t*.", ""]
    lines += _img(plots_dir, run_dir, "group_norms.png", "group norms")
    lines += group_norm_lines(metrics, s)
    lines += ["## Retained channels per layer (supplement Fig. 6)", ""]
    lines += _img(plots_dir, run_dir, "channels.png", "retained channels")
    lines += ["## Training curves", ""]
    lines += _img(plots_dir, run_dir, "curves.png", "loss and accuracy")
    lines += _img(plots_dir, run_dir, "cost.png", "FLOPs reduction and lambda")
    lines += latency_section(run_dir, s)
    lines += export_section(run_dir)
    lines += ["## Files", "",
              "`final_model.pt` (loads with `ocspruner.load(path)`, weights-only), `architecture.json`, "
              "`channels.json`, `metrics.jsonl`, `summary.json`, `config.yaml`, `plots/`.", ""]
    return rd.write_text(RunDir.REPORT, "\n".join(lines))


def _read_yaml(path: str) -> dict:
    import yaml

    try:
        with open(path) as fh:
            obj = yaml.safe_load(fh)
        return obj if isinstance(obj, dict) else {}
    except (OSError, yaml.YAMLError):
        return {}


__all__ = ["write_report", "ReportError"]
