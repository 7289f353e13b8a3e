"""Multi-process training: 2 CPU processes (gloo, torchrun) end with one identical pruned model;
the keep mask decided by rank 0 is the one every process uses."""
import copy
import os
import subprocess
import sys

import pytest
import torch

from ocspruner import distributed
from ocspruner.config import load_config
from ocspruner.dependency import ChannelSpace
from ocspruner.engine import OCSConfig, OCSPruner
from ocspruner.methods import create_method
from ocspruner.models import create_model
from ocspruner.surgery import prune_to

WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("this torch build has no gloo backend")
    base = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    # --standalone: a rendezvous on a free local port, so parallel test runs do not collide
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           WORKER, str(base)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    ranks = [torch.load(base / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return base, ranks, proc.stdout


def test_both_ranks_end_with_the_identical_pruned_model(two_ranks):
    _, (r0, r1), _ = two_ranks
    assert (r0["rank"], r0["world"], r1["rank"], r1["world"]) == (0, 2, 1, 2)
    s0, s1 = r0["summary"], r1["summary"]
    # pruned mid-training, at the same epoch, to the same channels
    assert s0["pruned"] and 0 < s0["t_star"] <= 10 - 3, s0
    assert (s0["t_sl_start"], s0["t_star"], s0["final_flops"]) == (s1["t_sl_start"], s1["t_star"], s1["final_flops"])
    assert torch.equal(r0["history"], r1["history"])                 # M_t of every epoch
    dense = create_model("tiny_convnet", num_classes=4).state_dict()
    assert set(r0["state"]) == set(r1["state"]) == set(dense)
    assert any(r0["state"][k].shape != dense[k].shape for k in dense)  # physically smaller
    for k, v in r0["state"].items():
        assert v.shape == r1["state"][k].shape and torch.equal(v, r1["state"][k]), k   # weights and BN buffers
    assert s0["final_flops"] <= 0.5 * s0["dense_flops"] * (1 + 1e-9)


def test_data_is_split_and_metrics_are_exact(two_ranks):
    _, (r0, r1), _ = two_ranks
    # 96 examples, 10 carved for validation: the two ranks train on disjoint halves of 86
    assert len(r0["epoch0_order"]) == len(r1["epoch0_order"]) == 43
    assert sorted(r0["epoch0_order"] + r1["epoch0_order"]) == list(range(86))
    assert r0["train_batches"] == 3                                   # ceil(43 / 16)
    # the test set (31, odd) is sharded without padding: the reduced accuracy is the exact
    # accuracy of the final model on the whole set
    assert r0["summary"]["final_test_acc"] == r1["summary"]["final_test_acc"] == r0["full_test_acc"]
    assert r0["full_test_acc"] * 31 / 100 == pytest.approx(round(r0["full_test_acc"] * 31 / 100))


def test_only_rank_0_writes(two_ranks):
    base, (r0, _), stdout = two_ranks
    run = base / "cwd0" / "runs" / "a"
    for f in ("config.yaml", "metrics.jsonl", "summary.json", "final_model.pt", "architecture.json", "best.pt"):
        assert (run / f).is_file(), f
    assert [n for n in os.listdir(run / "tb")]
    # rank 1 ran with its own working directory and the same relative out_dir: nothing there
    assert [os.path.join(d, f) for d, _, files in os.walk(base / "cwd1") for f in files] == []
    assert r0["summary"]["run_dir"] == str(run)
    assert stdout.count("t* =") == 2          # one event line per run (phase A and B), from rank 0 only
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 10


def test_resume_under_ddp_equals_the_uninterrupted_run(two_ranks):
    _, ranks, _ = two_ranks
    for r in ranks:
        assert r["resumed_at"] == r["summary"]["t_star"] + 1
        assert r["resumed_summary"]["t_star"] == r["summary"]["t_star"]
        for k, v in r["state"].items():
            assert torch.equal(r["resumed_state"][k], v), (r["rank"], k)


# -- the decision hook, in one process ------------------------------------------------------------

def _other_ranks_keep(engine_cfg, seed):
    """The keep mask a process with different weights (another seed) would decide."""
    torch.manual_seed(seed)
    other = create_model("tiny_convnet", num_classes=4)
    return OCSPruner(other, torch.randn(1, 3, 16, 16), engine_cfg).partition().keep


def test_engine_prunes_to_the_synced_keep_mask():
    cfg = OCSConfig(target=0.5, prune_epoch=0, max_prune_fraction=0.75)
    rank0 = _other_ranks_keep(cfg, seed=1)
    torch.manual_seed(2)
    model = create_model("tiny_convnet", num_classes=4)
    reference = copy.deepcopy(model)
    seen = []

    def sync(keep):
        seen.append(keep.clone())
        return rank0.clone()

    engine = OCSPruner(model, torch.randn(1, 3, 16, 16), cfg, decision_sync=sync)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    report = engine.epoch_start(0, opt)
    assert len(seen) == 1 and not torch.equal(seen[0], rank0)        # the local decision differed
    assert torch.equal(engine.history[0], rank0) and torch.equal(engine.final_keep, rank0)
    assert report.pruned and report.cost == pytest.approx(float(engine.cost_model.evaluate(rank0, "flops")))
    prune_to(reference, ChannelSpace(reference, torch.randn(1, 3, 16, 16)), rank0)
    for (n, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), n                                   # the same channels removed
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}


def test_ato_uses_the_synced_mask_and_final_keep():
    cfg = load_config(None, updates={"model": "tiny_convnet", "epochs": 10, "method": "ato", "pruning.target": 0.5})
    rank0 = _other_ranks_keep(OCSConfig(target=0.5), seed=1)
    torch.manual_seed(2)
    model = create_model("tiny_convnet", num_classes=4)
    reference = copy.deepcopy(model)
    ato = create_method("ato")
    ato.setup(model, torch.randn(1, 3, 16, 16), cfg)
    ato.set_decision_sync(lambda mask: rank0.clone())
    info = ato.epoch_start(ato.c_start, None)                         # the controller proposes a mask
    assert info["stage"] == "controller" and torch.equal(ato.mask, rank0)
    ato.on_train_end(torch.optim.SGD(model.parameters(), lr=0.1))
    assert torch.equal(ato.final_keep, rank0)
    prune_to(reference, ChannelSpace(reference, torch.randn(1, 3, 16, 16)), rank0)
    assert [p.shape for p in model.parameters()] == [p.shape for p in reference.parameters()]


def test_single_process_helpers_are_identity():
    assert not distributed.active() and distributed.decision_sync() is None
    env = distributed.init_from_env("cpu")
    assert not env.enabled and env.is_main
    t = torch.tensor([True, False])
    assert distributed.broadcast(t) is t and distributed.broadcast_object("x") == "x"
    assert distributed.all_reduce_sum([1, 2.5]) == [1.0, 2.5] and distributed.all_true(True)
    assert list(distributed.ShardSampler(7, 1, 3)) == [1, 4] and len(distributed.ShardSampler(7, 0, 3)) == 3
