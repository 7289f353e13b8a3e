"""Eq. 8 (a real gradient) and Eq. 9 (multiplicative shrink) on hand-checkable slices."""
import math

import pytest
import torch

from ocspruner import OCSPruner
from ocspruner.models import create_model


def _prune_channel_1(m):
    """Engine on ConvBNConv with channel 1 of conv1 marked for pruning."""
    pruner = OCSPruner(m, torch.randn(1, 2, 4, 4), target=0.3, check_structures=False)
    pruner.regularizer.set_pruned(m, torch.tensor([False, True]))
    return pruner


def test_eq8_penalty_value_and_gradient_by_hand(convbnconv):
    m = convbnconv
    with torch.no_grad():
        m.conv1.weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 2.0]]).view(2, 2, 1, 1))
        m.bn.weight.copy_(torch.tensor([2.0, -3.0]))
        m.bn.bias.copy_(torch.tensor([0.5, 4.0]))
        m.conv2.weight.copy_(torch.tensor([[1.0, 2.0], [2.0, 2.0], [2.0, 1.0]]).view(3, 2, 1, 1))
    pruner = _prune_channel_1(m)
    pen = pruner.regularizer.penalty(m)
    # channel 1's sets: conv1 row [1,2], bn gamma -3, bn beta 4, conv2 column [2,2,1]
    assert pen.item() == pytest.approx(math.sqrt(5) + 3 + 4 + 3)
    pen.backward()
    assert m.conv1.weight.grad.flatten().tolist() == pytest.approx([0, 0, 1 / math.sqrt(5), 2 / math.sqrt(5)])
    assert m.bn.weight.grad.tolist() == pytest.approx([0.0, -1.0])
    assert m.bn.bias.grad.tolist() == pytest.approx([0.0, 1.0])
    assert m.conv2.weight.grad.flatten().tolist() == pytest.approx([0, 2 / 3, 0, 2 / 3, 0, 1 / 3])


def test_eq8_changes_training_gradient_and_moves_weights(convbnconv):
    m = convbnconv
    pruner = _prune_channel_1(m)
    pruner.lam, pruner.regularizing = 0.5, True
    x, y = torch.randn(4, 2, 4, 4), torch.randint(0, 3, (4,))

    def grads(with_penalty):
        m.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), y)
        if with_penalty:
            loss = loss + pruner.penalty()
        loss.backward()
        return {n: p.grad.clone() for n, p in m.named_parameters()}

    g0, g1 = grads(False), grads(True)
    w = m.conv1.weight.detach()[1].flatten()
    diff = (g1["conv1.weight"] - g0["conv1.weight"]).view(2, 2)
    assert diff[1].tolist() == pytest.approx((0.5 * w / w.norm()).tolist(), rel=1e-5)
    assert diff[0].abs().max() == 0                      # kept channel untouched
    # one SGD step with the penalty shrinks the pruned channel's norm more than without it
    before = m.conv1.weight.detach()[1].norm().item()
    with torch.no_grad():
        step0 = (m.conv1.weight[1] - 0.1 * g0["conv1.weight"][1]).norm().item()
        step1 = (m.conv1.weight[1] - 0.1 * g1["conv1.weight"][1]).norm().item()
    assert step1 < step0
    assert step1 < before


def test_eq9_shrinks_only_pruning_slices_with_exact_factor():
    m = create_model("tiny_convnet")
    pruner = OCSPruner(m, torch.randn(1, 3, 16, 16), target=0.4)
    part = pruner.partition()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    pruner.regularizer.set_pruned(m, ~part.keep)
    pruner.lam, pruner.regularizing = 2.0, True
    pruner.after_step(0.1)                               # factor 1 - 2*0.1 = 0.8
    expected = {n: p.clone() for n, p in before.items()}
    for g in pruner.space.groups:
        local = ~part.keep[g.offset:g.offset + g.size]
        for s in g.slices:
            pos = s.positions[local[s.channels]]
            expected[s.name].index_copy_(s.dim, pos, expected[s.name].index_select(s.dim, pos) * 0.8)
    changed, should_change = set(), set()
    for n, p in m.named_parameters():
        assert torch.allclose(p.detach(), expected[n], atol=1e-7), n
        if not torch.equal(p.detach(), before[n]):
            changed.add(n)
        if not torch.equal(expected[n], before[n]):
            should_change.add(n)
    assert changed == should_change and len(changed) >= 2   # producer and consumer at least
    # groups released: a new pruning set without those channels leaves them alone
    pruner.regularizer.set_pruned(m, torch.zeros_like(part.keep))
    snap = {n: p.detach().clone() for n, p in m.named_parameters()}
    pruner.after_step(0.1)
    assert all(torch.equal(p.detach(), snap[n]) for n, p in m.named_parameters())


def test_eq8_eq9_switches(convbnconv):
    pruner = _prune_channel_1(convbnconv)
    pruner.lam, pruner.regularizing = 0.5, True
    pruner.config.use_eq8 = False
    assert pruner.penalty().item() == 0.0
    pruner.config.use_eq8, pruner.config.use_eq9 = True, False
    assert pruner.penalty().item() > 0
    w = convbnconv.conv1.weight.detach().clone()
    pruner.after_step(0.1)
    assert torch.equal(w, convbnconv.conv1.weight.detach())


def test_after_backward_gradient_equals_autograd_of_penalty():
    """The fast Eq. 8 path adds exactly the gradient of lambda * penalty()."""
    m = create_model("tiny_convnet")
    pruner = OCSPruner(m, torch.randn(1, 3, 16, 16), target=0.5)
    part = pruner.partition()
    pruner.regularizer.set_pruned(m, ~part.keep)
    pruner.lam, pruner.regularizing = 0.3, True
    m.zero_grad()
    pruner.penalty().backward()
    auto = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad(set_to_none=True)
    pruner.after_backward()
    fast = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    assert set(auto) == set(fast) and len(fast) >= 2
    for n in auto:
        assert torch.allclose(auto[n], fast[n], atol=1e-6), n
