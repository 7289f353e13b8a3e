"""Quiet the machine for a side-by-side timing: stop other processes (a long study's workers)
with SIGSTOP while it measures and continue them after, also on error. A stopped process accrues
no CPU time, so a study's CPU accounting is unaffected (its wall time grows by the pause)."""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager


def add_pause_argument(parser) -> None:
    parser.add_argument("--pause", type=int, nargs="*", default=[], metavar="PID",
                        help="processes to stop (SIGSTOP) while timing and continue after: a study's workers")


@contextmanager
def paused(pids):
    stopped = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
