"""Building torch-pruning's DependencyGraph, with its failures caught and two structures repaired.

* Every exception raised inside torch-pruning becomes one :class:`UnsupportedModelError` line
  naming the module it happened at (read off the failing frame), not a library traceback.
* ``torch.chunk`` / ``torch.split``: torch-pruning 1.6 reads split sizes from an autograd
  attribute torch 2.x renamed, and pairs outputs with offsets in graph order; repaired here.
* Channel shuffle (ShuffleNetV2's ``view(b, g, c/g, h, w) -> transpose(1, 2) -> view(b, c, h, w)``):
  torch-pruning mistakes the reshapes for flattens (wrong index maps, or a ZeroDivisionError at
  ImageNet widths). The shuffle is a fixed permutation: output channel ``i*g + k`` is input
  channel ``k*(c/g) + i``. It stays that permutation after pruning only if the g input blocks
  lose the same positions i, so here the shuffle's index map sends position i of a block to the
  g positions ``i*g + k`` (and back to the g aligned inputs): removing one channel pulls its
  aligned partners along, and the group walk (``groupwalk``) merges them into one unit.
"""
from __future__ import annotations

import contextlib
import traceback

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning import _helpers
from torch_pruning.dependency import index_mapping, shape_infer


class UnsupportedModelError(ValueError):
    """A structure the engine cannot prune; the message names the module and the fix."""


def _node_label(node) -> str:
    """A readable, quoted name for a DepGraph node: its module's name, or its op and the nearest
    named module before it."""
    name = getattr(node, "_name", None)
    if name and not name.startswith("_"):
        return f"'{name}'"
    op = node.grad_fn.name() if getattr(node, "grad_fn", None) is not None else type(node.module).__name__
    seen, stack = set(), list(getattr(node, "inputs", []))
    while stack:
        n = stack.pop(0)
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n._name and not n._name.startswith("_"):
            return f"{op} after '{n._name}'"
        stack.extend(n.inputs)
    return op


def _module_at_failure(exc: BaseException, names: dict) -> str:
    """The module (or graph node) the innermost torch-pruning frame was working on."""
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        if "torch_pruning" not in frame.f_code.co_filename:
            continue
        for var in ("reshape_node", "cat_node", "split_node", "slice_node", "node", "module", "m", "layer"):
            v = frame.f_locals.get(var)
            if isinstance(v, nn.Module) and v in names:
                return f"'{names[v]}'"
            if hasattr(v, "grad_fn") and hasattr(v, "inputs"):
                return _node_label(v)
    return "an unnamed operation"


@contextlib.contextmanager
def library_boundary(model: nn.Module, doing: str):
    """Turn any exception from inside torch-pruning into one UnsupportedModelError line."""
    try:
        yield
    except UnsupportedModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - every library failure is reported the same way
        if not any("torch_pruning" in f.filename for f in _tb_frames(exc)):
            raise
        names = {m: n for n, m in model.named_modules()}
        where = _module_at_failure(exc, names)
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise UnsupportedModelError(
            f"torch-pruning failed while {doing} at {where} ({type(exc).__name__}: {msg[:120]}); "
            f"pass the layer before it in ignored_layers") from exc


def _tb_frames(exc):
    return traceback.extract_tb(exc.__traceback__)


# -- channel shuffle ------------------------------------------------------------------------
def _through_elementwise(node, direction: str):
    """Follow single-input/single-output element-wise nodes (clone/contiguous) up or down."""
    while node.type == tp.ops.OPTYPE.ELEMENTWISE and not _swaps_dims_1_2(node, 5):
        nxt = node.inputs if direction == "up" else node.outputs
        if len(nxt) != 1:
            return None
        node = nxt[0]
    return node


def _swaps_dims_1_2(node, ndim: int) -> bool:
    """A transpose(1, 2) or a permute that only swaps dims 1 and 2."""
    fn = getattr(node, "grad_fn", None)
    if fn is None:
        return False
    if "Transpose" in fn.name():
        return sorted((int(fn._saved_dim0) % ndim, int(fn._saved_dim1) % ndim)) == [1, 2]
    if "Permute" in fn.name():
        dims = [int(d) % ndim for d in fn._saved_dims]
        return dims == [0, 2, 1] + list(range(3, len(dims)))
    return False


