"""Issue 16, "find out why": on the study's second machine a pruned epoch of the paper partition
cost 0.91-0.93x a full-size one of process CPU (fig4-prune-at-{3,6}-s0, fig3-noreg-s0), while
``bench_run`` timed the same models' training step at 0.75x, and a Trainer that pruned in-process,
timed epoch by epoch beside a dense Trainer in one process, at 0.65-0.72x. So the gap is not
state left by the prune. This measures the training step as the study runs it: one model per
fresh process (as each study run is), the real augmented loader over the full training set,
process CPU time (user + system, what the study counts) and minor page faults per step.

    python benchmarks/step_allocator.py --pruned RUN_DIR/final_model.pt [--pause PID ...]

Two allocator settings: glibc's default, which hands a step's large activation buffers back to
the kernel when they are freed, so every step faults them in again (system time, cold pages),
and ``mallopt`` with a fixed mmap threshold (32 MiB) and a trim threshold of 1 GiB, which keeps
them in the heap. Rounds interleave the four settings; medians over rounds. Writes
``benchmarks/results/step_allocator.json`` with a top-level ``summary``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)
from _pause import add_pause_argument, paused  # noqa: E402

OUT = os.path.join(ROOT, "benchmarks", "results", "step_allocator.json")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3     # glibc's mallopt parameter numbers (malloc.h)


def child(model_path: str | None, keep_heap: bool, steps: int) -> dict:
    """One fresh process: ``steps`` training steps (``epoch_gap.loop_step``: the trainer's step, the
    recipe's optimizer) after 5 warm-up ones."""
    import ctypes
    import resource

    if keep_heap:
        libc = ctypes.CDLL("libc.so.6")
        if not (libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)):
            raise SystemExit("mallopt refused the settings (not glibc?)")
    import torch

    from epoch_gap import loop_step, recipe_loader     # the trainer's step on the study's loader
    from ocspruner.io import load
    from ocspruner.models import create_model

    torch.set_num_threads(1)
    cfg, loader = recipe_loader(seed=0)
    model = load(model_path) if model_path else create_model("resnet20", num_classes=10, in_channels=1)
    step = loop_step(model, loader, cfg.optim)

    for _ in range(5):
        step()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        step()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"user_s": (r1.ru_utime - r0.ru_utime) / steps, "sys_s": (r1.ru_stime - r0.ru_stime) / steps,
            "cpu_s": (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / steps,
            "minor_faults": (r1.ru_minflt - r0.ru_minflt) / steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pruned", help="a pruned run's final_model.pt")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "HEAP"), help=argparse.SUPPRESS)
    add_pause_argument(ap)
    args = ap.parse_args()
    if args.child:
        model, heap = args.child
        print(json.dumps(child(None if model == "dense" else model, heap == "keep", args.steps)))
        return
    if not args.pruned or not os.path.exists(args.pruned):
        raise SystemExit(f"--pruned {args.pruned!r}: give a pruned run's final_model.pt (e.g. benchmarks/work/"
                         "fashion_full/runs/fig4-prune-at-3-s0/final_model.pt)")
    settings = [(m, h) for m in ("dense", "pruned") for h in ("default", "keep")]
    rows = []
    with paused(args.pause):
        for r in range(args.rounds):
            for model, heap in settings if r % 2 == 0 else settings[::-1]:
                cmd = [sys.executable, __file__, "--steps", str(args.steps), "--child",
                       "dense" if model == "dense" else args.pruned, heap]
                got = subprocess.run(cmd, capture_output=True, text=True, check=True)
                rows.append({"round": r, "model": model, "heap": heap, **json.loads(got.stdout.strip().splitlines()[-1])})
                print(rows[-1], flush=True)
    med = {f"{m} {h}": {k: statistics.median(x[k] for x in rows if x["model"] == m and x["heap"] == h)
                        for k in ("cpu_s", "user_s", "sys_s", "minor_faults")} for m, h in settings}
    summary = {"clock": "process CPU (user + system), per training step, batch 128, one thread",
               "rounds": args.rounds, "steps": args.steps, "pruned_model": os.path.relpath(args.pruned, ROOT),
               "pruned_vs_dense_default": med["pruned default"]["cpu_s"] / med["dense default"]["cpu_s"],
               "pruned_vs_dense_keep_heap": med["pruned keep"]["cpu_s"] / med["dense keep"]["cpu_s"],
               "median": med}
    from ocspruner.checkpoint import atomic_write_text    # not at the top: a child sets mallopt before torch loads

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    atomic_write_text(OUT, json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
