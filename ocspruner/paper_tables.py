"""The paper's experiments as data: every row of Tables 1-4 and supplement Tables 5-8.

A row names a shipped recipe (``ocspruner/configs/*.yaml``, the supplement's Table 8 values),
the budget, the method and its options, and the numbers the paper reports. ``scripts/tableN.py``
turn a table into runs (``run_table``) and write our numbers beside the paper's
(``format_table``). This module sits in the outer ring: it uses the config loader and the
trainer, nothing in the core depends on it.

Budgets: the paper's subscript (e.g. OCSPruner_74%) is the fraction of FLOPs removed, which is
``pruning.target``. Its FLOPs (%) column is what remains (26.01% for the 74% row).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
from dataclasses import dataclass, field
from typing import Callable, Optional

from .config import ConfigError, load_config

CIFAR_SEEDS = (0, 1, 2)     # "Our results are the average outcome from three trials" (Tables 1-2)
IMAGENET_SEEDS = (0,)       # "for ImageNet, results are reported from a single training trial"


@dataclass(frozen=True)
class Row:
    """One line of a paper table: a run recipe plus the paper's reported numbers."""

    label: str                      # the paper's row label, e.g. "OCSPruner_74%"
    config: str                     # shipped config name (ocspruner/configs/<config>.yaml)
    target: Optional[float]         # fraction of FLOPs removed; None for the dense baseline
    method: str = "ocspruner"
    updates: dict = field(default_factory=dict)   # dotted config keys on top of the config
    paper: dict = field(default_factory=dict)     # reported: flops_pct, params_pct, base_acc, acc, drop, ...
    pretrained: bool = False        # start from the dense row's final weights (supplement Table 7)


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    seeds: tuple
    rows: tuple
    columns: tuple = ("flops_pct", "params_pct", "base_acc", "acc", "drop")
    note: str = ""


def _p(flops, params, base, acc, drop, **extra) -> dict:
    return {"flops_pct": flops, "params_pct": params, "base_acc": base, "acc": acc, "drop": drop, **extra}


def _dense(config: str, **updates) -> Row:
    return Row("Baseline (dense)", config, None, method="dense", updates=updates)


TABLES: dict[str, Table] = {}


def _add(t: Table) -> None:
    TABLES[t.name] = t


_add(Table("table1", "Table 1: pruning VGG16/19 on CIFAR-10/100 (mean of three trials)", CIFAR_SEEDS, (
    _dense("cifar10_vgg16"),
    Row("OCSPruner_74%", "cifar10_vgg16", 0.74, paper=_p(26.01, 9.72, 94.08, 93.88, 0.20)),
    Row("OCSPruner_79%", "cifar10_vgg16", 0.79, paper=_p(21.22, 7.46, 94.08, 93.76, 0.32)),
    _dense("cifar100_vgg19"),
    Row("OCSPruner_89%", "cifar100_vgg19", 0.89, paper=_p(11.23, 5.49, 74.24, 70.47, 3.77)),
)))

_add(Table("table2", "Table 2: pruning ResNets on CIFAR-10 (mean of three trials)", CIFAR_SEEDS, (
    _dense("cifar10_resnet56"),
    Row("OCSPruner_53%", "cifar10_resnet56", 0.53, paper=_p(46.93, 50.27, 93.97, 93.80, 0.17)),
    Row("OCSPruner_61%", "cifar10_resnet56", 0.61, paper=_p(38.88, 41.42, 93.97, 93.65, 0.32)),
    _dense("cifar10_resnet110"),
    Row("OCSPruner_54%", "cifar10_resnet110", 0.54, paper=_p(46.37, 52.71, 94.36, 94.30, 0.06)),
    Row("OCSPruner_67%", "cifar10_resnet110", 0.67, paper=_p(33.10, 34.93, 94.36, 94.13, 0.23)),
)))

_IMNET_COLS = ("flops_pct", "params_pct", "base_acc", "acc", "drop", "base_top5", "top5", "top5_drop", "speedup")


def _p3(flops, params, base, acc, drop, b5, a5, d5, speed) -> dict:
    return _p(flops, params, base, acc, drop, base_top5=b5, top5=a5, top5_drop=d5, speedup=speed)


