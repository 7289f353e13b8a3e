"""Structured sparsity regularisation of the pruning groups (paper Eq. 8 and Eq. 9).

Both act on every parameter slice of the channels that the current partition marks for pruning:
producer rows, consumer columns, norm scales and shifts, biases, depthwise kernels. Which
channels those are changes every epoch (groups that leave the pruning set are released simply
because the next :meth:`set_pruned` no longer lists them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .dependency import ChannelSpace


@dataclass
class _Target:
    name: str
    dim: int
    positions: torch.Tensor   # local positions to regularise
    channels: torch.Tensor    # compact index (0..n-1) of the pruned channel owning each position
    n_channels: int


class GroupRegularizer:
    def __init__(self, space: ChannelSpace):
        self.space = space
        self.targets: list[_Target] = []
        self._buckets: list[tuple[list[str], list[torch.Tensor]]] = []  # Eq. 9 fused multiply lists
        self._device = None

    @property
    def active(self) -> bool:
        return bool(self.targets)

    def clear(self) -> None:
        self.targets, self._buckets = [], []

    def set_pruned(self, model: nn.Module, pruned: torch.Tensor) -> None:
        """Select the slices of the channels with ``pruned[c] == True`` (global channel mask)."""
        params = dict(model.named_parameters())
        pruned = pruned.bool().cpu()
        self.targets = []
        for g in self.space.groups:
            local = pruned[g.offset:g.offset + g.size]
            if not bool(local.any()):
                continue
            compact = torch.cumsum(local.long(), 0) - 1  # channel id -> 0..n-1 among pruned ones
            for s in g.slices:
                sel = local[s.channels]
                if bool(sel.any()):
                    device = params[s.name].device
                    self.targets.append(_Target(s.name, s.dim, s.positions[sel].to(device),
                                                compact[s.channels[sel]].to(device), int(local.sum())))
        # Eq. 9 multipliers: one 0/1 indicator per (parameter, dim), broadcastable to the
        # parameter; a parameter appears at most once per bucket so fused in-place ops never
        # alias (a conv weight can be hit on dim 0 by one group and on dim 1 by another).
        buckets: list[tuple[list[str], list[torch.Tensor]]] = []
        for t in self.targets:
            p = params[t.name]
            shape = [1] * p.dim()
            shape[t.dim] = p.shape[t.dim]
            ind = torch.zeros(p.shape[t.dim], dtype=p.dtype, device=p.device)
            ind[t.positions] = 1.0
            for names, inds in buckets:
                if t.name not in names:
                    names.append(t.name)
                    inds.append(ind.view(shape))
                    break
            else:
                buckets.append(([t.name], [ind.view(shape)]))
        self._buckets = buckets

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """Eq. 8's sum: sum_{g in G_prune} sum_{w in g} ||w||_2, differentiable.

        Each pruned channel contributes the l2 norm of each of its parameter slices. The
        reference implementation evaluates this under no_grad, so it never moves a weight; here
        autograd differentiates it (d/dw ||w|| = w / ||w||), so it is a real regulariser.
        """
        params = dict(model.named_parameters())
        total = None
        for t in self.targets:
            w = params[t.name].index_select(t.dim, t.positions).movedim(t.dim, 0)
            sq = w.reshape(len(t.positions), -1).pow(2).sum(dim=1)
            per_channel = torch.zeros(t.n_channels, dtype=sq.dtype, device=sq.device).index_add(0, t.channels, sq)
            # clamp: the norm's gradient is 0 (not NaN) at an all-zero channel
            term = per_channel.clamp_min(1e-24).sqrt().sum()
            total = term if total is None else total + term
        if total is None:
            p = next(model.parameters())
            return torch.zeros((), device=p.device, dtype=p.dtype)
        return total

    @torch.no_grad()
    def add_gradient_(self, model: nn.Module, scale: float) -> None:
        """Add ``scale`` * d/dw of Eq. 8's sum straight into ``.grad`` (= scale * w/||w|| on each
        pruned channel's slice): the same gradient as backpropagating ``scale * penalty()``,
        without building or traversing an autograd graph (about half the cost per step)."""
        params = dict(model.named_parameters())
        for t in self.targets:
            p = params[t.name]
            w = p.detach().index_select(t.dim, t.positions)
            trailing = tuple(range(t.dim + 1, w.dim()))
            sq = torch.linalg.vector_norm(w, dim=trailing).pow(2) if trailing else w.pow(2)
            if t.dim > 0:
                sq = sq.sum(dim=tuple(range(t.dim)))
            per_channel = torch.zeros(t.n_channels, dtype=sq.dtype, device=sq.device).index_add_(0, t.channels, sq)
            inv = per_channel.clamp_min(1e-24).rsqrt()[t.channels]
            shape = [1] * w.dim()
            shape[t.dim] = -1
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.index_add_(t.dim, t.positions, w * (inv.view(shape) * scale))

    @torch.no_grad()
    def shrink_(self, model: nn.Module, factor: float) -> None:
        """Eq. 9: multiply every slice of the pruning groups by ``factor`` = 1 - lambda_t * lr_t."""
        if factor == 1.0 or not self._buckets:
            return
        params = dict(model.named_parameters())
        for names, inds in self._buckets:
            data = [params[n].data for n in names]
            # w += (factor - 1) * w * indicator: factor on the pruned slices, 1 elsewhere; one fused call
            torch._foreach_addcmul_(data, data, inds, value=factor - 1.0)
