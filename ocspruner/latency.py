"""Latency budget: a per-layer latency table measured once on the current device.

Each conv/linear/norm layer of the model is rebuilt alone at a grid of channel widths (fractions
of its input and output channels) and timed on its own input shape. Each layer's grid is then
summarised by a non-negative least-squares fit ``t = a + b * c_in * c_out + c * (c_in + c_out)``:
a fixed per-call cost, a compute term and a memory term (``t = a + c * c_out`` for layers whose
widths move together: norms, depthwise convs). The partition optimises against this model, so it
must not be able to exploit noise: with raw grid cells (bilinear interpolation) it picked exactly
the widths whose timing had come out spuriously fast on a loaded machine, and missed the budget
by 30 points. The model's latency is the sum plus the part no layer accounts for (activations,
additions, pooling), measured once as dense model time minus the fitted dense sum and scaled with
the kept share of normalisation-layer time, a proxy for activation size. Everything is written in
torch, so marginal costs for the partition's refill step come from one backward pass.

Two things can be timed (``mode``): an inference forward (metric ``"latency"``) or a training
step's forward + backward (metric ``"train_latency"``): what makes a one-cycle run cheaper than
dense training is the pruned network's *training* step. Every timing uses one clock
(``clock.py``): by default per-thread CPU time on one CPU thread and process CPU time on several,
which other processes on a shared machine cannot inflate the way they inflate wall time.
"""
from __future__ import annotations

import statistics
import time
import warnings
from contextlib import ExitStack
from typing import Callable, Optional

import torch
import torch.nn as nn

from . import passive_timing
from .clock import DESCRIPTIONS, clock_function, resolve_clock
from .cost import CostModel
from .dependency import _CONV, _NORM, _as_tuple, _is_depthwise, _is_grouped_conv

FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)
MODES = ("inference", "train")   # what is timed: a forward, or a training step's forward + backward


