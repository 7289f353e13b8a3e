"""The statistics of benchmarks/fashion_full.py (issue 16), pure functions of run records (what
fashion_full.json holds per run): the per-epoch cost split, the two CPU ratios, mean ± std per
method, the top-level summary and the issue's goals. Nothing here reads a run directory."""
from __future__ import annotations

import statistics


# full-size epochs that also do a method's own extra work (ATO's controller steps): they count in
# a run's cost but are not a clock for what a full-size training epoch costs
EXTRA_WORK_STAGES = ("controller",)


def epoch_cpu(metrics: list[dict]) -> list[float] | None:
    """The CPU seconds of each epoch: differences of the cumulative ``cpu_elapsed``; None when an
    epoch's CPU time is missing."""
    cum = [r.get("cpu_elapsed") for r in metrics]
    if not cum or any(c is None for c in cum):
        return None
    return [b - a for a, b in zip([0.0] + cum[:-1], cum)]


def epoch_costs(metrics: list[dict]) -> tuple[list[float], list[float]] | None:
    """:func:`epoch_cpu` split into the epochs that trained the full-size network and those that
    trained the pruned one (stage "pruned"); None when an epoch's CPU time is missing. Where a
    run's cost ratio comes from: (full-size epochs + pruned epochs x their cost) / dense epochs."""
    per_epoch = epoch_cpu(metrics)
    if per_epoch is None:
        return None
    full = [c for c, r in zip(per_epoch, metrics) if r.get("stage") != "pruned"]
    pruned = [c for c, r in zip(per_epoch, metrics) if r.get("stage") == "pruned"]
    return full, pruned


def clock_epochs(metrics: list[dict]) -> list[float]:
    """CPU seconds of the epochs that trained the full-size network and nothing else: the run's
    own measure of a dense epoch (ATO's controller epochs cost about twice as much)."""
    return [c for c, r in zip(epoch_cpu(metrics) or [], metrics)
            if r.get("stage") not in ("pruned", *EXTRA_WORK_STAGES)]


def own_clock_ratio(metrics: list[dict], epochs: int) -> float | None:
    """A run's CPU over a dense cycle of ``epochs`` epochs, with the run's own plain full-size
    epochs (:func:`clock_epochs`) as the clock: (its epochs' CPU) / (epochs x their mean). The
    same full-size epoch costs more or less CPU with what runs beside it (caches are shared; the
    summary's ``full_size_epoch_cpu_range``), so a ratio to another run's total mixes two machine
    states; this one mixes none where the run's own conditions held. None for a run without such
    an epoch (prune-at-init)."""
    clock = clock_epochs(metrics)
    if not clock:
        return None
    return sum(epoch_cpu(metrics)) / (epochs * statistics.fmean(clock))


def epoch_cpu_range(records) -> list[float] | None:
    """Lowest and highest CPU seconds of a plain full-size epoch (:func:`clock_epochs`) over
    ``records``' runs (smoke runs on other data or with other epochs are what they are: the range
    is of the runs given)."""
    full = [c for r in records for c in clock_epochs(r.get("metrics") or [])]
    return [min(full), max(full)] if full else None


def same_machine_ratio(values: list[tuple], dense_values: list[tuple]) -> tuple[float | None, int]:
    """A cost against dense's measured on the same machine, from ``(machine, value)`` pairs, and
    how many values that covers. A run's ``machine`` is the work directory it trained in
    (fashion_full.py stamps it; None: the study's first one): the study moves to a new machine
    when a session starts on a fresh checkout, and the same epoch cost 282-356 s of CPU on the
    first and 213 s on the next, so a ratio across machines measures the machines. Per machine
    with dense values: (mean value there) / (mean dense value there), averaged with the values
    as weights; a value from a machine without dense is left out (the own-clock ratio still
    counts its run). On one machine: mean / mean dense."""
    dense_by: dict = {}
    for m, v in dense_values:
        if v is not None:
            dense_by.setdefault(m, []).append(v)
    mine_by: dict = {}
    for m, v in values:
        if v is not None and m in dense_by:
            mine_by.setdefault(m, []).append(v)
    n = sum(len(v) for v in mine_by.values())
    if not n:
        return None, 0
    return sum(len(v) * statistics.fmean(v) / statistics.fmean(dense_by[m]) for m, v in mine_by.items()) / n, n


