"""Bad input: one-line errors, nothing already written is lost."""
import errno
import os

import pytest
import torch

from ocspruner.checkpoint import CheckpointManager, atomic_torch_save
from ocspruner.cli import main

SYNTH = ["--dataset", "synthetic", "--model", "tiny_convnet", "--no-progress", "--threads", "1",
         "data.options={num_samples: 64, num_test: 16, num_classes: 4}", "data.image_size=16", "data.batch_size=16"]


def _one_line_error(capsys, rc):
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_diverging_loss_stops_and_names_the_last_good_checkpoint(tmp_path, capsys):
    rc = main(["train", "--out", str(tmp_path), "--name", "nan", "--epochs", "4", "--method", "dense",
               "--lr", "1e12", *SYNTH])
    err = _one_line_error(capsys, rc)
    assert "loss became" in err and ("last good checkpoint" in err or "no checkpoint was written yet" in err)


def test_batch_larger_than_dataset(tmp_path, capsys):
    rc = main(["train", "--out", str(tmp_path), "--epochs", "1", *SYNTH, "data.batch_size=100000"])
    assert "larger than the training set" in _one_line_error(capsys, rc)


def test_empty_dataset(tmp_path, capsys):
    rc = main(["train", "--out", str(tmp_path), "--epochs", "1", *SYNTH,
               "data.options={num_samples: 0, num_test: 16, num_classes: 4}"])
    assert "empty" in _one_line_error(capsys, rc)


def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"v": torch.tensor(1)}, str(path))

    def no_space(obj, fh, *a, **k):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(OSError):
        atomic_torch_save({"v": torch.tensor(2)}, str(path))
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["v"].item() == 1        # the old file is intact
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == []   # no debris


def test_full_disk_during_a_run_is_one_line(tmp_path, capsys, monkeypatch):
    """torch.save reports a failed write as RuntimeError (not OSError): still one line, nothing lost."""
    real = torch.save
    calls = {"n": 0}

    def flaky(obj, fh, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:
            fh.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing "
                               "file data/3: file write failed")
        real(obj, fh, *a, **k)

    monkeypatch.setattr(torch, "save", flaky)
    rc = main(["train", "--out", str(tmp_path), "--name", "full", "--epochs", "5", "--method", "dense", *SYNTH])
    err = _one_line_error(capsys, rc)
    assert "write failed" in err and "intact" in err
    kept = CheckpointManager(str(tmp_path / "full" / "checkpoints")).latest()
    assert kept is not None and torch.load(kept, weights_only=True)["epoch"] >= 0


@pytest.mark.parametrize("args,needle", [
    (["--target", "0"], "target must be a fraction"),
    (["--target", "-0.5"], "target must be a fraction"),
    (["pruning.window=0"], "window must be an integer >= 1"),
    (["pruning.tau=-1"], "tau must be a finite number >= 0"),
    (["data.batch_size=0"], "batch_size must be >= 1"),
    (["--lr", "-1"], "optim.lr must be > 0"),
    (["amp=fp8"], "amp must be null"),
    (["schedule.name=exponential"], "unknown schedule.name"),
    (["--device", "cuda:7"], "CUDA is not available"),
    (["--dataset", "imagenet-21k"], "unknown dataset"),
    (["--threads", "-1"], "threads must be >= 1"),
    (["--threads", "0"], "threads must be >= 1"),
    (["--device", "foo"], "device must be auto, cpu, cuda or cuda:N, got 'foo'"),
    (["checkpoint_every=0"], "checkpoint_every must be >= 1"),
    (["label_smoothing=5"], "label_smoothing must be in [0, 1)"),
    (["model_options={foo: 1}"], "unknown model_options key 'foo' for model tiny_convnet"),
    (["--method", "magic"], "unknown method 'magic'"),
])
def test_more_bad_values(tmp_path, capsys, args, needle):
    if "cuda:7" in args and torch.cuda.is_available():
        pytest.skip("a CUDA machine: cuda:7 may exist")
    base = [a for a in SYNTH if not a.startswith("--dataset") and a != "synthetic"] if "--dataset" in args else SYNTH
    rc = main(["train", "--out", str(tmp_path), "--epochs", "1", *base, *args])
    assert needle in _one_line_error(capsys, rc)


def test_bad_values_fail_before_the_run_directory_is_made(tmp_path, capsys):
    rc = main(["train", "--out", str(tmp_path), "--name", "x", "--epochs", "1", *SYNTH, "checkpoint_every=0"])
    _one_line_error(capsys, rc)
    assert not (tmp_path / "x").exists()


def test_empty_class_folder_is_refused(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            if not (split == "train" and cls == "dog"):
                Image.new("RGB", (8, 8)).save(tmp_path / "data" / split / cls / "a.png")
    rc = main(["train", "--out", str(tmp_path), "--epochs", "1", "--dataset", "imagefolder", "--data-root",
               str(tmp_path / "data"), "--model", "tiny_convnet", "--no-progress"])
    err = _one_line_error(capsys, rc)
    assert "train/dog has no images" in err and "remove the folder" in err


def test_init_from_a_pruned_model_names_it(tmp_path, capsys):
    from ocspruner.rundir import atomic_torch_save
    from ocspruner.models import create_model

    sd = create_model("tiny_convnet", num_classes=4).state_dict()
    name = next(k for k, v in sd.items() if k.endswith("weight") and v.dim() == 4)
    sd[name] = sd[name][: sd[name].shape[0] // 2]           # fewer output channels: pruned
    atomic_torch_save({"state_dict": sd}, str(tmp_path / "pruned.pt"))
    rc = main(["train", "--out", str(tmp_path), "--epochs", "1", "--init-from", str(tmp_path / "pruned.pt"), *SYNTH])
    err = _one_line_error(capsys, rc)
    assert "holds a pruned model" in err and "unpruned model's weights" in err
