"""Figures for one run directory (``metrics.jsonl``, ``summary.json``, ``channels.json``).

Every ``plot_*`` function is pure in the sense that it takes already-loaded data (lists/dicts),
writes one PNG to ``path`` and returns that path as a string, or returns ``None`` without writing
anything when the data holds nothing to draw. ``None``/NaN/inf values are filtered point by point,
never raised on. ``write_all_plots(run_dir)`` is the one entry that touches the filesystem layout.

Metric record keys (one JSON object per epoch): ``epoch``, ``stage``, ``train_loss``,
``train_acc``, ``val_loss``, ``val_acc``, ``similarity`` (J, Eq. 3), ``similarity_avg``
(J_avg, Eq. 4), ``lambda``, ``lr``, ``flops``, ``params``, ``flops_reduction`` (0-1),
``epoch_time``, ``events``, ``group_norms`` (quantiles of the pruning and kept sets' group norms).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:   # a host that already chose a backend keeps it
    try:
        matplotlib.use("Agg")
    except Exception:  # pragma: no cover - savefig works under any backend; keep going
        pass

import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice on purpose)

__all__ = ["load_run", "plot_stability", "plot_channels", "plot_curves", "plot_cost",
           "plot_group_norms", "write_all_plots"]

DPI = 120
_STAGE_COLOURS = {"search": "tab:blue", "sparsity": "tab:orange", "pruned": "tab:green",
                  "dense": "tab:gray"}


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    with open(path, "r", encoding="utf-8") as fh:
        return json.load(fh)


def load_run(run_dir) -> Dict[str, Any]:
    """Load a run directory into ``{"metrics": [...], "summary": {...}, "channels": [...] | None}``.

    ``metrics.jsonl`` is required (``FileNotFoundError`` otherwise). Blank lines and lines that do
    not parse as a JSON object (e.g. a half-written last line of a crashed run) are skipped.
    A missing/unreadable ``summary.json`` gives ``{}``; a missing/unreadable ``channels.json`` gives
    ``None``. ``channels.json`` may be ``{"layers": [...]}`` or a bare list of layer dicts.
    """
    run_dir = Path(run_dir)
    mpath = run_dir / "metrics.jsonl"
    if not mpath.is_file():
        raise FileNotFoundError(f"no metrics file: {mpath}")
    metrics: List[Dict[str, Any]] = []
    with open(mpath, "r", encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                metrics.append(rec)

    summary: Dict[str, Any] = {}
    spath = run_dir / "summary.json"
    if spath.is_file():
        try:
            loaded = _read_json(spath)
            if isinstance(loaded, dict):
                summary = loaded
        except (ValueError, OSError):
            summary = {}

    channels: Optional[List[Dict[str, Any]]] = None
    cpath = run_dir / "channels.json"
    if cpath.is_file():
        try:
            loaded = _read_json(cpath)
        except (ValueError, OSError):
            loaded = None
        layers = loaded.get("layers") if isinstance(loaded, dict) else loaded
        if isinstance(layers, list):
            channels = [layer for layer in layers if isinstance(layer, dict)]
    return {"metrics": metrics, "summary": summary, "channels": channels}


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def _num(value: Any) -> Optional[float]:
    """A finite float, or None for None/NaN/inf/bools/non-numbers."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _epochs(metrics: Sequence[Mapping[str, Any]]) -> List[float]:
    """x values: the record's ``epoch`` when it is a number, else its position."""
    xs = []
    for i, rec in enumerate(metrics):
        e = _num(rec.get("epoch")) if isinstance(rec, Mapping) else None
        xs.append(float(i) if e is None else e)
    return xs


def _series(metrics: Sequence[Mapping[str, Any]], key: str,
            scale: float = 1.0) -> Tuple[List[float], List[float]]:
    """(x, y) for ``key`` with every point whose value is missing or not finite dropped."""
    xs, ys = [], []
    for x, rec in zip(_epochs(metrics), metrics):
        y = _num(rec.get(key)) if isinstance(rec, Mapping) else None
        if y is not None:
            xs.append(x)
            ys.append(y * scale)
    return xs, ys


