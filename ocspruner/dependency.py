"""Channel groups over torch-pruning's DepGraph, with channel identities that outlive pruning.

This is the one place that talks to torch-pruning's dependency API and smooths its rough edges:

* Groups are built ONCE on the unpruned model; each gets a stable key (the name of its root module)
  and each of its channels an id = its index in the root layer of the ORIGINAL model. Sub-networks,
  checkpoints and reports speak in these ids, so they stay meaningful after physical pruning.
* Every parameter slice a group touches (producer rows, consumer columns, norm affine parameters,
  depthwise kernels, biases, bare nn.Parameters) is listed as a :class:`ParamSlice`: parameter name,
  dimension, local positions and the group channel each position belongs to. Saliency (Eq. 2),
  regularisation (Eq. 8-9), masking and optimizer-state surgery all read these slices, so they
  agree by construction about what "channel c of group g" means.
* All channels of all groups are laid out in one global vector (``group.offset + id``) so that the
  partition and the cost model work on flat tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import torch
import torch.nn as nn
import torch_pruning as tp

from .groupwalk import WalkGroup, all_groups
from .tp_graph import UnsupportedModelError, build_graph, library_boundary

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm,
         nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


@dataclass
class ParamSlice:
    """Positions along one dimension of one parameter that belong to a group's channels."""

    name: str                  # parameter name in model.named_parameters()
    dim: int                   # dimension that holds the channels
    positions: torch.Tensor    # local positions along ``dim`` (long, unique)
    channels: torch.Tensor     # group channel id of each position (long, same length)
    is_weight: bool            # False for biases / norm shifts: no part of saliency (Eq. 2)

    def covers_dim(self, shape: Sequence[int]) -> bool:
        """True when the slice is the whole dimension in order (no index_select needed)."""
        n = shape[self.dim]
        return len(self.positions) == n and bool(self.positions[0] == 0) and bool(self.positions[-1] == n - 1)

    def numel_per_position(self, shape: Sequence[int]) -> int:
        n = 1
        for d, s in enumerate(shape):
            if d != self.dim:
                n *= s
        return n


@dataclass
class ChannelGroup:
    key: str                          # stable key: the root module's name
    size: int                         # channels in the original model
    offset: int                       # start of this group in the global channel vector
    slices: list[ParamSlice]
    layers: list[str]                 # conv/linear modules whose OUTPUT channels are this group
    root_module: nn.Module = field(repr=False)
    root_handler: object = field(repr=False)
    step: int = 1                     # kept units must be a multiple of this (GroupNorm num_groups)
    # Channels per unit. With blocks = B > 1 the root's n channels form B equal blocks (attention
    # heads of nn.MultiheadAttention, groups of a grouped conv) that must all lose the same
    # positions, so group channel j is the aligned set {j + b * size : b < B} of root channels.
    blocks: int = 1
    heads_of: Optional[nn.Module] = field(default=None, repr=False)   # attention whose heads these are
    # The walk that found the group (every coupled node and position, see groupwalk.py); unit u
    # of the group is the set of root channels walk.units[u] (aligned blocks, shuffle partners).
    walk: Optional[WalkGroup] = field(default=None, repr=False)

    @property
    def weight_slices(self) -> list[ParamSlice]:
        return [s for s in self.slices if s.is_weight]


def _as_tuple(example_inputs):
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def find_output_layers(model: nn.Module, example_inputs) -> list[nn.Module]:
    """The conv/linear layer that produces the model's output (the classifier), found by running
    the model once: the last executed conv/linear whose output has the model output's width.
    Pruning its output channels would change the number of classes, so it is ignored by default."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
             for m in model.modules() if isinstance(m, _CONV + _CONV_T + (nn.Linear,))]
    try:
        with torch.no_grad():
            out = model(*_as_tuple(example_inputs))
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        return []
    width = out.shape[-1] if out.dim() == 2 else out.shape[1]
    for m in reversed(order):
        w = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        if w == width:
            return [m]
    return []


def find_qkv_attention(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Attention modules in the qkv-Linear layout (timm's ``Attention``): a ``qkv`` Linear of
    3 x inner features, a ``proj`` Linear from inner features, and an integer ``num_heads``."""
    found = []
    for name, m in model.named_modules():
        qkv, proj, heads = getattr(m, "qkv", None), getattr(m, "proj", None), getattr(m, "num_heads", None)
        if isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and isinstance(heads, int) and heads > 0 \
                and qkv.out_features == 3 * proj.in_features and proj.in_features % heads == 0:
            found.append((name, m))
    return found


