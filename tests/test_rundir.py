"""A run directory belongs to one run (issue 14): names, the lock, never overwriting, atomic
writes with the user's umask, stale temporaries, the resume fallback, and the commands that read
a finished run (export, bench, report) going through it."""
import errno
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

from ocspruner.cli import main
from ocspruner.rundir import RunDir, RunDirBusy, RunDirError, atomic_torch_save, atomic_write_text

SYNTH = ["--dataset", "synthetic", "--model", "tiny_convnet", "--no-progress", "--threads", "1",
         "data.options={num_samples: 64, num_test: 16, num_classes: 4}", "data.image_size=16", "data.batch_size=16"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_line_error(capsys, rc):
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _snapshot(run):
    """Every file of a run directory with its bytes (the lock file aside)."""
    out = {}
    for dirpath, _, files in os.walk(run):
        for f in files:
            if f != RunDir.LOCK:
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, run)] = open(p, "rb").read()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished dense run (2 epochs, synthetic data), shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--out", str(out), "--name", "done", "--epochs", "2", "--method", "dense", *SYNTH]) == 0
    return str(out / "done")


# -- names ----------------------------------------------------------------------------------------
def test_default_names_are_unique_within_one_second(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")   # the same second for all
    dirs = [RunDir.new(str(tmp_path), None, stem="m-d-x") for _ in range(3)]
    assert [os.path.basename(d.path) for d in dirs] == ["m-d-x-20260101-000000", "m-d-x-20260101-000000-2",
                                                        "m-d-x-20260101-000000-3"]
    for d in dirs:
        d.unlock()


# -- the lock -------------------------------------------------------------------------------------
HOLD = ("import sys, time; sys.path.insert(0, {repo!r}); from ocspruner.rundir import RunDir; "
        "d = RunDir.new({out!r}, 'busy'); print('locked', flush=True); time.sleep(60)")


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=REPO, out=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy) as info:
            RunDir.new(str(tmp_path), "busy")
        msg = str(info.value)
        assert f"PID {proc.pid}" in msg and "in use" in msg and "\n" not in msg
    finally:
        proc.kill()
        proc.wait()
    RunDir.new(str(tmp_path), "busy").unlock()     # the kernel released the lock of the killed holder