def find_channel_shuffles(graph) -> dict:
    """Reshape node of the final view -> (first view node, groups, channels) for every
    view(b, g, c/g, ...) -> transpose(1, 2) -> view(b, c, ...) chain in the graph."""
    found = {}
    for node in graph.module2node.values():
        fn = getattr(node, "grad_fn", None)
        if node.type != tp.ops.OPTYPE.RESHAPE or fn is None or len(node.inputs) != 1:
            continue
        sizes = getattr(fn, "_saved_self_sym_sizes", None)      # input of the last view: (b, cpg, g, ...)
        if sizes is None or len(sizes) < 4:
            continue
        tr = _through_elementwise(node.inputs[0], "up")
        if tr is None or not _swaps_dims_1_2(tr, len(sizes)) or len(tr.inputs) != 1:
            continue
        first = _through_elementwise(tr.inputs[0], "up")
        if first is None or first.type != tp.ops.OPTYPE.RESHAPE:
            continue
        in_sizes = getattr(first.grad_fn, "_saved_self_sym_sizes", None)    # (b, c, ...)
        cpg, groups = int(sizes[1]), int(sizes[2])
        if in_sizes is None or len(in_sizes) != len(sizes) - 1 or int(in_sizes[1]) != cpg * groups:
            continue
        found[node] = (first, groups, cpg * groups)
    return found


class _ShuffleMapping:
    """Index map across a channel shuffle with ``groups`` blocks of ``c / groups`` channels.
    Forward (shuffle input -> output): position k*cpg + i goes to i*groups + k', for EVERY block
    k' (so its aligned partners are pulled along); reverse: output i*groups + k comes from every
    k'*cpg + i. Root indices ride along unchanged."""

    def __init__(self, groups: int, channels: int, reverse: bool):
        self.groups, self.cpg, self.reverse = groups, channels // groups, reverse

    def __call__(self, idxs):
        out, seen = [], set()
        for h in idxs:
            i = h.idx // self.groups if self.reverse else h.idx % self.cpg
            for k in range(self.groups):
                j = k * self.cpg + i if self.reverse else i * self.groups + k
                if j not in seen:
                    seen.add(j)
                    out.append(_helpers._HybridIndex(idx=j, root_idx=h.root_idx))
        return out


def _map_concat(graph, cat, force: bool = False) -> None:
    """Map a concat from the widths of its own inputs. torch-pruning checks the width against the
    consumers' and gives up when a shuffle and a chunk stand between them (ShuffleNetV2's stride-1
    units), and ignores a concat along the last dim (channels-last: Swin's patch merging)."""
    if cat.type != tp.ops.OPTYPE.CONCAT or cat.module.offsets is not None and not force:
        return
    if not force and getattr(cat.grad_fn, "_saved_dim", None) != 1:
        return
    sizes = [shape_infer.infer_channels_between(graph, n, cat) for n in cat.inputs]
    if any(v is None for v in sizes):
        return
    offsets = [0]
    for v in sizes:
        offsets.append(offsets[-1] + v)
    cat.module.concat_sizes, cat.module.offsets = sizes, offsets
    for i, inp in enumerate(cat.inputs):
        span = offsets[i:i + 2]
        for dep in cat.dependencies:
            if dep.target is inp:
                dep.index_mapping[1] = index_mapping._ConcatIndexMapping(offset=span, reverse=True)
        for dep in inp.dependencies:
            if dep.target is cat:
                dep.index_mapping[1] = index_mapping._ConcatIndexMapping(offset=span, reverse=False)


