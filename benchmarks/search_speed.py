"""Benchmark: speed of OCSPruner's budget search against a reference bisection, and the per-step
cost of the sparsity regularisation (Eq. 8 + Eq. 9).

Usage::

    python benchmarks/search_speed.py [--models resnet50,resnet56] [--repeats 3] [--target 0.5]
                                      [--ref-repeats 1] [--threads 2]
                                      [--out benchmarks/results/search_speed.json]

What is timed, per model (ResNet-50 at 1x3x224x224 / 1000 classes, CIFAR ResNet-56 at 1x3x32x32 /
10 classes), all in one process and one after the other:

* setup (once): the full ``OCSPruner(...)`` constructor, and -- built again standalone so they can
  be timed one by one -- ``ChannelSpace`` (DepGraph trace + channel map), ``CostModel`` (shape
  capture + compilation), ``Partitioner`` and the ``check_prunable`` dry run;
* (a) our search alone: ``pruner.partitioner.partition(scores, target)`` (median of ``--repeats``,
  after one untimed warm-up call whose time is reported as ``cold``);
* (b) our saliency + search: ``pruner.scores()`` + ``partition`` (median);
* (c) the reference: bisection over a GLOBAL saliency threshold in which every probe deep-copies
  the model, re-traces DepGraph on the copy, physically prunes the copy at the threshold (per
  group: the channels scoring below it, at most the same per-group cap as ours, at least one
  channel kept) and counts FLOPs with ``torch_pruning.utils.count_ops_and_params`` (which
  deep-copies once more). Stops at |reduction - target| <= ``--tol`` or after ``--max-iter``
  probes. Median of ``--ref-repeats``.

Both methods use the SAME Eq. 2 scores and the same FLOPs convention (torch-pruning's whole-model
``count_ops_and_params``, which the analytic cost model reproduces term for term), so both search
the same family of sub-networks. As a cross-check, our keep
mask is also pruned physically and counted the reference's way.

Regularisation overhead (CIFAR ResNet-56, batch 64, 32x32 random data, SGD momentum 0.9): a plain
training step against the same step with the engine in its sparsity-learning state (Eq. 8 penalty
added to the loss + Eq. 9 shrink after the step), with Eq. 9 alone and with Eq. 8 alone. Variants
are interleaved (the order rotates every round) after a warm-up; medians are reported.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch_pruning as tp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ocspruner import OCSPruner  # noqa: E402
from ocspruner.cost import CostModel  # noqa: E402
from ocspruner.dependency import ChannelSpace  # noqa: E402
from ocspruner.models import create_model  # noqa: E402
from ocspruner.partition import Partitioner  # noqa: E402
from ocspruner.surgery import check_prunable  # noqa: E402

MODEL_SPECS = {
    "resnet50": {"num_classes": 1000, "input_size": 224},
    "resnet56": {"num_classes": 10, "input_size": 32},
}

GOAL_SPEEDUP = 100.0         # search >= 100x faster than the reference
GOAL_R50_SEARCH_S = 0.050    # ResNet-50 search <= 50 ms
GOAL_REDUCTION_DIFF = 1e-3   # |reduction(ours) - reduction(reference)| "small": <= 2x the reference tolerance
GOAL_REG_OVERHEAD = 0.05     # regularised step <= 5% slower than a plain one


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def now() -> float:
    return time.perf_counter()


def median(xs):
    return float(statistics.median(xs)) if xs else float("nan")


def counted_flops(model: nn.Module, example_inputs) -> float:
    """torch-pruning's whole-model count: the analytic cost model's convention since issue 15
    (conv/linear/norm layers plus activation and pooling modules)."""
    return float(tp.utils.count_ops_and_params(model, example_inputs)[0])


def group_caps(sizes: list[int], fraction: float, round_to: int = 1) -> list[int]:
    """Most channels a group may lose: floor(fraction * size), always keeping >= max(round_to, 1)."""
    return [min(int(math.floor(fraction * n)), n - max(1, min(round_to, n))) for n in sizes]


class ReferenceBisection:
    """Threshold bisection that measures every probe on a physically pruned deep copy.

    Independent of the engine's cost model and partitioner: it only reads the group layout
    (root module name, size, offset) and the handler kind of each group's root, and uses the
    torch-pruning API on a fresh DependencyGraph of every copy.
    """

    def __init__(self, model: nn.Module, example_inputs, space: ChannelSpace, scores: torch.Tensor,
                 max_prune_fraction: float):
        self.model = model
        self.example_inputs = example_inputs
        self.scores = scores.detach().to(torch.float64).cpu()
        self.groups = []
        caps = group_caps([g.size for g in space.groups], max_prune_fraction)
        for g, cap in zip(space.groups, caps):
            local = self.scores[g.offset:g.offset + g.size]
            order = torch.argsort(local, stable=True)          # least salient first
            eligible = order[:cap]                             # at most `cap` channels may go
            out = space.graph.is_out_channel_pruning_fn(g.root_handler)
            self.groups.append((g.key, out, eligible, local[eligible]))
        t = now()
        self.dense = counted_flops(model, example_inputs)
        self.dense_count_s = now() - t

    def removed_at(self, threshold: float) -> dict[str, list[int]]:
        """Per group (root module name): channel ids scoring below ``threshold`` within the cap."""
        out = {}
        for key, _, eligible, eligible_scores in self.groups:
            idxs = eligible[eligible_scores < threshold]
            if len(idxs):
                out[key] = sorted(int(i) for i in idxs)
        return out

    def measure(self, removed: dict[str, list[int]], timings: dict | None = None) -> float:
        """Deep copy, re-trace, prune the copy and count: reduction of the counted FLOPs."""
        t0 = now()
        twin = copy.deepcopy(self.model)
        t1 = now()
        graph = tp.DependencyGraph().build_dependency(twin, example_inputs=self.example_inputs)
        t2 = now()
        modules = dict(twin.named_modules())
        for key, out, _, _ in self.groups:
            idxs = removed.get(key)
            if not idxs:
                continue
            m = modules[key]
            pruner = graph.get_pruner_of_module(m)
            handler = pruner.prune_out_channels if out else pruner.prune_in_channels
            graph.get_pruning_group(m, handler, idxs).prune()
        t3 = now()
        flops = counted_flops(twin, self.example_inputs)
        t4 = now()
        if timings is not None:
            for k, v in (("deepcopy", t1 - t0), ("trace", t2 - t1), ("prune", t3 - t2), ("count", t4 - t3)):
                timings[k] = timings.get(k, 0.0) + v
        return 1.0 - flops / self.dense

    def search(self, target: float, tol: float = 5e-4, max_iter: int = 30) -> dict:
        lo = float(self.scores.min())                          # removes nothing: reduction 0
        hi = float(self.scores.max()) * (1 + 1e-9) + 1e-300    # removes every eligible channel
        trace, timings = [], {}
        best = None
        t_start = now()
        for _ in range(max_iter):
            thr = 0.5 * (lo + hi)
            removed = self.removed_at(thr)
            red = self.measure(removed, timings)
            n_removed = sum(len(v) for v in removed.values())
            trace.append({"threshold": thr, "reduction": red, "removed_channels": n_removed})
            # best so far: closest to the target, ties to the one that reaches it
            key = (abs(red - target), red < target)
            if best is None or key < best[0]:
                best = (key, thr, red, n_removed, removed)
            if abs(red - target) <= tol:
                break
            if red < target:
                lo = thr
            else:
                hi = thr
        elapsed = now() - t_start
        _, thr, red, n_removed, removed = best
        return {"seconds": elapsed, "steps": len(trace), "converged": abs(trace[-1]["reduction"] - target) <= tol,
                "threshold": thr, "reduction": red, "removed_channels": n_removed, "removed": removed,
                "trace": trace, "step_breakdown_s": timings}


def keep_to_removed(space: ChannelSpace, keep: torch.Tensor) -> dict[str, list[int]]:
    out = {}
    for g in space.groups:
        local = keep[g.offset:g.offset + g.size]
        idxs = torch.nonzero(~local).flatten().tolist()
        if idxs:
            out[g.key] = idxs
    return out


# ------------------------------------------------------------------------------------------------
# benchmark parts
# ------------------------------------------------------------------------------------------------
def bench_model(name: str, args) -> dict:
    spec = MODEL_SPECS[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=spec["num_classes"]).eval()
    x = torch.randn(1, 3, spec["input_size"], spec["input_size"])
    res = {"input_shape": list(x.shape), "num_classes": spec["num_classes"], "target": args.target,
           "max_prune_fraction": args.max_prune_fraction}

    # -- one-time setup ---------------------------------------------------------------------------
    t = now()
    pruner = OCSPruner(model, x, target=args.target, max_prune_fraction=args.max_prune_fraction)
    setup_total = now() - t
    # the parts, built again standalone so each can be timed on its own
    t = now()
    space = ChannelSpace(model, x)
    t_space = now() - t
    t = now()
    cost_model = CostModel(space)
    t_cost = now() - t
    t = now()
    Partitioner(cost_model, "flops", args.max_prune_fraction, 1)
    t_part = now() - t
    t = now()
    check_prunable(space)
    t_check = now() - t
    del space, cost_model
    res["groups"] = len(pruner.space.groups)
    res["channels"] = pruner.space.num_channels
    res["setup_s"] = {"ocspruner_constructor": setup_total, "channel_space": t_space, "cost_model": t_cost,
                      "channel_space_plus_cost_model": t_space + t_cost, "partitioner": t_part,
                      "check_prunable": t_check}

    # -- (a) our search alone -----------------------------------------------------------------------
    scores = pruner.scores()
    t = now()
    part = pruner.partitioner.partition(scores, args.target)
    cold = now() - t
    times = []
    for _ in range(args.repeats):
        t = now()
        part = pruner.partitioner.partition(scores, args.target)
        times.append(now() - t)
    res["ours_search"] = {"times_s": times, "median_s": median(times), "cold_s": cold,
                          "reduction": part.reduction, "removed_channels": part.removed_channels}

    evals = []
    for _ in range(max(args.repeats, 10)):
        t = now()
        pruner.cost_model.evaluate(part.keep, "flops")
        evals.append(now() - t)
    res["ours_search"]["cost_model_evaluate_median_s"] = median(evals)

    # -- (b) our saliency + search -----------------------------------------------------------------
    times, score_times = [], []
    for _ in range(args.repeats):
        t = now()
        s = pruner.scores()
        t_mid = now()
        p2 = pruner.partitioner.partition(s, args.target)
        t_end = now()
        times.append(t_end - t)
        score_times.append(t_mid - t)
    assert torch.equal(p2.keep, part.keep)
    res["ours_saliency_search"] = {"times_s": times, "median_s": median(times),
                                   "saliency_only_median_s": median(score_times), "reduction": p2.reduction}

    # -- (c) reference bisection --------------------------------------------------------------------
    ref = ReferenceBisection(model, x, pruner.space, scores, args.max_prune_fraction)
    caps_ok = group_caps([g.size for g in pruner.space.groups], args.max_prune_fraction) == \
        pruner.partitioner.caps.tolist()
    runs = []
    for i in range(args.ref_repeats):
        r = ref.search(args.target, args.tol, args.max_iter)
        runs.append(r)
        print(f"  [{name}] reference run {i + 1}/{args.ref_repeats}: {r['seconds']:.2f} s, {r['steps']} steps, "
              f"reduction {r['reduction']:.5f}", flush=True)
    r0 = runs[0]
    ref_times = [r["seconds"] for r in runs]
    ref_median = median(ref_times)
    steps = r0["steps"]
    res["reference"] = {
        "times_s": ref_times, "median_s": ref_median, "steps": steps,
        "steps_all_runs": [r["steps"] for r in runs], "converged": r0["converged"],
        "per_step_s": ref_median / max(steps, 1),
        "step_breakdown_s": {k: v / steps for k, v in r0["step_breakdown_s"].items()},
        "reduction": r0["reduction"], "threshold": r0["threshold"], "removed_channels": r0["removed_channels"],
        "tol": args.tol, "max_iter": args.max_iter, "trace": r0["trace"],
        "dense_count_s": ref.dense_count_s, "caps_equal_to_ours": caps_ok,
    }

    # -- cross-checks -------------------------------------------------------------------------------
    dense_cm = pruner.cost_model.dense["flops"]
    ours_counted = ref.measure(keep_to_removed(pruner.space, part.keep))
    ref_keep = torch.ones(pruner.space.num_channels, dtype=torch.bool)
    for g in pruner.space.groups:
        for i in r0["removed"].get(g.key, []):
            ref_keep[g.offset + i] = False
    ref_cost_model = 1.0 - float(pruner.cost_model.evaluate(ref_keep, "flops")) / dense_cm
    both_removed = int((~part.keep & ~ref_keep).sum())
    either_removed = int((~part.keep | ~ref_keep).sum())
    res["checks"] = {
        "dense_flops_cost_model": dense_cm, "dense_flops_count_ops": ref.dense,
        "dense_rel_diff": abs(dense_cm - ref.dense) / ref.dense,
        "ours_reduction_count_ops": ours_counted,
        "ours_cost_model_vs_count_ops_diff": abs(part.reduction - ours_counted),
        "reference_reduction_cost_model": ref_cost_model,
        "reference_cost_model_vs_count_ops_diff": abs(ref_cost_model - r0["reduction"]),
        "removed_jaccard_ours_vs_reference": both_removed / either_removed if either_removed else 1.0,
    }

    # -- ratios and goals -----------------------------------------------------------------------
    a = res["ours_search"]["median_s"]
    b = res["ours_saliency_search"]["median_s"]
    sal = res["ours_saliency_search"]["saliency_only_median_s"]
    res["speedup_search"] = ref_median / a
    # strict: the reference bisection alone against our saliency + search
    res["speedup_saliency_search"] = ref_median / b
    # like for like: the reference also has to compute the saliency before it bisects
    res["speedup_saliency_search_like_for_like"] = (ref_median + sal) / b
    diff = abs(part.reduction - r0["reduction"])
    res["reduction_diff"] = diff
    # search resolution at the budget: what the last (most salient) channel our search removed is worth
    removed_ids = torch.nonzero(~part.keep).flatten()
    if len(removed_ids):
        last = removed_ids[torch.argmax(scores.detach().to(torch.float64)[removed_ids])]
        keep_minus = part.keep.clone()
        keep_minus[last] = True
        one_less = 1.0 - float(pruner.cost_model.evaluate(keep_minus, "flops")) / dense_cm
    else:
        one_less = 0.0
    res["checks"]["ours_reduction_one_channel_fewer"] = one_less
    res["checks"]["one_channel_resolution"] = part.reduction - one_less
    res["checks"]["ours_meets_budget"] = part.reduction >= args.target - 1e-12
    res["checks"]["reference_meets_budget"] = r0["reduction"] >= args.target - 1e-12
    same_tol = max(GOAL_REDUCTION_DIFF, part.reduction - one_less)
    res["same_target_tolerance"] = same_tol
    goals = {
        "speedup_search_ge_100x": res["speedup_search"] >= GOAL_SPEEDUP,
        "speedup_saliency_search_ge_100x": res["speedup_saliency_search_like_for_like"] >= GOAL_SPEEDUP,
        "same_target_reached": diff <= same_tol,
    }
    if name == "resnet50":
        goals["resnet50_search_le_50ms"] = a <= GOAL_R50_SEARCH_S
    res["goals_met"] = goals
    if args.keep_trace >= 0:
        del res["reference"]["trace"][args.keep_trace:]
    return res


def bench_regularisation(args) -> dict:
    """Per-step time of a plain SGD step vs the engine's sparsity-learning step on ResNet-56."""
    torch.manual_seed(0)
    model = create_model("resnet56", num_classes=10).train()
    pruner = OCSPruner(model, torch.randn(1, 3, 32, 32), target=args.target,
                       max_prune_fraction=args.max_prune_fraction)
    part = pruner.partition()
    pruner.regularizer.set_pruned(model, ~part.keep)
    pruner.lam = 1e-3
    pruner.regularizing = True
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    xb = torch.randn(args.reg_batch, 3, 32, 32, generator=g)
    yb = torch.randint(0, 10, (args.reg_batch,), generator=g)

    def step(eq8, eq9: bool) -> float:
        """eq8: False, "grad" (after_backward: the trainer's path) or "loss" (loss + penalty())."""
        t = now()
        loss = crit(model(xb), yb)
        if eq8 == "loss":
            loss = loss + pruner.penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if eq8 == "grad":
            pruner.after_backward()
        opt.step()
        if eq9:
            pruner.after_step(opt)
        return now() - t

    variants = {"plain": (False, False), "eq8_eq9": ("grad", True), "eq9_only": (False, True),
                "eq8_only": ("grad", False), "eq8_loss_eq9": ("loss", True)}
    names = list(variants)
    for _ in range(args.reg_warmup):
        for n in names:
            step(*variants[n])
    times = {n: [] for n in names}
    for r in range(args.reg_steps):
        order = names[r % len(names):] + names[:r % len(names)]   # rotate: no variant always first
        for n in order:
            times[n].append(step(*variants[n]))
    # isolated cost of the two calls, outside the step, for reference
    iso_pen, iso_shrink = [], []
    for _ in range(args.reg_steps):
        t = now()
        p = pruner.penalty()
        iso_pen.append(now() - t)
        del p
        t = now()
        pruner.after_step(opt)
        iso_shrink.append(now() - t)
    med = {n: median(v) for n, v in times.items()}
    base = med["plain"]
    n_targets = len(pruner.regularizer.targets)
    out = {
        "model": "resnet56", "batch": args.reg_batch, "input": [args.reg_batch, 3, 32, 32],
        "optimizer": "SGD(lr=0.1, momentum=0.9, weight_decay=5e-4)", "lambda": pruner.lam,
        "warmup_rounds": args.reg_warmup, "steps_per_variant": args.reg_steps,
        "pruned_channels": int((~part.keep).sum()), "regularised_slices": n_targets,
        "times_s": times, "median_s": med,
        "overhead": {n: med[n] / base - 1.0 for n in names if n != "plain"},
        "isolated_median_s": {"penalty_forward": median(iso_pen), "after_step_shrink": median(iso_shrink)},
    }
    out["goals_met"] = {"eq8_eq9_overhead_le_5pct": out["overhead"]["eq8_eq9"] <= GOAL_REG_OVERHEAD,
                        "eq9_only_overhead_le_5pct": out["overhead"]["eq9_only"] <= GOAL_REG_OVERHEAD}
    return out


