"""One resumable training run for the benchmark scripts (fashion_repro, open_questions,
speed_you_get, fashion_full): a finished run is reused; an interrupted one continues from its
last epoch checkpoint (from scratch if the checkpoint cannot be used). The summary gains
``cpu_time``, the process CPU time of the run (one thread: the work done, which unlike wall time
does not depend on what else the machine runs; it includes set-up and the final test
evaluation). For a run resumed across processes it is the CPU time of the epochs before the
stop (saved in the checkpoints) plus all of the last process's; the stopped process's set-up
and unfinished epoch are not counted (``resumed_at_epoch`` says it happened)."""
from __future__ import annotations

import json
import os
import time

from ocspruner.checkpoint import atomic_write_text
from ocspruner.clock import cpu_cost

COMPLETE = "benchmark_complete"   # written last: the trainer writes summary.json before its plots


def finished_summary(run_dir: str):
    """The run's summary if this helper finished it, else None. (The trainer's own summary.json
    appears before the plots and report; a process killed then left a run that is not done.
    Summaries written before the marker existed are recognised by their plots entry.)"""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return None
    summary = json.load(open(path))
    return summary if (COMPLETE in summary or "plots" in summary or "plots_error" in summary) else None


def resume_trainer(key: str, rd, make_config):
    """``(trainer, cpu of the epochs before the stop, epoch it continues at)`` for a run directory
    with checkpoints, or ``(None, 0.0, None)`` when there is nothing usable to resume (the caller
    starts from scratch). The newest checkpoint is named explicitly, so a run killed after its
    last epoch (summary.json and final_model.pt written, the caller's own record not yet)
    continues there and only finishes again instead of training anew."""
    from ocspruner.rundir import RunDirBusy
    from ocspruner.trainer import Trainer

    newest = rd.checkpoints()
    if not newest:
        return None, 0.0, None
    trainer = None
    try:
        trainer = Trainer(make_config(), run_dir=rd.path)
        # a finished run's newest checkpoint is named (resume() refuses a finished run otherwise);
        # an unfinished one lets resume() skip a truncated newest checkpoint for an older one
        resumed = trainer.resume(newest[-1][1] if rd.is_finished() else None)
    except RunDirBusy:
        raise
    except Exception as exc:   # noqa: BLE001 - an unusable checkpoint: the run starts again
        if trainer is not None:
            trainer.rundir.unlock()           # the failed trainer's hold on the directory
        print(f"[{time.strftime('%H:%M:%S')}] {key}: cannot resume ({str(exc)[:200]}); starting again", flush=True)
        return None, 0.0, None
    print(f"[{time.strftime('%H:%M:%S')}] {key}: resumed at epoch {resumed}", flush=True)
    return trainer, trainer.cpu_elapsed, resumed


def run_or_reuse(key: str, run_dir: str, make_config, dense_run_dir: str | None = None) -> dict:
    """Train ``make_config()`` into ``run_dir`` unless it already finished; print one line. A
    ``greg`` run started afresh takes its dense phase from ``dense_run_dir`` when that run has
    the checkpoint (:func:`seed_from_dense`; the dense phase's CPU time is counted)."""
    from ocspruner.rundir import RunDir
    from ocspruner.trainer import Trainer

    summary = finished_summary(run_dir)
    if summary is not None:
        return summary
    rd = RunDir(run_dir)
    # hold the run directory's lock before reading or clearing it: a run another process is
    # training raises RunDirBusy here, with nothing in it touched
    with rd.writing():
        summary = finished_summary(run_dir)           # finished by another process meanwhile
        if summary is not None:
            return summary
        t0, c0 = time.time(), cpu_cost()
        trainer, before, resumed = resume_trainer(key, rd, make_config)
        if trainer is None:                            # nothing to resume, or unusable: from scratch
            t0, c0 = time.time(), cpu_cost()
            rd.clear()
            trainer = Trainer(make_config())
            if dense_run_dir and trainer.cfg.method == "greg" and seed_from_dense(trainer, dense_run_dir):
                before = trainer.cpu_elapsed
                print(f"[{time.strftime('%H:%M:%S')}] {key}: dense phase from {dense_run_dir}", flush=True)
        summary = trainer.fit()            # outside the try: a failure while training keeps the checkpoints
        summary["cpu_time"] = before + cpu_cost() - c0
        if resumed is not None:
            summary["resumed_at_epoch"] = resumed
        summary[COMPLETE] = True
        atomic_write_text(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=1, default=str))
    print(f"[{time.strftime('%H:%M:%S')}] {key}: acc {summary['final_test_acc']:.2f} "
          f"flops {summary.get('flops_ratio', 1.0):.3f} t_sl {summary.get('t_sl_start')} t* {summary.get('t_star')} "
          f"cpu {summary['cpu_time']:.0f}s wall {time.time() - t0:.0f}s", flush=True)
    return summary


def seed_from_dense(trainer, dense_run_dir: str) -> bool:
    """Start a ``greg`` run at the end of its dense phase from the dense run of the same recipe
    and seed, instead of training that phase again.

    GReg's dense phase is the dense run's computation, step for step (same seed, same data order,
    no method hook acting before the penalty; tests/test_two_cycle_seed.py checks that the seeded
    run ends bit-identical to a run trained from scratch). The dense run's checkpoint of its last
    epoch carries the model, optimizer (momentum), RNG and data-order state, and its CPU and wall
    time, which this run's cost includes as if it had trained them. ``prune_finetune`` is
    refused: its engine keeps a record of every dense epoch, which that checkpoint lacks.
    Returns False (nothing changed) when the dense run has no checkpoint of that epoch."""
    from ocspruner.io import read_checkpoint
    from ocspruner.rundir import RunDir

    if trainer.cfg.method != "greg":
        raise ValueError(f"seed_from_dense seeds greg runs only, not {trainer.cfg.method!r}")
    last = trainer.method.dense_epochs - 1
    dense = RunDir(dense_run_dir)
    path = dict(dense.checkpoints()).get(last) if dense.exists() else None
    if path is None:
        return False
    state = read_checkpoint(path)
    mine, theirs = trainer.cfg.to_dict(), state["config"]
    differ = [k for k in ("model", "seed", "data", "optim", "schedule", "label_smoothing", "bn_recalibration")
              if mine.get(k) != theirs.get(k)] + (["epochs"] if mine["epochs"] != theirs["epochs"] else [])
    if differ:
        raise ValueError(f"{dense_run_dir} is not this run's dense phase: its config differs at {differ[0]!r}")
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.rng.restore(state["rng"])
    trainer.elapsed, trainer.cpu_elapsed = float(state["elapsed"]), float(state["cpu_elapsed"])
    trainer.start_epoch = last + 1
    trainer.method.steps_first_epoch = len(trainer.train_loader)   # GReg counts them in epoch 0
    rows = [r for r in dense.metrics() if r.get("epoch", -1) <= last]
    for r in rows:
        r["stage"] = "pretrain"
    trainer.rundir.write_text(RunDir.METRICS, "".join(json.dumps(r) + "\n" for r in rows))
    trainer.rundir.write_text("seeded_from.txt", f"{path}\n")
    return True