def install_shuffle_mappings(graph, shuffles: dict) -> None:
    """Replace torch-pruning's index maps along each shuffle chain by the shuffle's own."""
    for last, (first, groups, channels) in shuffles.items():
        for inp in first.inputs:
            _map_concat(graph, inp)
        chain, node = [last], last.inputs[0]
        while node is not first:
            chain.append(node)
            node = node.inputs[0]
        chain.append(first)
        for n in chain:                      # inside the chain, positions are shuffle-input positions
            for dep in n.dependencies:
                dep.index_mapping = [None, None]
        for dep in first.dependencies:       # ... and the same on the chain's input side
            if dep.target in first.inputs:
                dep.index_mapping = [None, dep.index_mapping[1]]
        for inp in first.inputs:
            for dep in inp.dependencies:
                if dep.target is first:
                    dep.index_mapping = [None, dep.index_mapping[1]]
        for out in last.outputs:
            for dep in last.dependencies:
                if dep.target is out:
                    dep.index_mapping = [_ShuffleMapping(groups, channels, reverse=False), None]
            for dep in out.dependencies:
                if dep.target is last:
                    dep.index_mapping = [_ShuffleMapping(groups, channels, reverse=True), None]


@contextlib.contextmanager
def _layout_aware_mappings():
    """torch-pruning's index-map updates, corrected for what it cannot see: channel-shuffle views
    (mapped by install_shuffle_mappings), and channels-last tensors (tokens, ``(B, H, W, C)``),
    where it takes dim 1 for the channel dim: a reshape that keeps the last dim, or a slice of a
    spatial dim, moves no channel; a concat along the last dim is a channel concat."""
    originals = (index_mapping.update_reshape_index_mapping, index_mapping.update_slice_index_mapping,
                 index_mapping.update_concat_index_mapping)

    def reshape(graph, node):
        if _is_shuffle_view(graph, node) or _keeps_channels_last(graph, node):
            return None
        return originals[0](graph, node)

    def slice_(graph, node):
        fn = node.grad_fn
        sizes = getattr(fn, "_saved_self_sym_sizes", None)
        if sizes is not None and len(node.inputs) == 1 and int(fn._saved_dim) % len(sizes) != len(sizes) - 1 \
                and _channels_last(graph, node.inputs[0], tuple(int(v) for v in sizes)):
            return None
        return originals[1](graph, node)

    def concat(graph, node):
        shape = _shape(node.grad_fn, "out")
        dim = getattr(node.grad_fn, "_saved_dim", None)
        if shape and dim is not None and len(shape) >= 3 and int(dim) % len(shape) == len(shape) - 1 \
                and node.inputs and _channels_last(graph, node.inputs[0], None):
            return _map_concat(graph, node, force=True)
        return originals[2](graph, node)

    (index_mapping.update_reshape_index_mapping, index_mapping.update_slice_index_mapping,
     index_mapping.update_concat_index_mapping) = (reshape, slice_, concat)
    try:
        yield
    finally:
        (index_mapping.update_reshape_index_mapping, index_mapping.update_slice_index_mapping,
         index_mapping.update_concat_index_mapping) = originals


def _channels_last(graph, node, shape) -> bool:
    """The tensor a node outputs holds its channels in the last dim (tokens / NHWC)."""
    shape = shape or (_shape(node.grad_fn, "out") if getattr(node, "grad_fn", None) is not None else None)
    if not shape or len(shape) < 3:
        return False
    channels = shape_infer.infer_out_channels_recursively(graph, node, [0])
    if channels != shape[-1]:
        return False
    if len(shape) == 3 or channels != shape[1]:
        return True
    return _nearest_layer_is_channels_last(node)    # (B, C, H, C) or (B, H, W, C) with H == C


def _nearest_layer_is_channels_last(node) -> bool:
    """Layout by the nearest layer upstream: Linear / LayerNorm write channels last."""
    seen, queue = set(), [node]
    while queue:
        n = queue.pop(0)
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n.module, (nn.Linear, nn.LayerNorm)):
            return True
        if isinstance(n.module, (tp.ops.TORCH_CONV, nn.modules.batchnorm._NormBase, nn.GroupNorm)):
            return False
        queue.extend(n.inputs)
    return False


def _shape(fn, which: str):
    """Forward output shape (``out``) or input shape (``in``) of a view/reshape autograd node."""
    try:
        if which == "out":
            return tuple(int(v) for v in fn._input_metadata[0].shape)
        sizes = getattr(fn, "_saved_self_sym_sizes", None)
        return tuple(int(v) for v in sizes) if sizes is not None else None
    except (AttributeError, IndexError, TypeError):
        return None


