"""Issue 16: the whole of Fashion-MNIST, every method, three seeds (ResNet-20, 50% FLOPs).

    python benchmarks/fashion_full.py --jobs 2              # the study (~15 CPU-hours), resumable
    python benchmarks/fashion_full.py --dry-run             # the runs, in order, and which are done
    python benchmarks/fashion_full.py --only dense,ocspruner
    python benchmarks/fashion_full.py --report              # rewrite the JSON and the doc, run nothing

Every run uses the shipped recipe ``fashion_mnist_resnet20`` (15 epochs, all 60k training images
with the validation split carved from them as the trainer does, the 10k test set), one torch
thread, and lives in ``WORK/runs/<key>`` (default WORK: benchmarks/work/fashion_full, ignored by
git). A finished run is reused (benchmarks/_runs.py; its ``cpu_time`` is the process CPU time of
the run); an interrupted run continues from its last epoch checkpoint. Each run is its own Python process
(this script with ``--run-one KEY``), at most ``--jobs`` (1 or 2) at a time; its output goes to
``WORK/logs/<key>.log``. After training, a pruned run's inference speed-up over its dense
architecture is measured (``ocspruner.bench.bench_run``, batch 64, one thread) in the same process.

After every finished run, ``benchmarks/results/fashion_full.json`` (every finished run and a
top-level ``summary``) and ``docs/fashion_full.md`` (table, Fig. 1, 3, 4) are rewritten; runs not
finished are listed as pending, never counted as zeros. The doc's "What it shows" section is
written by a person and kept across rewrites.

The results file is the study's memory: WORK is ignored by git, so a fresh checkout (a new
machine) has none of it, and the same command continues there. A run the results file holds is
done (its record is kept as it is), a run that was training is started again from scratch, and
CPU times are compared with dense's on the same machine only (``machine`` per run). On a new
machine: ``pip install torch==2.13.0 -e .`` and ``apt-get install dataset-fashion-mnist`` first.

``--subset``, ``--epochs`` and ``--val-fraction`` exist for smoke tests only: with any of them the
outputs go to WORK (fashion_full.json, fashion_full.md, PNGs), never to the repository's files.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from ocspruner.checkpoint import atomic_write_text  # noqa: E402
from ocspruner.config import load_config  # noqa: E402
from _fashion_full_doc import write_doc  # noqa: E402
# the statistics live in _fashion_full_stats.py; the names are re-exported for knapsack_cap.py,
# epoch_gap.py and the tests, which read this script as the study's one entry point
from _fashion_full_stats import (clock_epochs, epoch_costs, epoch_cpu_range, goals, label_stats,  # noqa: E402,F401
                                 mean_std, own_clock_ratio, same_machine_ratio, summarize)

CONFIG = "fashion_mnist_resnet20"
DEFAULT_WORK = os.path.join(ROOT, "benchmarks", "work", "fashion_full")
MAX_JOBS = 2
KNAPSACK = {"pruning.partition": "knapsack", "pruning.price": "train_latency", "pruning.latency_batch": 32}
# label -> (method, config updates, number of seeds). Order: the table's rows.
METHODS = {
    "dense": ("dense", {}, 3),
    "ocspruner": ("ocspruner", {"pruning.partition": "ranking"}, 3),
    # the cost-aware partition at the same 50% FLOPs budget, channels priced by the measured
    # training step (table at batch 32): of the ways to remove half the FLOPs, the one that saves
    # the most training time per saliency lost (issue 12, docs/benchmarks.md)
    "ocspruner_knapsack": ("ocspruner", KNAPSACK, 3),
    # issue 16, "find out why": the knapsack with no group pruned past half its width.
    # benchmarks/knapsack_cap.py (no training) found the shipped cap (0.75) leaves the 32x32 stem
    # 4-6 channels wide, and a 0.5 cap keeps 8 at nearly the same training-step price (0.54x
    # against 0.52x). Explored on seed 0 first and judged on validation: it beat both variants
    # (93.90 against 93.83 and 93.65), so it has their seeds and is a candidate for the summary's
    # "best OCSPruner" (picked on validation, never on test)
    "ocspruner_knapsack_cap50": ("ocspruner", {**KNAPSACK, "pruning.max_prune_fraction": 0.5}, 3),
    "random": ("random", {}, 2),
    "snip": ("snip", {}, 2),                        # the data-driven prune-at-init
    "prune_finetune": ("prune_finetune", {}, 2),
    "greg": ("greg", {}, 2),
    # ATO's controller steps every iteration (as benchmarks/methods_fashion.py): the paper's "every
    # 20" gives ~150 controller updates in this 15-epoch cycle (~2000 in the paper); its cost is
    # counted in ATO's CPU time. The freeze warns when the controller fell short (see the log).
    "ato": ("ato", {"method_options": {"controller_every": 1}}, 2),
}
OCS_LABELS = ("ocspruner", "ocspruner_knapsack", "ocspruner_knapsack_cap50")
# the goals (issue 16) compare the best OCSPruner variant with dense, random and prune-at-init
GOAL_LABELS = ("dense", *OCS_LABELS, "random", "snip")
FIG_LABELS = ("fig3", "fig4")
FIG4_FRACTIONS = (0.2, 0.4, 0.6, 0.8)     # fixed t* across the cycle: epochs 3, 6, 9, 12 of 15
RECORD_FIELDS = ("method", "seed", "epochs", "final_test_acc", "best_test_acc", "final_val_acc", "flops_ratio",
                 "params_ratio", "final_flops", "dense_flops", "final_params", "dense_params", "target",
                 "t_sl_start", "t_star", "time_to_prune", "cpu_time", "wall_time", "repair_added",
                 "final_prune_max_norm", "budget_miss", "run_dir")


# ----------------------------------------------------------------------------------------------
# the plan
# ----------------------------------------------------------------------------------------------
def fig4_epochs(epochs: int, recovery_fraction: float = 0.2) -> list[int]:
    """Fixed pruning epochs across the cycle, within the recovery cap (15 epochs: 3, 6, 9, 12)."""
    from ocspruner.methods import prune_cap

    cap = prune_cap(epochs, recovery_fraction)
    return sorted({min(cap, max(1, round(f * epochs))) for f in FIG4_FRACTIONS})


def run_entry(key: str, label: str, method: str, seed: int, updates: dict) -> dict:
    return {"key": key, "label": label, "method": method, "seed": seed, "updates": updates}


def plan(epochs: int) -> list[dict]:
    """Every run, most important first: seed 0 of every method (dense, OCSPruner, knapsack
    first); then the later seeds of the methods the issue's goals are judged on (dense, the
    OCSPruner variants, random, prune-at-init), so the goals are decidable as early as possible;
    then the later seeds of the other methods; then Fig. 3 (Eq. 8/9 off; the "on" curve is
    ocspruner-s0) and Fig. 4."""
    n_max = max(n for _, _, n in METHODS.values())
    later_goal = [(seed, label) for seed in range(1, n_max) for label in METHODS if label in GOAL_LABELS]
    later_rest = [(seed, label) for seed in range(1, n_max) for label in METHODS if label not in GOAL_LABELS]
    runs = []
    for seed, label in [(0, label) for label in METHODS] + later_goal + later_rest:
        method, updates, n_seeds = METHODS[label]
        if seed < n_seeds:
            runs.append(run_entry(f"{label}-s{seed}", label, method, seed, updates))
    runs.append(run_entry("fig3-noreg-s0", "fig3", "ocspruner", 0,
                          {"pruning.use_eq8": False, "pruning.use_eq9": False}))
    for k in fig4_epochs(epochs):
        runs.append(run_entry(f"fig4-prune-at-{k}-s0", "fig4", "ocspruner_fixed", 0,
                              {"method_options": {"prune_epoch": k}}))
    return runs


def select(runs: list[dict], only: str | None) -> list[dict]:
    if not only:
        return runs
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = list(METHODS) + list(FIG_LABELS)
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"--only: unknown name(s) {', '.join(bad)}; choose from {', '.join(known)}")
    return [r for r in runs if r["label"] in names]


def smoke_updates(args) -> dict:
    upd = {}
    if args.subset is not None:
        upd["data.subset"] = args.subset
    if args.epochs is not None:
        upd["epochs"] = args.epochs
    if args.val_fraction is not None:
        upd["data.val_fraction"] = args.val_fraction
    return upd


def run_config(run: dict, args):
    upd = {"method": run["method"], "seed": run["seed"], "threads": 1, "progress": False,
           "out_dir": os.path.join(args.work, "runs"), "name": run["key"], "keep_checkpoints": 1,
           **smoke_updates(args), **run["updates"]}
    return load_config(CONFIG, updates=upd)


def run_dir(run: dict, work: str) -> str:
    return os.path.join(work, "runs", run["key"])


def trained(run: dict, work: str) -> bool:
    """Trained here (benchmarks/_runs.py finished it in WORK) and, for a pruned run, benchmarked
    (bench.json)."""
    from _runs import finished_summary

    d = run_dir(run, work)
    return finished_summary(d) is not None and \
        (run["method"] == "dense" or os.path.exists(os.path.join(d, "bench.json")))


def is_done(run: dict, work: str, recorded: dict | None = None) -> bool:
    """Trained in WORK, or finished earlier and kept in the results file (``recorded``, from
    :func:`recorded_runs`): a run is never trained twice because its work dir is gone."""
    return run["key"] in (recorded or {}) or trained(run, work)


def read_results(path: str) -> dict:
    """The results file at ``path`` as written ({} when there is none yet); a file that is not
    JSON stops the study with one line, before anything overwrites it."""
    if not os.path.exists(path):
        return {}
    try:
        return json.load(open(path))
    except ValueError as exc:
        raise SystemExit(f"{path} is not readable JSON ({exc}); restore it with git checkout -- {path}")


def recorded_runs(path: str, runs: list[dict], epochs: int, updates: dict) -> dict:
    """The finished runs the results file at ``path`` holds, by key: the durable record of the
    study. WORK is ignored by git, so a fresh checkout (a new session's machine) has none of its
    run directories; the results file is committed after every finished run and carries each
    run's whole record (accuracies, costs, the bench row, the epoch series). A record counts
    only when it is the plan's run now (same label, method, seed and config updates) in a file
    written for the same recipe, cycle length and smoke flags; anything else is trained again,
    and the lines naming it are printed (git keeps the file they were in)."""
    on_file = read_results(path)
    kept = on_file.get("runs") or {}
    if on_file.get("config") != CONFIG or (on_file.get("updates") or {}) != updates or \
            (on_file.get("summary") or {}).get("epochs") != epochs:
        if kept:
            print(f"{path}: written for another recipe, cycle or smoke flags; its {len(kept)} runs are not "
                  f"this study's", flush=True)
        return {}
    by_key = {r["key"]: r for r in runs}
    out = {key: rec for key, rec in kept.items()
           if (run := by_key.get(key)) is not None and rec.get("final_test_acc") is not None
           and all(rec.get(f) == run[f] for f in ("label", "method", "seed", "updates"))}
    if len(out) < len(kept):
        print(f"{path}: not the plan's runs now, so trained again: {', '.join(sorted(set(kept) - set(out)))}",
              flush=True)
    return out


def log_path(run: dict, work: str) -> str:
    return os.path.join(work, "logs", run["key"] + ".log")


def failure_line(run: dict, work: str, recorded: dict | None = None) -> str | None:
    """The last error line of a run's last attempt (its log from the last ``===`` line a worker
    start writes) when the run is not done, no worker holds it, and that attempt ended in a
    traceback: an attempt that failed and was started again is not a failure."""
    path = log_path(run, work)
    if is_done(run, work, recorded) or not os.path.exists(path) or live_pid(pid_path(run, work)) is not None:
        return None
    text = re.split(r"^===.*$", open(path, errors="replace").read(), flags=re.M)[-1]
    if "Traceback" not in text:
        return None
    errors = [ln for ln in text.splitlines() if re.match(r"^\w[\w.]*(Error|Exception)\b", ln)]
    return errors[-1] if errors else text.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------
# one run (a worker process)
# ----------------------------------------------------------------------------------------------
def run_one(run: dict, args) -> None:
    """Train the run (or reuse it) and bench its pruned model against the dense architecture."""
    from _runs import run_or_reuse
    from ocspruner.bench import bench_run

    d = run_dir(run, args.work)
    lock = pid_path(run, args.work)
    take_lock(lock, f"run {run['key']}")
    try:
        # GReg's dense phase is dense-s<seed>'s, step for step: it starts from that run's checkpoint
        dense = os.path.join(args.work, "runs", f"dense-s{run['seed']}") if run["method"] == "greg" else None
        run_or_reuse(run["key"], d, lambda: run_config(run, args), dense_run_dir=dense)
        if run["method"] != "dense" and not os.path.exists(os.path.join(d, "bench.json")):
            res = bench_run(d, batch_sizes=(64,), threads=1, repeats=args.bench_repeats)
            row = next(r for r in res["rows"] if r["model"] == "pruned")
            print(f"{run['key']}: inference speed-up {row['speedup']:.2f}x, train step "
                  f"{row.get('train_speedup', 0):.2f}x (clock {res['clock']})", flush=True)
    finally:
        os.remove(lock)


def worker_command(run: dict, args) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--run-one", run["key"], "--work", args.work,
           "--bench-repeats", str(args.bench_repeats)]
    for flag, value in (("--subset", args.subset), ("--epochs", args.epochs), ("--val-fraction", args.val_fraction)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def start_worker(run: dict, args) -> subprocess.Popen:
    os.makedirs(os.path.join(args.work, "logs"), exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    log = open(log_path(run, args.work), "a")
    log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(worker_command(run, args))}\n")
    log.flush()
    print(f"[{time.strftime('%H:%M:%S')}] start {run['key']}", flush=True)
    return subprocess.Popen(worker_command(run, args), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def live_pid(path: str) -> int | None:
    """The pid written in ``path`` when that process still runs (a stale file reads as None)."""
    try:
        with open(path) as fh:
            pid = int(fh.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def take_lock(path: str, what: str) -> None:
    """One process per lock file: the study per work dir, a worker per run (a study process that
    was killed leaves its workers running; a new one must not start their runs again)."""
    pid = live_pid(path)
    if pid is not None and pid != os.getpid():
        raise SystemExit(f"{what} already runs as pid {pid} ({path}); wait for it or stop it")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, str(os.getpid()))


def pid_path(run: dict, work: str) -> str:
    return os.path.join(work, "logs", run["key"] + ".pid")


def execute(runs: list[dict], args, on_finished) -> None:
    """Run the not-done runs, at most ``args.jobs`` processes at a time; ``on_finished(run, rc)``
    after each."""
    lock = os.path.join(args.work, "study.pid")
    take_lock(lock, "fashion_full.py")
    try:
        run_all(runs, args, on_finished)
    finally:
        os.remove(lock)


def run_all(runs: list[dict], args, on_finished, poll_seconds: float = 2.0) -> None:
    """Start the not-done runs in plan order, at most ``--jobs`` at a time. A run whose worker a
    previous study process started (and that still holds its lock) takes a slot and is not
    started again; when it ends it is reported like ours, or, if it died unfinished, started
    again (it resumes from its checkpoint)."""
    todo = [r for r in runs if not is_done(r, args.work, args.recorded)]
    active: dict = {}
    while todo or active:
        for run in [r for r in todo if is_done(r, args.work, args.recorded)]:   # finished by another study process
            todo.remove(run)
            print(f"[{time.strftime('%H:%M:%S')}] {run['key']}: done (started by an earlier study process)", flush=True)
            on_finished(run, 0)
        elsewhere = [r for r in todo if live_pid(pid_path(r, args.work)) is not None]
        free = min(args.jobs, MAX_JOBS) - len(active) - len(elsewhere)
        for run in [r for r in todo if r not in elsewhere][:max(free, 0)]:
            todo.remove(run)
            active[run["key"]] = (run, start_worker(run, args))
        if not todo and not active:
            break
        time.sleep(poll_seconds)
        for key, (run, proc) in list(active.items()):
            rc = proc.poll()
            if rc is not None:
                del active[key]
                status = "done" if rc == 0 and is_done(run, args.work, args.recorded) else \
                    f"FAILED (rc {rc}): {failure_line(run, args.work, args.recorded)}"
                print(f"[{time.strftime('%H:%M:%S')}] {key}: {status}", flush=True)
                on_finished(run, rc)


# ----------------------------------------------------------------------------------------------
# records and the summary
# ----------------------------------------------------------------------------------------------
def log_warnings(run: dict, work: str) -> list[str]:
    path = log_path(run, work)
    if not os.path.exists(path):
        return []
    return sorted({ln.split("Warning:", 1)[1].strip()[:240] for ln in open(path, errors="replace")
                   if "UserWarning:" in ln})


def work_machine(work: str) -> dict:
    """The machine WORK's runs trained on, named when WORK is first used (WORK/machine.json). A
    work directory never outlives its machine (it is ignored by git, so a fresh checkout starts
    a new one), so every run trained in WORK shares this machine, and runs kept from an earlier
    checkout's WORK (their records carry that ``machine``; the study's first work directory
    stamped none) ran elsewhere: their CPU times are not compared with these (the summary's
    same-machine ratios)."""
    import platform
    import uuid

    path = os.path.join(work, "machine.json")
    if os.path.exists(path):
        return json.load(open(path))
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), None) \
        if os.path.exists("/proc/cpuinfo") else None
    import torch

    # the kernels torch runs follow the instruction set, and round differently (the same seed
    # drifts from epoch 0 across machines): recorded so a drift can be read against it
    machine = {"id": uuid.uuid4().hex[:12], "first_used": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "cpu": cpu or platform.processor(), "cores": os.cpu_count(),
               "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    os.makedirs(work, exist_ok=True)
    atomic_write_text(path, json.dumps(machine))
    return machine


def load_record(run: dict, work: str, recorded: dict | None = None) -> dict | None:
    """The JSON record of a done run: the summary's fields, the bench row of the pruned model,
    from its run directory when it was trained in WORK, else as the results file kept it."""
    if not trained(run, work):
        return (recorded or {}).get(run["key"])
    d = run_dir(run, work)
    s = json.load(open(os.path.join(d, "summary.json")))
    rec = {"key": run["key"], "label": run["label"], "updates": run["updates"],
           **{k: s.get(k) for k in RECORD_FIELDS}, "warnings": log_warnings(run, work)}
    bench_path = os.path.join(d, "bench.json")
    if os.path.exists(bench_path):
        b = json.load(open(bench_path))
        row = next(r for r in b["rows"] if r["model"] == "pruned")
        rec["bench"] = {"batch": row["batch"], "speedup": row["speedup"], "train_speedup": row.get("train_speedup"),
                        "theoretical_speedup": row["theoretical_speedup"], "median_ms": row["median_ms"],
                        "clock": b["clock"], "threads": b["threads"]}
    rec["metrics"] = epoch_series(d)
    rec["machine"] = work_machine(work)["id"]
    return rec


def epoch_series(d: str) -> list[dict]:
    """Per-epoch J, J_avg, val accuracy, stage and CPU time of a run (Fig. 3/4, the cost split)."""
    path = os.path.join(d, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return [{k: r.get(k) for k in ("epoch", "stage", "similarity", "similarity_avg", "val_acc", "cpu_elapsed")}
            for r in rows]


def study_summary(records: dict, pending: list[str], n_train: int | None, epochs: int) -> dict:
    """The top-level summary of this study's finished ``records`` (_fashion_full_stats.summarize)."""
    return summarize(records, pending, n_train, epochs, list(METHODS), OCS_LABELS, METHODS["dense"][2])


