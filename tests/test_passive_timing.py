"""Process CPU time on several threads is taken in a process whose OpenMP threads sleep while
they wait (passive_timing.py): the child really has the policy and the thread count, returns
what the function returns, and a model the child cannot import is timed here, with a warning."""
import os

import pytest
import torch
import torch.nn as nn

from ocspruner import passive_timing
from ocspruner.latency import time_interleaved


def _environment_and_threads():
    return os.environ.get("OMP_WAIT_POLICY"), torch.get_num_threads()


def test_the_timing_process_has_passive_waits_and_the_callers_thread_count(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    torch.set_num_threads(2)
    assert passive_timing.needs_child("process_cpu")
    assert not passive_timing.needs_child("thread_cpu") and not passive_timing.needs_child("wall")
    assert not passive_timing.needs_child("process_cpu", threads=1)
    assert passive_timing.call(_environment_and_threads) == ("PASSIVE", 2)
    # a process started with the policy times in place
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert not passive_timing.needs_child("process_cpu")
    assert passive_timing.run("process_cpu", _environment_and_threads) == ("passive", 2)


def test_interleaved_timing_in_the_timing_process_times_every_model(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    torch.set_num_threads(2)
    models = {"a": nn.Conv2d(3, 8, 3), "b": nn.Conv2d(3, 2, 3)}
    weights = {k: m.weight.clone() for k, m in models.items()}
    times = time_interleaved(models, torch.randn(4, 3, 16, 16), warmup=1, repeats=3, clock="process_cpu",
                             mode="train")
    assert set(times) == {"a", "b"} and all(len(v) == 3 and min(v) > 0 for v in times.values())
    assert all(torch.equal(m.weight, weights[k]) and m.weight.grad is None for k, m in models.items())


def test_a_model_the_timing_process_cannot_import_is_timed_here_with_a_warning(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    torch.set_num_threads(2)
    Local = type("Local", (nn.Module,), {"forward": lambda self, x: self.conv(x)})
    Local.__module__ = "__main__"              # like a class defined in the user's script
    Local.__qualname__ = "NotInTheChildsMain"
    model = Local()
    model.conv = nn.Conv2d(3, 4, 3)
    with pytest.warns(UserWarning, match="spin while they wait.*importable module"):
        times = time_interleaved({"m": model}, torch.randn(2, 3, 8, 8), warmup=0, repeats=2, clock="process_cpu")
    assert len(times["m"]) == 2


def _fails_in_the_timing_process():
    if os.environ.get("OMP_WAIT_POLICY") == "PASSIVE":
        raise RuntimeError("no such module in the child")
    return "timed here"


def test_a_failing_timing_process_is_named_and_the_timing_done_here(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    torch.set_num_threads(2)
    with pytest.warns(UserWarning, match="timing process failed: RuntimeError: no such module in the child"):
        assert passive_timing.call(_fails_in_the_timing_process) == "timed here"


def test_the_cpu_cost_counts_finished_child_processes():
    import subprocess
    import sys
    import time

    from ocspruner.clock import cpu_cost

    own, total = time.process_time(), cpu_cost()
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"],
                   check=True)
    assert cpu_cost() - total >= 0.35                 # the child's 0.4 s of CPU
    assert time.process_time() - own < 0.2            # which process_time alone leaves out