_add(Table("table3", "Table 3: pruning ResNet50/MobileNetV2 on ImageNet (single trial)", IMAGENET_SEEDS, (
    _dense("imagenet_resnet50"),
    Row("OCSPruner_43%", "imagenet_resnet50", 0.43, paper=_p3(56.99, 64.45, 76.29, 76.00, 0.29, 93.04, 92.90, 0.14, 1.28)),
    Row("OCSPruner_48%", "imagenet_resnet50", 0.48, paper=_p3(51.74, 62.66, 76.29, 75.95, 0.34, 93.04, 92.75, 0.29, 1.30)),
    Row("OCSPruner_57%", "imagenet_resnet50", 0.57, paper=_p3(42.98, 51.83, 76.29, 75.49, 0.80, 93.04, 92.63, 0.41, 1.38)),
    Row("OCSPruner_66%", "imagenet_resnet50", 0.66, paper=_p3(33.05, 37.13, 76.29, 74.72, 1.57, 93.04, 92.13, 0.91, 1.41)),
    _dense("imagenet_mobilenetv2"),
    Row("OCSPruner_30%", "imagenet_mobilenetv2", 0.30, paper=_p3(70.32, 87.88, 71.79, 70.96, 0.83, 90.47, 89.84, 0.63, 1.20)),
    Row("OCSPruner_55%", "imagenet_mobilenetv2", 0.55, paper=_p3(45.40, 67.76, 71.79, 68.68, 3.11, 90.47, 88.16, 2.31, 1.20)),
), columns=_IMNET_COLS, note="Top-5 is not measured by our trainer; those columns show the paper only."))

# Table 4: the ResNet-50 48% run (its auto row, 75.95% / 1.30x, is Table 3's 48% row) with
# t_sl-start fixed by hand; Eq. 6 still decides t*.
_T4 = (("0", 0, 26, 75.54, 1.28), ("15", 15, 31, 75.90, 1.28), ("30", 30, 53, 75.93, 1.19),
       ("45", 45, 69, 75.81, 1.13), ("60", 60, 86, 75.67, 1.08))
_add(Table("table4", "Table 4: varying the sparsity-learning start epoch, ResNet50 on ImageNet (48% FLOPs)",
           IMAGENET_SEEDS, (
               _dense("imagenet_resnet50"),
               *(Row(f"t_sl-start = {lab}", "imagenet_resnet50", 0.48, updates={"pruning.sl_start_epoch": e},
                     paper={"t_sl_start": e, "t_star": ts, "sl_epochs": ts - e, "acc": acc, "speedup": sp})
                 for lab, e, ts, acc, sp in _T4),
               Row("t_sl-start = auto (Eq. 5)", "imagenet_resnet50", 0.48,
                   paper={"t_sl_start": 17, "t_star": 36, "sl_epochs": 19, "acc": 75.95, "speedup": 1.30}),
           ), columns=("t_sl_start", "t_star", "sl_epochs", "acc", "speedup")))

# Supplement Table 5: Eq. 2 group saliency vs per-layer ("conventional") saliency on CIFAR-10.
_S5 = (("VGG16", "cifar10_vgg16", {}, 0.80, (19.99, 7.18, 93.87), (20.00, 3.75, 92.94)),
       ("ResNet32", "cifar10_resnet56", {"model": "resnet32"}, 0.50, (50.09, 57.88, 92.94), (50.04, 38.61, 92.60)),
       ("ResNet56", "cifar10_resnet56", {}, 0.53, (46.88, 47.66, 93.85), (47.03, 43.93, 93.48)))
_add(Table("supp_table5", "Supplement Table 5: group saliency vs conventional saliency on CIFAR-10", CIFAR_SEEDS, tuple(
    row for name, cfg, upd, tgt, grp, conv in _S5 for row in (
        Row(f"{name} group saliency", cfg, tgt, updates={**upd, "pruning.criterion": "group_l2"},
            paper={"flops_pct": grp[0], "params_pct": grp[1], "acc": grp[2]}),
        Row(f"{name} conventional saliency", cfg, tgt, updates={**upd, "pruning.criterion": "layer_l2"},
            paper={"flops_pct": conv[0], "params_pct": conv[1], "acc": conv[2]}),
    )), columns=("flops_pct", "params_pct", "acc")))