def _time(fn, repeats: int, warmup: int = 2, timer: Callable[[], float] = time.perf_counter) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = timer()
        fn()
        ts.append(timer() - t)
    # the lower quartile: interference from other processes only ever adds time, so the low
    # end of the distribution is the most repeatable estimate of the op's own cost
    return sorted(ts)[len(ts) // 4]


def step_function(model: nn.Module, example_inputs, mode: str = "inference") -> Callable[[], object]:
    """One call of what a latency metric times: an inference forward (eval mode, no autograd) or
    a training step's forward + backward (train mode; gradients are freshly allocated each call,
    as after ``zero_grad(set_to_none=True)``). Put the model in the right mode and grad state
    around it with :func:`timing_mode`, which also restores ``.grad`` afterwards."""
    inputs = _as_tuple(example_inputs)
    if mode == "inference":
        return lambda: model(*inputs)
    leaves = [p for p in model.parameters() if p.requires_grad] + \
        [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
    grad_out = torch.randn_like(model(*inputs))

    def step():
        for t in leaves:
            t.grad = None
        model(*inputs).backward(grad_out)
    return step


class timing_mode:
    """Context for timing ``model`` in ``mode``: eval + no_grad for inference; train mode with
    autograd for a training step, and the BatchNorm running statistics (which a train-mode
    forward updates) restored afterwards, so that timing leaves the model as it was."""

    def __init__(self, model: nn.Module, mode: str):
        if mode not in MODES:
            raise ValueError(f"unknown timing mode {mode!r}; use one of {list(MODES)}")
        self.model, self.mode = model, mode

    def __enter__(self):
        self.was_training = self.model.training
        self.grad = torch.is_grad_enabled()
        if self.mode == "train":
            self.buffers = {k: v.clone() for k, v in self.model.named_buffers()}
            self.grads = [(p, p.grad) for p in self.model.parameters()]
            self.model.train()
            torch.set_grad_enabled(True)
        else:
            self.model.eval()
            torch.set_grad_enabled(False)
        return self

    def __exit__(self, *exc):
        if self.mode == "train":
            with torch.no_grad():
                for k, v in self.model.named_buffers():
                    v.copy_(self.buffers[k])
            for p, g in self.grads:
                p.grad = g
        self.model.train(self.was_training)
        torch.set_grad_enabled(self.grad)
        return False


def measure_model(model: nn.Module, example_inputs, repeats: int = 10, mode: str = "inference",
                  clock: str = "wall") -> float:
    """Lower-quartile time (seconds, by the concrete ``clock``) of one inference forward or one
    training forward + backward of the whole model; the model is left as it was."""
    with timing_mode(model, mode):
        return _time(step_function(model, example_inputs, mode), repeats, timer=clock_function(clock))


def measure_grids(model: nn.Module, example_inputs, plan, model_repeats: int, repeats: int, mode: str,
                  clock: str, device: str) -> tuple:
    """The timings of a :class:`LatencyTable`: the whole model's time, and for each layer of
    ``plan`` (``(module name, input shape, channel dim, input widths, output widths, single
    axis)``) the grid of a fresh layer like it timed alone at every pair of widths (seconds, by
    the concrete ``clock``). One function, so that it can run in a timing process as one call."""
    timer = clock_function(clock)
    dense_time = measure_model(model, example_inputs, model_repeats, mode, clock)
    modules = dict(model.named_modules())
    tables = []
    for name, shape, channel_dim, grid_in, grid_out, single_axis in plan:
        table = torch.zeros(len(grid_in), len(grid_out), dtype=torch.float64)
        for i, ci in enumerate(grid_in):
            for j, co in enumerate(grid_out):
                layer = _layer_at(modules[name], ci, co).to(device).eval()
                s = list(shape)
                s[channel_dim] = co if single_axis else ci
                x = torch.randn(*s, device=device)
                with timing_mode(layer, mode):
                    # training: the layer's share of a step, its forward + backward (input
                    # gradient included: the layers before it need it)
                    x.requires_grad_(mode == "train")
                    table[i, j] = _time(step_function(layer, x, mode), repeats, timer=timer)
        tables.append(table)
    return dense_time, tables


def time_interleaved(models: dict, x: torch.Tensor, warmup: int = 5, repeats: int = 30, clock: str = "wall",
                     mode: str = "inference") -> dict:
    """Seconds per call by the concrete ``clock`` (clock.py), ``repeats`` samples per model, the
    models interleaved call by call (order reversed every other round). A call is an inference
    forward (``mode="inference"``) or a training step's forward + backward (``"train"``; BatchNorm
    statistics are restored afterwards). Returns ``{name: [seconds, ...]}`` in round order.
    Process CPU time on several threads is taken in a timing process (passive_timing.py)."""
    return passive_timing.run(clock, _interleaved, models, x, warmup, repeats, clock, mode)


def _interleaved(models: dict, x: torch.Tensor, warmup: int, repeats: int, clock: str, mode: str) -> dict:
    with ExitStack() as stack:
        calls = {}
        for name, model in models.items():
            stack.enter_context(timing_mode(model, mode))
            calls[name] = step_function(model, x, mode)
        return time_calls(calls, warmup, repeats, clock, x.device)


def time_calls(calls: dict, warmup: int, repeats: int, clock: str, device: Optional[torch.device] = None) -> dict:
    """Seconds per call of each zero-argument callable of ``calls`` (name -> callable) by the
    concrete ``clock``: ``warmup`` untimed calls each, then ``repeats`` rounds that call every one
    once, in an order reversed every other round, so that drift of a shared machine hits all
    alike. Returns ``{name: [seconds, ...]}`` in round order (pair them with
    :func:`paired_speedup`)."""
    timer = clock_function(clock)
    device = torch.device("cpu") if device is None else device
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    _sync_device(device)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            _sync_device(device)
            t0 = timer()
            calls[name]()
            _sync_device(device)
            times[name].append(timer() - t0)
    return times


def paired_speedup(reference: Sequence[float], times: Sequence[float]) -> float:
    """Median over rounds of reference time / model time of the SAME round."""
    return statistics.median(a / b for a, b in zip(reference, times))


def _sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _layer_at(module: nn.Module, c_in: int, c_out: int) -> nn.Module:
    """A fresh layer like ``module`` with the given channel widths (weights are irrelevant)."""
    if isinstance(module, _CONV):
        depthwise = _is_depthwise(module)
        groups = c_out if depthwise else module.groups
        cin = c_out if depthwise else c_in
        return type(module)(cin, c_out, module.kernel_size, module.stride, module.padding, module.dilation,
                            groups, module.bias is not None)
    if isinstance(module, nn.Linear):
        return nn.Linear(c_in, c_out, module.bias is not None)
    if isinstance(module, nn.GroupNorm):
        return nn.GroupNorm(1, c_out)   # the per-channel work is what matters for timing
    if isinstance(module, nn.LayerNorm):
        return nn.LayerNorm(c_out)
    return type(module)(c_out)          # BatchNorm / InstanceNorm


class LatencyTable:
    """Per-layer latency grids for a model, and the model latency of any keep vector.

    Build it once (``LatencyTable.measure``) and register it on the cost model with
    :meth:`attach`; the budget metric ``"latency"`` then works like ``"flops"``.
    """

    def __init__(self, cost_model: CostModel, example_inputs, repeats: int = 5, fractions=FRACTIONS,
                 device: Optional[torch.device] = None, mode: str = "inference", clock: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"unknown latency mode {mode!r}; use one of {list(MODES)}")
        self.cost_model = cost_model
        self.example_inputs = example_inputs
        self.mode = mode
        space = cost_model.space
        model = space.model
        self.device = device or next(model.parameters()).device
        self.clock = resolve_clock(clock, str(self.device))
        self.clock_description = DESCRIPTIONS[self.clock]
        shapes: dict[nn.Module, tuple] = {}

        def hook(mod, inputs, out):
            if mod not in shapes and inputs and isinstance(inputs[0], torch.Tensor):
                shapes[mod] = tuple(inputs[0].shape)

        handles = [m.register_forward_hook(hook) for m in model.modules()
                   if isinstance(m, _CONV + (nn.Linear,) + _NORM)]
        try:
            with timing_mode(model, "inference"):
                model(*_as_tuple(example_inputs))
        finally:
            for h in handles:
                h.remove()
        module_names = {m: n for n, m in model.named_modules()}
        plan, layout = [], []
        for mod, shape in shapes.items():
            if isinstance(mod, _CONV):
                c_in, c_out = mod.in_channels, mod.out_channels
                channel_dim = 1
            elif isinstance(mod, nn.Linear):
                c_in, c_out, channel_dim = mod.in_features, mod.out_features, len(shape) - 1
            else:
                c_out = mod.num_channels if isinstance(mod, nn.GroupNorm) else \
                    (int(mod.normalized_shape[-1]) if isinstance(mod, nn.LayerNorm) else mod.num_features)
                c_in, channel_dim = c_out, (len(shape) - 1 if isinstance(mod, nn.LayerNorm) else 1)
            # a grouped conv keeps whole groups' worth of channels: grid widths are multiples of groups
            g = mod.groups if _is_grouped_conv(mod) else 1
            grid_in = sorted({max(g, g * round(f * c_in / g)) for f in fractions})
            grid_out = sorted({max(g, g * round(f * c_out / g)) for f in fractions})
            norm = isinstance(mod, _NORM)
            single_axis = norm or _is_depthwise(mod)
            if single_axis:
                grid_in = [c_in]
            plan.append((module_names[mod], shape, channel_dim, grid_in, grid_out, single_axis))
            layout.append((mod, norm))
        # one call times the whole model and every grid cell, in a process where the clock is
        # trustworthy (passive_timing.py: process CPU time on several threads)
        self.dense_model_time, tables = passive_timing.run(self.clock, measure_grids, model, example_inputs, plan,
                                                           max(repeats, 5), repeats, mode, self.clock,
                                                           str(self.device))
        self.entries = []   # (name, in_segment, out_segment, grid_in, grid_out, table, is_norm, fit)
        for (mod, norm), (_, _, _, grid_in, grid_out, single_axis), table in zip(layout, plan, tables):
            name = space.module_names.get(mod, type(mod).__name__)
            # a narrower layer is never slower than a wider one: an outlier cell (a timing hit by
            # another process) is replaced by the fastest time of any wider configuration
            table = table.flip(0, 1).cummin(0).values.cummin(1).values.flip(0, 1)
            in_seg = None if single_axis else cost_model.segment_of(mod, "in")
            out_seg = cost_model.segment_of(mod, "out")
            g_in, g_out = torch.tensor(grid_in, dtype=torch.float64), torch.tensor(grid_out, dtype=torch.float64)
            self.entries.append((name, in_seg, out_seg, g_in, g_out, table, norm,
                                 fit_layer_latency(g_in, g_out, table)))
        self._totals()

    def _totals(self) -> None:
        full = torch.ones(self.cost_model.space.num_channels, dtype=torch.float64)
        layers, norms = self._layer_sum(full)
        self.dense_layers = float(layers)
        self.dense_norms = float(norms)
        self.unaccounted = max(0.0, self.dense_model_time - self.dense_layers)

    def measurements(self) -> dict:
        """What was timed (the grids and the whole-model time): with :meth:`load_measurements`,
        a resumed run predicts exactly as before the stop instead of from a new, noisy timing."""
        return {"dense_model_time": float(self.dense_model_time), "names": [e[0] for e in self.entries],
                "tables": [e[5].clone() for e in self.entries]}

    def load_measurements(self, state: dict) -> None:
        """Replace this table's timings by saved ones (:meth:`measurements`) of the same model."""
        if list(state["names"]) != [e[0] for e in self.entries] or \
                [tuple(t.shape) for t in state["tables"]] != [tuple(e[5].shape) for e in self.entries]:
            raise ValueError("the saved latency table belongs to a different model (its layers or grids differ)")
        self.entries = [(name, in_seg, out_seg, g_in, g_out, t.to(torch.float64), norm,
                         fit_layer_latency(g_in, g_out, t.to(torch.float64)))
                        for (name, in_seg, out_seg, g_in, g_out, _, norm, _), t in zip(self.entries, state["tables"])]
        self.dense_model_time = float(state["dense_model_time"])
        self._totals()
        if self.metric in self.cost_model.dense:   # registered: the cost model's dense value follows
            self.attach()

    def _layer_sum(self, keep: torch.Tensor):
        kept = self.cost_model.kept_counts(keep)
        total = torch.zeros((), dtype=torch.float64)
        norms = torch.zeros((), dtype=torch.float64)
        for name, in_seg, out_seg, g_in, g_out, table, is_norm, coef in self.entries:
            t = layer_latency(coef, kept[in_seg] if in_seg is not None else None, kept[out_seg])
            total = total + t
            if is_norm:
                norms = norms + t
        return total, norms

    def raw(self, keep: torch.Tensor) -> torch.Tensor:
        """Table prediction (seconds), before calibration."""
        keep = keep.to(torch.float64)
        layers, norms = self._layer_sum(keep)
        share = norms / self.dense_norms if self.dense_norms > 0 else torch.ones((), dtype=torch.float64)
        return layers + self.unaccounted * share

    def evaluate(self, keep: torch.Tensor) -> torch.Tensor:
        """Predicted model latency (seconds) at a keep vector (bool or float), calibrated: the
        table's predicted saving is mapped to a real saving through the measured points."""
        saving = 1.0 - self.raw(keep.to(torch.float64)) / self.dense_raw
        return self.dense_raw * (1.0 - calibrated_saving(saving, self.points))

    @property
    def dense_raw(self) -> float:
        return float(self.raw(torch.ones(self.cost_model.space.num_channels, dtype=torch.float64)))

    points: tuple = ()   # measured (predicted saving, real saving) pairs, sorted by the former

    @property
    def metric(self) -> str:
        return "train_latency" if self.mode == "train" else "latency"

    def calibrate(self, keep: torch.Tensor, measured_ratio: float) -> None:
        """Add a measured point: the pruned/dense latency ratio of the sub-network ``keep``,
        measured interleaved so that machine-wide drift cancels. Layers timed alone miss
        whole-model effects (caches, dispatch, memory-bound stages), and by how much depends on
        which layers lose channels, so one global scale fitted at one point oscillated between
        rounds; a monotone map through every measured point converges like a secant method."""
        predicted = 1.0 - float(self.raw(keep)) / self.dense_raw
        real = min(max(1.0 - measured_ratio, 0.0), 0.999)
        points = dict(self.points)
        points[predicted] = real
        self.points = tuple(sorted(points.items()))


def calibrated_saving(saving: torch.Tensor, points) -> torch.Tensor:
    """Piecewise-linear, non-decreasing map of a predicted saving to a real one through (0, 0),
    the measured ``points`` and (1, 1) (removing everything saves everything). Identity without
    points. Differentiable (the partition's refill takes marginal costs through it)."""
    xs, ys = [0.0], [0.0]
    for x, y in points:
        if 0.0 < x < 1.0:
            xs.append(x)
            ys.append(max(y, ys[-1]))   # measurements can be noisy: keep the map monotone
    xs.append(1.0)
    ys.append(1.0)
    x = torch.as_tensor(xs, dtype=torch.float64)
    y = torch.as_tensor(ys, dtype=torch.float64)
    s = saving.to(torch.float64).clamp(0.0, 1.0)
    i = torch.searchsorted(x, s.detach().reshape(1), right=True).clamp(1, len(xs) - 1)[0]
    w = (s - x[i - 1]) / (x[i] - x[i - 1])
    return y[i - 1] + w * (y[i] - y[i - 1])


def fit_layer_latency(grid_in: torch.Tensor, grid_out: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Non-negative least squares of one layer's timing grid: coefficients (a, b, c) of
    ``t = a + b * c_in * c_out + c * (c_in + c_out)``; with a single input width (norms,
    depthwise: the widths move together) ``t = a + c * c_out`` and b = 0."""
    from scipy.optimize import nnls

    ci, co = torch.meshgrid(grid_in, grid_out, indexing="ij")
    ci, co, t = ci.reshape(-1), co.reshape(-1), table.reshape(-1).to(torch.float64)
    if len(grid_in) == 1:
        features = torch.stack([torch.ones_like(co), torch.zeros_like(co), co], 1)
        used = [0, 2]
    else:
        features = torch.stack([torch.ones_like(co), ci * co, ci + co], 1)
        used = [0, 1, 2]
    cols = features[:, used]
    norm = cols.abs().amax(0).clamp_min(1e-12)          # comparable column scales for the solver
    solution, _ = nnls((cols / norm).numpy(), t.numpy())
    coef = torch.zeros(3, dtype=torch.float64)
    coef[used] = torch.as_tensor(solution, dtype=torch.float64) / norm
    return coef


def layer_latency(coef: torch.Tensor, c_in: Optional[torch.Tensor], c_out: torch.Tensor) -> torch.Tensor:
    """The fitted latency of one layer at (possibly fractional) kept widths."""
    a, b, c = coef
    if c_in is None:
        return a + c * c_out
    return a + b * c_in * c_out + c * (c_in + c_out)


def _attach(self) -> None:
    """Make ``"latency"`` (or ``"train_latency"``) a metric of the cost model (budget, reports)."""
    self.cost_model.register_metric(self.metric, self.evaluate)


LatencyTable.attach = _attach


def calibrate_latency(table: LatencyTable, scores_fn, target: float, rounds: int = 3, tolerance: float = 0.02,
                      **partitioner_kw) -> list:
    """Closed-loop calibration: partition at ``target``, prune a copy, measure its real latency
    against the dense model, and add that point to the table's saving map; repeat (each
    round's partition uses the map so far) until the prediction is within ``tolerance`` of the
    measurement, at most ``rounds`` times. Layers timed alone mispredict the savings of a whole
    model by 30-40% on a small CPU ResNet. Returns [(predicted ratio, measured ratio)] per round."""
    import copy

    from .dependency import ChannelSpace
    from .partition import BudgetError, Partitioner
    from .surgery import prune_to

    space = table.cost_model.space
    history = []
    for _ in range(rounds):
        table.attach()
        try:
            part = Partitioner(table.cost_model, table.metric, **partitioner_kw).partition(scores_fn(), target)
        except BudgetError:
            # the last measured point made the target look unreachable (a noisy measurement):
            # drop it and keep the map of the earlier points
            table.points = table.points[:-1] if len(table.points) else table.points
            break
        twin = copy.deepcopy(space.model)
        names = dict(twin.named_modules())
        ignored = [names[space.module_names[m]] for m in space.ignored_layers if m in space.module_names]
        twin_space = ChannelSpace(twin, space.example_inputs, ignored, ignore_output_layer=False)
        prune_to(twin, twin_space, part.keep)
        ratio, spread = measure_ratio(space.model, twin, table.example_inputs, table.mode, table.clock)
        if spread > 0.1 * ratio:   # a noisy machine: measure three times as long (the median of
            # paired ratios is robust; skipping the point, as before, left the table uncalibrated)
            ratio, spread = measure_ratio(space.model, twin, table.example_inputs, table.mode, table.clock,
                                          rounds=90)
        predicted = float(table.evaluate(part.keep)) / table.dense_raw
        history.append((predicted, ratio))
        if abs(predicted - ratio) <= tolerance:
            break
        before = table.points
        table.calibrate(part.keep, ratio)
        table.attach()
        try:
            Partitioner(table.cost_model, table.metric, **partitioner_kw).check_target(target)
        except BudgetError:
            # measured so slow that even every group at its cap would miss the target (a timing
            # inflated by the machine's load: measured at 2 threads under load 3, ratio 0.83 for
            # a 30% budget): keep the map of the earlier points rather than fail the run
            table.points = before
            warnings.warn(f"latency calibration: the pruned model measured {ratio:.3f} of dense, which would make "
                          f"the {target:.0%} {table.metric} budget unreachable; that measurement was dropped (a "
                          f"loaded machine? time on fewer threads or at a quieter moment)", stacklevel=2)
            break
    table.attach()
    return history


def measure_ratio(reference: nn.Module, model: nn.Module, example_inputs, mode: str = "inference",
                  clock: str = "wall", rounds: int = 30) -> tuple[float, float]:
    """``model``'s time over ``reference``'s: the median over ``rounds`` of the ratio of two
    calls made back to back (order alternating), so that both see the same state of a shared
    machine, as ``ocspruner bench`` measures it; and the interquartile range of those ratios."""
    times = time_interleaved({"reference": reference, "model": model}, _as_tuple(example_inputs)[0],
                             warmup=2, repeats=rounds, clock=clock, mode=mode)
    ratios = sorted(m / r for r, m in zip(times["reference"], times["model"]))
    q = len(ratios) // 4
    return statistics.median(ratios), ratios[-1 - q] - ratios[q]
