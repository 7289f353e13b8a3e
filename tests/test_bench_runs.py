"""The benchmark scripts' resumable runs (benchmarks/methods_fashion.py, benchmarks/_runs.py): a run
another process trains is never read, cleared or restarted."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from ocspruner.rundir import RunDirBusy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name="methods_fashion"):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["methods_fashion", "_runs"])
def test_a_run_held_by_another_process_is_left_alone(tmp_path, script):
    run_dir = tmp_path / "runs" / "dense-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"epoch": 0}\n')       # the other process's first epoch
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from ocspruner.rundir import RunDir; RunDir(sys.argv[1]).lock(); "
        "print('locked', flush=True); time.sleep(60)"), str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy):
            if script == "methods_fashion":
                _script().run_one("dense", 0, {"threads": 1, "progress": False, "data.name": "synthetic"},
                                  str(tmp_path))
            else:
                _script("_runs").run_or_reuse("dense-s0", str(run_dir), lambda: pytest.fail("must not be built"))
        assert (run_dir / "metrics.jsonl").read_text() == '{"epoch": 0}\n'
        assert not (run_dir / "result.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_an_interrupted_run_continues_from_its_checkpoint(tmp_path):
    """benchmarks/_runs.py: a run stopped after epoch 1 continues at epoch 2, is marked finished
    only at the very end, and counts the CPU time of the epochs done before the stop."""
    from ocspruner.config import load_config
    from ocspruner.trainer import Trainer

    runs = _script("_runs")
    cfg = lambda: load_config(None, updates={                                         # noqa: E731
        "model": "tiny_convnet", "data.name": "synthetic", "data.image_size": 16, "data.batch_size": 32,
        "data.options": {"num_samples": 96, "num_test": 32, "num_classes": 4}, "progress": False, "threads": 1,
        "epochs": 4, "method": "dense", "out_dir": str(tmp_path), "name": "r"})
    first = Trainer(cfg())
    first.fit(stop_after=1)
    before = first.cpu_elapsed
    run_dir = str(tmp_path / "r")
    assert runs.finished_summary(run_dir) is None
    summary = runs.run_or_reuse("r", run_dir, cfg)
    assert summary["resumed_at_epoch"] == 2 and summary[runs.COMPLETE]
    assert summary["cpu_time"] > before
    again = runs.run_or_reuse("r", run_dir, lambda: pytest.fail("a finished run is not trained again"))
    assert again["cpu_time"] == summary["cpu_time"]
    # a summary.json the trainer wrote before its plots (a process killed then) is not finished
    trainer_only = {k: v for k, v in summary.items() if k not in (runs.COMPLETE, "plots", "plots_error")}
    (tmp_path / "r" / "summary.json").write_text(json.dumps(trainer_only))
    assert runs.finished_summary(run_dir) is None


def test_methods_table_report_writes_every_finished_run_and_trains_nothing(tmp_path, monkeypatch):
    """``methods_fashion.py --report``: two processes each wrote the runs they saw; the report
    writes the table of every finished run (here dense and ocspruner of seed 0) and lists the rest."""
    monkeypatch.chdir(tmp_path)
    for label, flops, acc in (("dense", 40.0, 90.5), ("ocspruner", 20.0, 89.5)):
        d = tmp_path / "work" / "runs" / f"{label}-s0"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({
            "method": label, "seed": 0, "final_test_acc": acc, "final_flops": flops, "dense_flops": 40.0,
            "final_params": 1.0, "dense_params": 2.0, "cpu_time": 100.0, "wall_time": 150.0, "target": 0.5,
            "metric": "flops", "t_star": None if label == "dense" else 8}))
    monkeypatch.setattr(sys, "argv", ["methods_fashion.py", "--report", "--seeds", "0", "--methods", "dense,ocspruner,random",
                                      "--work", str(tmp_path / "work")])
    _script().main()
    table = (tmp_path / "docs" / "methods_fashion_table.md").read_text()
    assert "| dense | 100.0 |" in table and "| ocspruner | 50.0 |" in table
    assert "Runs finished: 2 of 3" in table and "Pending runs (resume with the command above): random-s0" in table
    assert not (tmp_path / "work" / "runs" / "random-s0").exists()


def _tiny(tmp_path, name="r", epochs=4):
    from ocspruner.config import load_config
    return lambda: load_config(None, updates={
        "model": "tiny_convnet", "data.name": "synthetic", "data.image_size": 16, "data.batch_size": 32,
        "data.options": {"num_samples": 96, "num_test": 32, "num_classes": 4}, "progress": False, "threads": 1,
        "epochs": epochs, "method": "dense", "out_dir": str(tmp_path), "name": name})


def test_a_run_killed_after_its_last_epoch_only_finishes_again(tmp_path):
    """summary.json and final_model.pt written, the helper's record not yet (a kill during the
    plots): the run resumes at its end and finishes again, it does not train anew."""
    from ocspruner.trainer import Trainer

    runs = _script("_runs")
    trainer_summary = Trainer(_tiny(tmp_path)()).fit()        # the trainer's files, no helper record
    rows = (tmp_path / "r" / "metrics.jsonl").read_text()
    summary = runs.run_or_reuse("r", str(tmp_path / "r"), _tiny(tmp_path))
    assert summary["resumed_at_epoch"] == 4 and summary[runs.COMPLETE]
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == rows          # no epoch trained again
    assert summary["final_test_acc"] == trainer_summary["final_test_acc"]


def test_a_failure_while_training_a_resumed_run_keeps_its_checkpoints(tmp_path, monkeypatch):
    from ocspruner.trainer import Trainer

    runs = _script("_runs")
    Trainer(_tiny(tmp_path)()).fit(stop_after=1)
    ckpts = sorted(os.listdir(tmp_path / "r" / "checkpoints"))

    def broken_fit(self, stop_after=None):
        raise OSError("disk full")
    monkeypatch.setattr(Trainer, "fit", broken_fit)
    with pytest.raises(OSError, match="disk full"):
        runs.run_or_reuse("r", str(tmp_path / "r"), _tiny(tmp_path))
    assert sorted(os.listdir(tmp_path / "r" / "checkpoints")) == ckpts
