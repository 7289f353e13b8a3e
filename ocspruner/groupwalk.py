"""Pruning groups from torch-pruning's dependency graph, found by a walk that always finishes.

torch-pruning's ``get_pruning_group`` re-walks a node whenever it arrives with an index list that
is not *equal* (same order, same root indices) to one seen before. On graphs where one tensor is
reached along many paths that permute or dedup index lists (window attention: window partition
and reverse are reshapes, each block has two residual paths, and ``_FlattenIndexMapping`` returns
``list(set(...))`` in hash order), the number of distinct lists grows with the number of paths,
which is exponential in depth: ``get_all_groups`` on Swin/MaxViT-style models ran for minutes.

Here each (node, pruning function, channel position) is visited once: index maps act on one
position at a time, so a position already reached needs no second walk. The cost is linear in
(edges x channels). When a position is reached from two different root channels, those root
channels are merged into one *unit* (union-find): they can only be removed together. Aligned
blocks (heads of nn.MultiheadAttention, groups of a grouped conv, the chunks of ``torch.chunk``,
the blocks of a channel shuffle) become units the same way: position i of every block joins one.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Optional

import torch.nn as nn
import torch_pruning as tp
from torch_pruning import _helpers
from torch_pruning.dependency import Dependency

from .tp_graph import UnsupportedModelError, _node_label

WALK_SECONDS = 60.0     # construction is refused, by name, past this (a walk is linear; never seen)
MAX_POSITIONS = 1 << 20  # positions one node may hold in one group (a flatten before a classifier: ~25k)


class WalkItem:
    """One coupled (node, pruning function) of a group and the positions it holds."""

    __slots__ = ("dep", "idxs", "root_idxs")

    def __init__(self, dep, idxs: list, root_idxs: list):
        self.dep, self.idxs, self.root_idxs = dep, idxs, root_idxs


class WalkGroup:
    """Items of one group; ``unit_of_root[r]`` is the unit root channel r belongs to and
    ``units[u]`` lists the root channels of unit u (units numbered by their smallest root)."""

    def __init__(self, items: list[WalkItem], unit_of_root: list[int], units: list[list[int]]):
        self.items, self.unit_of_root, self.units = items, unit_of_root, units

    def __getitem__(self, k):
        return self.items[k]

    def __len__(self):
        return len(self.items)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def root_handler(graph, module: nn.Module):
    """The output-channel pruning function torch-pruning uses for ``module`` as a group root."""
    pruner = graph.get_pruner_of_module(module)
    if pruner is None or pruner.get_out_channels(module) is None:
        return None, 0
    fn = pruner.prune_out_channels
    if isinstance(module, tp.ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
        fn = tp.pruner.function.prune_depthwise_conv_out_channels
    return fn, int(pruner.get_out_channels(module))


def walk(graph, module: nn.Module, handler, n: int, blocks_of: Callable[[object, object], tuple],
         deadline: Optional[float] = None) -> WalkGroup:
    """Every (node, function, position) coupled to the ``n`` output channels of ``module``."""
    root = graph.module2node[module]
    first = Dependency(handler, handler, source=root, target=root)
    order: list = []                           # (target, handler) keys in discovery order
    deps: dict = {}
    seen: dict = {}                            # key -> {position: root channel}
    uf = _UnionFind(n)

    def register(dep, idxs) -> list:
        key = (dep.target, dep.handler)
        if key not in seen:
            seen[key], deps[key] = {}, dep
            order.append(key)
        slot, fresh = seen[key], []
        b, width = blocks_of(dep.target.module, dep.handler)
        if b > 1:       # aligned blocks: position i of one block brings position i of every block
            per = width // b
            idxs = [_helpers._HybridIndex(h.idx % per + k * per, h.root_idx) for h in idxs for k in range(b)]
        for h in idxs:
            r = slot.get(h.idx)
            if r is None:
                slot[h.idx] = h.root_idx
                fresh.append(h)
                if len(slot) > MAX_POSITIONS:
                    raise UnsupportedModelError(
                        f"the pruning group of '{root.name.split(' (')[0]}' maps over {MAX_POSITIONS} positions onto "
                        f"{_node_label(dep.target)} (DepGraph's index maps multiply there); pass that layer in "
                        f"ignored_layers")
            elif h.root_idx is not None and r is not None and r != h.root_idx:
                uf.union(r, h.root_idx)
        return fresh

    queue = deque([(first, register(first, [_helpers._HybridIndex(i, i) for i in range(n)]))])
    while queue:
        if deadline is not None and time.perf_counter() > deadline:
            raise UnsupportedModelError(
                f"building the pruning groups took over {WALK_SECONDS:.0f} s (at the group of "
                f"'{root.name.split(' (')[0]}'); pass that layer in ignored_layers")
        dep, idxs = queue.popleft()
        node, fn = dep.target, dep.handler
        for nxt in node.dependencies:
            if not nxt.is_triggered_by(fn):
                continue
            new = idxs
            for mapping in nxt.index_mapping:
                if mapping is not None:
                    new = mapping(new)
            if new:
                fresh = register(nxt, new)
                if fresh:
                    queue.append((nxt, fresh))
    ignored = graph.ignored_params
    items = []
    for key in order:
        dep = deps[key]
        if isinstance(dep.target.module, nn.Parameter) and any(dep.target.module is p for p in ignored):
            continue
        pos = sorted(seen[key])
        items.append(WalkItem(dep, pos, [seen[key][p] for p in pos]))
    _join_aligned_blocks(items, uf, blocks_of)
    reps = [uf.find(r) for r in range(n)]
    unit_index: dict[int, int] = {}
    for rep in reps:                           # reps are smallest roots: units ordered by them
        unit_index.setdefault(rep, len(unit_index))
    unit_of_root = [unit_index[rep] for rep in reps]
    units: list[list[int]] = [[] for _ in unit_index]
    for r, u in enumerate(unit_of_root):
        units[u].append(r)
    return WalkGroup(items, unit_of_root, units)


def _join_aligned_blocks(items: list[WalkItem], uf: _UnionFind, blocks_of) -> None:
    """Position i of each of a node's B equal blocks must go together: join their units."""
    for item in items:
        b, n = blocks_of(item.dep.target.module, item.dep.handler)
        if b <= 1:
            continue
        if item.idxs != list(range(n)) or n % b:
            name = _node_label(item.dep.target).split(" (")[0]
            raise UnsupportedModelError(
                f"{name} needs the same channels removed from each of its {b} heads/groups/chunks, but only "
                f"{len(item.idxs)} of its {n} channels belong to one pruning group; pass it in ignored_layers")
        per = n // b
        root_at = item.root_idxs
        for p in range(per):
            for k in range(1, b):
                if root_at[p] is not None and root_at[p + k * per] is not None:
                    uf.union(root_at[p], root_at[p + k * per])


