"""The paper's table manifest: every row loads and builds, the scripts print the right commands,
and one table runs end to end on synthetic data."""
import importlib.util
import json
import os

import pytest
import torch

from ocspruner.config import load_config
from ocspruner.engine import OCSPruner
from ocspruner.models import create_model
from ocspruner.paper_tables import TABLES, check_table8, dense_index, plan, row_updates

ROOT = os.path.join(os.path.dirname(__file__), "..")
CLASSES = {"cifar10": 10, "cifar100": 100, "imagefolder": 1000}


def _script_main():
    spec = importlib.util.spec_from_file_location("paper_table", os.path.join(ROOT, "scripts", "paper_table.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_manifest_covers_tables_1_to_4_and_supplement_5_to_7():
    assert set(TABLES) == {"table1", "table2", "table3", "table4", "supp_table5", "supp_table6", "supp_table7"}
    for t in TABLES.values():
        assert t.rows and all(r.method in ("dense", "ocspruner") for r in t.rows)
        for i, r in enumerate(t.rows):
            if r.method != "dense" and ({"base_acc", "speedup"} & set(t.columns)):
                assert dense_index(t, i) is not None, (t.name, r.label)   # every pruned row has a baseline


def _budgets() -> dict:
    """{(config, model, dataset): sorted budgets} over every pruned row of every table."""
    out = {}
    for t in TABLES.values():
        for i, row in enumerate(t.rows):
            if row.target is not None:
                cfg = load_config(row.config, updates=row_updates(t, i, 0, "o", None))
                out.setdefault((row.config, cfg.model, cfg.data.name), set()).add(row.target)
    return {k: sorted(v) for k, v in out.items()}


BUDGETS = _budgets()


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_row_loads_with_its_options(name, tmp_path):
    table = TABLES[name]
    for i, row in enumerate(table.rows):
        cfg = load_config(row.config, updates=row_updates(table, i, 0, str(tmp_path), "/data"))
        assert cfg.method == row.method and cfg.data.root == "/data"
        for k, v in row.updates.items():                       # the row's options reach the config
            node = cfg
            for part in k.split("."):
                node = getattr(node, part)
            assert node == v, (row.label, k)
        if row.target is not None:
            assert cfg.pruning.target == row.target
            if "flops_pct" in row.paper:   # the paper's FLOPs (%) is what remains of the budget it names
                assert abs(row.paper["flops_pct"] - 100 * (1 - row.target)) < 4.0, row.label


# ImageNet-size models take seconds each to trace; they run with -m slow.
@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow) if k[2] == "imagefolder" else k
                                 for k in sorted(BUDGETS)], ids=lambda k: f"{k[1]}-{k[2]}")
def test_every_budget_builds_and_is_reachable(key):
    config, model_name, dataset = key
    cfg = load_config(config, updates={"model": model_name})
    size = cfg.data.image_size or 32
    model = create_model(model_name, num_classes=CLASSES[dataset], in_channels=3, **cfg.model_options)
    pruner = OCSPruner(model, torch.randn(1, 3, size, size), cfg.pruning, check_structures=False)
    scores = pruner.scores()
    for target in BUDGETS[key]:
        assert abs(pruner.partitioner.partition(scores, target).reduction - target) < 0.01, (key, target)


def test_shipped_recipes_match_supplement_table8():
    rows = check_table8()
    assert len(rows) > 60 and all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]


def test_dry_run_prints_one_command_per_run(capsys):
    main = _script_main()
    assert main("table2", ["--dry-run", "--seeds", "0,1", "--data-root", "/d/c10", "--out", "o"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 * 2
    assert lines[1] == ("python -m ocspruner train --config cifar10_resnet56 --out o --name table2-r1-ocspruner-53-s0 "
                        "method=ocspruner seed=0 pruning.target=0.53 data.root=/d/c10")
    assert lines[6].endswith("--name table2-r0-baseline-dense-s1 method=dense seed=1 data.root=/d/c10")


def test_dry_run_pretrained_row_adds_its_dense_run_and_per_dataset_roots(capsys):
    main = _script_main()
    assert main("supp_table7", ["--dry-run", "--seeds", "0", "--rows", "1", "--out", "o",
                                "--data-root", "cifar10=/c10", "--data-root", "imagefolder=/inet"]) == 0
    dense, pruned = capsys.readouterr().out.strip().splitlines()
    assert "--name supp_table7-r0-baseline-dense-s0 method=dense" in dense and dense.endswith("data.root=/c10")
    assert "init_from=o/supp_table7-r0-baseline-dense-s0/final_model.pt" in pruned
    assert plan(TABLES["supp_table7"], [0], [3]) == [(2, 0), (3, 0)]


def test_bad_rows_are_one_line_errors(capsys):
    main = _script_main()
    assert main("table1", ["--dry-run", "--rows", "9"]) == 2
    assert "--rows must be in 0..4" in capsys.readouterr().err


def test_table_script_end_to_end_on_synthetic_data(tmp_path, capsys):
    main = _script_main()
    out = tmp_path / "t2"
    fast = ["data.name=synthetic", "data.options={num_samples: 64, num_test: 32}", "data.batch_size=32",
            "data.image_size=16", "data.workers=0", "model=tiny_convnet", "epochs=2", "threads=1", "progress=false",
            "checkpoint_every=100"]
    assert main("table2", ["--rows", "1", "--seeds", "0", "--out", str(out), *fast]) == 0
    text = (out / "table2.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| OCSPruner_53%"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    ours_flops, paper_flops = cells[2].split(" / ")
    assert paper_flops == "46.93" and abs(float(ours_flops) - 47.0) < 1.5    # 53% of FLOPs removed
    assert (out / "table2-r0-baseline-dense-s0" / "summary.json").is_file()  # its baseline ran too
    data = json.loads((out / "table2.json").read_text())
    r1 = data["rows"][1]
    assert r1["n"] == 1 and r1["base_acc"] is not None and abs(r1["drop"] - (r1["base_acc"] - r1["acc"])) < 1e-9
    # finished runs are reused: a second call trains nothing and gives the same table
    mtime = os.path.getmtime(out / "table2-r1-ocspruner-53-s0" / "summary.json")
    assert main("table2", ["--rows", "1", "--seeds", "0", "--out", str(out), *fast]) == 0
    assert os.path.getmtime(out / "table2-r1-ocspruner-53-s0" / "summary.json") == mtime
    assert (out / "table2.md").read_text() == text
