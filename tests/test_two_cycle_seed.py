"""benchmarks/_runs.seed_from_dense: a greg run started from the dense run's checkpoint ends
bit-identical to the same run trained from scratch."""
import json
import os
import sys

import pytest
import torch

from ocspruner.config import load_config
from ocspruner.trainer import Trainer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from _runs import seed_from_dense  # noqa: E402

SYNTH = {"model": "tiny_convnet", "data.name": "synthetic", "data.image_size": 16, "data.batch_size": 16,
         "data.options": {"num_samples": 64, "num_test": 16, "num_classes": 4}, "progress": False, "threads": 1,
         "pruning.target": 0.5, "epochs": 2, "seed": 3}


def _cfg(tmp_path, method, name, **options):
    return load_config(None, updates={**SYNTH, "method": method, "method_options": options,
                                      "out_dir": str(tmp_path), "name": name})


def test_seeded_greg_run_equals_the_run_from_scratch(tmp_path):
    method, options = "greg", {"reg_epochs": 2, "finetune_epochs": 1}
    Trainer(_cfg(tmp_path, "dense", "dense")).fit()
    scratch = Trainer(_cfg(tmp_path, method, "scratch", **options))
    a = scratch.fit()
    seeded = Trainer(_cfg(tmp_path, method, "seeded", **options))
    assert seed_from_dense(seeded, str(tmp_path / "dense"))
    assert seeded.start_epoch == 2
    b = seeded.fit()
    assert a["final_test_acc"] == b["final_test_acc"] and a["t_star"] == b["t_star"]
    for (k, x), (_, y) in zip(scratch.model.state_dict().items(), seeded.model.state_dict().items()):
        assert torch.equal(x, y), k
    rows = [json.loads(line) for line in open(tmp_path / "seeded" / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == list(range(a["epochs"])) and rows[0]["stage"] == "pretrain"
    assert b["cpu_time"] >= rows[1]["cpu_elapsed"] > 0       # the dense phase's CPU is part of the run's cost


def test_seed_refuses_another_recipe(tmp_path):
    Trainer(_cfg(tmp_path, "dense", "dense")).fit()
    other = Trainer(load_config(None, updates={**SYNTH, "seed": 4, "method": "greg", "out_dir": str(tmp_path),
                                               "name": "other", "method_options": {"reg_epochs": 2}}))
    with pytest.raises(ValueError, match="not this run's dense phase: its config differs at 'seed'"):
        seed_from_dense(other, str(tmp_path / "dense"))
    assert not seed_from_dense(other, str(tmp_path / "missing"))
    pf = Trainer(load_config(None, updates={**SYNTH, "method": "prune_finetune", "out_dir": str(tmp_path),
                                            "name": "pf"}))
    with pytest.raises(ValueError, match="seeds greg runs only, not 'prune_finetune'"):
        seed_from_dense(pf, str(tmp_path / "dense"))


def test_run_or_reuse_seeds_greg_and_counts_the_dense_cpu(tmp_path):
    from _runs import run_or_reuse
    Trainer(_cfg(tmp_path, "dense", "dense")).fit()
    dense_cpu = json.loads((tmp_path / "dense" / "metrics.jsonl").read_text().splitlines()[-1])["cpu_elapsed"]
    cfg = lambda: _cfg(tmp_path, "greg", "g", reg_epochs=2, finetune_epochs=1)   # noqa: E731
    s = run_or_reuse("g", str(tmp_path / "g"), cfg, dense_run_dir=str(tmp_path / "dense"))
    assert (tmp_path / "g" / "seeded_from.txt").exists() and s["cpu_time"] > dense_cpu
    scratch = Trainer(_cfg(tmp_path, "greg", "scratch", reg_epochs=2, finetune_epochs=1)).fit()
    assert s["final_test_acc"] == scratch["final_test_acc"]