def _keeps_channels_last(graph, node) -> bool:
    """A reshape of a channels-last tensor (tokens: ``(..., C)``) that keeps the last dimension,
    such as a window partition ``(B, H, W, C) -> (B*nW, ws*ws, C)`` and its reverse, moves no
    channel. torch-pruning compares channel counts it infers on either side, sees them differ
    (the token count changed) and installs a flatten map that multiplies positions at every such
    reshape; on window attention the position space exploded. Here such reshapes map 1:1."""
    fn = getattr(node, "grad_fn", None)
    if fn is None or len(node.inputs) != 1:
        return False
    shape_in, shape_out = _shape(fn, "in"), _shape(fn, "out")
    if shape_in is None and getattr(node.inputs[0], "grad_fn", None) is not None:
        shape_in = _shape(node.inputs[0].grad_fn, "out")
    if not shape_in or not shape_out or shape_in[-1] != shape_out[-1] or len(shape_in) < 3:
        return False
    channels = shape_infer.infer_out_channels_recursively(graph, node.inputs[0], [0])
    return channels == shape_in[-1]


def _is_shuffle_view(graph, node) -> bool:
    cache = graph.__dict__.setdefault("_ocs_shuffle_views", None)
    if cache is None:
        shuffles = find_channel_shuffles(graph)
        cache = set(shuffles) | {first for first, _, _ in shuffles.values()}
        graph._ocs_shuffle_views = cache
    return node in cache


# Element-wise modules torch_pruning.utils.count_ops_and_params counts (exact types, as it matches
# them): activations by output elements, pooling by input elements, upsampling by output elements.
COUNTED_ACTIVATIONS = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6, nn.GELU)
COUNTED_POOLS = (nn.MaxPool1d, nn.AvgPool1d, nn.AvgPool2d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveMaxPool3d, nn.AdaptiveAvgPool3d)
COUNTED_UPSAMPLE = (nn.Upsample,)
COUNTED_ELEMENTWISE = COUNTED_ACTIVATIONS + COUNTED_POOLS + COUNTED_UPSAMPLE


def build_graph(model: nn.Module, example_inputs, unwrapped_parameters=None):
    """DependencyGraph of ``model`` with split sizes and channel shuffles repaired; any failure
    inside torch-pruning is one UnsupportedModelError naming the module.

    ``graph.counted_calls`` lists every call of a counted element-wise module during the trace as
    (module, call index, graph node of its output or None, output shape)."""
    graph = tp.DependencyGraph()
    calls: list = []

    def record(mod, inputs, output):
        if isinstance(output, torch.Tensor):
            k = sum(1 for c in calls if c[0] is mod)
            calls.append((mod, k, output.grad_fn, tuple(output.shape)))

    hooks = [m.register_forward_hook(record) for m in model.modules() if type(m) in COUNTED_ELEMENTWISE]
    try:
        with library_boundary(model, "tracing the model"), _layout_aware_mappings():
            # a tuple: torch-pruning tries model(*example_inputs) first, which for a bare batch-1
            # tensor runs the model on ONE UNBATCHED example (C, H, W) and only falls back to
            # model(x) when that raises, tracing the model twice (or with the wrong layout)
            inputs = example_inputs if isinstance(example_inputs, (tuple, list, dict)) else (example_inputs,)
            graph.build_dependency(model, example_inputs=inputs,
                                   unwrapped_parameters=unwrapped_parameters, verbose=False)
    finally:
        for h in hooks:
            h.remove()
    node_of = {id(n.grad_fn): n for n in graph.module2node.values() if getattr(n, "grad_fn", None) is not None}
    graph.counted_calls = [(m, k, node_of.get(id(fn)) if fn is not None else None, shape)
                           for m, k, fn, shape in calls]
    with library_boundary(model, "tracing the model"), _layout_aware_mappings():
        refuse_functional_layers(model, graph)
        repair_split_nodes(graph)
        install_shuffle_mappings(graph, find_channel_shuffles(graph))
    return graph


