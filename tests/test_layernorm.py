"""Issue 15, item 5: LayerNorm'd widths are pruned without an output jump at t*."""
import torch

from ocspruner import OCSPruner
from ocspruner.layernorm import kept_channel_stats, layernorm_kept_positions
from ocspruner.surgery import zero_pruned_

from zoo_models import ConvNeXtBlock, TorchvisionViT


def _force_layernorm_cut(model, ex):
    """A keep mask that cuts the LayerNorm'd residual width (and nothing else)."""
    pruner = OCSPruner(model, ex, target=0.3, max_prune_fraction=0.9, sl_start_epoch=0, prune_epoch=2,
                       lambda0=0.5, delta=0.5)
    return pruner


def test_engine_trains_with_kept_channel_statistics_so_t_star_changes_nothing():
    torch.manual_seed(0)
    model = ConvNeXtBlock().eval()
    ex = torch.randn(1, 3, 32, 32)
    pruner = _force_layernorm_cut(model, ex)
    scores = torch.zeros(pruner.space.num_channels, dtype=torch.float64)
    stem = pruner.space.by_key["stem"]           # the LayerNorm'd width goes first
    scores[:] = 1.0
    scores[stem.offset:stem.offset + stem.size] = torch.linspace(0, 0.5, stem.size, dtype=torch.float64)
    pruner.criterion = lambda params, space: scores
    pruner.epoch_start(0)
    rep = pruner.epoch_start(1)                  # sparsity learning: M_1 regularised
    assert pruner.regularizing and pruner.layernorm_stats.handles
    keep = pruner.last_partition.keep
    assert layernorm_kept_positions(model, pruner.space, keep)    # the LayerNorm is cut
    zero_pruned_(model, pruner.space, keep)      # as if sparsity learning had converged
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)                        # what the network computes while it trains
        handles = pruner.layernorm_stats.handles
        pruner.layernorm_stats.handles = []
        for h in handles:                        # (without the kept-channel statistics it differs)
            h.remove()
        plain = model(x)
        pruner.layernorm_stats.set(model, pruner.space, keep)
    assert not torch.allclose(before, plain, atol=1e-3)
    rep = pruner.epoch_start(2)                  # t*: pruned to the same M_t
    assert rep.pruned and not pruner.layernorm_stats.handles
    assert torch.equal(pruner.final_keep, keep)
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(before, after, atol=1e-5)


def test_plain_layernorm_differs_and_kept_statistics_match_the_pruned_model():
    """The effect itself: a masked ViT (zeroed stream channels) is not the pruned one; the same
    masked ViT with kept-channel LayerNorm statistics is (to float32 rounding of the weights)."""
    torch.manual_seed(0)
    model = TorchvisionViT().eval()
    ex = torch.randn(1, 3, 32, 32)
    pruner = OCSPruner(model, ex, target=0.3, max_prune_fraction=0.9)
    stream = next(g for g in pruner.space.groups if any(s.name == "conv_proj.weight" for s in g.slices))
    keep = torch.ones(pruner.space.num_channels, dtype=torch.bool)
    keep[stream.offset:stream.offset + 8] = False
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    masked = pruner.masked_model(keep).double()
    with torch.no_grad():
        plain = masked(x)
        with kept_channel_stats(masked, pruner.space, keep):
            kept = masked(x)
    from ocspruner.surgery import prune_to
    prune_to(model, pruner.space, keep)
    assert model.hidden_dim == 32 - 8 * stream.blocks == model.conv_proj.out_channels
    with torch.no_grad():
        pruned = model.double()(x)
    assert (plain - pruned).norm() / pruned.norm() > 0.01
    assert (kept - pruned).abs().max() <= 1e-6   # float32 weights (q rescaled for the new head_dim)
