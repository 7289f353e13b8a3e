"""Resume after a crash at any stage gives the same final weights as an uninterrupted run."""
import json
import os

import pytest
import torch

from ocspruner.cli import main
from ocspruner.config import load_config
from ocspruner.trainer import Trainer

BASE = {"model": "tiny_convnet", "data.name": "synthetic", "data.image_size": 16, "data.batch_size": 32,
        "data.options": {"num_samples": 96, "num_test": 32, "num_classes": 4}, "progress": False, "threads": 1,
        "pruning.window": 2, "pruning.offset": 1, "pruning.tau": 1.0, "pruning.epsilon": 0.02,
        "pruning.lambda0": 0.5, "pruning.delta": 0.5, "epochs": 9, "seed": 3}


def _cfg(tmp_path, name, **kw):
    return load_config(None, updates={**BASE, "out_dir": str(tmp_path), "name": name, **kw})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    trainer = Trainer(_cfg(tmp, "full"))
    summary = trainer.fit()
    rows = [json.loads(l) for l in open(os.path.join(summary["run_dir"], "metrics.jsonl"))]
    return summary, {k: v.clone() for k, v in trainer.model.state_dict().items()}, rows


@pytest.mark.parametrize("stop", [2, 5, 7])   # before sparsity learning, during it, after the prune
def test_resume_equals_uninterrupted_run(tmp_path, reference, stop):
    summary, weights, rows = reference
    stages = {r["epoch"]: r["stage"] for r in rows}
    first = Trainer(_cfg(tmp_path, "crash"))
    assert first.fit(stop_after=stop) is None
    second = Trainer(_cfg(tmp_path, "crash"), run_dir=first.run_dir)
    assert second.resume() == stop + 1
    s2 = second.fit()
    assert (s2["t_sl_start"], s2["t_star"]) == (summary["t_sl_start"], summary["t_star"])
    got = second.model.state_dict()
    assert set(got) == set(weights)
    for k, v in weights.items():
        assert torch.equal(got[k], v), (stop, stages[stop], k)
    rows2 = [json.loads(l) for l in open(os.path.join(s2["run_dir"], "metrics.jsonl"))]
    assert [r["epoch"] for r in rows2] == list(range(9))
    assert [r["train_loss"] for r in rows2] == [r["train_loss"] for r in rows]


def test_resume_stages_covered(reference):
    _, _, rows = reference
    stages = [r["stage"] for r in rows]
    assert stages[2] == "search" and stages[5] == "sparsity" and stages[7] == "pruned"