def machine_splits(records: list[dict]) -> list[tuple]:
    """``(machine, epoch_costs(...))`` of each record whose every epoch has its CPU time."""
    return [(r.get("machine"), sp) for r in records if (sp := epoch_costs(r.get("metrics") or [])) is not None]


def mean_std(values) -> tuple:
    """Mean and sample std of the values given; the std is None below two values (one run has
    no spread: shown as "-", never as 0)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def label_stats(records: list[dict], dense: dict | None, epochs: int | None = None,
                dense_records: list[dict] | None = None) -> dict:
    """Mean ± std over one label's finished runs, with drop and CPU ratio against ``dense``'s
    stats (the ratio: :func:`same_machine_ratio` against ``dense_records``); with ``epochs``
    (the dense cycle's) also the mean :func:`own_clock_ratio`."""
    acc, acc_std = mean_std([r["final_test_acc"] for r in records])
    val_acc, _ = mean_std([r.get("final_val_acc") for r in records])
    cpu, _ = mean_std([r.get("cpu_time") for r in records])
    wall, _ = mean_std([r.get("wall_time") for r in records])
    speed, speed_std = mean_std([(r.get("bench") or {}).get("speedup") for r in records])
    train_speed, _ = mean_std([(r.get("bench") or {}).get("train_speedup") for r in records])
    flops, _ = mean_std([r.get("flops_ratio") for r in records])
    params, _ = mean_std([r.get("params_ratio") for r in records])
    # the cost split: epochs at full size per run, and a pruned epoch's CPU over a dense epoch's
    split_by_machine = machine_splits(records)
    splits = [sp for _, sp in split_by_machine]
    full_epochs, _ = mean_std([len(full) for full, _ in splits])
    own_clock, _ = mean_std([own_clock_ratio(r.get("metrics") or [], epochs) for r in records] if epochs else [])
    dense_records = dense_records or []
    cpu_ratio, cpu_ratio_runs = same_machine_ratio([(r.get("machine"), r.get("cpu_time")) for r in records],
                                                   [(r.get("machine"), r.get("cpu_time")) for r in dense_records])
    # a pruned epoch against a dense epoch (every epoch of a dense run), machine by machine
    pruned_epoch_cost, _ = same_machine_ratio(
        [(m, statistics.fmean(pruned)) for m, (_, pruned) in split_by_machine if pruned],
        [(m, statistics.fmean(full)) for m, (full, _) in machine_splits(dense_records) if full])
    return {
        "n": len(records), "seeds": sorted(r["seed"] for r in records), "acc": acc, "acc_std": acc_std,
        "val_acc": val_acc,
        "full_size_epochs": full_epochs,
        "epoch_cpu": None if not splits else statistics.fmean(c for full, pruned in splits for c in full + pruned),
        "pruned_epoch_cost": pruned_epoch_cost,
        "drop": None if dense is None or dense["acc"] is None or acc is None else dense["acc"] - acc,
        "flops_pct": None if flops is None else 100 * flops, "params_pct": None if params is None else 100 * params,
        "cpu_time": cpu, "wall_time": wall,
        "cpu_ratio": cpu_ratio, "cpu_ratio_runs": cpu_ratio_runs,
        "cpu_ratio_own_clock": own_clock,
        "inference_speedup": speed, "inference_speedup_std": speed_std, "train_speedup": train_speed,
        "clock": next(((r.get("bench") or {}).get("clock") for r in records if r.get("bench")), None),
        "t_sl_start": [r.get("t_sl_start") for r in records], "t_star": [r.get("t_star") for r in records],
    }


def goals(s: dict) -> dict:
    """Issue 16's bar: within 0.3 points of dense, <= 0.8x its CPU time, ahead of random and
    prune-at-init by more than their spread (None: not decidable yet; a spread needs two seeds)."""
    def ahead(other):
        acc, std = s[f"{other}_acc"], s[f"{other}_acc_std"]
        if s["best_ocspruner_acc"] is None or acc is None or std is None:
            return None
        return s["best_ocspruner_acc"] - acc > std
    drop, ratio = s["best_ocspruner_drop"], s["best_ocspruner_cpu_ratio"]
    return {"drop_within_0.3": None if drop is None else drop <= 0.3,
            "cpu_ratio_at_most_0.8": None if ratio is None else ratio <= 0.8,
            "ahead_of_random_by_spread": ahead("random"), "ahead_of_pai_by_spread": ahead("pai")}


def pick_on_validation(runs: dict) -> tuple[list[int], dict]:
    """The seeds the OCSPruner variants are compared on and each variant's mean final validation
    accuracy over them: the seeds every variant of ``runs`` (label -> its finished run records)
    has finished, so that a variant's lucky (or unlucky) extra seed cannot decide the pick; all
    of a variant's seeds where they share none. The best variant is picked on the validation
    split, never on the test set (ties: the first label)."""
    seeds = [{r["seed"] for r in recs} for recs in runs.values()]
    common = sorted(set.intersection(*seeds)) if seeds else []
    vals = {label: statistics.fmean([r.get("final_val_acc") or 0.0 for r in recs
                                     if not common or r["seed"] in common])
            for label, recs in runs.items()}
    return common, vals


def summarize(records: dict, pending: list[str], n_train: int | None, epochs: int, labels: list[str],
              ocs_labels: tuple, dense_seeds: int) -> dict:
    """The top-level summary of the finished ``records`` (key -> record): one entry per label of
    ``labels`` with a finished run, in that order; the best of ``ocs_labels``; None where no run
    of a method finished yet (its runs are in ``pending``)."""
    by_label: dict = {}
    for rec in records.values():
        by_label.setdefault(rec["label"], []).append(rec)
    dense = label_stats(by_label["dense"], None, epochs) if by_label.get("dense") else None
    methods = {label: label_stats(by_label[label], dense, epochs, by_label.get("dense"))
               for label in labels if by_label.get(label)}
    ocs = [label for label in ocs_labels if label in methods]
    pick_seeds, pick_vals = pick_on_validation({label: by_label[label] for label in ocs})
    best = max(ocs, key=lambda label: pick_vals[label]) if ocs else None
    get = (lambda label, k: methods[label][k] if label in methods else None)
    summary = {
        "n_train": n_train, "epochs": epochs, "seeds": list(range(dense_seeds)),
        "dense_acc": get("dense", "acc"), "dense_acc_std": get("dense", "acc_std"),
        "best_ocspruner_method": best, "best_ocspruner_picked_on_seeds": pick_seeds,
        "best_ocspruner_pick_val_acc": pick_vals,
        "best_ocspruner_acc": get(best, "acc"), "best_ocspruner_acc_std": get(best, "acc_std"),
        "best_ocspruner_drop": get(best, "drop"), "best_ocspruner_drop_std": get(best, "acc_std"),
        "best_ocspruner_cpu_ratio": get(best, "cpu_ratio"),
        "best_ocspruner_cpu_ratio_own_clock": get(best, "cpu_ratio_own_clock"),
        "best_ocspruner_inference_speedup": get(best, "inference_speedup"),
        "random_acc": get("random", "acc"), "random_acc_std": get("random", "acc_std"),
        "pai_acc": get("snip", "acc"), "pai_acc_std": get("snip", "acc_std"), "pai_method": "snip",
        "ato_acc": get("ato", "acc"), "ato_acc_std": get("ato", "acc_std"),
        # the same work, measured in different machine states: every full-size epoch of every run
        "full_size_epoch_cpu_range": epoch_cpu_range(records.values()),
        "finished_seeds": {label: m["seeds"] for label, m in methods.items()},
        "methods": methods, "pending": list(pending), "complete": not pending,
    }
    summary["goals"] = goals(summary)
    return summary
