"""ocspruner.prune: the one-call, in-place prune."""
import copy

import pytest
import torch
import torch.nn.functional as F

import ocspruner
from ocspruner.dependency import ChannelSpace
from ocspruner.models import create_model
from ocspruner.surgery import masked_copy


def test_prune_one_call_in_place_returns_what_it_removed():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10).eval()
    ex = torch.randn(1, 3, 32, 32)
    reference = copy.deepcopy(model)
    space = ChannelSpace(reference, ex)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
    opt.step()
    reference.load_state_dict(model.state_dict())
    result = ocspruner.prune(model, ex, target=0.5, optimizers=[opt])
    assert 0.5 <= result.reduction <= 0.51
    assert result.removed_channels > 0 and set(result.channels) <= set(space.by_key)
    # the returned ids are exactly what disappeared: masking them in the unpruned copy gives
    # the pruned model's output
    keep = torch.ones(space.num_channels, dtype=torch.bool)
    for key, ids in result.channels.items():
        g = space.by_key[key]
        keep[g.offset + torch.tensor(ids)] = False
    masked = masked_copy(reference, space, keep).double().eval()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert (masked(x) - model.double()(x)).abs().max() <= 1e-9
    assert result.shapes["conv1.weight"] == tuple(model.conv1.weight.shape)
    model.float()
    # the optimizer follows the new parameters (momentum sliced, not lost)
    ids = {id(p) for p in model.parameters()}
    assert all(id(p) in ids for g in opt.param_groups for p in g["params"])
    buffers = [opt.state[p]["momentum_buffer"] for g in opt.param_groups for p in g["params"]]
    assert len(buffers) == len(ids)
    assert all(b.shape == p.shape for b, p in zip(buffers, (p for g in opt.param_groups for p in g["params"])))


def test_prune_refuses_an_unreachable_budget():
    model = create_model("resnet20", num_classes=10)
    with pytest.raises(ocspruner.BudgetError):
        ocspruner.prune(model, torch.randn(1, 3, 32, 32), target=0.99, max_prune_fraction=0.5)


def test_prune_with_the_knapsack_and_a_price():
    """The one-call prune takes the partition and the knapsack's price: the FLOPs budget is met
    either way, and the removed channels are what the same engine partition chooses."""
    from ocspruner.cost import CostModel
    from ocspruner.importance import group_l2
    from ocspruner.partition import Partitioner

    ex = torch.randn(1, 3, 32, 32)
    results = {}
    for name, kw in {"ranking": {}, "knapsack": {"partition": "knapsack"},
                     "priced": {"partition": "knapsack", "price": "params"}}.items():
        torch.manual_seed(0)
        model = create_model("resnet20", num_classes=10).eval()
        space = ChannelSpace(copy.deepcopy(model), ex)
        expected = Partitioner(CostModel(space), "flops", 0.75, 1, kw.get("partition", "ranking"), kw.get("price")) \
            .partition(group_l2(dict(space.model.named_parameters()), space), 0.5).keep
        results[name] = ocspruner.prune(model, ex, target=0.5, **kw)
        assert 0.5 <= results[name].reduction <= 0.51
        removed = {g.key: torch.nonzero(~expected[g.offset:g.offset + g.size]).flatten().tolist() for g in space.groups}
        assert results[name].channels == {k: v for k, v in removed.items() if v}
    assert results["knapsack"].channels != results["ranking"].channels
    assert results["priced"].channels != results["knapsack"].channels
