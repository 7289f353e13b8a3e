"""Eq. 2 against hand-computed numbers."""
import math

import pytest
import torch

from ocspruner.dependency import ChannelSpace
from ocspruner.importance import get_criterion, group_l2, layer_l2, list_criteria


def _set(m):
    with torch.no_grad():
        m.conv1.weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0]]).view(2, 2, 1, 1))
        m.bn.weight.copy_(torch.tensor([2.0, 6.0]))
        m.bn.bias.copy_(torch.tensor([100.0, -100.0]))          # shifts are not saliency
        m.conv2.weight.copy_(torch.tensor([[1.0, 0.0], [2.0, 0.0], [2.0, 0.0]]).view(3, 2, 1, 1))


def test_group_saliency_eq2_by_hand(convbnconv):
    _set(convbnconv)
    space = ChannelSpace(convbnconv, torch.randn(1, 2, 4, 4))
    assert [g.key for g in space.groups] == ["conv1"]          # conv2 is the output layer: ignored
    s = group_l2(dict(convbnconv.named_parameters()), space)
    # |g| = 3 parameter sets: conv1 rows (2 elems), bn gamma (1), conv2 columns (3 elems)
    s0 = (5 / math.sqrt(2) + 2 + 3 / math.sqrt(3)) / 3
    s1 = (1 / math.sqrt(2) + 6 + 0) / 3
    assert s.tolist() == pytest.approx([s0, s1], rel=1e-12)
    # the reference ranks by squared norms; Eq. 2 (a norm) ranks channel 0 first here
    conv = layer_l2(dict(convbnconv.named_parameters()), space)
    assert conv.tolist() == pytest.approx([5 / math.sqrt(2), 1 / math.sqrt(2)])


def test_depthwise_kernels_count_in_saliency():
    import torch.nn as nn

    class DW(nn.Module):
        def __init__(self):
            super().__init__()
            self.pw = nn.Conv2d(2, 2, 1, bias=False)
            self.dw = nn.Conv2d(2, 2, 3, padding=1, groups=2, bias=False)
            self.head = nn.Linear(2, 4)

        def forward(self, x):
            return self.head(self.dw(self.pw(x)).mean(dim=(2, 3)))

    m = DW()
    with torch.no_grad():
        m.pw.weight.fill_(1.0)
        m.dw.weight.zero_()
        m.dw.weight[0].fill_(1.0)              # 9 ones -> ||w||/sqrt(9) = 1
        m.head.weight.fill_(0.0)
    space = ChannelSpace(m, torch.randn(1, 2, 5, 5))
    names = {s.name for g in space.groups for s in g.weight_slices}
    assert "dw.weight" in names
    s = group_l2(dict(m.named_parameters()), space)
    # sets: pw rows (2 elems, norm sqrt2/sqrt2=1), dw kernels (1 vs 0), head columns (0)
    assert s.tolist() == pytest.approx([(1 + 1 + 0) / 3, (1 + 0 + 0) / 3])


def test_criteria_registry():
    assert {"group_l2", "group_l1", "layer_l2", "random"} <= set(list_criteria())
    with pytest.raises(ValueError, match="unknown saliency criterion"):
        get_criterion("nope")


class Three(torch.nn.Module):
    """conv1 (2->3) -> BN(3) -> conv2 (3->2, output layer): one group of 3 channels."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(2, 3, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(3)
        self.conv2 = torch.nn.Conv2d(3, 2, 1, bias=False)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv1(x)))).mean(dim=(2, 3))


def _three():
    m = Three()
    with torch.no_grad():
        m.conv1.weight.copy_(torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]).view(3, 2, 1, 1))
        m.bn.weight.copy_(torch.tensor([2.0, -3.0, 0.5]))
        m.conv2.weight.copy_(torch.ones(2, 3, 1, 1))
    return m, ChannelSpace(m, torch.randn(1, 2, 4, 4))


def test_bn_scale_by_hand():
    m, space = _three()
    s = get_criterion("bn_scale")(dict(m.named_parameters()), space)
    assert s.tolist() == pytest.approx([2.0, 3.0, 0.5])


def test_taylor_by_hand():
    m, space = _three()
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    m.conv1.weight.grad.copy_(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 2.0]]).view(3, 2, 1, 1))
    s = get_criterion("taylor")(dict(m.named_parameters()), space)
    # w*g rows: [0,0], [3,0], [0,2] -> ||.||/sqrt(2); other sets have zero gradient; |g| = 3 sets
    assert s.tolist() == pytest.approx([0.0, 3 / math.sqrt(2) / 3, 2 / math.sqrt(2) / 3])


def test_fpgm_by_hand():
    m, space = _three()
    with torch.no_grad():
        m.bn.weight.fill_(1.0)                               # identical: distance 0 in this set
    s = get_criterion("fpgm")(dict(m.named_parameters()), space)
    rows = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]) / math.sqrt(2)
    d = torch.cdist(rows.double(), rows.double()).sum(1)
    # conv1 rows, bn gamma (0 distances) and conv2 columns (all equal: 0) -> mean over 3 sets
    assert s.tolist() == pytest.approx((d / 3).tolist())
    assert int(s.argmin()) == 2                              # the channel nearest the others goes first