class ChannelSpace:
    """All prunable channel groups of a model, as DepGraph sees the unpruned model."""

    def __init__(self, model: nn.Module, example_inputs, ignored_layers: Iterable[nn.Module] = (),
                 ignore_output_layer: bool = True, unwrapped_parameters=None):
        self.model = model
        self.example_inputs = example_inputs
        # Trace in eval mode: a train-mode forward on the random example input would move the
        # BatchNorm running statistics of a pre-trained model.
        was_training = model.training
        model.eval()
        try:
            ignored = list(ignored_layers)
            if ignore_output_layer:
                ignored += [m for m in find_output_layers(model, example_inputs) if m not in ignored]
            # qkv-style attention: heads are pruned as whole units by our own group (DepGraph
            # cannot see through the head reshape); the qkv projection is no DepGraph root
            self.attention = [(n, m) for n, m in find_qkv_attention(model) if m.qkv not in ignored]
            self.graph = build_graph(model, example_inputs, unwrapped_parameters)
        finally:
            model.train(was_training)
        self.ignored_layers = ignored
        self.param_names = {p: n for n, p in model.named_parameters()}
        self.module_names = {m: n for n, m in model.named_modules()}
        self.groups: list[ChannelGroup] = []
        # (module, "out"|"in") -> (local positions, global channel ids), for the cost model
        self.layer_maps: dict[tuple[nn.Module, str], tuple[torch.Tensor, torch.Tensor]] = {}
        offset = 0
        tp_ignored = ignored + [m.qkv for _, m in self.attention]
        with library_boundary(model, "building the pruning groups"):
            found = all_groups(self.graph, tp_ignored, _CONV + _CONV_T + (nn.Linear,), _equal_blocks)
        for root, handler, walk in found:
            group = self._convert(root, handler, walk, offset)
            if group is None:
                continue
            self.groups.append(group)
            offset += group.size
        for name, attn in self.attention:
            group = self._head_group(name, attn, offset)
            if group is not None:
                self.groups.append(group)
                offset += group.size
        self.num_channels = offset
        self.call_maps = self._counted_call_maps()
        self.by_key = {g.key: g for g in self.groups}
        if len(self.by_key) != len(self.groups):
            raise UnsupportedModelError("two pruning groups share a root module name; "
                                        "give every module a unique name")

    # -- building ---------------------------------------------------------------------------
    def _counted_call_maps(self) -> dict:
        """(module, call index) -> (channels, local positions, global channel ids) for every call
        of an element-wise module torch-pruning's counter counts (activations, pooling): which
        channels of its tensor belong to which group, read off the groups' walks at its node."""
        at_node: dict[int, dict[int, int]] = {}
        for g in self.groups:
            if g.walk is None:
                continue
            for item in g.walk.items:
                slot = at_node.setdefault(id(item.dep.target), {})
                for p, r in zip(item.idxs, item.root_idxs):
                    if r is not None:
                        slot.setdefault(p, g.walk.unit_of_root[r] + g.offset)
        maps = {}
        for module, k, node, shape in getattr(self.graph, "counted_calls", []):
            slot = at_node.get(id(node), {}) if node is not None else {}
            channels = _channel_width(self.graph, node, shape, slot)
            pos = sorted(p for p in slot if p < channels)
            maps[(module, k)] = (channels, torch.tensor(pos, dtype=torch.long),
                                 torch.tensor([slot[p] for p in pos], dtype=torch.long))
        return maps

    def _convert(self, root: nn.Module, root_handler, walk: WalkGroup, offset: int) -> Optional[ChannelGroup]:
        """One walk (groupwalk.py) as a ChannelGroup: channel u of the group is unit u of the walk
        (a root channel, or root channels that can only go together)."""
        key = self.module_names[root]
        size = len(walk.units)
        if size <= 1:
            return None  # a single unit can never be pruned (at least one is kept)
        unit_of = walk.unit_of_root
        merged: dict[tuple[str, int], dict[int, int]] = {}
        weight_flags: dict[tuple[str, int], bool] = {}
        layers: list[str] = []
        entries: list[tuple[nn.Module, str, list[int], list[int]]] = []
        norm_groups = []
        for item in walk.items:
            module, handler = item.dep.target.module, item.dep.handler
            is_out = self.graph.is_out_channel_pruning_fn(handler)
            pairs = [(p, unit_of[r]) for p, r in zip(item.idxs, item.root_idxs) if r is not None]
            local, units = [p for p, _ in pairs], [u for _, u in pairs]
            for pname, dim, is_weight, where in self._param_dims(module, is_out, item.dep):
                slot = merged.setdefault((pname, dim), {})
                for pos, u in pairs:
                    for q in where(pos):
                        slot.setdefault(q, u)
                weight_flags[(pname, dim)] = is_weight
            if isinstance(module, nn.Module) and isinstance(module, _CONV + _CONV_T + (nn.Linear,) + _NORM
                                                            + (nn.MultiheadAttention,)):
                entries.append((module, "out" if is_out or isinstance(module, nn.MultiheadAttention) else "in",
                                local, units))
                if is_out and isinstance(module, _CONV + _CONV_T + (nn.Linear,)):
                    layers.append(self.module_names[module])
                if isinstance(module, nn.GroupNorm):   # GroupNorm needs C % num_groups == 0
                    norm_groups.append(module.num_groups)
        per_unit = {len(u) for u in walk.units}
        blocks = per_unit.pop() if len(per_unit) == 1 else 1   # root channels per unit, when uniform
        # kept channels = kept units * blocks must be a multiple of every GroupNorm's num_groups
        step = 1
        for g in norm_groups:
            step = math.lcm(step, g // math.gcd(g, blocks))
        for module, role, local, units in entries:
            pos = torch.tensor(local, dtype=torch.long)
            ids = torch.tensor(units, dtype=torch.long) + offset
            prev = self.layer_maps.get((module, role))
            if prev is not None:  # the same layer reached twice (e.g. depthwise in/out): merge
                pos, ids = torch.cat([prev[0], pos]), torch.cat([prev[1], ids])
                pos, first = _unique_first(pos)
                ids = ids[first]
            self.layer_maps[(module, role)] = (pos, ids)
        slices = []
        for (pname, dim), pos_to_ch in merged.items():
            pos = torch.tensor(sorted(pos_to_ch), dtype=torch.long)
            ch = torch.tensor([pos_to_ch[int(p)] for p in pos], dtype=torch.long)
            slices.append(ParamSlice(pname, dim, pos, ch, weight_flags[(pname, dim)]))
        if size <= step:
            return None  # cannot remove a multiple of `step` and keep a channel
        return ChannelGroup(key=key, size=size, offset=offset, slices=slices, layers=sorted(set(layers)),
                            root_module=root, root_handler=root_handler, step=step, blocks=blocks, walk=walk)

    def _head_group(self, name: str, attn: nn.Module, offset: int) -> Optional[ChannelGroup]:
        """One channel per attention head: head h owns its q, k and v rows of ``qkv`` (weight and
        bias) and its columns of ``proj``. Pruning a head removes all of them and decrements
        ``num_heads``, so the reshape into heads stays consistent."""
        heads, inner = attn.num_heads, attn.proj.in_features
        if heads <= 1:
            return None
        hd = inner // heads
        head_of_pos = torch.arange(inner) // hd                       # position in q (or k, v) -> head
        qkv_pos = torch.arange(3 * inner)
        qkv_heads = head_of_pos[qkv_pos % inner]
        qkv, proj = f"{name}.qkv" if name else "qkv", f"{name}.proj" if name else "proj"
        slices = [ParamSlice(f"{qkv}.weight", 0, qkv_pos, qkv_heads, True),
                  ParamSlice(f"{proj}.weight", 1, torch.arange(inner), head_of_pos, True)]
        if attn.qkv.bias is not None:
            slices.append(ParamSlice(f"{qkv}.bias", 0, qkv_pos, qkv_heads, False))
        for pname, dim in head_parameters(attn):   # relative position bias (Swin): one entry per head
            slices.append(ParamSlice(f"{name}.{pname}" if name else pname, dim, torch.arange(heads),
                                     torch.arange(heads), False))
        self.layer_maps[(attn.qkv, "out")] = (qkv_pos, qkv_heads + offset)
        self.layer_maps[(attn.proj, "in")] = (torch.arange(inner), head_of_pos + offset)
        return ChannelGroup(key=f"{name}:heads", size=heads, offset=offset, slices=slices, layers=[qkv],
                            root_module=attn, root_handler=None, heads_of=attn)

    def _param_dims(self, module, is_out: bool, dep) -> list[tuple]:
        """(parameter name, channel dimension, is_weight, where) for one group item; ``where``
        maps a channel's position in the item to its positions along that parameter dimension."""
        same = _same_position
        if isinstance(module, nn.Parameter):  # a bare parameter (cls token, position embedding)
            dim = dict((id(p), d) for p, d in self.graph.unwrapped_parameters or []).get(id(module))
            if dim is None:
                dim = getattr(dep.target, "pruning_dim", -1)
            dim = dim % module.dim()
            return [(self.param_names[module], dim, True, same)]
        if isinstance(module, nn.MultiheadAttention):
            return self._attention_dims(module)
        if not isinstance(module, nn.Module) or not any(True for _ in module.parameters(recurse=False)):
            return []  # parameter-free node (elementwise op, reshape, concat, pooling, ...)
        mname = self.module_names[module]

        def entry(attr, dim, is_weight=True, where=same):
            p = getattr(module, attr, None)
            return [(f"{mname}.{attr}" if mname else attr, dim, is_weight, where)] if isinstance(p, nn.Parameter) else []

        if isinstance(module, _CONV):
            if is_out or _is_depthwise(module):
                return entry("weight", 0) + entry("bias", 0, False)
            if module.groups > 1:   # weight column c % (C_in / groups) serves input channel c
                per_group = module.in_channels // module.groups
                return entry("weight", 1, where=lambda p: (p % per_group,))
            return entry("weight", 1)
        if isinstance(module, _CONV_T):
            if module.groups > 1:
                raise UnsupportedModelError(f"grouped transposed convolution '{mname}' cannot be pruned yet; "
                                            f"pass it in ignored_layers")
            if is_out:
                return entry("weight", 1) + entry("bias", 0, False)
            return entry("weight", 0)
        if isinstance(module, nn.Linear):
            return entry("weight", 0) + entry("bias", 0, False) if is_out else entry("weight", 1)
        if isinstance(module, _NORM):
            return entry("weight", 0) + entry("bias", 0, False)
        if isinstance(module, nn.PReLU):
            return entry("weight", 0) if module.num_parameters > 1 else []
        if isinstance(module, nn.Embedding):
            return entry("weight", 1)
        raise UnsupportedModelError(
            f"module '{mname}' ({type(module).__name__}) is in a pruning group but ocspruner does not "
            f"know how its parameters are laid out; pass it in ignored_layers")

    def _attention_dims(self, mha: nn.MultiheadAttention) -> list[tuple]:
        """nn.MultiheadAttention: its embedding dimension is both its input and its output. Stream
        channel c owns row c of each of q, k and v in ``in_proj_weight`` (and bias), column c,
        row and column c of ``out_proj``, and entry c of ``bias_k``/``bias_v``."""
        name = self.module_names[mha]
        if not mha._qkv_same_embed_dim:
            raise UnsupportedModelError(
                f"nn.MultiheadAttention '{name}' has kdim/vdim different from embed_dim (separate q/k/v "
                f"weights), which cannot be pruned consistently; pass it in ignored_layers")
        e = mha.embed_dim
        p = (lambda a: f"{name}.{a}") if name else (lambda a: a)
        qkv = lambda c: (c, c + e, c + 2 * e)   # noqa: E731
        dims = [(p("in_proj_weight"), 0, True, qkv), (p("in_proj_weight"), 1, True, _same_position),
                (p("out_proj.weight"), 0, True, _same_position), (p("out_proj.weight"), 1, True, _same_position)]
        if mha.in_proj_bias is not None:
            dims.append((p("in_proj_bias"), 0, False, qkv))
        if mha.out_proj.bias is not None:
            dims.append((p("out_proj.bias"), 0, False, _same_position))
        for attr in ("bias_k", "bias_v"):
            if getattr(mha, attr) is not None:
                dims.append((p(attr), 2, False, _same_position))
        return dims

    # -- queries -----------------------------------------------------------------------------
    def channel_group_index(self) -> torch.Tensor:
        """Global channel -> index of its group."""
        return torch.repeat_interleave(torch.arange(len(self.groups)),
                                       torch.tensor([g.size for g in self.groups], dtype=torch.long))

    def subnetwork(self, keep: torch.Tensor) -> dict[str, frozenset]:
        """M_t: group key -> frozenset of kept channel ids (original indices), from a global mask."""
        keep = keep.bool()
        return {g.key: frozenset(torch.nonzero(keep[g.offset:g.offset + g.size]).flatten().tolist())
                for g in self.groups}

    def keep_mask(self, subnet: dict) -> torch.Tensor:
        """Inverse of :meth:`subnetwork`."""
        keep = torch.zeros(self.num_channels, dtype=torch.bool)
        missing = set(self.by_key) - set(subnet)
        if missing:
            raise ValueError(f"sub-network lacks groups {sorted(missing)[:3]}...; it belongs to another model")
        for key, ids in subnet.items():
            g = self.by_key[key]
            idx = torch.tensor(sorted(ids), dtype=torch.long)
            if len(idx) and (idx.min() < 0 or idx.max() >= g.size):
                raise ValueError(f"channel id out of range in group '{key}'")
            keep[g.offset + idx] = True
        return keep

    def layer_weights(self) -> dict[str, float]:
        """Number of conv/linear layers whose outputs each group holds: weights that make the
        Jaccard average of Eq. 3 run over layers instead of groups."""
        return {g.key: float(max(1, len(g.layers))) for g in self.groups}


def _channel_width(graph, node, shape: tuple, positions: dict) -> int:
    """Channels of an element-wise node's tensor: dim 1 (NCHW) or the last dim (tokens, NHWC),
    whichever torch-pruning's channel inference names; by the positions the groups hold there
    when it cannot tell."""
    if len(shape) < 2:
        return int(shape[-1]) if shape else 1
    candidates = [int(shape[1]), int(shape[-1])]
    if node is not None:
        from torch_pruning.dependency import shape_infer
        ch = shape_infer.infer_out_channels_recursively(graph, node, [0])
        if ch in candidates:
            return int(ch)
    need = max(positions, default=-1) + 1
    return next((c for c in candidates if c >= need), candidates[0])


def head_parameters(attn: nn.Module) -> list[tuple[str, int]]:
    """(name, dim) of the attention module's own parameters with one dimension per head (a
    relative position bias table: (heads, N, N) or ((2w-1)^2, heads))."""
    out = []
    for pname, p in attn.named_parameters(recurse=False):
        dims = [d for d, v in enumerate(p.shape) if v == attn.num_heads]
        if len(dims) == 1 or (dims and p.dim() >= 3 and dims[0] == 0):   # (heads, N, N): heads first
            out.append((pname, dims[0]))
        elif dims:                                                        # (L, heads): heads last
            out.append((pname, dims[-1]))
    return out


def _same_position(pos: int) -> tuple[int]:
    return (pos,)


def _equal_blocks(module, handler=None) -> tuple[int, int]:
    """(B, width): the node splits its ``width`` channels into B equal blocks that must all keep
    the same positions: attention heads of nn.MultiheadAttention (the head split is a reshape),
    groups of a grouped conv, and the outputs of ``torch.chunk`` (equal split sizes; re-chunking a
    pruned tensor must give each branch back its own channels). (1, 0) for anything else."""
    if isinstance(module, nn.MultiheadAttention):
        return module.num_heads, module.embed_dim
    if _is_grouped_conv(module):
        is_out = handler is not None and getattr(handler, "__name__", "") == "prune_out_channels"
        return module.groups, module.out_channels if is_out else module.in_channels
    sizes = getattr(module, "split_sizes", None)
    if isinstance(module, tp.ops._SplitOp) and sizes and len(sizes) > 1 and len(set(sizes)) == 1:
        return len(sizes), sum(sizes)
    return 1, 0


def _is_depthwise(module) -> bool:
    """A depthwise convolution: one group per channel, so its input and output widths move together."""
    return isinstance(module, _CONV) and module.groups > 1 and module.groups == module.in_channels == module.out_channels


def _is_grouped_conv(module) -> bool:
    """A convolution with 1 < groups that is not depthwise (ResNeXt, RegNet)."""
    return isinstance(module, _CONV) and module.groups > 1 and not _is_depthwise(module)


def _unique_first(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique positions and, for each, the index of its first occurrence."""
    seen: dict[int, int] = {}
    for i, p in enumerate(pos.tolist()):
        seen.setdefault(p, i)
    keys = sorted(seen)
    return torch.tensor(keys, dtype=torch.long), torch.tensor([seen[k] for k in keys], dtype=torch.long)