def training_set_size(args) -> int | None:
    """Training images after the validation split (and the smoke subset), as the trainer builds them."""
    try:
        from ocspruner.data import build_datasets
        cfg = run_config(run_entry("size", "dense", "dense", 0, {}), args)
        bundle = build_datasets(cfg.data.name, cfg.data.root, val_fraction=cfg.data.val_fraction, seed=0,
                                subset=cfg.data.subset, augment=False)
        return len(bundle.train)
    except Exception as exc:   # noqa: BLE001 - the size is a label; the runs are the result
        print(f"training set size unknown: {exc}", flush=True)
        return None


# ----------------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------------
def output_paths(args) -> dict:
    smoke = bool(smoke_updates(args))
    results = os.path.join(args.work, "fashion_full.json") if smoke else \
        os.path.join(ROOT, "benchmarks", "results", "fashion_full.json")
    doc = os.path.join(args.work, "fashion_full.md") if smoke else os.path.join(ROOT, "docs", "fashion_full.md")
    stem = doc[:-3]
    # benchmarks/fashion_full_paired.py's output beside the results (read, never written, here)
    from fashion_full_paired import RESULT_NAME
    paired = os.path.join(os.path.dirname(results), RESULT_NAME)
    return {"results": results, "doc": doc, "fig1": stem + "_fig1.png", "fig3": stem + "_fig3.png",
            "fig4": stem + "_fig4.png", "paired": paired}


