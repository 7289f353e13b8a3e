"""Analytic cost model: Psi(.) of Eq. 1 as a function of which channels are kept.

Shapes are captured ONCE by running the unpruned model on the example input with forward hooks.
Every cost is then a sum of terms ``coef * prod_k kept(segment_k)``, where a *segment* is one
channel dimension of one layer or parameter (e.g. the input channels of ``layer1.0.conv2``) and
``kept(segment)`` counts its positions that survive: positions owned by no group always survive,
the others survive when their group channel is kept. Evaluating a candidate sub-network is thus a
handful of tensor ops on a flat keep vector, with no deep copy, re-trace or pruning of the model,
which is what makes the budget search (``partition.py``) fast. The evaluation is written in torch
so that it is also differentiable in soft keep probabilities (Auto-Train-Once's FLOPs term).

FLOPs convention (metric ``"flops"``): exactly what ``torch_pruning.utils.count_ops_and_params``
counts on the physically pruned model, term for term, so a budget met here is met by that
counter (the number users check; the ptflops convention most pruning papers report), per example:
  * Conv / ConvTranspose: ``prod(out spatial) * prod(kernel) * C_in * (C_out // groups)`` MACs,
    plus ``prod(out spatial) * C_out`` for a bias;
  * Linear: ``tokens * in * out`` MACs, plus ``out`` for a bias (counted once per call, as the
    counter does);
  * BatchNorm / GroupNorm / InstanceNorm / LayerNorm: ``elements`` (x2 with affine parameters);
  * nn.MultiheadAttention (embedding width E, H heads, query/key lengths Lq, Lk): the q/k/v and
    output projections, the q scaling, the biases, QK^T and AV (``2 Lq Lk E``) and the softmax
    (``H Lq Lk``), term for term as torch-pruning's counter adds them;
  * activation MODULES nn.ReLU, ReLU6, PReLU, ELU, LeakyReLU, GELU: output elements; pooling
    modules (Max/Avg/AdaptiveMax/AdaptiveAvg, 1-3d): input elements; nn.Upsample: the elements of
    one example's output divided by the batch (the counter's own rule). Matched by exact type,
    as the counter does (nn.SiLU, nn.Hardswish, nn.Sigmoid and subclasses are not counted).
  Functional calls (``F.relu``, ``x + y`` residual additions, ``F.adaptive_avg_pool2d``, matmuls
  of attention scores) are invisible to the hook counter and are not counted here either.
  Other counters: fvcore counts one FLOP per multiply-add of conv/linear/matmul/einsum (functional
  matmuls included, biases, activations and additions not); thop counts MACs of conv/linear and
  its own per-element rules for norms, pooling and activations. Expect a few points between them.
Parameters (metric ``"params"``): every parameter tensor's element count with pruned dimensions
shrunk, so it equals ``sum(p.numel())`` of the physically pruned model.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from .dependency import _CONV, _CONV_T, _NORM, ChannelSpace, _as_tuple, _is_depthwise
from .tp_graph import COUNTED_ELEMENTWISE, COUNTED_POOLS, COUNTED_UPSAMPLE


class CostModel:
    """Costs of a model as functions of a global keep vector over ``space``'s channels."""

    def __init__(self, space: ChannelSpace):
        self.space = space
        self._seg_keys: dict[tuple, int] = {}
        self._seg_size: list[int] = []
        self._seg_pos: list[torch.Tensor] = []   # group-owned positions (for diagnostics)
        self._seg_ids: list[torch.Tensor] = []   # their global channel ids
        self.layer_costs: dict[str, dict[str, list]] = {}  # module name -> metric -> term indices
        self._terms: dict[str, list[tuple[float, tuple[int, ...]]]] = {"flops": [], "params": []}
        self._term_layer: dict[str, list[str]] = {"flops": [], "params": []}
        self._custom: dict = {}
        self._capture_flops(space.model, space.example_inputs)
        self._capture_params()
        self._compile()

    # -- segments ---------------------------------------------------------------------------
    def _segment(self, key: tuple, size: int, pos: Optional[torch.Tensor], ids: Optional[torch.Tensor]) -> int:
        if key not in self._seg_keys:
            self._seg_keys[key] = len(self._seg_size)
            self._seg_size.append(int(size))
            self._seg_pos.append(pos if pos is not None else torch.zeros(0, dtype=torch.long))
            self._seg_ids.append(ids if ids is not None else torch.zeros(0, dtype=torch.long))
        return self._seg_keys[key]

    def _layer_segment(self, module: nn.Module, role: str, size: int) -> int:
        pos, ids = self.space.layer_maps.get((module, role), (None, None))
        return self._segment(("layer", id(module), role), size, pos, ids)

    def _add(self, metric: str, layer: str, coef: float, *segs: int) -> None:
        if coef:
            self._terms[metric].append((float(coef), segs))
            self._term_layer[metric].append(layer)

    # -- capture ----------------------------------------------------------------------------
    def _capture_flops(self, model: nn.Module, example_inputs) -> None:
        names = self.space.module_names
        records: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

        def hook(mod, inputs, output):
            if isinstance(output, torch.Tensor) and inputs and isinstance(inputs[0], torch.Tensor):
                records.append((mod, inputs[0].shape, output.shape))

        def attention_hook(mod, args, kwargs, output):
            q = args[0] if args else kwargs.get("query")
            k = args[1] if len(args) > 1 else kwargs.get("key")
            if isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor):
                records.append((mod, q.shape, k.shape))

        calls: list[tuple[nn.Module, int, float]] = []   # counted element-wise modules, per call

        def elementwise_hook(mod, inputs, output):
            if not isinstance(output, torch.Tensor):
                return
            k = sum(1 for c in calls if c[0] is mod)
            if isinstance(mod, COUNTED_POOLS):        # the counter's rules: pooling by input elements,
                n = inputs[0].numel()                 # upsampling by ONE example's output elements,
            elif isinstance(mod, COUNTED_UPSAMPLE):   # activations by output elements
                n = output[0].numel()
            else:
                n = output.numel()
            calls.append((mod, k, float(n)))

        handles = [m.register_forward_hook(hook) for m in model.modules()
                   if isinstance(m, _CONV + _CONV_T + (nn.Linear,) + _NORM)]
        handles += [m.register_forward_hook(elementwise_hook) for m in model.modules()
                    if type(m) in COUNTED_ELEMENTWISE]
        handles += [m.register_forward_hook(attention_hook, with_kwargs=True) for m in model.modules()
                    if isinstance(m, nn.MultiheadAttention)]
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                inputs = _as_tuple(example_inputs)
                model(*inputs)
        finally:
            model.train(was_training)
            for h in handles:
                h.remove()
        batch = inputs[0].shape[0] if isinstance(inputs[0], torch.Tensor) and inputs[0].dim() > 0 else 1
        self.batch = batch
        for mod, k, n in calls:
            channels, pos, ids = self.space.call_maps.get((mod, k), (1, None, None))
            seg = self._segment(("call", id(mod), k), channels, pos, ids)
            self._add("flops", names.get(mod, type(mod).__name__), n / batch / channels, seg)
        for mod, in_shape, out_shape in records:
            name = names.get(mod, type(mod).__name__)
            if isinstance(mod, _CONV + _CONV_T):
                spatial = math.prod(out_shape[2:]) * out_shape[0] / batch
                kk = math.prod(mod.kernel_size)
                out_seg = self._layer_segment(mod, "out", mod.out_channels)
                if _is_depthwise(mod):  # groups shrink with the channels: C_in/groups stays 1
                    self._add("flops", name, spatial * kk, out_seg)
                else:
                    in_seg = self._layer_segment(mod, "in", mod.in_channels)
                    self._add("flops", name, spatial * kk / mod.groups, in_seg, out_seg)
                if mod.bias is not None:
                    self._add("flops", name, spatial, out_seg)
            elif isinstance(mod, nn.Linear):
                tokens = math.prod(in_shape) / in_shape[-1] / batch
                in_seg = self._layer_segment(mod, "in", mod.in_features)
                out_seg = self._layer_segment(mod, "out", mod.out_features)
                self._add("flops", name, tokens, in_seg, out_seg)
                if mod.bias is not None:
                    self._add("flops", name, 1.0 / batch, out_seg)
            elif isinstance(mod, nn.MultiheadAttention):
                self._attention_flops(mod, name, in_shape, out_shape, batch)
            else:  # normalisation layers: elements (x2 with affine), linear in the channel count
                channels = _norm_channels(mod)
                affine = getattr(mod, "affine", getattr(mod, "elementwise_affine", False))
                per_channel = math.prod(in_shape) / channels / batch
                seg = self._layer_segment(mod, "out", channels)
                self._add("flops", name, per_channel * (2 if affine else 1), seg)

    def _attention_flops(self, mod: nn.MultiheadAttention, name: str, q_shape, k_shape, batch: int) -> None:
        """nn.MultiheadAttention per example, self-attention layout (q, k, v of width E)."""
        if len(q_shape) != 3:
            raise ValueError(f"nn.MultiheadAttention '{name}': only batched (3-D) inputs are supported")
        len_dim, batch_dim = (1, 0) if mod.batch_first else (0, 1)
        lq, lk = q_shape[len_dim], k_shape[len_dim]
        per = q_shape[batch_dim] / batch                    # examples per call
        e = self._layer_segment(mod, "out", mod.embed_dim)
        self._add("flops", name, per * lq, e)                           # q scaling
        self._add("flops", name, per * (lq + 2 * lk), e, e)             # q, k, v projections
        if mod.in_proj_bias is not None:
            self._add("flops", name, per * (lq + 2 * lk), e)
        self._add("flops", name, per * 2 * lq * lk, e)                  # QK^T and AV over all heads
        self._add("flops", name, per * mod.num_heads * lq * lk)         # softmax
        self._add("flops", name, per * lq, e, e)                        # output projection
        self._add("flops", name, per * lq, e)                           # its bias (always counted)

    def _capture_params(self) -> None:
        dims: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        for g in self.space.groups:
            for s in g.slices:
                # one dimension can hold channels of several groups (a consumer of a concat)
                prev = dims.get((s.name, s.dim))
                pos, ids = s.positions, s.channels + g.offset
                if prev is not None:
                    pos, ids = torch.cat([prev[0], pos]), torch.cat([prev[1], ids])
                dims[(s.name, s.dim)] = (pos, ids)
        for name, p in self.space.model.named_parameters():
            coef, segs = 1.0, []
            for d, size in enumerate(p.shape):
                if (name, d) in dims:
                    pos, ids = dims[(name, d)]
                    segs.append(self._segment(("param", name, d), size, pos, ids))
                else:
                    coef *= size
            self._add("params", name.rsplit(".", 1)[0], coef, *segs)

    def _compile(self) -> None:
        n_seg = len(self._seg_size)
        self._const = n_seg  # index of the constant segment (kept == 1)
        self._seg_index = torch.cat([torch.full((len(i),), s, dtype=torch.long)
                                     for s, i in enumerate(self._seg_ids)] or [torch.zeros(0, dtype=torch.long)])
        self._seg_chan = torch.cat(self._seg_ids or [torch.zeros(0, dtype=torch.long)])
        self._seg_fixed = torch.tensor([size - len(i) for size, i in zip(self._seg_size, self._seg_ids)]
                                       + [1], dtype=torch.float64)
        self._compiled = {}
        for metric, terms in self._terms.items():
            width = max([len(s) for _, s in terms] + [1])
            coef = torch.tensor([c for c, _ in terms], dtype=torch.float64)
            factors = torch.tensor([list(s) + [self._const] * (width - len(s)) for _, s in terms],
                                   dtype=torch.long).reshape(len(terms), width)
            self._compiled[metric] = (coef, factors)
        full = torch.ones(self.space.num_channels, dtype=torch.float64)
        self.dense = {m: float(self.evaluate(full, m)) for m in self._terms}

    def segment_of(self, module: nn.Module, role: str) -> int:
        """Segment index of a layer's input ('in') or output ('out') channels (constant if none)."""
        return self._seg_keys.get(("layer", id(module), role), self._const)

    def register_metric(self, name: str, fn) -> None:
        """Add a metric computed by ``fn(keep) -> tensor`` (e.g. a measured latency table)."""
        self._custom[name] = fn
        self.dense[name] = float(fn(torch.ones(self.space.num_channels, dtype=torch.float64)))

    # -- evaluation -------------------------------------------------------------------------
    def kept_counts(self, keep: torch.Tensor) -> torch.Tensor:
        """Surviving positions of every segment (+ a trailing constant 1)."""
        keep = keep.to(torch.float64) if not keep.is_floating_point() else keep.to(torch.float64)
        # index_select, not keep[ids]: advanced indexing takes a parallel path on CPU that cost
        # 1-30 ms per call here (thread start-up on a shared machine) against ~15 us
        return self._seg_fixed.index_add(0, self._seg_index, keep.index_select(0, self._seg_chan))

    def evaluate(self, keep: torch.Tensor, metric: str = "flops") -> torch.Tensor:
        """Psi at a keep vector (bool, or float probabilities for a differentiable expectation)."""
        if metric in self._custom:
            return self._custom[metric](keep)
        if metric not in self._compiled:
            raise ValueError(f"unknown cost metric {metric!r}; use one of {sorted(self.dense)}")
        coef, factors = self._compiled[metric]
        kept = self.kept_counts(keep)
        return (coef * _gather(kept, factors).prod(dim=1)).sum()

    def marginal_costs(self, keep: torch.Tensor, metric: str = "flops") -> torch.Tensor:
        """d Psi / d keep_c at ``keep`` for every channel: the cost of giving one channel back
        (or the saving of removing it), to first order, from one backward pass."""
        x = keep.to(torch.float64).detach().requires_grad_(True)
        self.evaluate(x, metric).backward()
        return x.grad

    def per_layer(self, keep: torch.Tensor, metric: str = "flops") -> dict[str, float]:
        """Cost of every layer (module name -> value) at a keep vector."""
        coef, factors = self._compiled[metric]
        values = coef * _gather(self.kept_counts(keep), factors).prod(dim=1)
        out: dict[str, float] = {}
        for layer, v in zip(self._term_layer[metric], values.tolist()):
            out[layer] = out.get(layer, 0.0) + v
        return out

    def kept_channels_per_layer(self, keep: torch.Tensor) -> dict[str, tuple[int, int]]:
        """Output channels (kept, original) of every conv/linear layer, for Fig. 6-style plots."""
        kept = self.kept_counts(keep)
        out = {}
        for (kind, *rest), s in self._seg_keys.items():
            if kind == "layer" and rest[1] == "out":
                mod = next((m for m in self.space.module_names if id(m) == rest[0]), None)
                if isinstance(mod, _CONV + _CONV_T + (nn.Linear,)):
                    out[self.space.module_names[mod]] = (int(round(float(kept[s]))), self._seg_size[s])
        return out


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for a 2-D index, through index_select (see kept_counts)."""
    return values.index_select(0, index.reshape(-1)).reshape(index.shape)


def _norm_channels(mod: nn.Module) -> int:
    if isinstance(mod, nn.GroupNorm):
        return mod.num_channels
    if isinstance(mod, nn.LayerNorm):
        return int(mod.normalized_shape[-1])
    return mod.num_features
