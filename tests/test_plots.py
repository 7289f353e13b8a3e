import json
import math

import pytest

from ocspruner.reporting import load_run, write_all_plots
from ocspruner.reporting import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPOCHS = 30
T_SL_START, T_STAR = 8, 20


def _stage(epoch):
    if epoch < T_SL_START:
        return "search"
    if epoch < T_STAR:
        return "sparsity"
    return "pruned"


def _pruning_metrics():
    rows = []
    for e in range(EPOCHS):
        raw = None if e < 2 else min(1.0, 0.35 + 0.6 * (1 - math.exp(-e / 6)) + 0.03 * ((-1) ** e))
        avg = None if e < 4 else min(1.0, 0.4 + 0.6 * (1 - math.exp(-(e - 1) / 6)))
        reduction = 0.0 if e < 2 else (0.2 + 0.3 * min(1.0, e / T_STAR))
        rows.append({
            "epoch": e,
            "stage": _stage(e),
            "train_loss": 2.3 * math.exp(-e / 10) + 0.1,
            "train_acc": 100 * (1 - 0.9 * math.exp(-e / 8)),
            "val_loss": None if e == 0 else 2.4 * math.exp(-e / 11) + 0.2,
            "val_acc": None if e == 0 else 100 * (1 - 0.92 * math.exp(-e / 9)),
            "similarity": raw,
            "similarity_avg": avg,
            "lambda": 0.0 if e < T_SL_START else (1e-4 * (e - T_SL_START + 1) if e < T_STAR else 0.0),
            "lr": 0.1 * 0.5 * (1 + math.cos(math.pi * e / EPOCHS)),
            "flops": 1e8 * (1 - reduction),
            "params": 1e6 * (1 - reduction),
            "flops_reduction": reduction,
            "epoch_time": 1.5,
            "events": ["t_sl_start"] if e == T_SL_START else (["t_star", "pruned"] if e == T_STAR else []),
        })
    rows[5]["train_loss"] = float("nan")      # a diverged value must be filtered, not raised on
    return rows


def _write_run(run_dir, metrics, summary, channels=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "w") as fh:
        for row in metrics:
            fh.write(json.dumps(row) + "\n")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    if channels is not None:
        (run_dir / "channels.json").write_text(json.dumps({"layers": channels}))
    return run_dir


def _assert_png(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5_000, (path, len(data))


@pytest.fixture
def pruning_run(tmp_path):
    channels = []
    for stage, width in ((1, 16), (2, 32), (3, 64)):
        for block in range(3):
            for conv in (1, 2):
                kept = max(1, int(width * (0.9 - 0.15 * stage + 0.05 * block)))
                channels.append({"name": f"layer{stage}.{block}.conv{conv}", "kept": kept,
                                 "original": width})
    summary = {"t_sl_start": T_SL_START, "t_star": T_STAR, "method": "ocspruner",
               "model": "resnet20", "target": 0.5}
    return _write_run(tmp_path / "run", _pruning_metrics(), summary, channels)


def test_write_all_plots_pruning_run(pruning_run):
    written = write_all_plots(pruning_run)
    names = ["stability.png", "channels.png", "curves.png", "cost.png"]
    assert written == [str(pruning_run / "plots" / n) for n in names]
    for name in names:
        _assert_png(pruning_run / "plots" / name)


def test_write_all_plots_dense_run(tmp_path):
    metrics = _pruning_metrics()
    for row in metrics:
        row.update(stage="dense", similarity=None, similarity_avg=None, flops_reduction=0.0,
                   flops=1e8, params=1e6, events=[])
        row["lambda"] = 0.0
    metrics[3]["val_acc"] = float("inf")
    run = _write_run(tmp_path / "dense", metrics,
                     {"t_sl_start": None, "t_star": None, "method": "dense", "model": "resnet20",
                      "target": None})
    written = write_all_plots(run)
    plot_dir = run / "plots"
    assert written == [str(plot_dir / "curves.png"), str(plot_dir / "cost.png")]
    _assert_png(plot_dir / "curves.png")
    _assert_png(plot_dir / "cost.png")
    assert not (plot_dir / "stability.png").exists()
    assert not (plot_dir / "channels.png").exists()


def test_missing_metrics_raises(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as info:
        load_run(tmp_path)
    message = str(info.value)
    assert "metrics.jsonl" in message and "\n" not in message
    with pytest.raises(FileNotFoundError):
        write_all_plots(tmp_path)


def test_load_run_optional_files_and_bad_lines(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0, "train_loss": 1.0}\n\n{"epoch": 1, "tr')
    run = load_run(tmp_path)
    assert run["metrics"] == [{"epoch": 0, "train_loss": 1.0}]
    assert run["summary"] == {}
    assert run["channels"] is None


def test_plot_functions_skip_without_data(tmp_path):
    rows = [{"epoch": 0, "stage": "dense", "similarity": None, "similarity_avg": float("nan")}]
    assert plots.plot_stability(rows, None, None, tmp_path / "s.png") is None
    assert plots.plot_channels(None, tmp_path / "c.png") is None
    assert plots.plot_channels([], tmp_path / "c.png") is None
    assert plots.plot_curves(rows, tmp_path / "u.png") is None
    assert plots.plot_cost(rows, tmp_path / "k.png") is None
    assert list(tmp_path.iterdir()) == []