# ------------------------------------------------------------------------------------------------
# reporting
# ------------------------------------------------------------------------------------------------
def fmt_s(x: float) -> str:
    if x < 1e-3:
        return f"{x * 1e6:.0f} us"
    if x < 1.0:
        return f"{x * 1e3:.2f} ms"
    return f"{x:.2f} s"


def ok(flag: bool) -> str:
    return "PASS" if flag else "FAIL"


def print_model(name: str, r: dict) -> None:
    s, a, b, ref, c = r["setup_s"], r["ours_search"], r["ours_saliency_search"], r["reference"], r["checks"]
    g = r["goals_met"]
    rows = [
        ("groups / channels", f"{r['groups']} / {r['channels']}", "", ""),
        ("setup: OCSPruner(...) total", fmt_s(s["ocspruner_constructor"]), "one-time", ""),
        ("setup: ChannelSpace", fmt_s(s["channel_space"]), "one-time", ""),
        ("setup: CostModel", fmt_s(s["cost_model"]), "one-time", ""),
        ("setup: Partitioner / check_prunable", f"{fmt_s(s['partitioner'])} / {fmt_s(s['check_prunable'])}",
         "one-time", ""),
        ("(a) ours: search (median)", f"{fmt_s(a['median_s'])}  (cold {fmt_s(a['cold_s'])})",
         "<= 50 ms" if name == "resnet50" else "",
         ok(g["resnet50_search_le_50ms"]) if name == "resnet50" else ""),
        ("    one cost-model evaluation (median)", fmt_s(a["cost_model_evaluate_median_s"]), "", ""),
        ("(b) ours: saliency + search (median)",
         f"{fmt_s(b['median_s'])}  (saliency {fmt_s(b['saliency_only_median_s'])})", "", ""),
        ("(c) reference bisection (median)", f"{fmt_s(ref['median_s'])}  (n={len(ref['times_s'])})", "", ""),
        ("    reference steps / per step", f"{ref['steps']} / {fmt_s(ref['per_step_s'])}"
         f"{'' if ref['converged'] else '  (not converged)'}", "", ""),
        ("    per step: copy/trace/prune/count",
         " / ".join(fmt_s(ref["step_breakdown_s"].get(k, 0.0)) for k in ("deepcopy", "trace", "prune", "count")),
         "", ""),
        ("speed-up ref / (a)", f"{r['speedup_search']:,.1f}x", ">= 100x", ok(g["speedup_search_ge_100x"])),
        ("speed-up ref / (b)", f"{r['speedup_saliency_search']:,.1f}x", "", ""),
        ("speed-up (ref + saliency) / (b)", f"{r['speedup_saliency_search_like_for_like']:,.1f}x", ">= 100x",
         ok(g["speedup_saliency_search_ge_100x"])),
        ("FLOPs reduction: ours (cost model)", f"{a['reduction']:.5f}  ({a['removed_channels']} ch removed)",
         f">= {r['target']}", ok(c["ours_meets_budget"])),
        ("    ours with one channel fewer removed", f"{c['ours_reduction_one_channel_fewer']:.5f}  "
         f"(resolution {c['one_channel_resolution']:.2e})", "", ""),
        ("FLOPs reduction: ours (count_ops)", f"{c['ours_reduction_count_ops']:.5f}", "", ""),
        ("FLOPs reduction: reference (count_ops)", f"{ref['reduction']:.5f}  ({ref['removed_channels']} ch removed)",
         f"|x-{r['target']}|<={ref['tol']:g}", ok(abs(ref["reduction"] - r["target"]) <= ref["tol"])),
        ("|reduction ours - reference|", f"{r['reduction_diff']:.2e}", f"<= {r['same_target_tolerance']:.2e}",
         ok(g["same_target_reached"])),
        ("dense FLOPs cost model / count_ops", f"{c['dense_flops_cost_model']:.0f} / {c['dense_flops_count_ops']:.0f}",
         "equal", ok(c["dense_rel_diff"] < 1e-9)),
        ("removed-set Jaccard ours vs reference", f"{c['removed_jaccard_ours_vs_reference']:.4f}", "", ""),
    ]
    title = f"{name}  (input {'x'.join(map(str, r['input_shape']))}, target {r['target']:.0%} FLOPs, " \
            f"cap {r['max_prune_fraction']})"
    _table(title, rows)


