"""Multi-threaded CPU timing in a process whose OpenMP threads sleep while they wait.

With several intra-op threads, PyTorch's OpenMP runtime (libgomp) makes a thread that waits at
a barrier *spin* on the core before it sleeps. Process CPU time counts that spinning, and on a
shared machine it is most of the measurement: measured here with two training runs on the two
cores, a dense ResNet-20 forward at batch 64 and 2 threads took 1082 ms of process CPU time
with the default policy and 134 ms with ``OMP_WAIT_POLICY=PASSIVE``, and the pruned/dense
ratio read 1.00 against 0.65 (the ratio the same models give on one thread). The spin depends
on how often a peer thread is descheduled, i.e. on other processes' load: exactly what a
CPU-time clock is meant to exclude.

The wait policy is read once, when PyTorch's OpenMP library loads, so it cannot be changed in a
running process. Timing by ``process_cpu`` on several threads therefore runs in a child Python
process started with ``OMP_WAIT_POLICY=PASSIVE`` and the same thread count (a few seconds to
start). The timed models travel to it by pickle; a model whose class the child cannot import (one
defined in a script's ``__main__``) is timed here instead, with a one-line warning. A process
started with ``OMP_WAIT_POLICY=PASSIVE`` in its environment times in place.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import warnings
from typing import Callable

import torch

POLICY = "OMP_WAIT_POLICY"
_CHILD = "import sys; from ocspruner.passive_timing import _child; _child(sys.argv[1], sys.argv[2])"


def passive_here() -> bool:
    """Whether this process's OpenMP threads sleep while they wait (set before Python started)."""
    return os.environ.get(POLICY, "").strip().upper() == "PASSIVE"


def needs_child(clock: str, threads: int | None = None) -> bool:
    """Whether timing by the concrete ``clock`` must leave this process: process CPU time on
    several threads, here, where OpenMP threads spin."""
    threads = torch.get_num_threads() if threads is None else threads
    return clock == "process_cpu" and threads > 1 and not passive_here()


def run(clock: str, fn: Callable, *args):
    """``fn(*args)``, a timing by the concrete ``clock``: in a timing process where it needs one
    (:func:`needs_child`), here otherwise."""
    return call(fn, *args) if needs_child(clock) else fn(*args)


def call(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a child process with passive OpenMP waits and this process's
    intra-op thread count; its return value comes back by pickle. If the child cannot run it
    (e.g. the arguments do not unpickle there), ``fn`` runs here, with a warning that says why."""
    threads = torch.get_num_threads()
    env = dict(os.environ, **{POLICY: "PASSIVE"})
    # the child imports what this process can: the same module search path
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    with tempfile.TemporaryDirectory(prefix="ocspruner-timing-") as tmp:
        task, result = os.path.join(tmp, "task.pkl"), os.path.join(tmp, "result.pkl")
        try:
            with open(task, "wb") as f:
                pickle.dump((threads, fn, args, kwargs), f, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            return _here(fn, args, kwargs, f"the models cannot be pickled ({err})")
        proc = subprocess.run([sys.executable, "-c", _CHILD, task, result], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            return _here(fn, args, kwargs, lines[-1] if lines else f"exit status {proc.returncode}")
        with open(result, "rb") as f:
            return pickle.load(f)


def _here(fn, args, kwargs, why: str):
    warnings.warn(f"timing on {torch.get_num_threads()} threads in this process, whose OpenMP threads spin "
                  f"while they wait (process CPU time then grows with the machine's load), because the "
                  f"timing process failed: {why}; to avoid it, define the model in an importable module, "
                  f"or start Python with {POLICY}=PASSIVE, or time on 1 thread", stacklevel=3)
    return fn(*args, **kwargs)


def _child(task: str, result: str) -> None:
    with open(task, "rb") as f:
        threads, fn, args, kwargs = pickle.load(f)
    torch.set_num_threads(threads)
    out = fn(*args, **kwargs)
    with open(result, "wb") as f:
        pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)


__all__ = ["passive_here", "needs_child", "run", "call", "POLICY"]
