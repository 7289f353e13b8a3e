"""Inference latency and throughput of a dense model against its pruned versions on the current
device (CPU threads or one GPU), beside the theoretical speedup (the FLOPs ratio), as in the
supplement's Table 9.

Timing is interleaved: every round calls each model once, in an order reversed every other round,
so that drift of a shared machine (other processes, frequency changes) hits every model alike.
The speedup of a model is the median over rounds of ``t_reference / t_model`` of the SAME round,
which cancels slow drift that a ratio of two separately taken medians would keep.

Channel rounding (``round_to``): a pruned width such as 37 is often slower per FLOP than 40 or 32
(vector units and GEMM kernels work in blocks). :func:`rounded_variant` re-partitions the same
model at the same FLOPs budget with ``round_to``: the channels the original partition kept are
preferred (score 1 vs 0), every pruned group keeps a multiple of ``round_to`` channels, and the
budget is met (rounding a width up forces more removal elsewhere). Its weights are not trained: it
exists to measure what rounding does to latency, at equal or lower FLOPs.
"""
from __future__ import annotations

import copy
import json
import os
import statistics
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .latency import paired_speedup, time_interleaved  # the timing core, shared with the latency budget


def _set_threads(threads: Optional[int]) -> None:
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        torch.set_num_threads(int(threads))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (``q`` in [0, 100]) of a non-empty sequence."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of an empty sequence")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def model_cost(model: nn.Module, example_inputs: torch.Tensor) -> dict:
    """FLOPs (MACs + bias + norm ops per example, the project's convention) and parameters."""
    from .cost import CostModel
    from .dependency import ChannelSpace

    twin = copy.deepcopy(model).cpu().eval()
    cost = CostModel(ChannelSpace(twin, example_inputs.cpu()[:1]))
    return {"flops": cost.dense["flops"], "params": float(sum(p.numel() for p in model.parameters()))}


