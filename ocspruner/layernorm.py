"""LayerNorm over the kept channels only, so that pruning a LayerNorm'd width changes nothing.

LayerNorm normalises with the mean and variance of the channels present. A channel driven to zero
by sparsity learning still counts in them; once the channel is physically removed it does not, so
the pruned network computes something else than the one that was trained (measured: 1.7-2.4
accuracy points lost at t* on a small ViT / ConvNeXt when 30% of FLOPs come from LayerNorm'd
widths; ``benchmarks/layernorm_jump.py``). While :func:`kept_channel_stats` is active, every
LayerNorm whose channels include pruned ones normalises over the kept channels only, which is
exactly what it will compute after the prune; the removed channels' outputs are zero. Training
under it for the last sparsity-learning epoch(s) lets the network adapt before t*.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dependency import ChannelSpace
from .surgery import removed_positions


def _kept_hook(kept: torch.Tensor):
    """A forward hook replacing a LayerNorm's output by the kept-channel normalisation (a hook,
    not a patched forward, so that a deep copy of the model carries it to the copy's own module)."""
    def hook(ln: nn.LayerNorm, inputs, output):
        x = inputs[0]
        idx = kept.to(x.device)
        w = ln.weight.index_select(0, idx) if ln.weight is not None else None
        b = ln.bias.index_select(0, idx) if ln.bias is not None else None
        yk = F.layer_norm(x.index_select(-1, idx), (len(idx),), w, b, ln.eps)
        return torch.zeros_like(output).index_copy(-1, idx, yk)
    return hook


def layernorm_kept_positions(model: nn.Module, space: ChannelSpace, keep: torch.Tensor) -> dict:
    """LayerNorm module -> kept positions, for the LayerNorms the keep mask cuts."""
    gone = removed_positions(space, keep)
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1 and m.weight is not None:
            pos = gone.get((f"{name}.weight", 0))
            if pos is not None and len(pos):
                mask = torch.ones(m.normalized_shape[0], dtype=torch.bool)
                mask[pos] = False
                out[m] = torch.nonzero(mask).flatten()
    return out


class KeptChannelStats:
    """Installs / removes the kept-channel LayerNorm hooks for a keep mask (the engine holds one)."""

    def __init__(self):
        self.handles: list = []

    def set(self, model: nn.Module, space: ChannelSpace, keep: torch.Tensor) -> int:
        self.clear()
        for ln, kept in layernorm_kept_positions(model, space, keep).items():
            self.handles.append(ln.register_forward_hook(_kept_hook(kept)))
        return len(self.handles)

    def clear(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


@contextlib.contextmanager
def kept_channel_stats(model: nn.Module, space: ChannelSpace, keep: torch.Tensor):
    """Within the block, LayerNorms cut by ``keep`` normalise over their kept channels only."""
    stats = KeptChannelStats()
    stats.set(model, space, keep)
    try:
        yield stats
    finally:
        stats.clear()
