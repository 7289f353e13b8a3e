"""Analytic cost model vs a hook count of the physically pruned model; partition at a budget;
pruned output equals masked output."""
import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from ocspruner import BudgetError, OCSPruner
from ocspruner.dependency import _CONV, _NORM
from ocspruner.models import create_model
from ocspruner.surgery import prune_to
from ocspruner.tp_graph import COUNTED_ELEMENTWISE

COUNTED = _CONV + (nn.Linear,) + _NORM


def _randomise(model):
    """Non-trivial BN statistics and affine parameters, so masking vs pruning is a real test."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def _build(name):
    model = _randomise(create_model(name, num_classes=10)).eval()
    ignored = [model.block.attn.qkv] if name == "attention_block" else []
    return model, ignored


CASES = [("resnet56", 0.3), ("resnet56", 0.5), ("resnet56", 0.7), ("vgg16", 0.5), ("vgg16", 0.7),
         ("mobilenetv2_cifar", 0.3), ("mobilenetv2_cifar", 0.5), ("attention_block", 0.4),
         ("attention_block+embedding", 0.4), ("attention_block+heads", 0.5)]


@pytest.mark.parametrize("name,target", CASES)
def test_cost_model_equals_physical_count_and_masked_output(name, target):
    # The attention block's embedding (residual stream) runs through LayerNorm, which normalises
    # ACROSS channels: zeroing a channel there is not removing it, so masked == pruned holds only
    # with that group kept; "+embedding" prunes it too and checks the costs alone.
    model, ignored = _build(name.split("+")[0])
    if name == "attention_block+heads":   # heads pruned as whole units by our own head group
        ignored = []
    caps = {"block.mlp.fc2": 0.0} if name in ("attention_block", "attention_block+heads") else 0.9
    ex = torch.randn(1, 3, 32, 32)
    pruner = OCSPruner(model, ex, target=target, ignored_layers=ignored, max_prune_fraction=caps)
    part = pruner.partition()
    # the partition reaches the target with the fewest removals: within 0.5 points of the dense
    # FLOPs (the toy attention block has 32-wide layers where one channel is ~1.5 points)
    assert target <= part.reduction <= target + (0.02 if name.startswith("attention") else 0.005)
    # float64: deep random nets reach outputs ~1e4, where float32 rounding alone is ~1e-3;
    # in float64 any structural mismatch still shows while rounding noise is ~1e-11
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    masked = pruner.masked_model(part.keep).eval().double()
    ours_layers = pruner.cost_model.per_layer(part.keep, "flops")
    ours_params = float(pruner.cost_model.evaluate(part.keep, "params"))
    prune_to(model, pruner.space, part.keep)
    with torch.no_grad():
        diff = (masked(x) - model.double()(x)).abs().max().item()
    model.float()
    if name != "attention_block+embedding":
        assert diff <= 1e-5
    _, params, layer_flops, _ = tp.utils.count_ops_and_params(model, ex, layer_wise=True)
    names = {m: n for n, m in model.named_modules()}
    checked = 0
    for module, flops in layer_flops.items():
        if isinstance(module, COUNTED + COUNTED_ELEMENTWISE) and flops is not None:
            assert ours_layers[names[module]] == pytest.approx(flops, abs=1e-6), names[module]
            checked += 1
    assert checked >= 5
    assert sum(ours_layers.values()) == pytest.approx(part.cost)
    assert tp.utils.count_ops_and_params(model, ex)[0] == pytest.approx(part.cost)   # whole model
    assert ours_params == params == sum(p.numel() for p in model.parameters())


def test_dense_cost_equals_the_counters_whole_model_count():
    """Issue 15: the convention is torch-pruning's whole-model count, activation and pooling
    modules included (ResNet-56: 0.4% of it are ReLUs and the average pool)."""
    model, _ = _build("resnet56")
    ex = torch.randn(1, 3, 32, 32)
    pruner = OCSPruner(model, ex, check_structures=False)
    total, _, layer_flops, _ = tp.utils.count_ops_and_params(model, ex, layer_wise=True)
    layers_only = sum(v for m, v in layer_flops.items() if isinstance(m, COUNTED) and v is not None)
    assert total > layers_only * 1.002      # the element-wise modules are a visible share
    assert pruner.cost_model.dense["flops"] == total


def test_unreachable_budget_fails_at_construction_with_max():
    model, _ = _build("resnet20")
    ignored = [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n != "conv1"][:-2]
    with pytest.raises(BudgetError, match=r"at most \d+\.\d+% is removable"):
        OCSPruner(model, torch.randn(1, 3, 32, 32), target=0.6, ignored_layers=ignored)
    with pytest.raises(ValueError, match="target must be a fraction"):
        OCSPruner(model, torch.randn(1, 3, 32, 32), target=1.2)


def test_per_group_cap_min_one_channel_and_round_to():
    model, _ = _build("resnet20")
    ex = torch.randn(1, 3, 32, 32)
    pruner = OCSPruner(model, ex, target=0.5, max_prune_fraction=0.6, round_to=4)
    part = pruner.partition()
    assert part.reduction >= 0.5
    for g in pruner.space.groups:
        kept = int(part.keep[g.offset:g.offset + g.size].sum())
        assert kept >= 1
        assert g.size - kept <= int(0.6 * g.size)
        assert kept == g.size or kept % 4 == 0
    # a per-group cap of 0 protects that group completely
    key = pruner.space.groups[0].key
    p2 = OCSPruner(create_model("resnet20"), ex, target=0.3, max_prune_fraction={key: 0.0})
    g0 = p2.space.groups[0]
    assert bool(p2.partition().keep[g0.offset:g0.offset + g0.size].all())


def test_round_to_refills_whole_blocks_up_to_the_budget():
    """round_to=8 on ResNet-20 (widths 16/32/64): the prefix search alone overshot a 50% target
    to ~66%; whole blocks of removed channels go back, most salient first, while they fit."""
    model, _ = _build("resnet20")
    pruner = OCSPruner(model, torch.randn(1, 3, 32, 32), target=0.5, max_prune_fraction=0.9, round_to=8)
    part = pruner.partition()
    assert 0.5 <= part.reduction <= 0.51
    space, cost = pruner.space, pruner.cost_model
    for g in space.groups:
        kept = int(part.keep[g.offset:g.offset + g.size].sum())
        assert kept == g.size or kept % 8 == 0
    # by hand: 16 channels of one group removed, room for exactly one block of 8: the block holding
    # the two most salient removed channels goes back
    g = max(space.groups, key=lambda g: g.size)
    keep = torch.ones(space.num_channels, dtype=torch.bool)
    keep[g.offset:g.offset + 16] = False
    scores = torch.zeros(space.num_channels, dtype=torch.float64)
    scores[g.offset + 3], scores[g.offset + 9] = 5.0, 4.0
    removed_cost = cost.dense["flops"] - float(cost.evaluate(keep))
    budget = cost.dense["flops"] - removed_cost / 2 + 1.0
    out, out_cost = pruner.partitioner._restore_blocks(keep, float(cost.evaluate(keep)), budget, scores)
    back = torch.nonzero(out[g.offset:g.offset + 16]).flatten().tolist()
    assert len(back) == 8 and 3 in back and 9 in back and out_cost <= budget


def test_params_budget():
    model, _ = _build("resnet20")
    pruner = OCSPruner(model, torch.randn(1, 3, 32, 32), target=0.4, metric="params")
    part = pruner.partition()
    assert 0.4 <= 1 - part.cost / pruner.cost_model.dense["params"] <= 0.405


def test_flatten_channels_own_many_columns():
    """A conv feeding a flattened Linear: each channel owns H*W columns in the cost and the prune."""
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc1 = nn.Linear(8 * 4 * 4, 16)
            self.fc2 = nn.Linear(16, 5)

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 4)
            return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))

    model = _randomise(Flat()).eval()
    ex = torch.randn(1, 3, 8, 8)
    pruner = OCSPruner(model, ex, target=0.5)
    part = pruner.partition()
    masked = pruner.masked_model(part.keep).eval()
    est = pruner.cost_model.per_layer(part.keep)
    prune_to(model, pruner.space, part.keep)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert (masked(x) - model(x)).abs().max() <= 1e-5
    _, _, layer_flops, _ = tp.utils.count_ops_and_params(model, ex, layer_wise=True)
    assert est["fc1"] == pytest.approx(layer_flops[model.fc1])
    assert model.fc1.in_features % 16 == 0


@pytest.mark.parametrize("strategy,metric,target", [("ranking", "flops", 0.7), ("knapsack", "flops", 0.5),
                                                    ("ranking", "params", 0.3)])
def test_partition_leaves_no_removed_channel_that_still_fits(strategy, metric, target):
    """The budget is used to the last channel: adding back any single removed channel breaks it
    (ResNet-56 at 70% FLOPs by ranking left 432 such channels when the refill took one round)."""
    from ocspruner.cost import CostModel
    from ocspruner.dependency import ChannelSpace
    from ocspruner.importance import group_l2
    from ocspruner.partition import Partitioner

    torch.manual_seed(0)
    model = create_model("resnet56").eval()
    space = ChannelSpace(model, torch.randn(1, 3, 32, 32))
    cost = CostModel(space)
    part = Partitioner(cost, metric, 0.75, 1, strategy).partition(group_l2(dict(model.named_parameters()), space),
                                                                   target)
    limit = (1 - target) * cost.dense[metric] * (1 + 1e-12)
    assert part.cost <= limit
    for c in torch.nonzero(~part.keep).flatten().tolist():
        keep = part.keep.clone()
        keep[c] = True
        assert float(cost.evaluate(keep, metric)) > limit, c
