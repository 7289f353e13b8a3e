"""Command-line end-to-end run on synthetic data; config errors; recipes."""
import json
import math
import os

import pytest
import torch

from ocspruner.cli import main
from ocspruner.config import ConfigError, ScheduleConfig, load_config
from ocspruner.recipe import lr_at

SYNTH = ["--dataset", "synthetic", "--model", "tiny_convnet", "--no-progress", "--threads", "1",
         "data.options={num_samples: 96, num_test: 32, num_classes: 4}", "data.image_size=16",
         "data.batch_size=32"]
FAST = ["pruning.window=2", "pruning.offset=1", "pruning.tau=1.0", "pruning.epsilon=0.02",
        "pruning.lambda0=0.5", "pruning.delta=0.5"]


def test_cli_end_to_end_writes_every_output(tmp_path, capsys):
    rc = main(["train", "--epochs", "10", "--out", str(tmp_path), "--name", "run", *SYNTH, *FAST])
    assert rc == 0
    run = tmp_path / "run"
    for f in ["config.yaml", "metrics.jsonl", "summary.json", "final_model.pt", "architecture.json",
              "channels.json", "best.pt", "plots/stability.png", "plots/channels.png", "plots/curves.png"]:
        assert (run / f).is_file(), f
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(run / "tb"))
    assert len(os.listdir(run / "checkpoints")) == 2                 # last N kept
    rows = [json.loads(l) for l in open(run / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == list(range(10))
    for key in ("train_loss", "train_acc", "val_acc", "similarity", "similarity_avg", "lambda", "stage",
                "flops", "params", "epoch_time"):
        assert key in rows[0]
    assert rows[0]["similarity"] is None and rows[-1]["stage"] == "pruned"
    assert all(0 <= r["train_acc"] <= 100 and r["epoch_time"] > 0 for r in rows)
    s = json.load(open(run / "summary.json"))
    assert s["t_star"] is not None and s["final_flops"] <= 0.5 * s["dense_flops"] + 1e-6
    # within one unit of the budget: one channel of this net's 8-wide stem/residual group is 6.0% of
    # its FLOPs by torch-pruning's whole-model count (the convention since issue 15); this seeded run
    # ends at 52.7% removed, and giving back any removed channel would leave 46.1-46.8%
    assert s["final_flops"] >= 0.44 * s["dense_flops"]
    assert s["wall_time"] > 0 and s["final_test_acc"] is not None and s["best_epoch"] >= s["t_star"]
    # the CPU time outside the epochs is accounted for: set-up, and the final tests
    assert 0 < s["cpu_setup"] < 60 and 0 < s["cpu_test"] < s["cpu_time"]
    # the final model loads with weights_only and matches the architecture description
    blob = torch.load(run / "final_model.pt", weights_only=True)
    kept = blob["architecture"]["pruning"]["kept"]
    assert sum(len(v) for v in kept.values()) < sum(size for _, size in blob["architecture"]["pruning"]["groups"])
    out = capsys.readouterr().out
    assert "run directory:" in out and "t* =" in out
    # TensorBoard holds each epoch's numeric fields, by epoch, as metrics.jsonl does
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    val = events.Scalars("val_acc")
    assert [e.step for e in val] == list(range(10))
    assert [e.value for e in val] == pytest.approx([r["val_acc"] for r in rows], rel=1e-6)
    assert "epoch" not in events.Tags()["scalars"] and "stage" not in events.Tags()["scalars"]
    # J exists from epoch offset=1 on; None (epoch 0) is not a scalar
    assert [e.step for e in events.Scalars("similarity")] == [r["epoch"] for r in rows if r["similarity"] is not None]


def test_tensorboard_scalars_are_the_finite_numbers_of_a_row():
    from ocspruner.tblog import TensorBoardLog
    row = {"epoch": 3, "stage": "pruned", "val_acc": 91.5, "lambda": 0, "similarity": None, "pruned": True,
           "train_loss": float("nan"), "events": ["t* = 3"], "flops": 1200}
    assert TensorBoardLog.scalars(row) == {"val_acc": 91.5, "lambda": 0, "flops": 1200}


def test_dense_method_same_loop(tmp_path):
    rc = main(["train", "--epochs", "2", "--method", "dense", "--out", str(tmp_path), "--name", "d", *SYNTH])
    assert rc == 0
    s = json.load(open(tmp_path / "d" / "summary.json"))
    assert s["method"] == "dense" and s["final_flops"] == s["dense_flops"] and s["t_star"] is None


@pytest.mark.parametrize("args,needle", [
    (["pruning.tagret=0.5"], "unknown config key 'pruning.tagret'; did you mean 'pruning.target'?"),
    (["epochs=ten"], "config key 'epochs' expects int"),
    (["--target", "1.5"], "target must be a fraction"),
    (["--dataset", "fashion_mnist", "--data-root", "/nonexistent/dir"], "/nonexistent/dir"),
    (["--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["--config", "no_such_config"], "not found"),
    (["optim.name=lion"], "unknown optim.name"),
])
def test_bad_input_is_one_line_error(tmp_path, capsys, args, needle):
    rc = main(["train", "--out", str(tmp_path), "--epochs", "1", "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert needle in err


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: resnet56\npruning:\n  target: 0.3\n")
    cfg = load_config(str(path), overrides=["pruning.epsilon=0.002", "data.name=cifar10"])
    assert cfg.model == "resnet56" and cfg.pruning.target == 0.3 and cfg.pruning.epsilon == 0.002
    assert cfg.data.name == "cifar10"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(str(path))


def test_shipped_configs_all_load():
    from ocspruner.config import CONFIG_DIR
    names = [f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml")]
    assert "cpu_default" in names
    for n in names:
        load_config(n)


def test_lr_schedules():
    cos = ScheduleConfig(name="cosine")
    assert lr_at(0, 10, 0.1, cos) == pytest.approx(0.1)
    assert lr_at(5, 10, 0.1, cos) == pytest.approx(0.05)
    ms = ScheduleConfig(name="multistep", milestones=[90, 180, 240, 270], gamma=0.2)   # Table 8 CIFAR
    assert lr_at(89.9, 300, 0.1, ms) == pytest.approx(0.1)
    assert lr_at(185, 300, 0.1, ms) == pytest.approx(0.1 * 0.04)
    assert lr_at(299, 300, 0.1, ms) == pytest.approx(0.1 * 0.2 ** 4)
    assert lr_at(25, 100, 1.0, ScheduleConfig(name="step", step_size=10, gamma=0.5)) == pytest.approx(0.25)
    assert lr_at(5, 10, 1.0, ScheduleConfig(name="linear")) == pytest.approx(0.5)
    warm = ScheduleConfig(name="cosine", warmup_epochs=2)
    assert lr_at(1, 10, 0.1, warm) == pytest.approx(0.05, rel=1e-6)
    assert math.isclose(lr_at(2, 10, 0.1, warm), 0.1)


def _synth_cfg(tmp_path, name, **updates):
    base = {"model": "tiny_convnet", "data.name": "synthetic", "data.image_size": 16, "data.batch_size": 32,
            "data.options": {"num_samples": 96, "num_test": 32, "num_classes": 4}, "progress": False,
            "threads": 1, "out_dir": str(tmp_path), "name": name, "pruning.window": 2, "pruning.offset": 1,
            "pruning.tau": 1.0, "pruning.epsilon": 0.02, "pruning.lambda0": 0.5, "pruning.delta": 0.5}
    return load_config(None, updates={**base, **updates})


def test_load_rebuilds_the_pruned_model_and_pretrained_start(tmp_path):
    import ocspruner
    from ocspruner.trainer import Trainer

    trainer = Trainer(_synth_cfg(tmp_path, "pruned", epochs=8))
    s = trainer.fit()
    assert s["pruned"]
    rebuilt = ocspruner.load(os.path.join(s["run_dir"], "final_model.pt"))
    x = torch.randn(4, 3, 16, 16)
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), trainer.model(x))
    assert sum(p.numel() for p in rebuilt.parameters()) == s["final_params"]
    # pre-trained start (Table 5): a dense run's weights seed an OCSPruner run
    dense = Trainer(_synth_cfg(tmp_path, "dense", epochs=2, method="dense")).fit()
    path = os.path.join(dense["run_dir"], "final_model.pt")
    seeded = Trainer(_synth_cfg(tmp_path, "seeded", epochs=2, init_from=path))
    ref = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(v, ref[k]) for k, v in seeded.model.state_dict().items())


def test_bad_checkpoints_are_one_line_errors(tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    from ocspruner.models import create_model
    torch.save(create_model("resnet20").state_dict(), foreign)
    for path, needle in [(tmp_path / "missing.pt", "does not exist"), (garbage, "cannot be read"),
                         (foreign, "does not match this model")]:
        rc = main(["train", "--out", str(tmp_path), "--epochs", "1", "--init-from", str(path), *SYNTH])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error: ") and "\n" not in err and needle in err, err


def test_amp_bf16_and_channels_last_flags_run_through_a_prune(tmp_path):
    """The GPU flags also run on CPU (bf16 autocast, channels_last kept across the prune)."""
    from ocspruner.trainer import Trainer

    t = Trainer(_synth_cfg(tmp_path, "flags", epochs=7, amp="bf16", channels_last=True))
    s = t.fit()
    assert s["pruned"] and math.isfinite(s["wall_time"])
    convs = [m for m in t.model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    rows = [json.loads(l) for l in open(os.path.join(s["run_dir"], "metrics.jsonl"))]
    assert all(math.isfinite(r["train_loss"]) for r in rows)


def test_torch_compile_is_redone_after_the_prune(tmp_path):
    """compile=<backend>: the training forward is compiled, and compiled again after the physical
    prune (the traced graph holds the old widths). 'aot_eager' needs no C++ toolchain."""
    from ocspruner.config import ConfigError
    from ocspruner.trainer import Trainer

    t = Trainer(_synth_cfg(tmp_path, "compiled", epochs=7, compile="aot_eager"))
    s = t.fit()
    assert s["pruned"] and t.compilations == 2
    assert s["final_flops"] <= s["dense_flops"] * 0.5 * (1 + 1e-9)
    with pytest.raises(ConfigError, match="compile must be null or a torch.compile backend"):
        Trainer(_synth_cfg(tmp_path, "bad", compile="warp-drive"))


def test_no_subcommand_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage: ocspruner" in err and "train" in err


def test_train_help_describes_every_flag_with_its_default(capsys):
    import argparse

    from ocspruner.cli import _parser
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    flags = [a for a in train._actions if a.option_strings and a.dest != "help"]
    assert len(flags) >= 20
    for action in flags:
        assert action.help and "(default:" in action.help, action.option_strings
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())    # argparse wraps lines
    assert text.count("(default:") == len(flags) + 1    # + the positional overrides


@pytest.mark.parametrize("kind", ["models", "methods", "datasets"])
def test_listings_are_one_described_line_each(kind, capsys):
    assert main([kind]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    from ocspruner.data import available_datasets
    from ocspruner.methods import list_methods
    from ocspruner.models import list_models
    names = {"models": list_models, "methods": list_methods, "datasets": available_datasets}[kind]()
    assert [line.split()[0] for line in lines] == names
    assert all(len(line.split(None, 1)) == 2 and len(line.split(None, 1)[1]) > 15 for line in lines)
    if kind == "datasets":
        assert all("needs" in line for line in lines)


def test_train_help_defaults_are_the_default_configs():
    from ocspruner.cli import DEFAULT_CONFIG, SHORTHANDS, TRAIN_FLAGS
    tree = load_config(DEFAULT_CONFIG).to_dict()
    values = {**{k: v for k, v in tree.items() if not isinstance(v, dict)},
              **{f"{s}.{k}": v for s in ("data", "optim", "pruning") for k, v in tree[s].items()}}
    checked = 0
    for flag, dest, tp, _, _, default in TRAIN_FLAGS:
        key = SHORTHANDS.get(dest)
        if key in values and values[key] is not None:
            shown = default.split(":")[0]          # "auto: cuda if available, else cpu" -> "auto"
            assert str(values[key]) == shown or tp(shown) == values[key], (flag, default, values[key])
            checked += 1
    assert checked >= 8