def command_line(args) -> str:
    parts = ["python benchmarks/fashion_full.py", f"--jobs {MAX_JOBS}"]   # --jobs changes no result
    if os.path.normpath(args.work) != os.path.normpath(DEFAULT_WORK):
        parts.append(f"--work {args.work}")
    for flag, value in (("--subset", args.subset), ("--epochs", args.epochs), ("--val-fraction", args.val_fraction)):
        if value is not None:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def study_records(runs: list[dict], args) -> dict:
    """Every finished run the results file already holds (:func:`recorded_runs`): the study's
    memory across checkouts. Read at start (which runs to train) and before each rewrite (the
    rewrite keeps them all)."""
    return recorded_runs(output_paths(args)["results"], runs, run_config(runs[0], args).epochs, smoke_updates(args))


def write_outputs(runs: list[dict], args, n_train) -> dict:
    recorded = study_records(runs, args)      # the file about to be rewritten keeps all of them
    records = {r["key"]: rec for r in runs if (rec := load_record(r, args.work, recorded)) is not None}
    pending = [r["key"] for r in runs if r["key"] not in records]
    failed = {r["key"]: line for r in runs if (line := failure_line(r, args.work, recorded))}
    epochs = run_config(runs[0], args).epochs
    summary = study_summary({k: v for k, v in records.items() if v["label"] in METHODS},
                            [k for k in pending], n_train, epochs)
    paths = output_paths(args)
    os.makedirs(os.path.dirname(paths["results"]), exist_ok=True)
    machines, here = dict(read_results(paths["results"]).get("machines") or {}), work_machine(args.work)
    if any(r.get("machine") == here["id"] for r in records.values()):
        machines[here["id"]] = here
    result = {"summary": summary, "failed": failed, "command": command_line(args), "config": CONFIG,
              "updates": smoke_updates(args), "machines": machines, "runs": records}
    atomic_write_text(paths["results"], json.dumps(result, indent=1, default=str))
    write_doc(result, run_config(run_entry("recipe", "dense", "dense", 0, {}), args), list(METHODS), paths)
    return result


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1, choices=range(1, MAX_JOBS + 1),
                    help="runs at a time, each its own process with one thread (at most 2)")
    ap.add_argument("--only", default=None, help=f"comma-separated labels: {', '.join(list(METHODS) + list(FIG_LABELS))}")
    ap.add_argument("--dry-run", action="store_true", help="list the runs in order and which are done; run nothing")
    ap.add_argument("--report", action="store_true", help="rewrite the JSON and the doc from finished runs; run nothing")
    ap.add_argument("--work", default=DEFAULT_WORK)
    ap.add_argument("--bench-repeats", type=int, default=30, help="interleaved timing rounds of the speed-up")
    ap.add_argument("--subset", type=int, default=None, help="smoke tests only: training images")
    ap.add_argument("--epochs", type=int, default=None, help="smoke tests only: epochs of the recipe")
    ap.add_argument("--val-fraction", type=float, default=None, help="smoke tests only: validation share")
    ap.add_argument("--run-one", default=None, help=argparse.SUPPRESS)   # a worker process: one run
    return ap.parse_args(argv)