def all_groups(graph, ignored_layers: list, root_module_types: tuple, blocks_of) -> list[tuple]:
    """(root module, root handler, WalkGroup) for every prunable group, as torch-pruning's
    ``get_all_groups`` would list them (same roots, same skipping of ignored layers)."""
    deadline = time.perf_counter() + WALK_SECONDS
    ignored = list(ignored_layers) + list(graph.IGNORED_LAYERS_IN_TRACING)
    visited: set = set()
    out = []
    for m in list(graph.module2node.keys()):
        if any(m is i for i in ignored) or not isinstance(m, tuple(root_module_types)) or m in visited:
            continue
        handler, n = root_handler(graph, m)
        if handler is None:
            continue
        group = walk(graph, m, handler, n, blocks_of, deadline)
        prunable = True
        for item in group.items:
            if graph.is_out_channel_pruning_fn(item.dep.handler):
                visited.add(item.dep.target.module)
                if any(item.dep.target.module is i for i in ignored):
                    prunable = False
        if prunable:
            out.append((m, handler, group))
    return out


def prune_positions(graph, removals: dict) -> None:
    """Call each pruning function once with all its positions (original coordinates).
    ``removals``: (target node, handler) -> (dependency, sorted positions). One call per node and
    function, so positions of several groups in one tensor (a concat's consumer) stay valid."""
    for dep, positions in removals.values():
        if not positions:
            continue
        if dep.target.type == tp.ops.OPTYPE.PARAMETER:
            old = dep.target.module
            name = graph._param_to_name.pop(old)
            new = dep(positions)
            owner = graph.model
            for part in name.split(".")[:-1]:
                owner = getattr(owner, part)
            setattr(owner, name.split(".")[-1], new)
            graph._param_to_name[new] = name
            graph.module2node[new] = graph.module2node.pop(old)
            graph.module2node[new].module = new
        else:
            dep(positions)