def _stage_changes(metrics: Sequence[Mapping[str, Any]]) -> List[Tuple[float, str]]:
    """(epoch, new stage) at each epoch whose ``stage`` differs from the previous record's."""
    out = []
    prev = None
    for i, (x, rec) in enumerate(zip(_epochs(metrics), metrics)):
        stage = rec.get("stage") if isinstance(rec, Mapping) else None
        if stage is None:
            continue
        stage = str(stage)
        if prev is not None and stage != prev:
            out.append((x, stage))
        prev = stage
    return out


def _mark_stages(ax, changes: Sequence[Tuple[float, str]], label_text: bool = True) -> None:
    """A dashed line where the stage changes; named in the legend (``label_text``), never written
    across the curves."""
    for x, stage in changes:
        colour = _STAGE_COLOURS.get(stage, "tab:purple")
        ax.axvline(x, color=colour, linestyle="--", linewidth=1.0, alpha=0.8,
                   label=f"{stage} from epoch {x:g}" if label_text else None)


def _epoch_axis(ax) -> None:
    """x axis in whole epochs (no 0.5 ticks on a short run)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend_below(ax, handles=None, ncol: int = 3) -> None:
    """The legend under the axes, where it cannot hide a line."""
    kw = {"handles": handles, "labels": [h.get_label() for h in handles]} if handles else {}
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol, fontsize=8, frameon=False, **kw)


def _mark_sl_start_and_t_star(ax, t0, t1) -> None:
    """Vertical markers at t_sl-start and t* (Fig. 3 style)."""
    if t0 is not None:
        ax.axvline(t0, linestyle="--", color="tab:green", linewidth=1.2, label="t_sl-start")
    if t1 is not None:
        ax.axvline(t1, linestyle="--", color="black", linewidth=1.2, label="t*")


def _save(fig, path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return str(path)


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def plot_stability(metrics: Sequence[Mapping[str, Any]], t_sl_start: Optional[float],
                   t_star: Optional[float], path, title: str = "Sub-network stability"
                   ) -> Optional[str]:
    """Paper Fig. 3 style: raw J (dotted, small markers) and J_avg (solid) vs epoch.

    Dashed verticals at ``t_sl_start`` and ``t_star`` when given, the sparsity-learning stage
    [t_sl_start, t*] shaded. Returns None (nothing written) when no epoch has a J or J_avg value.
    """
    xj, yj = _series(metrics, "similarity")
    xa, ya = _series(metrics, "similarity_avg")
    if not yj and not ya:
        return None
    t0, t1 = _num(t_sl_start), _num(t_star)

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    if t0 is not None and t1 is not None and t1 > t0:
        ax.axvspan(t0, t1, color="tab:orange", alpha=0.12, label="sparsity learning")
    if yj:
        ax.plot(xj, yj, linestyle=":", marker="o", markersize=3, linewidth=1.2,
                color="tab:blue", label="J (raw)")
    if ya:
        ax.plot(xa, ya, linestyle="-", linewidth=1.8, color="tab:red", label="J_avg")
    _mark_sl_start_and_t_star(ax, t0, t1)
    ax.set_ylim(0.0, 1.02)
    _epoch_axis(ax)
    ax.set_ylabel("similarity")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend_below(ax)
    return _save(fig, path)


def plot_channels(layers: Optional[Sequence[Mapping[str, Any]]], path,
                  title: str = "Retained channels per layer") -> Optional[str]:
    """Supplement Fig. 6 style: original channels (light bars) with retained channels (dark bars)
    overlaid, one bar per layer in network order. Layers without a usable ``original`` count are
    skipped; a missing ``kept`` draws only the original bar. Returns None when nothing is left."""
    names, orig, kept = [], [], []
    for i, layer in enumerate(layers or []):
        if not isinstance(layer, Mapping):
            continue
        o = _num(layer.get("original"))
        k = _num(layer.get("kept"))
        if o is None and k is None:
            continue
        names.append(str(layer.get("name", f"layer{i}")))
        orig.append(o if o is not None else k)
        kept.append(k if k is not None else 0.0)
    if not names:
        return None

    n = len(names)
    width = min(max(6.0, 0.22 * n + 2.0), 30.0)   # grows with depth, capped
    fontsize = 7 if n <= 60 else 5
    fig, ax = plt.subplots(figsize=(width, 4.5))
    xs = list(range(n))
    ax.bar(xs, orig, width=0.8, color="#c6dbef", edgecolor="#9ecae1", linewidth=0.5,
           label="original")
    ax.bar(xs, kept, width=0.8, color="#08519c", label="retained")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=90, fontsize=fontsize)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("channels")
    total_o, total_k = sum(orig), sum(kept)
    if total_o > 0:
        title = f"{title} ({100.0 * total_k / total_o:.1f}% of channels kept)"
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_curves(metrics: Sequence[Mapping[str, Any]], path) -> Optional[str]:
    """Loss (train, val) and accuracy (train, val) vs epoch in two subplots, with a vertical line
    (labelled with the new stage) wherever ``stage`` changes. Returns None when no loss or
    accuracy value is present at all."""
    series = {key: _series(metrics, key)
              for key in ("train_loss", "val_loss", "train_acc", "val_acc")}
    if not any(ys for _, ys in series.values()):
        return None
    changes = _stage_changes(metrics)

    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11.0, 4.0))
    for ax, kind, ylabel in ((ax_l, "loss", "loss"), (ax_a, "acc", "accuracy (%)")):
        drawn = False
        for split, style in (("train", "-"), ("val", "--")):
            xs, ys = series[f"{split}_{kind}"]
            if ys:
                ax.plot(xs, ys, linestyle=style, marker="o" if len(xs) < 3 else None,
                        markersize=3, label=split)
                drawn = True
        _mark_stages(ax, changes)
        _epoch_axis(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel.split(" ")[0].capitalize())
        ax.grid(True, alpha=0.3)
        if drawn:
            _legend_below(ax, ncol=2)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center",
                    color="gray")
    fig.tight_layout()
    return _save(fig, path)


def plot_cost(metrics: Sequence[Mapping[str, Any]], path,
              target: Optional[float] = None) -> Optional[str]:
    """FLOPs reduction (%) of the current/temporary sub-network per epoch, with the regulariser
    strength lambda on a twin y axis. ``target`` (a fraction 0-1 of FLOPs to remove) draws a
    horizontal reference line. Returns None when neither series has a value."""
    xr, yr = _series(metrics, "flops_reduction", scale=100.0)
    xl, yl = _series(metrics, "lambda")
    if not yr and not yl:
        return None
    tgt = _num(target)

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    handles = []
    if yr:
        handles += ax.plot(xr, yr, color="tab:blue", marker="o", markersize=3, linewidth=1.5,
                           label="FLOPs reduction (%)")
    if tgt is not None and 0.0 < tgt <= 1.0:
        handles.append(ax.axhline(100.0 * tgt, color="tab:blue", linestyle=":", linewidth=1.0,
                                  label=f"target ({100.0 * tgt:.0f}%)"))
    top = max(yr + ([100.0 * tgt] if tgt is not None and 0.0 < tgt <= 1.0 else []) + [10.0])
    ax.set_ylim(min(0.0, min(yr, default=0.0)), min(100.0, top * 1.1 + 1.0))
    _epoch_axis(ax)
    ax.set_ylabel("FLOPs reduction (%)", color="tab:blue")
    ax.tick_params(axis="y", colors="tab:blue")
    ax.grid(True, alpha=0.3)
    _mark_stages(ax, _stage_changes(metrics), label_text=False)
    if yl:
        ax2 = ax.twinx()
        handles += ax2.plot(xl, yl, color="tab:red", linestyle="--", linewidth=1.3,
                            label="lambda")
        ax2.set_ylabel("lambda", color="tab:red")
        ax2.tick_params(axis="y", colors="tab:red")
        if max(yl) == min(yl):     # flat (e.g. 0 for a dense run): give it a visible range
            ax2.set_ylim(min(yl) - 0.5 * (abs(min(yl)) or 1.0),
                         max(yl) + 0.5 * (abs(max(yl)) or 1.0))
    ax.set_title("Sub-network cost and regularisation")
    if handles:
        _legend_below(ax, handles)
    fig.tight_layout()
    return _save(fig, path)


def _norm_bands(metrics: Sequence[Mapping[str, Any]], which: str):
    """(epochs, {quantile: values}) of the ``group_norms[which]`` quantiles over epochs."""
    xs, bands = [], {}
    for x, rec in zip(_epochs(metrics), metrics):
        gn = rec.get("group_norms") if isinstance(rec, Mapping) else None
        if not isinstance(gn, Mapping) or not isinstance(gn.get(which), list) or not isinstance(gn.get("q"), list):
            continue
        values = [_num(v) for v in gn[which]]
        if len(values) != len(gn["q"]) or any(v is None for v in values):
            continue
        xs.append(x)
        for q, v in zip(gn["q"], values):
            bands.setdefault(float(q), []).append(v)
    return xs, bands


def plot_group_norms(metrics: Sequence[Mapping[str, Any]], t_sl_start: Optional[float],
                     t_star: Optional[float], path,
                     title: str = "Group norms: pruning set vs kept set") -> Optional[str]:
    """Supplement Fig. 5 style: per epoch, the distribution of the channels' group norms (Eq. 2)
    of the current pruning set (red) and of the kept set (blue), as the median with 25-75% and
    5-95% (or the widest logged) quantile bands, log scale, t_sl-start and t* marked. Reads the
    ``group_norms`` record (``{"q": [...], "pruning": [...], "kept": [...]}``); returns None when
    no epoch has one (dense runs, other methods)."""
    series = {w: _norm_bands(metrics, w) for w in ("pruning", "kept")}
    if not any(xs for xs, _ in series.values()):
        return None
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    floor = None
    for which, colour in (("kept", "tab:blue"), ("pruning", "tab:red")):
        xs, bands = series[which]
        if not xs:
            continue
        positive = [v for vals in bands.values() for v in vals if v > 0]
        low = min(positive) if positive else 1e-12
        floor = low if floor is None else min(floor, low)
        qs = sorted(bands)
        clip = lambda vals: [max(v, low * 0.5) for v in vals]   # log axis: zeros drawn at the floor
        inner = [q for q in qs if 0.2 <= q <= 0.8]
        outer = [q for q in qs if 0.0 < q < 1.0] or qs
        for lo_q, hi_q, alpha in ((outer[0], outer[-1], 0.12), (inner[0] if inner else None,
                                                              inner[-1] if inner else None, 0.3)):
            if lo_q is not None and hi_q is not None and lo_q < hi_q:
                ax.fill_between(xs, clip(bands[lo_q]), clip(bands[hi_q]), color=colour, alpha=alpha, linewidth=0)
        mid = min(qs, key=lambda q: abs(q - 0.5))
        ax.plot(xs, clip(bands[mid]), color=colour, linewidth=1.6, marker="o" if len(xs) < 3 else None,
                markersize=3, label=f"{which} set (median)")
    t0, t1 = _num(t_sl_start), _num(t_star)
    _mark_sl_start_and_t_star(ax, t0, t1)
    ax.set_yscale("log")
    _epoch_axis(ax)
    ax.set_ylabel("group norm (Eq. 2)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend_below(ax, ncol=4)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------
def write_all_plots(run_dir) -> List[str]:
    """Load ``run_dir`` and write ``plots/{stability,channels,curves,cost,group_norms}.png`` into it, skipping
    any figure without data (e.g. stability and channels for a dense run). Returns the paths
    written, in that order."""
    run = load_run(run_dir)
    metrics, summary, channels = run["metrics"], run["summary"], run["channels"]
    out_dir = Path(run_dir) / "plots"
    target = summary.get("target")
    if str(summary.get("metric", "flops")).lower() != "flops":
        target = None          # a params target is not comparable with the FLOPs curve
    jobs = (
        lambda: plot_stability(metrics, summary.get("t_sl_start"), summary.get("t_star"),
                               out_dir / "stability.png"),
        lambda: plot_channels(channels, out_dir / "channels.png"),
        lambda: plot_curves(metrics, out_dir / "curves.png"),
        lambda: plot_cost(metrics, out_dir / "cost.png", target=target),
        lambda: plot_group_norms(metrics, summary.get("t_sl_start"), summary.get("t_star"),
                                 out_dir / "group_norms.png"),
    )
    written = []
    for job in jobs:
        result = job()
        if result is not None:
            written.append(os.fspath(result))
    return written