def dry_run(runs: list[dict], args) -> None:
    for n, run in enumerate(runs, 1):
        fail = failure_line(run, args.work, args.recorded)
        pid = live_pid(pid_path(run, args.work))
        state = "done" if trained(run, args.work) else "done (results file)" if run["key"] in args.recorded else \
            f"running (pid {pid})" if pid else (f"failed: {fail}" if fail else "pending")
        print(f"{n:3d}  {run['key']:<28} {state}")
    print(f"{sum(is_done(r, args.work, args.recorded) for r in runs)} of {len(runs)} done; work dir {args.work}")


def main(argv=None) -> None:
    args = parse_args(argv)
    args.work = os.path.abspath(args.work)   # the workers run in the repository root
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    epochs = args.epochs if args.epochs is not None else load_config(CONFIG).epochs
    all_runs = plan(epochs)
    if args.run_one:
        run_one(next(r for r in all_runs if r["key"] == args.run_one), args)
        return
    runs = select(all_runs, args.only)
    args.recorded = study_records(all_runs, args)
    if args.dry_run:
        dry_run(runs, args)
        return
    n_train = training_set_size(args)
    if not args.report:
        os.makedirs(args.work, exist_ok=True)
        execute(runs, args, lambda run, rc: write_outputs(all_runs, args, n_train))
    result = write_outputs(all_runs, args, n_train)
    print(json.dumps({k: v for k, v in result["summary"].items() if k != "methods"}, indent=1, default=str))


if __name__ == "__main__":
    main()