def layer_widths(model: nn.Module) -> list:
    """Output width of every conv and linear layer, in module order."""
    return [m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
            for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def bench_models(models: dict, input_shape: Sequence[int], batch_sizes: Sequence[int] = (1, 64),
                 warmup: int = 5, repeats: int = 30, device: str = "cpu", threads: Optional[int] = None,
                 reference: Optional[str] = None, channels_last: bool = False, progress=None,
                 clock: str = "auto", training: bool = True) -> dict:
    """Time every model of ``models`` (name -> nn.Module, same input) at each batch size.

    ``reference`` (default: the first model) is the dense baseline of the speedups. Returns a dict
    with the setting (device, threads, torch, clock) and one row per (batch, model): FLOPs, params,
    median and p90 latency (ms), throughput (examples/s), measured speedup, theoretical speedup
    (reference FLOPs / model FLOPs) and efficiency (measured / theoretical); with ``training``
    also the training step's (forward + backward) median time and speed-up. ``clock``: see
    clock.py (``auto``: per-thread CPU time on one thread, process CPU time on several, wall on
    CUDA). ``progress``: a callable given one line before each batch size is timed (the CLI
    prints it).
    """
    if not models:
        raise ValueError("no models to benchmark")
    if any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    _set_threads(threads)
    from .clock import DESCRIPTIONS, resolve_clock

    clock = resolve_clock(clock, str(dev))
    reference = reference or next(iter(models))
    example = torch.randn(1, *input_shape)
    costs = {name: model_cost(m, example) for name, m in models.items()}
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    nets = {name: copy.deepcopy(m).to(dev).eval().to(memory_format=fmt) for name, m in models.items()}
    rows = []
    gen = torch.Generator().manual_seed(0)
    for i, batch in enumerate(batch_sizes):
        if progress is not None:
            progress(f"timing batch {batch} ({i + 1}/{len(batch_sizes)}): {', '.join(nets)}, "
                     f"{warmup} warm-up + {repeats} interleaved calls each")
        x = torch.randn(int(batch), *input_shape, generator=gen).to(dev).contiguous(memory_format=fmt)
        times = time_interleaved(nets, x, warmup, repeats, clock)
        train = time_interleaved(nets, x, warmup, repeats, clock, "train") if training else None
        for name in nets:
            t = times[name]
            med = statistics.median(t)
            theoretical = costs[reference]["flops"] / costs[name]["flops"]
            row = {"model": name, "batch": int(batch), "flops": costs[name]["flops"],
                   "params": costs[name]["params"], "median_ms": 1e3 * med,
                   "p90_ms": 1e3 * percentile(t, 90), "throughput": int(batch) / med,
                   "speedup": paired_speedup(times[reference], t), "theoretical_speedup": theoretical}
            row["efficiency"] = row["speedup"] / theoretical
            if train is not None:
                row["train_median_ms"] = 1e3 * statistics.median(train[name])
                row["train_speedup"] = paired_speedup(train[reference], train[name])
            rows.append(row)
    return {"device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev), "clock": clock,
            "clock_description": DESCRIPTIONS[clock],
            "threads": torch.get_num_threads(), "torch": torch.__version__, "input_shape": list(input_shape),
            "warmup": warmup, "repeats": repeats, "channels_last": channels_last, "reference": reference,
            "widths": {name: layer_widths(m) for name, m in models.items()}, "rows": rows}


# ---------------------------------------------------------------------------------------------
# pruned variants
# ---------------------------------------------------------------------------------------------
def pruned_variant(model: nn.Module, example_inputs: torch.Tensor, scores: Optional[torch.Tensor],
                   target: float, round_to: int = 1, max_prune_fraction: float = 0.75,
                   metric: str = "flops", partition: str = "ranking", latency_batch: int = 64,
                   setup: Optional[dict] = None, price: Optional[str] = None) -> tuple:
    """A pruned deep copy of ``model``: partition at ``target`` of ``metric`` (Eq. 1) by ``scores``
    (default: Eq. 2 saliency of the model's current weights) with the ``partition`` strategy,
    then physical pruning. For a measured metric (``latency``, ``train_latency``) the per-layer
    table is measured here at ``latency_batch`` and calibrated in a closed loop, as the engine
    does (a measured ``price`` of the knapsack is measured the same way, without calibration); ``setup`` (a dict), if given, receives the clock and the calibration rounds. Returns
    ``(pruned model, keep mask, achieved reduction)``."""
    from .cost import CostModel
    from .dependency import ChannelSpace
    from .engine import LATENCY_METRICS, OCSConfig, build_latency_table, price_table
    from .importance import group_l2
    from .latency import calibrate_latency
    from .partition import Partitioner
    from .surgery import prune_to

    twin = copy.deepcopy(model).cpu().eval()
    space = ChannelSpace(twin, example_inputs.cpu()[:1])
    cost = CostModel(space)
    if scores is None:
        scores = group_l2(dict(twin.named_parameters()), space)
    if price not in (None, metric):
        # the engine's one-line refusals of a bad price (with the ranking partition, ...); only with
        # a price: a 0.0 target (a run that kept every channel) must reach the partitioner's BudgetError
        OCSConfig(target=target, metric=metric, partition=partition, price=price, latency_batch=latency_batch).validate()
        price_table(cost, example_inputs.cpu()[:1], metric, price, latency_batch)
    if metric in LATENCY_METRICS:
        table = build_latency_table(cost, example_inputs.cpu()[:1], latency_batch, metric)
        history = calibrate_latency(table, lambda: scores, target, max_prune_fraction=max_prune_fraction,
                                    round_to=round_to, strategy=partition, price=price)
        if setup is not None:
            setup.update({"clock": table.clock, "latency_batch": latency_batch,
                          "calibration": [[round(p, 4), round(m, 4)] for p, m in history]})
    # with round_to > 1 the partition gives whole blocks back up to the budget (partition.py)
    keep = Partitioner(cost, metric, max_prune_fraction, round_to, partition, price).partition(scores, target).keep
    prune_to(twin, space, keep)
    return twin.eval(), keep, 1.0 - float(cost.evaluate(keep, metric)) / cost.dense[metric]


def rounded_variant(dense: nn.Module, example_inputs: torch.Tensor, kept: dict, round_to: int,
                    max_prune_fraction: float = 0.75) -> tuple:
    """Re-partition of ``dense`` (unpruned, same architecture) at the FLOPs reduction that the
    sub-network ``kept`` (group key -> kept original channel ids) achieves, with every pruned
    width a multiple of ``round_to``. The found channels are preferred. Raises BudgetError when
    rounding cannot reach that budget within the per-group cap."""
    from .cost import CostModel
    from .dependency import ChannelSpace

    space = ChannelSpace(copy.deepcopy(dense).cpu().eval(), example_inputs.cpu()[:1])
    keep = space.keep_mask({k: frozenset(v) for k, v in kept.items()})
    cost = CostModel(space)
    reduction = 1.0 - float(cost.evaluate(keep, "flops")) / cost.dense["flops"]
    return pruned_variant(dense, example_inputs, keep.to(torch.float64), reduction, round_to,
                          max_prune_fraction)


def run_models(run_dir: str) -> tuple:
    """Dense and pruned models of a finished run: the dense model rebuilt from the architecture
    description at full width (random weights: timing does not depend on them), the pruned one
    loaded from ``final_model.pt``. Returns ``(dense, pruned, architecture, run config dict)``."""
    import yaml

    from .io import CheckpointError, load, read_checkpoint
    from .models import create_model
    from .rundir import RunDir

    rd = RunDir.finished(run_dir)
    path = rd.file(RunDir.FINAL_MODEL)
    arch = read_checkpoint(path).get("architecture")
    if not isinstance(arch, dict) or "model" not in arch:
        raise CheckpointError(f"{path!r} has no architecture description; pass a run's final_model.pt")
    dense = create_model(arch["model"], num_classes=arch["num_classes"], in_channels=arch["in_channels"],
                         **arch.get("model_options", {})).eval()
    cfg_path = rd.file(RunDir.CONFIG)
    cfg = {}
    if os.path.isfile(cfg_path):
        with open(cfg_path) as fh:
            cfg = yaml.safe_load(fh)
    return dense, load(path), arch, cfg or {}


def bench_run(run_dir: str, batch_sizes=(1, 64), round_to: int = 1, out: Optional[str] = None, **kw) -> dict:
    """Bench a run directory's dense and pruned models (and, with ``round_to`` > 1, the rounded
    re-partition); writes ``bench.json`` into the run directory (or ``out``)."""
    from .partition import BudgetError

    dense, pruned, arch, cfg = run_models(run_dir)
    size = arch["image_size"]
    shape = (arch["in_channels"], size, size)
    models = {"dense": dense, "pruned": pruned}
    notes = []
    if round_to > 1 and arch.get("pruning"):
        mpf = float((cfg.get("pruning") or {}).get("max_prune_fraction", 0.75))
        try:
            models[f"pruned_r{round_to}"], _, _ = rounded_variant(
                dense, torch.randn(1, *shape), arch["pruning"]["kept"], round_to, max(mpf, 0.0))
        except BudgetError as exc:
            notes.append(f"round_to={round_to}: {exc}")
    result = bench_models(models, shape, batch_sizes, **kw)
    result.update({"run_dir": os.path.abspath(run_dir), "model": arch["model"], "round_to": round_to,
                   "notes": notes})
    from .rundir import RunDir
    rd = RunDir.finished(run_dir)
    with rd.writing():
        _write(result, out or rd.file(RunDir.BENCH))
    return result


def bench_named(model: str, target: float = 0.5, batch_sizes=(1, 64), round_to: int = 1,
                input_size: Optional[int] = None, num_classes: int = 10, model_options: Optional[dict] = None,
                max_prune_fraction: float = 0.75, out: Optional[str] = None, seed: int = 0,
                metric: str = "flops", partition: str = "ranking", price: Optional[str] = None, **kw) -> dict:
    """Bench a registry model against its prune at ``target`` of ``metric`` (``flops``, ``params``,
    ``latency`` or ``train_latency``, measured here at the largest batch size) with the
    ``partition`` strategy (``ranking``: the paper's; ``knapsack``: cost-aware): partition by
    Eq. 2 saliency of the random initial weights (seed ``seed``), and with ``round_to`` > 1 the
    same with rounding."""
    from .models import create_model, default_input_size

    _set_threads(kw.get("threads"))   # the latency table must be measured as bench will time
    torch.manual_seed(seed)
    dense = create_model(model, num_classes=num_classes, **(model_options or {})).eval()
    size = input_size or default_input_size(model)
    shape = (3, size, size)
    example = torch.randn(1, *shape)
    setup: dict = {}
    variant = dict(metric=metric, partition=partition, price=price, latency_batch=max(int(b) for b in batch_sizes))
    pruned, keep, red = pruned_variant(dense, example, None, target, 1, max_prune_fraction, setup=setup, **variant)
    models = {"dense": dense, "pruned": pruned}
    if round_to > 1:
        models[f"pruned_r{round_to}"], _, _ = pruned_variant(dense, example, None, target, round_to,
                                                             max_prune_fraction, **variant)
    result = bench_models(models, shape, batch_sizes, **kw)
    result.update({"model": model, "target": target, "round_to": round_to, "metric": metric,
                   "partition": partition, "price": price or metric, "achieved_reduction": red, "setup": setup,
                   "scores": "Eq. 2 saliency of random-init weights (seed %d)" % seed})
    if out:
        _write(result, out)
    return result


def _write(result: dict, path: str) -> None:
    from .rundir import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=1))