# Supplement Table 6: Eq. 8 alone, Eq. 9 alone, both. ResNet18/ImageNet uses the ResNet-50 recipe.
_S6 = (("ResNet32/CIFAR-10", "cifar10_resnet56", {"model": "resnet32"}, 0.55,
        ((44.69, 38.59, 92.09, None), (44.74, 46.94, 92.47, None), (44.98, 48.28, 92.74, None))),
       ("ResNet18/ImageNet", "imagenet_resnet50", {"model": "resnet18"}, 0.45,
        ((55.09, 55.13, 67.89, 88.00), (55.08, 66.55, 68.52, 88.31), (55.04, 67.90, 68.66, 88.61))))
_EQ = (("Eq. 8", {"pruning.use_eq8": True, "pruning.use_eq9": False}),
       ("Eq. 9", {"pruning.use_eq8": False, "pruning.use_eq9": True}),
       ("Eq. 8 and Eq. 9", {"pruning.use_eq8": True, "pruning.use_eq9": True}))
_add(Table("supp_table6", "Supplement Table 6: Eq. 8 and Eq. 9 alone and together", CIFAR_SEEDS, tuple(
    row for name, cfg, upd, tgt, nums in _S6 for row in (
        (Row(f"{name} dense", cfg, None, method="dense", updates=dict(upd)),) + tuple(
            Row(f"{name} {eq}", cfg, tgt, updates={**upd, **eq_upd},
                paper={"flops_pct": n[0], "params_pct": n[1], "acc": n[2], "top5": n[3]})
            for (eq, eq_upd), n in zip(_EQ, nums)))),
    columns=("flops_pct", "params_pct", "acc", "top5"),
    note="The paper gives three trials for CIFAR and one for ImageNet; this table runs --seeds for both."))

# Supplement Table 7: the same recipes started from a trained dense model (its dense row).
_add(Table("supp_table7", "Supplement Table 7: pruning pre-trained models with OCSPruner", CIFAR_SEEDS, (
    _dense("cifar10_vgg16"),
    Row("VGG16/CIFAR-10 pre-trained", "cifar10_vgg16", 0.79, pretrained=True, paper=_p(21.21, 13.68, 94.07, 93.63, 0.44)),
    _dense("cifar10_resnet56"),
    Row("ResNet56/CIFAR-10 pre-trained", "cifar10_resnet56", 0.61, pretrained=True, paper=_p(38.82, 42.26, 94.01, 93.50, 0.51)),
    _dense("cifar100_vgg19"),
    Row("VGG19/CIFAR-100 pre-trained", "cifar100_vgg19", 0.89, pretrained=True, paper=_p(11.22, 10.06, 73.58, 69.98, 3.64)),
    _dense("imagenet_resnet50"),
    Row("ResNet50/ImageNet pre-trained", "imagenet_resnet50", 0.48, pretrained=True, paper=_p(51.73, 56.05, 76.29, 76.22, 0.07)),
)))

# Supplement Table 8: the recipes themselves. Nothing to train: scripts/supp_table8.py checks the
# shipped configs against these values.
TABLE8 = {
    "cifar": {"configs": ["cifar10_vgg16", "cifar100_vgg19", "cifar10_resnet56", "cifar10_resnet110", "cifar100_resnet56"],
              "data.batch_size": 128, "epochs": 300, "optim.name": "sgd", "optim.momentum": 0.9, "optim.lr": 0.1,
              "schedule.name": "multistep", "schedule.milestones": [90, 180, 240, 270], "schedule.gamma": 0.2,
              "optim.weight_decay": 5e-4, "pruning.sl_start_epoch": 30, "pruning.epsilon": 1e-3,
              "pruning.lambda0": 1e-4, "pruning.delta": 1e-4, "pruning.lambda_interval": 1},
    "imagenet_resnet50": {"configs": ["imagenet_resnet50"], "data.batch_size": 256, "epochs": 130, "optim.name": "sgd",
                          "optim.momentum": 0.9, "optim.lr": 0.1, "schedule.name": "cosine", "optim.weight_decay": 4e-5,
                          "pruning.tau": 1e-4, "pruning.sl_start_epoch": None, "pruning.epsilon": 1e-3,
                          "pruning.lambda0": 1e-4, "pruning.delta": 1e-4, "pruning.lambda_interval": 2},
    "imagenet_mobilenetv2": {"configs": ["imagenet_mobilenetv2"], "data.batch_size": 256, "epochs": 150,
                             "optim.name": "sgd", "optim.momentum": 0.9, "optim.lr": 0.05, "schedule.name": "cosine",
                             "optim.weight_decay": 4e-5, "pruning.tau": 1e-4, "pruning.sl_start_epoch": None,
                             "pruning.epsilon": 1e-3, "pruning.lambda0": 1e-4, "pruning.delta": 1e-4,
                             "pruning.lambda_interval": 2},
}