def test_resume_into_different_config_is_refused(tmp_path, capsys):
    first = Trainer(_cfg(tmp_path, "r"))
    first.fit(stop_after=1)
    rc = main(["train", "--resume", first.run_dir, "pruning.target=0.3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "config differs" in err and "pruning.target" in err and "\n" not in err
    rc = main(["train", "--resume", str(tmp_path / "nowhere")])
    assert rc == 2 and "not a run directory" in capsys.readouterr().err


def test_checkpoint_older_than_a_config_key_resumes_at_its_default(tmp_path):
    """A checkpoint whose config lacks a key (written before the key existed) ran with the key's
    default: it resumes when the run keeps that default, and is refused in one line otherwise."""
    first = Trainer(_cfg(tmp_path, "old"))
    first.fit(stop_after=1)
    ckpt_dir = os.path.join(first.run_dir, "checkpoints")
    for name in os.listdir(ckpt_dir):
        path = os.path.join(ckpt_dir, name)
        state = torch.load(path, weights_only=True)
        assert state["config"]["pruning"].pop("layernorm_kept_stats") is True     # the default
        torch.save(state, path)
    resumed = Trainer(_cfg(tmp_path, "old"), run_dir=first.run_dir)
    assert resumed.resume() == 2
    changed = Trainer(_cfg(tmp_path, "old", **{"pruning.layernorm_kept_stats": False}), run_dir=first.run_dir)
    with pytest.raises(Exception, match="pruning.layernorm_kept_stats' \\(True saved, False now\\)"):
        changed.resume()


def test_checkpoints_load_weights_only_and_keep_last_n(tmp_path):
    t = Trainer(_cfg(tmp_path, "k", keep_checkpoints=3))
    t.fit(stop_after=5)
    files = sorted(os.listdir(os.path.join(t.run_dir, "checkpoints")))
    assert files == ["ckpt-epoch0003.pt", "ckpt-epoch0004.pt", "ckpt-epoch0005.pt"]
    state = torch.load(os.path.join(t.run_dir, "checkpoints", files[-1]), weights_only=True)
    assert state["epoch"] == 5 and "method" in state and "rng" in state
    assert not any(n.startswith(".tmp-") for n in os.listdir(os.path.join(t.run_dir, "checkpoints")))


def test_same_seed_same_subnetwork_and_flops(tmp_path, reference):
    """Determinism on CPU: the same seed gives the same t_sl-start, t*, sub-network and FLOPs."""
    summary, _, _ = reference
    again = Trainer(_cfg(tmp_path, "again"))
    s = again.fit()
    assert (s["t_sl_start"], s["t_star"], s["final_flops"]) == \
        (summary["t_sl_start"], summary["t_star"], summary["final_flops"])
    arch_a = json.load(open(os.path.join(summary["run_dir"], "architecture.json")))["pruning"]
    arch_b = json.load(open(os.path.join(s["run_dir"], "architecture.json")))["pruning"]
    assert arch_a == arch_b


def test_ato_resume_inside_the_controller_window_equals_uninterrupted_run(tmp_path):
    # 3 controller steps an epoch over 2-batch passes of its subset: the stop falls mid-pass, so the
    # resumed run must restore where in the pass the controller's data stood
    kw = {"method": "ato", "epochs": 6, "method_options": {"controller_every": 1, "subset": 0.5}}
    full = Trainer(_cfg(tmp_path, "ato_full", **kw))
    a = full.fit()
    first = Trainer(_cfg(tmp_path, "ato_crash", **kw))
    assert first.method.c_start <= 1 < first.method.c_end
    first.fit(stop_after=1)
    second = Trainer(_cfg(tmp_path, "ato_crash", **kw), run_dir=first.run_dir)
    assert second.resume() == 2
    b = second.fit()
    assert a["final_test_acc"] == b["final_test_acc"]
    for (k, x), (_, y) in zip(full.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(x, y), k
    for (k, x), (_, y) in zip(full.method.controller.state_dict().items(), second.method.controller.state_dict().items()):
        assert torch.equal(x, y), k


def test_config_mismatch_names_the_first_differing_key_and_forgives_new_defaults():
    from ocspruner.resume import config_mismatch, flatten_config

    assert flatten_config({"data": {"subset": 5, "options": {"a": 1}}, "method_options": {"k": 2}, "seed": 0}) == \
        {"data.subset": 5, "data.options": {"a": 1}, "method_options": {"k": 2}, "seed": 0}
    now = {"seed": 1, "threads": 4, "data": {"subset": 5, "new_key": 3}}
    # a free key (threads) may differ; a key the checkpoint lacks is taken at its default
    assert config_mismatch(now, {"seed": 1, "threads": 1, "data": {"subset": 5}}, {"data": {"new_key": 3}}) is None
    assert config_mismatch(now, {"seed": 1, "data": {"subset": 5}}, {"data": {"new_key": 0}}) == \
        "'data.new_key' (0 saved, 3 now)"
    assert config_mismatch(now, {"seed": 2, "data": {"subset": 4, "new_key": 3}}, {}) == \
        "'data.subset' (4 saved, 5 now)"      # the first in sorted order


def test_rng_streams_restore_every_stream():
    from ocspruner.resume import RngStreams

    loader_gen, aug_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)

    class Aug:
        generator = aug_gen

    class Wrapped:            # a Subset-like wrapper: the augmentation generator sits one level down
        dataset = Aug()

    class Loader:
        generator = loader_gen

    streams = RngStreams.of(Loader(), Wrapped())
    assert set(streams.generators) == {"loader", "augment"}
    state = streams.state()
    first = (torch.rand(3), torch.rand(3, generator=loader_gen), torch.rand(3, generator=aug_gen))
    streams.restore(state)
    again = (torch.rand(3), torch.rand(3, generator=loader_gen), torch.rand(3, generator=aug_gen))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    streams.reseed(7)
    assert torch.equal(torch.rand(3, generator=aug_gen), torch.rand(3, generator=torch.Generator().manual_seed(7)))
