"""Auto-Train-Once (ATO), generic over the same DepGraph channel groups as OCSPruner.

The reference ATO code inserts gates by hand and writes FLOPs formulas per architecture. Here:
  * the controller emits one mask entry per channel of every group (the groups' ZIGs);
  * the masked forward pass used to train the controller is done with forward hooks on every
    layer that produces a group's channels (conv/linear/norm outputs are multiplied by the mask);
  * P(w), the FLOPs of the masked model, comes from the analytic cost model evaluated on the
    (straight-through) mask, so R_FLOPs is differentiable with no per-architecture formula;
  * the proximal group-lasso projection (ATO Eq. 3) acts on every parameter slice of a masked
    channel, and the final physical prune uses the same surgery as OCSPruner.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from .dependency import _CONV, _CONV_T, _NORM, ChannelSpace


class _StraightThrough(torch.autograd.Function):
    """Forward: exactly binary (soft > 0.5). Backward: the gradient passes to ``soft`` unchanged.
    (``hard + soft - soft.detach()`` is not exactly binary in floating point.)"""

    @staticmethod
    def forward(ctx, soft):
        return (soft > 0.5).to(soft.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


class Controller(nn.Module):
    """Fixed orthogonal tokens (one per group) -> bi-GRU -> per-group head -> Gumbel-Sigmoid.

    ``offset`` is added to the logits so that the controller starts from the dense network
    (sigmoid(3) = 0.95), as in ATO.
    """

    def __init__(self, group_sizes: list[int], token_dim: int = 64, hidden: int = 128,
                 temperature: float = 0.4, offset: float = 3.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        tokens = torch.empty(len(group_sizes), token_dim)
        nn.init.orthogonal_(tokens, generator=g)
        self.register_buffer("tokens", tokens)
        self.gru = nn.GRU(token_dim, hidden, batch_first=True, bidirectional=True)
        self.heads = nn.ModuleList(nn.Sequential(nn.LayerNorm(2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, c))
                                   for c in group_sizes)
        self.temperature, self.offset = temperature, offset

    def logits(self) -> torch.Tensor:
        h, _ = self.gru(self.tokens.unsqueeze(0))
        return torch.cat([head(h[0, i]) for i, head in enumerate(self.heads)]) + self.offset

    def forward(self, sample: bool = True) -> torch.Tensor:
        """Binary mask in the forward pass, sigmoid gradient in the backward pass (STE)."""
        logits = self.logits()
        if sample:
            u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
            logits = logits + torch.log(u) - torch.log1p(-u)      # logistic = difference of two Gumbels
        return _StraightThrough.apply(torch.sigmoid(logits / self.temperature))

    @torch.no_grad()
    def hard_mask(self) -> torch.Tensor:
        """Deterministic mask (no noise): the architecture the controller currently proposes."""
        return self.logits() > 0


def flops_regularizer(cost: torch.Tensor, dense_cost: float, keep_fraction: float) -> torch.Tensor:
    """ATO's R_FLOPs = log( max(P(w), p P) / (p P) ): zero once the masked model is within budget."""
    budget = keep_fraction * dense_cost
    return torch.log(torch.clamp(cost, min=budget) / budget)


class ChannelMasker:
    """Multiplies every output of a group's producing layers by a per-channel mask, with hooks."""

    def __init__(self, space: ChannelSpace):
        self.space = space
        self.handles = []
        self.mask: Optional[torch.Tensor] = None

    def __enter__(self):
        for (module, role), (pos, ids) in self.space.layer_maps.items():
            if role != "out" or not isinstance(module, _CONV + _CONV_T + (nn.Linear, nn.MultiheadAttention) + _NORM):
                continue
            channel_dim = -1 if isinstance(module, (nn.Linear, nn.LayerNorm, nn.MultiheadAttention)) else 1
            self.handles.append(module.register_forward_hook(self._hook(pos, ids, channel_dim)))
        return self

    def _hook(self, pos, ids, channel_dim):
        def hook(module, inputs, out):
            if isinstance(out, tuple):   # nn.MultiheadAttention: (output, attention weights)
                return (hook(module, inputs, out[0]),) + tuple(out[1:])
            n = out.shape[channel_dim]
            scale = torch.ones(n, dtype=out.dtype, device=out.device)
            scale = scale.index_put((pos.to(out.device),), self.mask[ids.to(out.device)].to(out.dtype))
            shape = [1] * out.dim()
            shape[channel_dim] = n
            return out * scale.view(shape)
        return hook

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []


@torch.no_grad()
def prox_group_lasso_(model: nn.Module, space: ChannelSpace, channels: torch.Tensor, threshold: float) -> None:
    """ATO Eq. 3 (proximal operator of the group l2 norm) on each selected channel's group:
    z <- z - t z/||z|| if ||z|| >= t, else 0, where z is ALL of the channel's parameter slices."""
    if threshold <= 0 or not bool(channels.any()):
        return
    params = dict(model.named_parameters())
    sq = torch.zeros(space.num_channels, dtype=torch.float64)
    entries = []
    for g in space.groups:
        sel_g = channels[g.offset:g.offset + g.size]
        if not bool(sel_g.any()):
            continue
        for s in g.slices:
            mask = sel_g[s.channels]
            if not bool(mask.any()):
                continue
            pos, ch = s.positions[mask], s.channels[mask] + g.offset
            w = params[s.name].detach().index_select(s.dim, pos.to(params[s.name].device))
            per_pos = w.movedim(s.dim, 0).reshape(len(pos), -1).pow(2).sum(1).double().cpu()
            sq.index_add_(0, ch, per_pos)
            entries.append((s.name, s.dim, pos, ch))
    norm = sq.sqrt()
    factor = torch.where(norm >= threshold, 1 - threshold / norm.clamp_min(1e-30), torch.zeros_like(norm))
    for name, dim, pos, ch in entries:
        p = params[name]
        shape = [1] * p.dim()
        shape[dim] = -1
        f = factor[ch].to(p.dtype).to(p.device).view(shape)
        p.data.index_copy_(dim, pos.to(p.device), p.data.index_select(dim, pos.to(p.device)) * f)


def controller_steps(epochs: int, t_start: float, t_end: float) -> tuple[int, int]:
    """Epoch window [start, end) of controller training from fractions of the run."""
    start = int(math.floor(t_start * epochs))
    end = max(start + 1, int(math.ceil(t_end * epochs)))
    return start, end


__all__ = ["Controller", "ChannelMasker", "flops_regularizer", "prox_group_lasso_", "controller_steps"]
