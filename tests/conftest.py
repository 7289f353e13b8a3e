import warnings

import pytest
import torch
import torch.nn as nn

warnings.filterwarnings("ignore", message=".*Unwrapped parameters.*")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seeded, and one thread: the test models are tiny and gain nothing from a second thread,
    but lose much when the cores are shared (CI has two)."""
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class ConvBNConv(nn.Module):
    """conv1 (2->2, 1x1, no bias) -> BN -> conv2 (2->3, 1x1): one prunable group, hand-checkable."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.conv2 = nn.Conv2d(2, 3, 1, bias=False)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv1(x)))).mean(dim=(2, 3))


@pytest.fixture
def convbnconv():
    return ConvBNConv()


def _flop_time(fn, repeats=1, warmup=2, timer=None):
    """A deterministic clock: 1 ns per FLOP of one call (forward, and backward for a training
    step) plus 10 us per call, so latency tests do not depend on how loaded the machine is.
    ``fn`` runs in the caller's grad mode (a training step needs autograd)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return 1e-9 * counter.get_total_flops() + 1e-5


@pytest.fixture
def flop_clock(monkeypatch):
    """Replace every timing in ocspruner.latency (the table's layer timings and the whole-model
    interleaved timings of calibration and bench) by the FLOP clock."""
    import ocspruner.bench as bench
    import ocspruner.latency as latency

    def interleaved(models, x, warmup=5, repeats=30, clock="wall", mode="inference"):
        out = {}
        for name, model in models.items():
            with latency.timing_mode(model, mode):
                out[name] = [_flop_time(latency.step_function(model, x, mode))] * repeats
        return out

    monkeypatch.setattr(latency, "_time", _flop_time)
    monkeypatch.setattr(latency, "time_interleaved", interleaved)
    monkeypatch.setattr(bench, "time_interleaved", interleaved)
    return _flop_time
