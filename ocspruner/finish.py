"""The end of a cycle: test the final (and best-on-validation) model, then write what a user
ships and reads (architecture.json, final_model.pt, channels.json, summary.json, plots, export
files, report.md) into the run directory.

Kept apart from the training loop (``trainer.py``): nothing here trains. The model and the
summary are written before the conveniences (plots, export, report), and a failing convenience
is recorded in the summary instead of raised, so a finished run is never lost over one.
"""
from __future__ import annotations

import copy
import os

import torch

from . import distributed
from .clock import cpu_cost
from .rundir import RunDir


def _test_best(trainer):
    """Test accuracy of best.pt (the best validation epoch of the final architecture), or None."""
    best_path = trainer.rundir.file(RunDir.BEST)
    if not distributed.broadcast_object(os.path.exists(best_path) and trainer.best["epoch"] is not None):
        return None
    twin = copy.deepcopy(trainer.model)
    if trainer.dist.is_main:
        twin.load_state_dict(torch.load(best_path, weights_only=True)["model"])
    distributed.broadcast_module_(twin)   # only rank 0 reads the file (no shared disk needed)
    return trainer.evaluate(trainer.test_loader, twin)["acc"]


def architecture(trainer) -> dict:
    """What rebuilds the trained model without its config: registry name, options, data shape and
    normalisation, and the method's pruned widths."""
    b = trainer.bundle
    return {"model": trainer.cfg.model, "model_options": trainer.cfg.model_options,
            "num_classes": b.num_classes, "in_channels": b.in_channels, "image_size": b.image_size,
            "dataset": b.name, "mean": list(b.mean), "std": list(b.std),
            "pruning": trainer.method.architecture()}


def finish_run(trainer) -> dict:
    """Test, save and summarise a trainer's finished cycle; returns the summary (rank 0 writes)."""
    cfg, method, rundir = trainer.cfg, trainer.method, trainer.rundir
    started = cpu_cost()
    final_test = trainer.evaluate(trainer.test_loader)
    best_test = _test_best(trainer)
    if not trainer.dist.is_main:   # the other processes evaluated their shards; rank 0 writes
        return {"rank": trainer.dist.rank, "method": cfg.method, **method.summary(),
                "final_test_acc": final_test["acc"], "best_test_acc": best_test}
    arch = architecture(trainer)
    rundir.write_json(RunDir.ARCHITECTURE, arch)
    rundir.save_torch(RunDir.FINAL_MODEL, {"architecture": arch, "state_dict": trainer.model.state_dict()})
    channels = method.kept_channels()
    if channels:
        rundir.write_json(RunDir.CHANNELS, {"layers": channels})
    last = (rundir.metrics() or [{}])[-1]
    best = trainer.best
    summary = {"method": cfg.method, "model": cfg.model, "dataset": trainer.bundle.name,
               "epochs": trainer.total_epochs, "seed": cfg.seed, "target": None, "t_sl_start": None, "t_star": None,
               **method.summary(),
               "final_val_acc": last.get("val_acc"), "best_val_acc": best["val_acc"] if best["epoch"] is not None else None,
               "best_epoch": best["epoch"], "final_test_acc": final_test["acc"], "best_test_acc": best_test,
               "wall_time": trainer.elapsed, "cpu_time": trainer.cpu_elapsed, "time_to_prune": trainer.time_to_prune,
               # process CPU time of this process's set-up (data, model, the method's set-up:
               # a latency table and its calibration) and of the final tests
               "cpu_setup": trainer.setup_cpu, "cpu_test": cpu_cost() - started,
               "run_dir": os.path.abspath(trainer.run_dir)}
    for k in ("flops", "params"):
        if summary.get(f"dense_{k}"):
            summary[f"{k}_ratio"] = summary[f"final_{k}"] / summary[f"dense_{k}"]
    rundir.write_json(RunDir.SUMMARY, summary)
    _conveniences(trainer.run_dir, cfg.export, summary)
    return summary


def _conveniences(run_dir: str, export_formats, summary: dict) -> None:
    """Plots, export files (each checked against the PyTorch model) and report.md, in place in
    ``summary``; a failure is recorded as ``<name>_error``: the trained model is already saved."""
    try:
        from .reporting import write_all_plots
        summary["plots"] = write_all_plots(run_dir)
    except Exception as exc:  # noqa: BLE001
        summary["plots_error"] = f"{type(exc).__name__}: {exc}"
    if export_formats:
        try:
            from .export import export_run
            summary["export"] = {f: r["ok"] for f, r in export_run(run_dir, export_formats).items()}
        except Exception as exc:  # noqa: BLE001 - export again later
            summary["export_error"] = f"{type(exc).__name__}: {exc}"
    started = cpu_cost()
    try:
        from .reporting.report import write_report
        summary["report"] = write_report(run_dir, plots=summary.get("plots"))
    except Exception as exc:  # noqa: BLE001
        summary["report_error"] = f"{type(exc).__name__}: {exc}"
    # the report times a latency-budget run's model against dense: a measurement, not training
    summary["cpu_report"] = cpu_cost() - started
