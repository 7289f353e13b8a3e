"""Channel saliency criteria over channel groups, pluggable by name.

A criterion maps (model parameters, ChannelSpace) to one score per global channel; higher means
more important. The default is the paper's group saliency (Eq. 2).
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

from .dependency import ChannelGroup, ChannelSpace, ParamSlice

Criterion = Callable[[dict, ChannelSpace], torch.Tensor]
_CRITERIA: Dict[str, Criterion] = {}


def register_criterion(name: str):
    def deco(fn: Criterion) -> Criterion:
        _CRITERIA[name] = fn
        return fn
    return deco


def get_criterion(name_or_fn) -> Criterion:
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in _CRITERIA:
        raise ValueError(f"unknown saliency criterion {name_or_fn!r}; choose one of {sorted(_CRITERIA)}")
    return _CRITERIA[name_or_fn]


def list_criteria() -> list[str]:
    return sorted(_CRITERIA)


def _power_sum_except(w: torch.Tensor, dim: int, p: float) -> torch.Tensor:
    """sum |w|^p over every dimension but ``dim``.

    Trailing dimensions go first through the fused ``vector_norm`` (contiguous, no |w|^p
    temporary the size of the weight), leading ones after on the much smaller result. A single
    norm over (0, 2, 3) -- a conv's input-channel axis -- is ~10x slower on CPU.
    """
    if w.dim() > dim + 1:
        w = torch.linalg.vector_norm(w, ord=p, dim=tuple(range(dim + 1, w.dim()))).pow(p)
    else:
        w = w.abs().pow(p)
    if dim > 0:
        w = w.sum(dim=tuple(range(dim)))
    return w


def slice_power_sums(param: torch.Tensor, s: ParamSlice, size: int, p: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group channel: (sum of |w|^p over the slice's elements, number of elements).

    A channel may own several positions of one parameter (a conv channel feeding a flattened
    linear layer owns H*W columns); ``index_add`` folds them together.
    """
    w = param.detach()
    per_pos = _power_sum_except(w, s.dim, p).to(torch.float64).cpu()
    if not s.covers_dim(w.shape):
        per_pos = per_pos[s.positions]
    sums = torch.zeros(size, dtype=torch.float64).index_add_(0, s.channels, per_pos)
    counts = torch.zeros(size, dtype=torch.float64).index_add_(
        0, s.channels, torch.full((len(s.positions),), float(s.numel_per_position(w.shape)), dtype=torch.float64))
    return sums, counts


def group_saliency(params: dict, group: ChannelGroup, p: float = 2.0) -> torch.Tensor:
    """Eq. 2: S(g) = ( sum_{w in g} ||w||_2 / sqrt(|w|) ) / |g|, one value per channel of g.

    ``w`` runs over the parameter sets of the group: every weight slice of every coupled layer
    (producer output rows, consumer input columns, norm scales, depthwise kernels); |w| is the
    number of elements of the channel's slice and |g| the number of parameter sets. Biases and
    norm shifts are not part of the saliency: they carry no measure of a channel's strength.
    Unlike the reference code, the l2 norm is a norm (square root taken) and depthwise kernels
    count. ``p`` generalises to the normalised l_p norm (p=1: mean absolute value).
    """
    slices = group.weight_slices
    score = torch.zeros(group.size, dtype=torch.float64)
    if not slices:
        return score
    for s in slices:
        sums, counts = slice_power_sums(params[s.name], s, group.size, p)
        norm = sums.pow(1.0 / p)
        score += torch.where(counts > 0, norm / counts.pow(1.0 / p), torch.zeros_like(norm))
    return score / len(slices)


@register_criterion("group_l2")
def group_l2(params: dict, space: ChannelSpace) -> torch.Tensor:
    """The paper's Eq. 2 (default)."""
    return torch.cat([group_saliency(params, g, 2.0) for g in space.groups])


@register_criterion("group_l1")
def group_l1(params: dict, space: ChannelSpace) -> torch.Tensor:
    """Eq. 2 with the normalised l1 norm in place of l2."""
    return torch.cat([group_saliency(params, g, 1.0) for g in space.groups])


