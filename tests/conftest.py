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
