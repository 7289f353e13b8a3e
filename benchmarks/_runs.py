"""One resumable training run for the benchmark scripts (shared by fashion_repro and
open_questions): a run whose summary.json exists is reused; an interrupted one restarts from
scratch. The summary gains ``cpu_time``, the process CPU time of the run (one thread: the work
done, which unlike wall time does not depend on what else the machine runs; it includes set-up
and the final test evaluation)."""
from __future__ import annotations

import json
import os
import time

from ocspruner.checkpoint import atomic_write_text


def run_or_reuse(key: str, run_dir: str, make_config) -> dict:
    """Train ``make_config()`` into ``run_dir`` unless it already finished; print one line."""
    from ocspruner.rundir import RunDir
    from ocspruner.trainer import Trainer

    done = os.path.join(run_dir, "summary.json")
    if os.path.exists(done):
        return json.load(open(done))
    rd = RunDir(run_dir)
    # hold the run directory's lock before clearing it: a run another process is training raises
    # RunDirBusy here, with nothing in it touched
    with rd.writing():
        if os.path.exists(done):                     # finished by another process meanwhile
            return json.load(open(done))
        rd.clear()
        t0, c0 = time.time(), time.process_time()
        summary = Trainer(make_config()).fit()
        summary["cpu_time"] = time.process_time() - c0
        atomic_write_text(done, json.dumps(summary, indent=1, default=str))
    print(f"[{time.strftime('%H:%M:%S')}] {key}: acc {summary['final_test_acc']:.2f} "
          f"flops {summary.get('flops_ratio', 1.0):.3f} t_sl {summary.get('t_sl_start')} t* {summary.get('t_star')} "
          f"cpu {summary['cpu_time']:.0f}s wall {time.time() - t0:.0f}s", flush=True)
    return summary