def print_reg(r: dict) -> None:
    m, o, g = r["median_s"], r["overhead"], r["goals_met"]
    rows = [
        ("plain step (median)", fmt_s(m["plain"]), "", ""),
        ("Eq. 8 (after_backward) + Eq. 9 (median)", fmt_s(m["eq8_eq9"]), "", ""),
        ("    overhead", f"{o['eq8_eq9']:+.2%}", "<= 5%", ok(g["eq8_eq9_overhead_le_5pct"])),
        ("Eq. 9 only step (median)", fmt_s(m["eq9_only"]), "", ""),
        ("    overhead", f"{o['eq9_only']:+.2%}", "<= 5%", ok(g["eq9_only_overhead_le_5pct"])),
        ("Eq. 8 only, after_backward (median)", fmt_s(m["eq8_only"]), "", ""),
        ("    overhead", f"{o['eq8_only']:+.2%}", "", ""),
        ("Eq. 8 as loss term + Eq. 9 (median)", fmt_s(m["eq8_loss_eq9"]), "", ""),
        ("    overhead", f"{o['eq8_loss_eq9']:+.2%}", "", ""),
        ("isolated penalty() / after_step()",
         f"{fmt_s(r['isolated_median_s']['penalty_forward'])} / {fmt_s(r['isolated_median_s']['after_step_shrink'])}",
         "", ""),
        ("pruned channels / regularised slices", f"{r['pruned_channels']} / {r['regularised_slices']}", "", ""),
    ]
    _table(f"regularisation overhead: resnet56, batch {r['batch']}, {r['steps_per_variant']} interleaved steps "
           f"per variant after {r['warmup_rounds']} warm-up rounds", rows)