def refuse_functional_layers(model: nn.Module, graph) -> None:
    """A conv/linear layer whose weight is used without calling the module (torchvision's Swin:
    ``F.linear(x, self.qkv.weight)`` inside a functional window attention) is invisible to
    DepGraph: the matmul looks element-wise, so channels appear to flow from a layer's input to
    its output and through the attention scores, and the groups are meaningless (their walk
    multiplied positions without end). Refused here, by name, before any group is built."""
    layers = (nn.Linear, tp.ops.TORCH_CONV)
    inside = {id(sub) for m in graph.module2node if isinstance(m, nn.Module) for sub in m.modules()}
    uncalled = {id(p): n for n, m in model.named_modules() if isinstance(m, layers) and id(m) not in inside
                for p in m.parameters(recurse=False)}
    if not uncalled:
        return
    seen: set = set()
    stack = [n.grad_fn for n in graph.module2node.values() if getattr(n, "grad_fn", None) is not None]
    while stack:
        fn = stack.pop()
        for nxt, _ in getattr(fn, "next_functions", ()) or ():
            if nxt is None or id(nxt) in seen:
                continue
            seen.add(id(nxt))
            var = getattr(nxt, "variable", None)
            if var is not None and id(var) in uncalled:
                name = uncalled[id(var)]
                raise UnsupportedModelError(
                    f"'{name}' is applied functionally (its weight is used without calling the module, e.g. "
                    f"F.linear(x, self.qkv.weight) in a functional window attention): DepGraph cannot follow channels "
                    f"through it; call the module itself (self.qkv(x)) so that its channels can be traced")
            if "Backward" in nxt.name() and nxt.name() in ("TBackward0", "PermuteBackward0", "ViewBackward0",
                                                            "ExpandBackward0", "UnsqueezeBackward0"):
                stack.append(nxt)


# -- torch.split / torch.chunk ----------------------------------------------------------------
def repair_split_nodes(graph) -> None:
    """torch-pruning 1.6 reads split sizes from ``_saved_self_sizes``, which torch >= 2.x calls
    ``_saved_self_sym_sizes``; for ``torch.chunk`` it then guesses sizes from the consumers and
    gets them wrong when a chunk feeds a concatenation directly (ShuffleNetV2's pass-through
    half). It also pairs a split's outputs with offsets in graph order, not in output order.
    Here the sizes come from the autograd node itself, each consumer is matched to its output
    index through its own ``next_functions``, and the index mappings are rebuilt."""
    repaired = False
    for node in graph.module2node.values():
        fn = getattr(node, "grad_fn", None)
        if node.type != tp.ops.OPTYPE.SPLIT or fn is None or getattr(fn, "_saved_dim", None) != 1:
            continue
        total = int(fn._saved_self_sym_sizes[1])
        if hasattr(fn, "_saved_split_sizes"):
            sizes = [int(v) for v in fn._saved_split_sizes]
        else:
            step = int(fn._saved_split_size)
            sizes = [min(step, total - i) for i in range(0, total, step)]
        index_of = {}
        for out in node.outputs:
            nexts = getattr(out.grad_fn, "next_functions", None) or ()
            idx = [nr for f, nr in nexts if f is fn]
            if len(idx) == 1:
                index_of[out] = idx[0]
        if len(index_of) != len(node.outputs):
            continue  # cannot tell which output feeds which consumer: keep torch-pruning's guess
        node.outputs.sort(key=lambda o: index_of[o])
        used = [index_of[o] for o in node.outputs]
        node.module.split_sizes = [sizes[i] for i in used]
        offsets = [0]
        for v in sizes:
            offsets.append(offsets[-1] + v)
        if used != list(range(len(sizes))):
            raise UnsupportedModelError("a torch.split/chunk output is unused; the split cannot be pruned "
                                        "consistently; pass the layer before the split in ignored_layers")
        node.module.offsets = offsets
        repaired = True
    if repaired:   # concat sizes were cached from the wrong split sizes: infer them again
        for node in graph.module2node.values():
            if node.type == tp.ops.OPTYPE.CONCAT:
                node.module.concat_sizes, node.module.offsets = None, None
        index_mapping.update_index_mapping(graph)