@register_criterion("layer_l2")
def layer_l2(params: dict, space: ChannelSpace) -> torch.Tensor:
    """Conventional saliency (supplement Table 5): only the root layer's own filters,
    ||w||_2 / sqrt(|w|), ignoring every coupled parameter."""
    out = []
    for g in space.groups:
        root = next((s for s in g.weight_slices if s.name.startswith(g.key + ".") and s.name.endswith("weight")),
                    g.weight_slices[0] if g.weight_slices else None)
        if root is None:
            out.append(torch.zeros(g.size, dtype=torch.float64))
            continue
        sums, counts = slice_power_sums(params[root.name], root, g.size, 2.0)
        out.append(torch.where(counts > 0, sums.sqrt() / counts.sqrt(), torch.zeros_like(sums)))
    return torch.cat(out)


@register_criterion("random")
def random_saliency(params: dict, space: ChannelSpace, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform random scores (the random-structure baseline)."""
    return torch.rand(space.num_channels, generator=generator, dtype=torch.float64)


def _norm_slices(group: ChannelGroup, params: dict) -> list[ParamSlice]:
    """The group's normalisation-layer scale slices (1-D weights: BN/GN/LN gamma)."""
    return [s for s in group.weight_slices if params[s.name].dim() == 1]


@register_criterion("bn_scale")
def bn_scale(params: dict, space: ChannelSpace) -> torch.Tensor:
    """Network-slimming saliency: mean |gamma| of the group's normalisation layers per channel.
    Groups without a normalisation layer fall back to Eq. 2 (scaled to stay comparable)."""
    out = []
    for g in space.groups:
        norms = _norm_slices(g, params)
        if not norms:
            out.append(group_saliency(params, g, 2.0))
            continue
        score = torch.zeros(g.size, dtype=torch.float64)
        for s in norms:
            sums, counts = slice_power_sums(params[s.name], s, g.size, 1.0)
            score += torch.where(counts > 0, sums / counts, torch.zeros_like(sums))
        out.append(score / len(norms))
    return torch.cat(out)


@register_criterion("taylor")
def taylor(params: dict, space: ChannelSpace) -> torch.Tensor:
    """First-order Taylor saliency: ||w * dL/dw||_2 / sqrt(|w|) over the group's parameter sets
    (Eq. 2's normalisation applied to the gradient-weighted parameters). Uses the gradients left
    by the last backward pass; channels without gradients score 0."""
    out = []
    for g in space.groups:
        score = torch.zeros(g.size, dtype=torch.float64)
        slices = g.weight_slices
        for s in slices:
            p = params[s.name]
            if p.grad is None:
                continue
            sums, counts = slice_power_sums((p.detach() * p.grad.detach()), s, g.size, 2.0)
            score += torch.where(counts > 0, sums.sqrt() / counts.sqrt(), torch.zeros_like(sums))
        out.append(score / max(1, len(slices)))
    return torch.cat(out)


@register_criterion("fpgm")
def fpgm(params: dict, space: ChannelSpace) -> torch.Tensor:
    """FPGM-style geometric-median saliency: a channel whose parameters lie close to the others'
    (near the geometric median) is redundant. Per weight set, the sum of Euclidean distances from
    the channel's (normalised) slice to every other channel's, averaged over the group's sets.
    Sets in which channels own different numbers of positions are skipped."""
    out = []
    for g in space.groups:
        score = torch.zeros(g.size, dtype=torch.float64)
        used = 0
        for s in g.weight_slices:
            counts = torch.bincount(s.channels, minlength=g.size)
            if not bool((counts == counts[0]).all()) or int(counts[0]) == 0:
                continue
            w = params[s.name].detach().index_select(s.dim, s.positions).movedim(s.dim, 0)
            order = torch.argsort(s.channels, stable=True)
            vec = w[order].reshape(g.size, -1).to(torch.float64)
            vec = vec / (vec.shape[1] ** 0.5)
            score += torch.cdist(vec, vec).sum(dim=1)
            used += 1
        out.append(score / max(1, used))
    return torch.cat(out)