def _table(title: str, rows) -> None:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(max(len(r[2]) for r in rows), 4)
    line = "-" * (w0 + w1 + w2 + 14)
    print(f"\n{title}\n{line}")
    print(f"{'measure':<{w0}}  {'value':<{w1}}  {'goal':<{w2}}  status")
    print(line)
    for a, b, c, d in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c:<{w2}}  {d}")
    print(line, flush=True)


def cpu_busy_fraction(interval: float = 1.0) -> float | None:
    """Fraction of all CPU time spent busy over ``interval`` seconds (Linux /proc/stat), taken
    while this process sleeps: a sign that another process competes for the cores."""
    def read():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return idle, sum(vals)
    try:
        i0, t0 = read()
        time.sleep(interval)
        i1, t1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def check_quiet(label: str) -> dict:
    busy = cpu_busy_fraction()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if busy is not None and busy > 0.25:
        print(f"WARNING ({label}): the CPUs were {busy:.0%} busy while this benchmark was idle; another "
              f"process competes for the cores and the timings are unreliable", flush=True)
    return {"cpu_busy_while_idle": busy, "loadavg": list(load) if load else None}


def code_info() -> dict:
    """Which engine code was measured: git HEAD, files of ocspruner/ changed since, content hash.
    Read-only git queries only (no index refresh)."""
    import hashlib
    import subprocess

    def git(*a):
        try:
            return subprocess.run(["git", "--no-optional-locks", *a], cwd=ROOT, capture_output=True, text=True,
                                  timeout=20).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""
    h = hashlib.sha256()
    for f in sorted((ROOT / "ocspruner").rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return {"git_head": git("rev-parse", "HEAD").strip(),
            "ocspruner_uncommitted": [ln[3:] for ln in git("status", "--porcelain", "--", "ocspruner").splitlines()],
            "ocspruner_sha256": h.hexdigest()}


def machine_info(threads: int) -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"torch": torch.__version__, "torch_pruning": getattr(tp, "__version__", "?"),
            "python": platform.python_version(), "threads": torch.get_num_threads(), "threads_requested": threads,
            "processor": platform.processor(), "cpu_model": cpu, "machine": platform.machine(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,resnet56")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of our search (median)")
    ap.add_argument("--ref-repeats", type=int, default=1, help="repeats of the reference bisection (median)")
    ap.add_argument("--target", type=float, default=0.5, help="fraction of FLOPs to remove")
    ap.add_argument("--max-prune-fraction", type=float, default=0.9, help="per-group cap (both methods)")
    ap.add_argument("--tol", type=float, default=5e-4, help="reference stop: |reduction - target| <= tol")
    ap.add_argument("--max-iter", type=int, default=30, help="reference: most bisection steps")
    ap.add_argument("--reg-steps", type=int, default=20, help="timed steps per variant (interleaved)")
    ap.add_argument("--reg-warmup", type=int, default=3, help="untimed warm-up rounds")
    ap.add_argument("--reg-batch", type=int, default=64)
    ap.add_argument("--skip-reg", action="store_true", help="skip the regularisation-overhead part")
    ap.add_argument("--keep-trace", type=int, default=-1, help="bisection steps to keep in the JSON (-1: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search_speed.json"))
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    t_total = now()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODEL_SPECS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {sorted(MODEL_SPECS)}")
    info = machine_info(args.threads)
    print(f"torch {info['torch']}, torch-pruning {info['torch_pruning']}, threads {info['threads']}, "
          f"cpu '{info['cpu_model'] or info['processor']}', {info['date']}", flush=True)

    results = {"machine": info, "code": code_info(), "args": vars(args), "models": {}, "quiet_checks": {"start": check_quiet("start")}}
    for name in models:
        print(f"\n== {name} ==", flush=True)
        results["quiet_checks"][name] = check_quiet(name)
        r = bench_model(name, args)
        results["models"][name] = r
        print_model(name, r)
    if not args.skip_reg:
        print("\n== regularisation overhead ==", flush=True)
        results["quiet_checks"]["regularisation"] = check_quiet("regularisation")
        results["regularisation"] = bench_regularisation(args)
        print_reg(results["regularisation"])
    results["quiet_checks"]["end"] = check_quiet("end")
    results["total_runtime_s"] = now() - t_total

    goals = {f"{m}.{k}": v for m, r in results["models"].items() for k, v in r["goals_met"].items()}
    if "regularisation" in results:
        goals.update({f"regularisation.{k}": v for k, v in results["regularisation"]["goals_met"].items()})
    results["goals_met"] = goals
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print(f"\ngoals: {sum(goals.values())}/{len(goals)} met"
          + "".join(f"\n  {'PASS' if v else 'FAIL'}  {k}" for k, v in goals.items()))
    print(f"total runtime {results['total_runtime_s']:.1f} s; results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