def config_value(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def check_table8() -> list[dict]:
    """Every Table 8 value against the shipped config: one dict per (config, key)."""
    out = []
    for column, spec in TABLE8.items():
        for name in spec["configs"]:
            cfg = load_config(name)
            for key, want in spec.items():
                if key == "configs":
                    continue
                got = config_value(cfg, key)
                out.append({"column": column, "config": name, "key": key, "paper": want, "ours": got, "ok": got == want})
    return out


# -- running a table ----------------------------------------------------------------------------
def get_table(name: str) -> Table:
    if name not in TABLES:
        raise ConfigError(f"unknown paper table {name!r}; choose one of: {', '.join(TABLES)}")
    return TABLES[name]


def row_key(table: Table, index: int, seed: int) -> str:
    row = table.rows[index]
    slug = "".join(c if c.isalnum() else "-" for c in row.label.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return f"{table.name}-r{index}-{slug}-s{seed}"


def dense_index(table: Table, index: int) -> Optional[int]:
    """The dense baseline of a row: the nearest dense row above it with the same config and model."""
    row = table.rows[index]
    for j in range(index - 1, -1, -1):
        r = table.rows[j]
        if r.method == "dense" and r.config == row.config and r.updates.get("model") == row.updates.get("model"):
            return j
    return None


def row_updates(table: Table, index: int, seed: int, out_dir: str, data_root) -> dict:
    """Config updates of one run. ``data_root``: one directory for every row, or a dict
    {dataset name: directory} for tables that mix datasets (CIFAR-10 and ImageNet)."""
    row = table.rows[index]
    upd = {**row.updates, "method": row.method, "seed": seed, "out_dir": out_dir, "name": row_key(table, index, seed)}
    if row.target is not None:
        upd["pruning.target"] = row.target
    root = data_root.get(load_config(row.config).data.name) if isinstance(data_root, dict) else data_root
    if root is not None:
        upd["data.root"] = root
    if row.pretrained:
        d = dense_index(table, index)
        if d is None:
            raise ConfigError(f"{table.name} row {row.label!r} is pre-trained but has no dense row above it")
        upd["init_from"] = os.path.join(out_dir, row_key(table, d, seed), "final_model.pt")
    return upd


def command_for(table: Table, index: int, seed: int, out_dir: str, data_root: Optional[str],
                overrides: list) -> str:
    """The equivalent ``ocspruner train`` command line of one run."""
    upd = row_updates(table, index, seed, out_dir, data_root)
    args = ["python", "-m", "ocspruner", "train", "--config", table.rows[index].config,
            "--out", upd.pop("out_dir"), "--name", upd.pop("name")]
    for k, v in upd.items():
        args.append(f"{k}={json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else v}")
    args += list(overrides)
    return " ".join(shlex.quote(a) for a in args)


def plan(table: Table, seeds, rows=None) -> list[tuple[int, int]]:
    """(row index, seed) pairs to run. A selected row brings its dense baseline (for the drop,
    the speed-up and, for pre-trained rows, the start weights); dense rows run first."""
    indices = list(range(len(table.rows))) if rows is None else list(rows)
    need = set(indices)
    for i in indices:
        if dense_index(table, i) is not None:
            need.add(dense_index(table, i))
    return [(i, s) for s in seeds for i in sorted(need)]


def run_table(table: Table, seeds, out_dir: str, data_root: Optional[str] = None, overrides: list = (),
              rows=None, dry_run: bool = False, make_trainer: Optional[Callable] = None,
              log: Callable[[str], None] = print) -> dict:
    """Run (or, with ``dry_run``, print) every run of the table; skip runs that already finished.
    Returns {run key: summary} for the finished runs."""
    results = {}
    for i, seed in plan(table, seeds, rows):
        key = row_key(table, i, seed)
        if dry_run:
            log(command_for(table, i, seed, out_dir, data_root, overrides))
            continue
        done = os.path.join(out_dir, key, "summary.json")
        if os.path.exists(done):
            results[key] = json.load(open(done))
            continue
        if make_trainer is None:
            from .trainer import Trainer as make_trainer
        cfg = load_config(table.rows[i].config, overrides=list(overrides),
                          updates=row_updates(table, i, seed, out_dir, data_root))
        shutil.rmtree(os.path.join(out_dir, key), ignore_errors=True)   # an unfinished run restarts
        results[key] = make_trainer(cfg).fit()
        log(f"{key}: test acc {results[key]['final_test_acc']:.2f}")
    return results


def _mean(vals):
    vals = [v for v in vals if v is not None]
    return (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0) if vals else (None, None)


def measured(table: Table, results: dict, seeds) -> list[dict]:
    """Our numbers for every row, in the paper's columns (means over the seeds that finished)."""
    out = []
    for i, row in enumerate(table.rows):
        runs = [results[row_key(table, i, s)] for s in seeds if row_key(table, i, s) in results]
        d = dense_index(table, i)
        dense = [results[row_key(table, d, s)] for s in seeds if d is not None and row_key(table, d, s) in results]
        acc, std = _mean([r["final_test_acc"] for r in runs])
        base, _ = _mean([r["final_test_acc"] for r in dense])
        dense_wall = {r["seed"]: r["wall_time"] for r in dense}
        speed = _mean([dense_wall[r["seed"]] / r["wall_time"] for r in runs if r.get("seed") in dense_wall])[0]
        t_sl = [r.get("t_sl_start") for r in runs]
        t_star = [r.get("t_star") for r in runs]
        out.append({
            "label": row.label, "n": len(runs), "acc": acc, "acc_std": std, "base_acc": base,
            "drop": None if acc is None or base is None else base - acc,
            "flops_pct": _mean([100 * r["flops_ratio"] for r in runs if r.get("flops_ratio") is not None])[0],
            "params_pct": _mean([100 * r["params_ratio"] for r in runs if r.get("params_ratio") is not None])[0],
            "speedup": speed,
            "t_sl_start": _mean(t_sl)[0], "t_star": _mean(t_star)[0],
            "sl_epochs": _mean([b - a for a, b in zip(t_sl, t_star) if a is not None and b is not None])[0],
            "top5": None, "base_top5": None, "top5_drop": None,
        })
    return out


COLUMN_NAMES = {"flops_pct": "FLOPs (%)", "params_pct": "Params (%)", "base_acc": "Base Acc. (%)",
                "acc": "Pruned Acc. (%)", "drop": "Acc. Drop (%)", "base_top5": "Base Top-5 (%)",
                "top5": "Top-5 (%)", "top5_drop": "Top-5 Drop (%)", "speedup": "Training SpeedUp",
                "t_sl_start": "SL Start Epoch", "t_star": "SL End Epoch (t*)", "sl_epochs": "Total SL Epochs"}


def _cell(v, col) -> str:
    if v is None:
        return "-"
    if col == "speedup":
        return f"{v:.2f}x"
    if col in ("t_sl_start", "t_star", "sl_epochs"):
        return f"{v:g}" if float(v).is_integer() else f"{v:.1f}"
    return f"{v:.2f}"


def format_table(table: Table, ours: list[dict]) -> str:
    """The table in the paper's columns: one line per row, 'ours / paper' in every cell."""
    head = ["Row", "n"] + [COLUMN_NAMES[c] + " ours / paper" for c in table.columns]
    lines = [f"## {table.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, m in zip(table.rows, ours):
        cells = [row.label, str(m["n"])]
        for c in table.columns:
            mine = m.get(c)
            if c == "acc" and mine is not None and m["n"] > 1:
                mine_s = f"{mine:.2f} ± {m['acc_std']:.2f}"
            else:
                mine_s = _cell(mine, c)
            if row.method == "dense" and c in ("acc", "base_acc"):
                mine_s = _cell(m["acc"], c) if c == "acc" else "-"
            cells.append(f"{mine_s} / {_cell(row.paper.get(c), c)}")
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines) + "\n"
