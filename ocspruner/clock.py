"""Clocks for timing on a shared machine.

Wall time (``time.perf_counter``) counts every moment another process holds the core, so on a
shared 2-core machine the same forward pass measured 30-56 ms across trials. CPU-time clocks count
only the work of this thread or process:

* ``thread_cpu`` (``time.thread_time``): the calling thread's CPU time. Exact for single-threaded
  CPU work (``torch.set_num_threads(1)``); with more intra-op threads it would miss their work, so
  it is refused there.
* ``process_cpu`` (``time.process_time``): all threads of the process. With several intra-op
  threads it measures the total work of a call (its *cost*), which tracks latency on an idle
  machine but, unlike wall time, is not inflated by other processes, provided the OpenMP threads
  sleep while they wait: their spinning would count, and grows with the machine's load. So the
  timing runs in a process started with ``OMP_WAIT_POLICY=PASSIVE`` (passive_timing.py).
* ``wall`` (``time.perf_counter``): what a user's stopwatch shows; the only meaningful clock on
  a GPU (the work happens on the device), and on a quiet CPU.

``auto`` picks ``wall`` on CUDA, ``thread_cpu`` on one CPU thread and ``process_cpu`` otherwise.
Every timing result names the clock it used.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

import torch

CLOCKS = ("auto", "thread_cpu", "process_cpu", "wall")
_FUNCTIONS = {"thread_cpu": time.thread_time, "process_cpu": time.process_time, "wall": time.perf_counter}
DESCRIPTIONS = {
    "thread_cpu": "per-thread CPU time (time.thread_time), single-threaded",
    "process_cpu": "process CPU time of all threads (time.process_time), OpenMP waits passive",
    "wall": "wall clock (time.perf_counter)",
}


def resolve_clock(name: str = "auto", device: str = "cpu", threads: Optional[int] = None) -> str:
    """The concrete clock for ``name`` on ``device`` with ``threads`` intra-op threads (default:
    torch's current setting). Raises ValueError, with the fix, for a clock that cannot measure
    there."""
    if name not in CLOCKS:
        raise ValueError(f"unknown clock {name!r}; use one of {list(CLOCKS)}")
    try:
        on_gpu = torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    threads = torch.get_num_threads() if threads is None else int(threads)
    if name == "auto":
        return "wall" if on_gpu else ("thread_cpu" if threads == 1 else "process_cpu")
    if on_gpu and name != "wall":
        raise ValueError(f"clock {name!r} cannot time GPU work (it runs on the device); use the wall clock")
    if name == "thread_cpu" and threads != 1:
        raise ValueError(f"clock 'thread_cpu' times one thread and would miss the work of the {threads - 1} other "
                         f"intra-op thread(s); "
                         f"use 1 thread (--threads 1) or the clock 'process_cpu'")
    return name


def cpu_cost() -> float:
    """Seconds of CPU this process has cost so far: its own (all threads) plus that of its child
    processes that have finished (timing processes, data-loader workers), which
    ``time.process_time`` leaves out."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def clock_function(name: str) -> Callable[[], float]:
    """The timer function of a concrete clock (seconds as a float)."""
    try:
        return _FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown concrete clock {name!r}; resolve 'auto' first (resolve_clock)") from None


__all__ = ["CLOCKS", "DESCRIPTIONS", "resolve_clock", "clock_function", "cpu_cost"]