def test_two_concurrent_runs_with_the_same_name(tmp_path, capsys):
    """One runs, the other is refused in one line, and the first's files are intact."""
    args = ["train", "--out", str(tmp_path), "--name", "same", "--epochs", "3", "--method", "dense", *SYNTH]
    first = subprocess.Popen([sys.executable, "-m", "ocspruner", *args], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "same" / RunDir.LOCK
    deadline = time.time() + 60
    while time.time() < deadline and not (lock.exists() and str(first.pid) in lock.read_text()):
        time.sleep(0.05)
    rc = main(args)
    err = _one_line_error(capsys, rc)
    assert f"PID {first.pid}" in err and "same" in err
    out, errs = first.communicate(timeout=120)
    assert first.returncode == 0, errs
    run = tmp_path / "same"
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert json.load(open(run / "summary.json"))["epochs"] == 3
    import ocspruner
    ocspruner.load(str(run / "final_model.pt"))


# -- never overwrite --------------------------------------------------------------------------------
def test_a_finished_run_is_never_overwritten(finished, capsys, tmp_path):
    before = _snapshot(finished)
    out, name = os.path.split(finished)
    rc = main(["train", "--out", out, "--name", name, "--epochs", "2", "--method", "dense", *SYNTH])
    err = _one_line_error(capsys, rc)
    assert "holds a finished run" in err and "--overwrite" in err
    assert _snapshot(finished) == before
    # --overwrite replaces it: the old run's files go, unrelated files stay
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    (copy / "notes.txt").write_text("mine")
    rc = main(["train", "--out", str(tmp_path), "--name", "copy", "--epochs", "1", "--method", "dense",
               "--overwrite", *SYNTH])
    assert rc == 0
    assert (copy / "notes.txt").read_text() == "mine"
    assert json.load(open(copy / "summary.json"))["epochs"] == 1
    assert [json.loads(line)["epoch"] for line in open(copy / "metrics.jsonl")] == [0]


def test_an_interrupted_run_points_at_resume(tmp_path, capsys):
    d = RunDir(str(tmp_path / "r"))
    atomic_torch_save({"epoch": 0}, d.file("checkpoints", "ckpt-epoch0000.pt"))
    before = _snapshot(d.path)
    rc = main(["train", "--out", str(tmp_path), "--name", "r", "--epochs", "1", *SYNTH])
    err = _one_line_error(capsys, rc)
    assert f"interrupted run; continue it with python3 -m ocspruner train --resume {d.path}" in err
    assert _snapshot(d.path) == before
    with pytest.raises(RunDirError, match="interrupted run"):   # from Python: fit() refuses a fresh start there
        from ocspruner.config import load_config
        from ocspruner.trainer import Trainer
        Trainer(load_config(None, updates={"model": "tiny_convnet", "data.name": "synthetic", "data.image_size": 16,
                                           "data.options": {"num_samples": 32, "num_test": 8, "num_classes": 2},
                                           "data.batch_size": 8, "progress": False, "epochs": 1,
                                           "out_dir": str(tmp_path), "name": "r"})).fit()
    assert _snapshot(d.path) == before


# -- files: atomic, umask, temporaries -------------------------------------------------------------
def test_files_get_the_users_umask(finished, tmp_path):
    old = os.umask(0o022)
    try:
        for name in ("final_model.pt", "config.yaml", "report.md", "summary.json", "metrics.jsonl", "best.pt"):
            assert stat.S_IMODE(os.stat(os.path.join(finished, name)).st_mode) == 0o644, name
        os.umask(0o027)
        atomic_write_text(str(tmp_path / "a.txt"), "x")
        assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_real_failed_write_is_an_oserror_and_keeps_the_old_file(tmp_path):
    """RLIMIT_FSIZE makes the write itself fail (EFBIG), as a full disk does: torch.save raises
    RuntimeError; the atomic write turns it into OSError and leaves the old file and no debris."""
    path = str(tmp_path / "m.pt")
    atomic_torch_save({"v": torch.tensor(1)}, path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    try:
        with pytest.raises(OSError) as info:
            atomic_torch_save({"v": torch.zeros(1_000_000)}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert info.value.errno in (errno.EIO, errno.ENOSPC, errno.EFBIG) and info.value.filename == path
    assert torch.load(path, weights_only=True)["v"].item() == 1
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == []


def test_killed_run_resumes_from_the_older_checkpoint_and_cleans_temporaries(tmp_path, capsys):
    """After kill -9: a half-written temporary stays and the newest checkpoint may be truncated.
    Resume removes the temporary, says it skips the damaged checkpoint, and finishes from the older one."""
    from ocspruner.config import load_config
    from ocspruner.trainer import Trainer

    cfg = load_config(None, updates={"model": "tiny_convnet", "data.name": "synthetic", "data.image_size": 16,
                                     "data.batch_size": 16, "data.options": {"num_samples": 64, "num_test": 16,
                                                                             "num_classes": 4},
                                     "progress": False, "threads": 1, "epochs": 4, "method": "dense",
                                     "out_dir": str(tmp_path), "name": "k"})
    t = Trainer(cfg)
    t.fit(stop_after=2)
    ckpts = t.ckpt.list()
    assert [e for e, _ in ckpts] == [1, 2]
    newest = ckpts[-1][1]
    data = open(newest, "rb").read()
    open(newest, "wb").write(data[: len(data) // 3])           # truncated by the kill
    stale = tmp_path / "k" / "checkpoints" / ".tmp-abc123"
    stale.write_bytes(b"half")
    with open(tmp_path / "k" / "metrics.jsonl", "a") as fh:     # a half-written metrics line
        fh.write('{"epoch": 3, "tra')
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "k")]) == 0
    captured = capsys.readouterr()
    assert "resuming from the older ckpt-epoch0001.pt" in captured.err and "resuming" in captured.out
    assert "at epoch 2" in captured.out
    assert not stale.exists()
    assert [json.loads(line)["epoch"] for line in open(tmp_path / "k" / "metrics.jsonl")] == [0, 1, 2, 3]


def test_ctrl_c_prints_the_run_dir_and_the_resume_command(tmp_path, capsys, monkeypatch):
    from ocspruner.trainer import Trainer

    real = Trainer.train_epoch

    def interrupted(self, epoch, progress=None):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch, progress)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    rc = main(["train", "--out", str(tmp_path), "--name", "c", "--epochs", "4", "--method", "dense", *SYNTH])
    err = capsys.readouterr().err.strip()
    run = str(tmp_path / "c")
    assert rc == 130 and "\n" not in err
    assert f"run directory {run}" in err and f"continue with: python3 -m ocspruner train --resume {run}" in err
    monkeypatch.undo()
    assert main(["train", "--resume", run]) == 0          # the printed command works
    assert [json.loads(line)["epoch"] for line in open(os.path.join(run, "metrics.jsonl"))] == [0, 1, 2, 3]


# -- resume and compare flags ---------------------------------------------------------------------
def test_config_with_resume_and_resume_of_a_finished_run_are_refused(finished, capsys):
    assert "--config cannot be used with --resume" in _one_line_error(
        capsys, main(["train", "--resume", finished, "--config", "cpu_default"]))
    assert "finished run, there is nothing to resume" in _one_line_error(capsys, main(["train", "--resume", finished]))


def test_compare_checks_every_method_and_existing_runs_first(tmp_path, capsys):
    base = ["compare", "--out-dir", str(tmp_path), "--seeds", "0", *SYNTH[:-3], "--epochs", "1",
            "data.options={num_samples: 64, num_test: 16, num_classes: 4}", "data.image_size=16",
            "data.batch_size=16"]
    rc = main([*base, "--methods", "dense,magic"])
    assert "unknown method 'magic'" in _one_line_error(capsys, rc)
    assert not (tmp_path / "runs").exists()                   # nothing trained before the check
    assert main([*base, "--methods", "dense"]) == 0
    summary = tmp_path / "runs" / "dense-s0" / "summary.json"
    before = summary.read_bytes()
    capsys.readouterr()
    rc = main([*base, "--methods", "dense"])
    assert "holds a finished run" in _one_line_error(capsys, rc)
    assert main([*base, "--methods", "dense", "--resume"]) == 0      # reused, not retrained
    assert summary.read_bytes() == before


# -- commands that read a finished run --------------------------------------------------------------
def test_export_bench_report_refuse_an_unfinished_run(tmp_path, capsys):
    run = tmp_path / "half"
    atomic_torch_save({"epoch": 0}, str(run / "checkpoints" / "ckpt-epoch0000.pt"))
    atomic_write_text(str(run / "config.yaml"), "epochs: 2\n")
    for cmd in ("export", "bench"):
        err = _one_line_error(capsys, main([cmd, str(run)]))
        assert "has no final_model.pt" in err and "--resume" in err


def test_report_paths_are_relative(finished, tmp_path):
    from ocspruner.reporting.report import write_report

    assert main(["export", finished, "--formats", "ocs"]) == 0
    text = open(write_report(finished, dense_run=finished)).read()
    assert str(tmp_path.parent) not in text and os.path.abspath(finished) not in text
    assert "`export/model.pt`" in text and "](plots/" in text


def test_export_without_onnx_writes_the_rest_and_says_how(finished, tmp_path, capsys, monkeypatch):
    import ocspruner.export as ex

    monkeypatch.setattr(ex, "onnx_missing", lambda: "ONNX export needs the 'onnx' package: " + ex.INSTALL_HINT)
    assert main(["export", finished, "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "e")) == ["export.json", "model.pt", "model.torchscript.pt"]
    assert "onnx skipped" in out and "pip install 'ocspruner[export]'" in out


def test_tampered_final_model_is_one_line_in_load_and_export(finished, tmp_path, capsys):
    import ocspruner
    from ocspruner.io import CheckpointError

    blob = torch.load(os.path.join(finished, "final_model.pt"), weights_only=True)
    cases = {}
    sd = dict(blob["state_dict"])
    sd.pop(next(iter(sd)))
    cases["missing"] = {**blob, "state_dict": sd}
    cases["wrong"] = {**blob, "state_dict": {**blob["state_dict"], "extra.weight": torch.zeros(1)}}
    cases["arch"] = {**blob, "architecture": {k: v for k, v in blob["architecture"].items() if k != "num_classes"}}
    for name, obj in cases.items():
        run = tmp_path / name
        run.mkdir()
        torch.save(obj, run / "final_model.pt")
        with pytest.raises(CheckpointError, match="damaged or was edited") as info:
            ocspruner.load(str(run / "final_model.pt"))
        assert "\n" not in str(info.value)
        err = _one_line_error(capsys, main(["export", str(run), "--formats", "ocs"]))
        assert "damaged or was edited" in err or "architecture" in err


def test_load_on_cuda_without_cuda_is_one_line(finished):
    import ocspruner

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available") as info:
        ocspruner.load(os.path.join(finished, "final_model.pt"), device="cuda")
    assert "use device='cpu'" in str(info.value)
    mean, std = ocspruner.io.input_normalisation(os.path.join(finished, "final_model.pt"))
    assert len(mean) == len(std) == 3


def test_bench_says_what_it_is_timing(finished, tmp_path, capsys):
    assert main(["bench", finished, "--batch-sizes", "1,2", "--repeats", "2", "--warmup", "1",
                 "--out", str(tmp_path / "b.json")]) == 0
    err = capsys.readouterr().err
    assert "bench: building the models" in err
    assert "bench: timing batch 1 (1/2)" in err and "bench: timing batch 2 (2/2)" in err
