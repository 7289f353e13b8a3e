"""Run report (issue 7): group-norm logging (supplement Fig. 5), report.md with its figures written
by the trainer, export at the end of a run, and the report/bench/export commands on a finished run."""
import json

import pytest
import torch

from ocspruner.cli import main
from ocspruner.engine import norm_distribution
from ocspruner.reporting.plots import plot_group_norms

SYNTH = ["--dataset", "synthetic", "--model", "tiny_convnet", "--no-progress", "--threads", "1",
         "data.options={num_samples: 96, num_test: 32, num_classes: 4}", "data.image_size=16",
         "data.batch_size=32"]
FAST = ["pruning.window=2", "pruning.offset=1", "pruning.tau=1.0", "pruning.epsilon=0.02",
        "pruning.lambda0=0.5", "pruning.delta=0.5"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    rc = main(["train", "--epochs", "8", "--out", str(out), "--name", "run", *SYNTH, *FAST,
               "export=[ocs, torchscript, onnx]"])
    assert rc == 0
    return out / "run"


def test_norm_distribution_hand_computed():
    norms = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    keep = torch.tensor([True, False, True, False, True])
    d = norm_distribution(norms, keep, quantiles=(0.0, 0.5, 1.0))
    assert d == {"q": [0.0, 0.5, 1.0], "pruning": [2.0, 3.0, 4.0], "n_pruning": 2,
                 "kept": [1.0, 3.0, 5.0], "n_kept": 3}
    assert norm_distribution(norms, torch.ones(5, dtype=torch.bool), (0.5,))["pruning"] is None


def test_group_norms_logged_until_t_star_and_shrunk_by_sparsity_learning(run):
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    s = json.load(open(run / "summary.json"))
    t0, t1 = s["t_sl_start"], s["t_star"]
    assert t0 is not None and t1 is not None and t1 > t0
    for r in rows:   # one record per epoch while a partition is taken (up to t*), none after
        assert (r["group_norms"] is not None) == (r["epoch"] <= t1), r["epoch"]
    gn = {r["epoch"]: r["group_norms"] for r in rows if r["group_norms"]}
    mid = gn[t1]["q"].index(0.5)
    # Eq. 8-9 act on the pruning set after t_sl-start: its median norm falls, and stays below the kept set's
    assert gn[t1]["pruning"][mid] < gn[t0]["pruning"][mid]
    assert gn[t1]["pruning"][mid] < gn[t1]["kept"][mid]
    assert gn[t1]["n_pruning"] + gn[t1]["n_kept"] == gn[0]["n_pruning"] + gn[0]["n_kept"]


def test_report_written_by_the_trainer(run):
    text = (run / "report.md").read_text()
    for heading in ("## Budget and result", "## Accuracy", "## Cost", "## Sub-network stability (Fig. 3)",
                    "## Group norms of the pruning set vs the kept set (supplement Fig. 5)",
                    "## Retained channels per layer (supplement Fig. 6)", "## Latency (supplement Table 9)",
                    "## Export"):
        assert heading in text, heading
    assert "Budget (flops): remove 50.0%; achieved" in text and "(met)" in text
    assert "Partition: ranking.\n" in text
    from ocspruner.reporting.report import budget_section
    priced = budget_section({"metric": "flops", "target": 0.5, "partition": "knapsack", "price": "train_latency"})
    assert "Partition: knapsack, channels priced by the measured train_latency." in priced
    for png in ("stability", "group_norms", "channels", "curves", "cost"):
        assert f"(plots/{png}.png)" in text
        assert (run / "plots" / f"{png}.png").read_bytes()[:8] == PNG
    assert "| t* (epoch" in text                       # median norms table at t_sl-start and t*


def test_export_at_the_end_of_the_run(run):
    exp = json.load(open(run / "export" / "export.json"))
    assert set(exp["formats"]) == {"ocs", "torchscript", "onnx"}
    assert all(r["ok"] and r["max_abs_diff"] <= 1e-4 for r in exp["formats"].values())
    assert "| onnx | `export/model.onnx` |" in (run / "report.md").read_text()


def test_commands_on_a_finished_run(run, tmp_path, capsys):
    # bench on the run directory (dense rebuilt at full width, pruned from final_model.pt, rounded re-partition)
    assert main(["bench", str(run), "--batch-sizes", "1,2", "--warmup", "1", "--repeats", "2",
                 "--round-to", "4", "--threads", "1"]) == 0
    bench = json.load(open(run / "bench.json"))
    assert [r["model"] for r in bench["rows"]] == ["dense", "pruned", "pruned_r4"] * 2
    s = json.load(open(run / "summary.json"))
    pruned_row = bench["rows"][1]
    assert pruned_row["flops"] == pytest.approx(s["final_flops"])          # the run's own final model
    assert pruned_row["theoretical_speedup"] == pytest.approx(s["dense_flops"] / s["final_flops"])
    # a dense run of the same task, for the cost comparison
    assert main(["train", "--epochs", "2", "--method", "dense", "--out", str(tmp_path), "--name", "dense", *SYNTH]) == 0
    (run / "report.md").unlink()
    assert main(["report", str(run), "--dense", str(tmp_path / "dense")]) == 0
    text = (run / "report.md").read_text()
    assert "| wall time |" in text and "| test accuracy (final) |" in text
    assert "| pruned_r4 |" in text and "speedup / theoretical" in text
    # a run with a latency budget and no bench.json gets its latency measured with the report
    import shutil
    from ocspruner.reporting.report import write_report
    lat = tmp_path / "latency_run"
    shutil.copytree(run, lat)
    (lat / "bench.json").unlink()
    summary = json.load(open(lat / "summary.json"))
    (lat / "summary.json").write_text(json.dumps({**summary, "metric": "latency"}))
    write_report(str(lat), plots=[])
    assert [(r["model"], r["batch"]) for r in json.load(open(lat / "bench.json"))["rows"]] == [("dense", 1), ("pruned", 1)]
    assert "| pruned | " in (lat / "report.md").read_text()
    # `ocspruner report` on a pruned FLOPs-budget run without bench.json times it (--no-bench skips):
    # the report then shows the FLOPs ratio, inference and training-step speed-ups and the clock
    flops_run = tmp_path / "flops_run"
    shutil.copytree(run, flops_run)
    (flops_run / "bench.json").unlink()
    assert main(["report", str(flops_run), "--no-bench"]) == 0
    assert not (flops_run / "bench.json").exists()
    assert main(["report", str(flops_run)]) == 0
    text = (flops_run / "report.md").read_text()
    assert "train speedup" in text and "Clock: " in text and "theoretical (FLOPs)" in text
    assert main(["export", str(run), "--formats", "torchscript", "--out", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "model.torchscript.pt").is_file()
    assert "torchscript" in capsys.readouterr().out


def test_report_of_a_non_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "has no metrics.jsonl" in err and "\n" not in err
    assert main(["export", str(tmp_path)]) == 2
    assert "has no final_model.pt" in capsys.readouterr().err


def test_group_norm_plot_needs_data(tmp_path):
    assert plot_group_norms([{"epoch": 0, "group_norms": None}], None, None, tmp_path / "g.png") is None
    rows = [{"epoch": e, "group_norms": {"q": [0.05, 0.5, 0.95], "pruning": [0.0, 0.1 / (e + 1), 0.2],
                                         "kept": [0.3, 0.5, 0.7]}} for e in range(4)]
    path = plot_group_norms(rows, 1, 3, tmp_path / "g.png")   # zeros are drawn at the floor of the log axis
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG and path.endswith("g.png")