def format_table(result: dict) -> str:
    """Table 9-style text table of a :func:`bench_models` result: the FLOPs ratio ("theory"),
    the measured inference speed-up and efficiency, the training-step speed-up, and the clock."""
    train = any("train_speedup" in r for r in result["rows"])
    head = (f"{'model':<12} {'MFLOPs':>9} {'params M':>9} {'batch':>5} {'median ms':>10} {'p90 ms':>8} "
            f"{'img/s':>9} {'speedup':>8} {'theory':>7} {'eff.':>6}" + (f" {'train ms':>9} {'train sp.':>9}" if train else ""))
    lines = [f"device {result['device']}, {result['threads']} threads, torch {result['torch']}, "
             f"{result['repeats']} interleaved rounds after {result['warmup']} warm-up calls",
             f"clock: {result.get('clock_description', 'wall clock (time.perf_counter)')}; speed-ups are medians "
             f"of per-round ratios; 'theory' is the FLOPs ratio", head, "-" * len(head)]
    for r in result["rows"]:
        line = (f"{r['model']:<12} {r['flops'] / 1e6:>9.2f} {r['params'] / 1e6:>9.3f} {r['batch']:>5} "
                f"{r['median_ms']:>10.2f} {r['p90_ms']:>8.2f} {r['throughput']:>9.1f} "
                f"{r['speedup']:>7.2f}x {r['theoretical_speedup']:>6.2f}x {100 * r['efficiency']:>5.0f}%")
        if "train_speedup" in r:
            line += f" {r['train_median_ms']:>9.2f} {r['train_speedup']:>8.2f}x"
        lines.append(line)
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def format_markdown(result: dict) -> str:
    """The same table in Markdown (for report.md), with the clock named under it."""
    train = any("train_speedup" in r for r in result["rows"])
    lines = ["| model | MFLOPs | params (M) | batch | median (ms) | p90 (ms) | img/s | speedup | theoretical (FLOPs) "
             "| efficiency |" + (" train step (ms) | train speedup |" if train else ""),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if train else "")]
    for r in result["rows"]:
        line = (f"| {r['model']} | {r['flops'] / 1e6:.2f} | {r['params'] / 1e6:.3f} | {r['batch']} | "
                f"{r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['throughput']:.1f} | {r['speedup']:.2f}x | "
                f"{r['theoretical_speedup']:.2f}x | {100 * r['efficiency']:.0f}% |")
        if "train_speedup" in r:
            line += f" {r['train_median_ms']:.2f} | {r['train_speedup']:.2f}x |"
        lines.append(line)
    lines.append("")
    lines.append(f"Clock: {result.get('clock_description', 'wall clock (time.perf_counter)')}.")
    return "\n".join(lines)


__all__ = ["bench_models", "bench_run", "bench_named", "time_interleaved", "pruned_variant", "rounded_variant",
           "percentile", "paired_speedup", "format_table", "format_markdown"]
