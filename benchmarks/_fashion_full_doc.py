"""docs/fashion_full.md for benchmarks/fashion_full.py (issue 16): the table, Fig. 1, 3 and 4, from
the study's result dict (what fashion_full.json holds). Rendering only: nothing here runs or
reads a run directory. The doc's "What it shows" section is written by a person and kept across
rewrites."""
from __future__ import annotations

import json
import os
import re

from ocspruner.checkpoint import atomic_write_text


def _f(v, spec: str, suffix: str = "") -> str:
    return "-" if v is None else format(v, spec) + suffix


def _seeds(seeds) -> str:
    if not seeds:
        return "-"
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(x) for x in seeds)


def _range(pair) -> str:
    return "-" if not pair else f"{pair[0]:.0f} and {pair[1]:.0f}"


def table_lines(summary: dict, labels) -> list[str]:
    """The table, one row per label in ``labels`` (pending where none of its runs finished)."""
    head = ("| method | runs (seeds) | test acc (mean ± std) | drop vs dense (points) | FLOPs % | params % | "
            "inference speed-up (measured, batch 64) | train-step speed-up | CPU time vs dense | "
            "CPU vs dense, own clock | CPU time (min) | "
            "training wall time (min) | epochs at full size / a pruned epoch's CPU vs dense's | "
            "t_sl-start / t* per seed |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label in labels:
        m = summary["methods"].get(label)
        if m is None:
            lines.append(f"| {label} | pending |" + " - |" * (head.count("|") - 3))
            continue
        ts = ", ".join(f"{_f(a, 'd')}/{_f(b, 'd')}" for a, b in zip(m["t_sl_start"], m["t_star"]))
        lines.append(
            f"| {label} | {m['n']} ({','.join(map(str, m['seeds']))}) | {_f(m['acc'], '.2f')} ± {_f(m['acc_std'], '.2f')} "
            f"| {_f(m['drop'], '+.2f')} | {_f(m['flops_pct'], '.1f')} | {_f(m['params_pct'], '.1f')} "
            f"| {_f(m['inference_speedup'], '.2f', 'x')} | {_f(m['train_speedup'], '.2f', 'x')} "
            f"| {_f(m['cpu_ratio'], '.2f', 'x')}{_runs_of(m)} | {_f(m.get('cpu_ratio_own_clock'), '.2f', 'x')} "
            f"| {_f(None if m['cpu_time'] is None else m['cpu_time'] / 60, '.1f')} "
            f"| {_f(None if m['wall_time'] is None else m['wall_time'] / 60, '.1f')} "
            f"| {_f(m['full_size_epochs'], '.1f')} / {_f(m['pruned_epoch_cost'], '.2f', 'x')} | {ts} |")
    return lines


def _runs_of(m: dict) -> str:
    """" (k of n runs)" when the CPU ratio against dense covers fewer runs than the row has."""
    k = m.get("cpu_ratio_runs")
    return "" if k is None or k == m["n"] else f" ({k} of {m['n']} runs)"


def fig1_rows(summary: dict) -> list[dict]:
    """Rows in compare.plot_fig1's shape (marker size: CPU-time speed-up vs dense)."""
    return [{"method": label, "acc_mean": m["acc"], "acc_std": m["acc_std"], "flops_pct": m["flops_pct"] or 100.0,
             "speedup_vs_dense": None if not m["cpu_ratio"] else 1 / m["cpu_ratio"]}
            for label, m in summary["methods"].items()]


def first_stable(series: list[dict], epsilon: float):
    return next((r["epoch"] for r in series if r.get("similarity_avg") is not None
                 and r["similarity_avg"] >= 1 - epsilon), None)


def plot_fig3(curves: dict, epsilon: float, path: str) -> str | None:
    """J_avg (solid) and raw J (dotted) per epoch, with and without Eq. 8/9, on one axis."""
    from ocspruner.reporting.plots import _epoch_axis, _legend_below, _save, _series, plt

    if not any(_series(c["metrics"], "similarity_avg")[1] for c in curves.values()):
        return None
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for (name, c), colour in zip(curves.items(), ("tab:red", "tab:blue")):
        ax.plot(*_series(c["metrics"], "similarity_avg"), "o-", color=colour, label=f"J_avg, {name}")
        ax.plot(*_series(c["metrics"], "similarity"), ":", color=colour, alpha=0.6, label=f"raw J, {name}")
        if c["t_star"] is not None:
            ax.axvline(c["t_star"], color=colour, ls="--", alpha=0.5, label=f"t*, {name}")
    ax.axhline(1 - epsilon, color="gray", ls="-.", label="1 - epsilon")
    _epoch_axis(ax)
    ax.set_ylabel("stability score")
    ax.set_title("Fig. 3, full Fashion-MNIST: ResNet-20, 50% FLOPs, seed 0")
    ax.grid(True, alpha=0.3)
    _legend_below(ax)
    return _save(fig, path)


def fig3_section(runs: dict, epsilon: float, path: str) -> list[str]:
    pairs = (("with Eq. 8 + Eq. 9 (ocspruner-s0)", "ocspruner-s0"), ("without (fig3-noreg-s0)", "fig3-noreg-s0"))
    curves = {name: runs[key] for name, key in pairs if key in runs}
    lines = ["## Fig. 3: does regularisation make J_avg converge faster?", "",
             "Seed 0, the shipped recipe (the same prune cap); the only difference is "
             "`pruning.use_eq8=false pruning.use_eq9=false`.", ""]
    if not curves:
        return lines + ["Pending.", ""]
    lines += ["| regularisation | t_sl-start | first epoch J_avg >= 1-eps | t* | J_avg per epoch | test acc |",
              "|---|---|---|---|---|---|"]
    for name, c in curves.items():
        js = ", ".join(f"{r['epoch']}:{r['similarity_avg']:.3f}" for r in c["metrics"] if r.get("similarity_avg") is not None)
        lines.append(f"| {name} | {_f(c['t_sl_start'], 'd')} | {_f(first_stable(c['metrics'], epsilon), 'd')} | "
                     f"{_f(c['t_star'], 'd')} | {js or '-'} | {c['final_test_acc']:.2f} |")
    lines += machine_note([runs[key] for _, key in pairs if key in runs])
    png = plot_fig3(curves, epsilon, path)
    return lines + ([""] + ([f"![Fig. 3]({os.path.basename(png)})"] if png else []) + [""])


def machine_note(recs: list[dict]) -> list[str]:
    """A line for runs of one seed compared across machines: the same seed and recipe do not give
    the same arithmetic on another CPU (1 Dec: seed 1's epoch-0 validation 83.92% on the first
    machine, 82.85% on the second, where GReg's and ATO's seed 1 agree with each other to the
    digit), so until the runs' first difference in method they are the same computation, and
    what they differ by there is the machine's part of any difference. Empty on one machine."""
    if len(recs) < 2 or len({r.get("machine") for r in recs}) < 2:
        return []
    starts = [r.get("t_sl_start") for r in recs]
    before = min(t for t in starts if t is not None) if any(t is not None for t in starts) else None
    per = [{m["epoch"]: m.get("similarity_avg") for m in r.get("metrics") or []} for r in recs]
    gaps = [abs(per[0][e] - per[1][e]) for e in per[0]
            if before is not None and e < before and per[0][e] is not None and per[1].get(e) is not None]
    val0 = [next((m.get("val_acc") for m in r.get("metrics") or [] if m["epoch"] == 0), None) for r in recs]
    return ["", "They trained on different machines (fashion_full.json's `machine`), whose arithmetic rounds "
            "differently: the same seed's epoch-0 validation reads " + " and ".join(_f(v, ".2f", "%") for v in val0)
            + (f", and until Eq. 5 fired (epoch {before}) J_avg differs by up to {max(gaps):.3f}" if gaps else "")
            + ". That much of the difference is the machine's, not the method's."]


def plot_fig4(points: list[dict], autos: list[dict], j_avg: list[dict], path: str,
              j_avg_label: str = "ocspruner-s0") -> str | None:
    """Final accuracy vs pruning epoch (fixed t*), OCSPruner's own (t*, acc), and J_avg."""
    from ocspruner.reporting.plots import _epoch_axis, _save, _series, plt

    if not points and not autos:
        return None
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    if points:
        ax.plot([p["prune_epoch"] for p in points], [p["acc"] for p in points], "o-", label="fixed t* (1 seed)")
    if autos:
        ax.plot([a["t_star"] for a in autos], [a["acc"] for a in autos], "r*", markersize=10,
                label="OCSPruner, automatic t* (per seed)")
    _epoch_axis(ax)
    ax.set_xlabel("pruning epoch t*")
    ax.set_ylabel("final test accuracy (%)")
    ax2 = ax.twinx()
    xs, ys = _series(j_avg, "similarity_avg")
    if ys:
        ax2.plot(xs, ys, "--", color="gray", label=f"J_avg ({j_avg_label})")
    ax2.set_ylabel("stability score J_avg")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_title("Fig. 4, full Fashion-MNIST: final accuracy vs pruning epoch")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def j_avg_reference(runs: dict) -> str | None:
    """Whose J_avg Fig. 4 reads: the fixed run that prunes last (a fixed run searches and
    regularises as OCSPruner does, Eq. 6 aside, so until its prune its J_avg is OCSPruner's on
    its own machine, the fixed runs' machine), else ocspruner-s0."""
    fixed = [k for k, r in runs.items() if r["label"] == "fig4"]
    if fixed:
        return max(fixed, key=lambda k: runs[k]["updates"]["method_options"]["prune_epoch"])
    return "ocspruner-s0" if "ocspruner-s0" in runs else None


def fig4_section(runs: dict, path: str, epsilon: float = 0.0, epochs: int | None = None) -> list[str]:
    """Fig. 4: each fixed run's final accuracy and CPU cost (own clock: pruning earlier is cheaper,
    and that is the trade a user makes) beside J_avg at its pruning epoch."""
    from _fashion_full_stats import own_clock_ratio

    def cpu(r):
        return own_clock_ratio(r.get("metrics") or [], epochs) if epochs else None

    ref = j_avg_reference(runs)
    j_avg = runs[ref].get("metrics", []) if ref else []
    javg_at = {r["epoch"]: r.get("similarity_avg") for r in j_avg}
    points = sorted(({"prune_epoch": r["updates"]["method_options"]["prune_epoch"], "acc": r["final_test_acc"],
                      "val": r.get("final_val_acc"),
                      "cpu": cpu(r)}
                     for r in runs.values() if r["label"] == "fig4"), key=lambda p: p["prune_epoch"])
    autos = [{"t_star": r["t_star"], "acc": r["final_test_acc"], "val": r.get("final_val_acc"), "seed": r["seed"],
              "cpu": cpu(r)}
             for r in runs.values() if r["label"] == "ocspruner" and r.get("t_star") is not None]
    lines = ["## Fig. 4: is the final accuracy best where J_avg levels off?", "",
             "`ocspruner_fixed` (t* fixed in advance, seed 0) at epochs across the cycle, beside J_avg "
             f"({ref or '-'}'s: until its prune a fixed run searches and regularises as OCSPruner does, on the "
             "fixed runs' machine) and the automatic t* of every OCSPruner seed. CPU on each run's own clock (the "
             "paragraph \"Cost\" above): what pruning earlier saves.", ""]
    if not points and not autos:
        return lines + ["Pending.", ""]
    if ref and ref != "ocspruner-s0":
        eq6 = first_stable([r for r in j_avg if r.get("stage") == "sparsity"], epsilon)
        lines += [f"Eq. 6 would have fired at epoch {_f(eq6, 'd')} in {ref} (the first regularised epoch with "
                  f"J_avg >= 1 - epsilon; '-': not before its prune).", ""]
    # validation accuracy beside test: a recipe choice (the prune cap) is read off the validation column
    lines += ["| pruning epoch | final validation acc | final test acc | CPU vs dense, own clock | "
              f"J_avg at that epoch ({ref or '-'}) |", "|---|---|---|---|---|"]
    lines += [f"| {p['prune_epoch']} (fixed) | {_f(p['val'], '.2f')} | {p['acc']:.2f} | {_f(p['cpu'], '.2f', 'x')} | "
              f"{_f(javg_at.get(p['prune_epoch']), '.3f')} |" for p in points]
    lines += [f"| {a['t_star']} (automatic, seed {a['seed']}) | {_f(a['val'], '.2f')} | {a['acc']:.2f} | "
              f"{_f(a['cpu'], '.2f', 'x')} | {_f(javg_at.get(a['t_star']), '.3f')} |" for a in autos]
    png = plot_fig4(points, autos, j_avg, path, ref or "-")
    return lines + ([""] + ([f"![Fig. 4]({os.path.basename(png)})"] if png else []) + [""])


def _pair_cell(row: dict | None) -> str:
    if row is None:
        return "-"
    return f"{row['diff_points']:+.2f} ± {row['paired_se_points']:.2f} (p {row['mcnemar_p']:.3f})"


def paired_section(paired: dict | None, finished: list[str], labels=()) -> list[str]:
    """The image-by-image comparisons of ``benchmarks/fashion_full_paired.py`` (its JSON, or None),
    and which finished runs it has not scored yet; rows in the order of ``labels`` (the table's)."""
    lines = ["## Paired on the test set: which differences can 10k images resolve?", "",
             "`python benchmarks/fashion_full_paired.py` (no training) scores every finished run's final model "
             "image by image on the one test set. A difference between two models rests only on the images one "
             "gets right and the other wrong; ± is the paired standard error of the difference (points), p "
             "McNemar's exact two-sided test.", ""]
    if paired is None:
        return lines + ["Not computed yet.", ""]
    s = paired["summary"]
    best = s.get("best_ocspruner_method")
    missing = [k for k in finished if k not in paired["runs"]]
    lines += [f"Scored: {len(paired['runs'])} runs. Median paired error {s['median_paired_se_points']:.3f} points: "
              f"a difference under about {s['resolvable_difference_points']:.2f} points (1.96 of them) is not "
              f"told apart from chance. Two seeds of one method differ significantly (p < 0.05) in "
              f"{s['seed_vs_seed_significant']} of {s['seed_vs_seed_pairs']} pairs."
              + (f" Not scored yet (finished since): {', '.join(missing)}; rerun the command." if missing else ""), ""]
    unscored = s.get("unscored_pairs") or []
    if unscored:
        lost = s.get("runs_without_predictions") or []
        lines += [f"Not scorable: {len(unscored)} pairs with one of {len(lost)} runs whose models went with an "
                  f"earlier machine's work directory before their right/wrong bits were kept (the pairs scored "
                  f"while those models existed are kept above): "
                  + ", ".join(f"{a} - {b}" for _, a, b in unscored) + ".", ""]
    rows = paired["pairs"]
    from fashion_full_paired import split_key

    fig_kinds = ("fig_vs_ocspruner", "fig4_vs_fig4")
    seeds = sorted({split_key(r["a"])[1] for r in rows if r["kind"] not in fig_kinds})

    def find(kind, a_label, b_label, seed):
        return next((r for r in rows if r["kind"] == kind and r["a"] == f"{a_label}-s{seed}"
                     and r["b"] == f"{b_label}-s{seed}"), None)
    compared = {split_key(r["b"])[0] for r in rows if r["kind"] == "best_ocspruner_vs"}
    others = [lb for lb in labels if lb in compared] + sorted(compared - set(labels))
    lines += [f"| {best} minus | " + " | ".join(f"seed {k}" for k in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    lines += [f"| dense | " + " | ".join(_pair_cell(find("vs_dense", best, "dense", k)) for k in seeds) + " |"]
    lines += [f"| {o} | " + " | ".join(_pair_cell(find("best_ocspruner_vs", best, o, k)) for k in seeds) + " |"
              for o in others]
    fig = [r for r in rows if r["kind"] in fig_kinds]
    if fig:
        lines += ["", "| Fig. 3/4 run minus the paper partition's run of its seed, or Fig. 4's runs against each "
                  "other | difference |", "|---|---|"]
        lines += [f"| {r['a']} - {r['b']} | {_pair_cell(r)} |" for r in fig]
    return lines + [""]


WHAT_IT_SHOWS_HEAD = "## What it shows"
WHAT_IT_SHOWS_TODO = ("_To be written by a person when the runs have finished (kept when the script rewrites this "
                      "file): is OCSPruner within 0.3 points of dense at <= 0.8x its CPU time, and ahead of random "
                      "and prune-at-init by more than their spread? Where does a simpler method win? Where it falls "
                      "short: why (recipe, lambda, cap, partition), found without tuning on the test set._")


def kept_section(path: str) -> str:
    """The hand-written "What it shows" section of the existing doc (or the placeholder)."""
    if not os.path.exists(path):
        return WHAT_IT_SHOWS_TODO
    text = open(path).read()
    m = re.search(rf"^{re.escape(WHAT_IT_SHOWS_HEAD)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    return m.group(1).strip() if m and m.group(1).strip() else WHAT_IT_SHOWS_TODO


def write_doc(result: dict, cfg, labels, paths: dict) -> None:
    """docs/fashion_full.md from the study's ``result`` (fashion_full.json's content); ``cfg``: the
    recipe's RunConfig, ``labels``: the table's rows in order. The "What it shows" section of the
    existing doc is kept."""
    s, runs = result["summary"], result["runs"]
    p = cfg.pruning
    n_runs = len(runs) + len(s["pending"])
    cpu_total = sum(r.get("cpu_time") or 0 for r in runs.values()) / 3600
    lines = [
        "# OCSPruner on the whole of Fashion-MNIST: every method, three seeds (issue 16)", "",
        f"Command (resumable; the same command skips finished runs): `{result['command']}`  ",
        f"Status: {len(runs)} of {n_runs} runs finished ({cpu_total:.1f} CPU-hours so far)"
        + (f"; pending: {', '.join(s['pending'])}" if s["pending"] else "") + ".  ",
        f"Recipe: the shipped config `{result['config']}` for every method: ResNet-20, {cfg.epochs} epochs, "
        f"{_f(s['n_train'], 'd')} training images (validation {cfg.data.val_fraction:.0%} carved from the 60k "
        f"training set), batch {cfg.data.batch_size}, SGD lr {cfg.optim.lr} {cfg.schedule.name}; target "
        f"{p.target:.0%} FLOPs removed; r={p.window}, i={p.offset}, tau={p.tau}, epsilon={p.epsilon}, "
        f"lambda0={p.lambda0}, delta={p.delta}, prune cap epoch {p.max_prune_epoch}. Test accuracy: the final "
        f"model on the 10k test set. Why the shipped recipe, untuned: it is what a user gets from "
        f"`--config {result['config']}` and what the issue's first measurement used; its training settings "
        f"are the usual CIFAR ones and its pruning settings (i, r, the cap) were set for a 15-epoch cycle before "
        f"this study. No recipe search was run on the validation split: every method trains under the same "
        f"recipe, searched for none of them (a search per method would cost the study several times over). "
        f"The one choice made on validation is the capped knapsack variant (below). " + (f"Smoke-test overrides: {result['updates']}." if result["updates"] else ""),
        "",
        "Cost: process CPU time of each run (one torch thread; set-up and test evaluation included). Other "
        "processes cannot add time slices to it as they add wall time, but they share the caches: the same "
        f"full-size epoch cost between {_range(s.get('full_size_epoch_cpu_range'))} s of CPU across this "
        "study's runs, with what ran beside it. "
        "So the CPU ratio is shown twice: against dense's runs (the issue's measure), and against the run's own "
        "full-size epochs (\"own clock\": its epochs' CPU / (the cycle's epochs x its mean full-size epoch, "
        "ATO's controller epochs, which also train the controller, excepted); "
        "none for a run that never trains at full size). The training wall time (epochs only) is shown "
        "beside them. Measured speed-up: "
        "`ocspruner.bench.bench_run`, the pruned model against its dense architecture, batch 64, one thread, "
        f"clock `{_f(next((m['clock'] for m in s['methods'].values() if m.get('clock')), None), 's')}` "
        "(median of per-round ratios). Mean ± std over the finished seeds (sample std).", "",
        "## Table", "", *table_lines(s, labels), "",
        "Methods: `ocspruner` is the paper's partition (`pruning.partition=ranking`), `ocspruner_knapsack` the "
        "cost-aware one at the same FLOPs budget, channels priced by the measured training step (`pruning.price="
        "train_latency`), and `ocspruner_knapsack_cap50` that knapsack with no group pruned past half its width "
        "(`pruning.max_prune_fraction=0.5`, the shipped cap is 0.75); `snip` is the data-driven prune-at-init; `ato` steps its controller every iteration "
        "(`controller_every=1`). CPU time vs dense: mean CPU time / dense's mean CPU time, on the same "
        "machine: a session on a fresh checkout trains on a new machine (fashion_full.json's `machines`; a run "
        "with no `machine` trained in the study's first work directory), so a run is compared with dense's runs "
        "on its machine, machines weighted by their runs, and a run on a machine without a dense run counts in "
        "the own clock only (\"k of n runs\"). Where it "
        "comes from: the epochs that trained the full-size network (before the prune; GReg's and "
        "prune_finetune's dense cycle included) and the CPU time of a pruned epoch over a dense run's "
        "epoch (per-epoch CPU from metrics.jsonl).", "",
        f"Summary: dense {_f(s['dense_acc'], '.2f')} ± {_f(s['dense_acc_std'], '.2f')}; best OCSPruner by validation accuracy "
        f"on the seeds every variant finished ({_seeds(s.get('best_ocspruner_picked_on_seeds'))}: "
        f"{s['best_ocspruner_method'] or '-'}) {_f(s['best_ocspruner_acc'], '.2f')} ± "
        f"{_f(s['best_ocspruner_acc_std'], '.2f')}, drop {_f(s['best_ocspruner_drop'], '+.2f')} points at "
        f"{_f(s['best_ocspruner_cpu_ratio'], '.2f')}x dense's CPU time "
        f"(own clock {_f(s.get('best_ocspruner_cpu_ratio_own_clock'), '.2f')}x); random {_f(s['random_acc'], '.2f')} ± "
        f"{_f(s['random_acc_std'], '.2f')}; prune-at-init (snip) {_f(s['pai_acc'], '.2f')} ± "
        f"{_f(s['pai_acc_std'], '.2f')}; ATO {_f(s['ato_acc'], '.2f')} ± {_f(s['ato_acc_std'], '.2f')}.  ",
        "Goals (issue 16; none = not decidable yet" + ("" if s["complete"] else
                                                       "; provisional: not every run has finished") + "): "
        + ", ".join(f"{k}: {v}" for k, v in s["goals"].items()) + ".",
        "",
    ]
    warned = [f"- {k}: {w}" for k, r in runs.items() for w in r.get("warnings", [])]
    if warned:
        lines += ["Warnings raised by runs:", "", *warned, ""]
    if result["failed"]:
        lines += ["Failed runs (they stay pending; see WORK/logs/<key>.log):", "",
                  *[f"- {k}: `{v}`" for k, v in result["failed"].items()], ""]
    from ocspruner.compare import plot_fig1
    fig1 = plot_fig1(fig1_rows(s), paths["fig1"]) if s["methods"] else None
    lines += ["## Fig. 1: accuracy vs FLOPs", "",
              f"![Fig. 1]({os.path.basename(fig1)})" if fig1 else "Pending.", ""]
    lines += fig3_section(runs, p.epsilon, paths["fig3"])
    lines += fig4_section(runs, paths["fig4"], p.epsilon, cfg.epochs)
    paired = json.load(open(paths["paired"])) if os.path.exists(paths["paired"]) else None
    lines += paired_section(paired, list(runs), labels)
    lines += [WHAT_IT_SHOWS_HEAD, "", kept_section(paths["doc"]), ""]
    atomic_write_text(paths["doc"], "\n".join(lines))
