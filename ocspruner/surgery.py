"""Physical pruning to a sub-network, masking, and optimizer-state surgery.

torch-pruning replaces every pruned nn.Parameter by a new, smaller one. An optimizer still holds
the old objects, and its state (SGD momentum, Adam moments) would be lost if it were rebuilt, as
the reference code does. :func:`prune_to` instead slices each state tensor exactly like its
parameter and re-keys it to the new parameter, so training continues as if the pruned channels
had never existed and the learning-rate schedule is untouched.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch
import torch.nn as nn

from .dependency import ChannelSpace, head_parameters
from .groupwalk import prune_positions
from .tp_graph import library_boundary
from .widths import apply_widths, stored_widths


def removed_positions(space: ChannelSpace, keep: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
    """(parameter name, dim) -> sorted local positions that the keep mask removes."""
    keep = keep.bool().cpu()
    parts: dict[tuple[str, int], list[torch.Tensor]] = {}
    for g in space.groups:
        local = keep[g.offset:g.offset + g.size]
        for s in g.slices:
            gone = s.positions[~local[s.channels]]
            if len(gone):
                # one dimension can hold channels of several groups (a consumer of a concat)
                parts.setdefault((s.name, s.dim), []).append(gone)
    return {key: torch.unique(torch.cat(chunks)) for key, chunks in parts.items()}


@torch.no_grad()
def zero_pruned_(model: nn.Module, space: ChannelSpace, keep: torch.Tensor) -> None:
    """Zero every parameter slice of the removed channels in place (the 'masked model').

    With consumer columns zeroed too, a removed channel cannot influence the output, so the
    masked model computes what the physically pruned one does (for channel-wise layers).
    """
    params = dict(model.named_parameters())
    for (name, dim), pos in removed_positions(space, keep).items():
        p = params[name]
        p.index_fill_(dim, pos.to(p.device), 0.0)


def masked_copy(model: nn.Module, space: ChannelSpace, keep: torch.Tensor) -> nn.Module:
    """A deep copy of ``model`` with the removed channels zeroed (the model itself is untouched).
    Must be called before physical pruning (it uses the original parameter layout)."""
    twin = copy.deepcopy(model)
    zero_pruned_(twin, space, keep)   # parameter names are the same in the copy
    return twin


def prune_to(model: nn.Module, space: ChannelSpace, keep: torch.Tensor,
             optimizers: Optional[list] = None) -> dict[str, tuple]:
    """Physically remove every channel with ``keep == False``, in place, and carry the state of
    ``optimizers`` over to the surviving slices. Returns parameter name -> new shape.

    Must be called once, on the model the ChannelSpace was built from (original layout).
    """
    keep = keep.bool().cpu()
    for g in space.groups:
        kept = int(keep[g.offset:g.offset + g.size].sum())
        if kept != g.size and kept % g.step:
            raise ValueError(f"group '{g.key}' would keep {kept} units; its GroupNorm needs a multiple of {g.step}")
    removed = removed_positions(space, keep)
    old = dict(model.named_parameters())
    old_shapes = {n: tuple(p.shape) for n, p in old.items()}
    head_dims = {m: m.head_dim for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    stored = stored_widths(model)
    removals: dict = {}   # (graph node, pruning function) -> (dependency, positions), all groups
    for g in space.groups:
        local = keep[g.offset:g.offset + g.size]
        if bool(local.all()):
            continue
        if not bool(local.any()):
            raise ValueError(f"refusing to remove every channel of group '{g.key}'")
        idxs = torch.nonzero(~local).flatten().tolist()
        if g.heads_of is not None:
            _prune_heads(g.heads_of, idxs)
            continue
        gone, unit_of = set(idxs), g.walk.unit_of_root   # unit u = root channels g.walk.units[u]
        for item in g.walk.items:
            pos = [p for p, r in zip(item.idxs, item.root_idxs) if r is not None and unit_of[r] in gone]
            if pos:
                removals.setdefault((item.dep.target, item.dep.handler), (item.dep, set()))[1].update(pos)
    # one call per layer and function with every group's positions, in original coordinates
    with library_boundary(model, "pruning the model"):
        prune_positions(space.graph, {k: (dep, sorted(pos)) for k, (dep, pos) in removals.items()})
    apply_widths(stored)   # hidden_dim, embed_dim, ... follow the pruned layers (widths.py)
    for mha, head_dim in head_dims.items():
        _keep_attention_scale(mha, head_dim)
    new = dict(model.named_parameters())

    kept_index: dict[str, dict[int, torch.Tensor]] = {}
    for (name, dim), gone in removed.items():
        size = old_shapes[name][dim]
        mask = torch.ones(size, dtype=torch.bool)
        mask[gone] = False
        kept_index.setdefault(name, {})[dim] = torch.nonzero(mask).flatten()
    for name, shape in old_shapes.items():
        expected = list(shape)
        for dim, idx in kept_index.get(name, {}).items():
            expected[dim] = len(idx)
        if name not in new or tuple(new[name].shape) != tuple(expected):
            got = tuple(new[name].shape) if name in new else None
            raise RuntimeError(f"pruning left '{name}' with shape {got}, expected {tuple(expected)}: "
                               f"torch-pruning and the channel map disagree (please report this model)")

    for opt in optimizers or []:
        remap_optimizer(opt, old, new, kept_index)
    return {n: tuple(p.shape) for n, p in new.items()}


@torch.no_grad()
def _prune_heads(attn: nn.Module, heads: list) -> None:
    """Remove whole heads from a qkv-layout attention IN PLACE (the module objects stay, so
    DepGraph's references for the embedding-dimension groups remain valid)."""
    n, inner = attn.num_heads, attn.proj.in_features
    hd = inner // n
    keep = [h for h in range(n) if h not in set(heads)]
    cols = torch.tensor([h * hd + d for h in keep for d in range(hd)], dtype=torch.long)
    rows = torch.cat([cols + j * inner for j in range(3)])
    qkv, proj = attn.qkv, attn.proj
    qkv.weight = nn.Parameter(qkv.weight.index_select(0, rows.to(qkv.weight.device)).clone())
    if qkv.bias is not None:
        qkv.bias = nn.Parameter(qkv.bias.index_select(0, rows.to(qkv.bias.device)).clone())
    qkv.out_features = len(rows)
    proj.weight = nn.Parameter(proj.weight.index_select(1, cols.to(proj.weight.device)).clone())
    proj.in_features = len(cols)
    for pname, dim in head_parameters(attn):
        p = getattr(attn, pname)
        setattr(attn, pname, nn.Parameter(p.index_select(dim, torch.tensor(keep, device=p.device)).clone()))
    attn.num_heads = len(keep)


@torch.no_grad()
def _keep_attention_scale(mha: nn.MultiheadAttention, old_head_dim: int) -> None:
    """nn.MultiheadAttention scales q.k by 1/sqrt(head_dim). After its head dimension shrank
    from d to d', the q rows are multiplied by sqrt(d'/d) so that the scores stay what they were
    with the removed coordinates zeroed: pruned output == masked output."""
    if mha.head_dim == old_head_dim:
        return
    factor = math.sqrt(mha.head_dim / old_head_dim)
    e = mha.embed_dim
    mha.in_proj_weight[:e].mul_(factor)
    if mha.in_proj_bias is not None:
        mha.in_proj_bias[:e].mul_(factor)


def remap_optimizer(optimizer: torch.optim.Optimizer, old: dict, new: dict,
                    kept_index: dict[str, dict[int, torch.Tensor]]) -> None:
    """Point ``optimizer`` at the new parameters and slice its per-parameter state to match."""
    by_id = {id(p): n for n, p in old.items()}
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            name = by_id.get(id(p))
            if name is None:
                continue
            q = new[name]
            if q is p:
                continue
            group["params"][i] = q
            state = optimizer.state.pop(p, None)
            if state is None:
                continue
            moved = {}
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and tuple(v.shape) == tuple(p.shape):
                    for dim, idx in kept_index.get(name, {}).items():
                        v = v.index_select(dim, idx.to(v.device))
                    moved[k] = v.contiguous()
                else:
                    moved[k] = v  # scalars such as Adam's step count
            optimizer.state[q] = moved


def check_prunable(space: ChannelSpace) -> None:
    """Dry run on a deep copy: remove one channel of every group, prune physically and run the
    example input. Catches structures whose coupling DepGraph cannot see (e.g. attention heads
    reshaped out of a qkv projection), which would otherwise only fail at t*, hours into a run.
    Raises UnsupportedModelError naming the offending group's root module."""
    from .dependency import UnsupportedModelError, _as_tuple

    def attempt(keys: Optional[set]) -> Optional[str]:
        twin = copy.deepcopy(space.model)
        names = dict(twin.named_modules())
        ignored = [names[space.module_names[m]] for m in space.ignored_layers if m in space.module_names]
        twin_space = ChannelSpace(twin, space.example_inputs, ignored, ignore_output_layer=False)
        keep = torch.ones(twin_space.num_channels, dtype=torch.bool)
        for g in twin_space.groups:
            if keys is None or g.key in keys:
                keep[g.offset:g.offset + g.step] = False   # the smallest legal removal
        try:
            prune_to(twin, twin_space, keep)
            twin.eval()
            with torch.no_grad():
                twin(*_as_tuple(space.example_inputs))
        except Exception as exc:  # noqa: BLE001 - any failure means the structure is unsupported
            return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return None

    if attempt(None) is None:
        return
    for g in space.groups:
        err = attempt({g.key})
        if err is not None:
            raise UnsupportedModelError(
                f"channels of '{g.key}' cannot be pruned physically (after removing one, the forward pass "
                f"fails with {err[:160]}); pass that module in ignored_layers")
    raise UnsupportedModelError("pruning all groups together breaks the forward pass although each group alone "
                                "works; please report this model")
