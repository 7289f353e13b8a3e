"""The engine driven by a plain training loop: every stage, exact final FLOPs, momentum carried
over the prune, checkpoint round trip, pre-trained start."""
import io

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp

from ocspruner import PRUNED, SEARCH, SPARSITY, OCSPruner
from ocspruner.models import create_model
from ocspruner.surgery import prune_to

FAST = dict(window=2, offset=1, tau=1.0, epsilon=0.02, lambda0=0.5, delta=0.5, max_prune_epoch=14)


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 3, 16, 16, generator=g) * 0.5 + y.view(-1, 1, 1, 1) * 0.3
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)]


def _loop(model, pruner, opt, epochs, data, start=0):
    """Any user's training loop: the engine's calls (Eq. 8 in its loss-term form here)."""
    reports = []
    for epoch in range(start, epochs):
        reports.append(pruner.epoch_start(epoch, opt))
        for x, y in data:
            loss = F.cross_entropy(model(x), y) + pruner.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            pruner.after_step(opt)
    return reports


def _counted_flops(model, ex):
    """torch-pruning's whole-model count: the engine's FLOPs convention (issue 15)."""
    return tp.utils.count_ops_and_params(model, ex)[0]


def test_tiny_one_cycle_run_passes_every_stage_and_ends_at_target():
    model = create_model("tiny_convnet", num_classes=4)
    ex = torch.randn(1, 3, 16, 16)
    pruner = OCSPruner(model, ex, target=0.5, **FAST)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    reports = _loop(model, pruner, opt, 18, _data())
    stages = [r.stage for r in reports]
    assert stages[0] == SEARCH and SPARSITY in stages and stages[-1] == PRUNED
    assert stages.index(SEARCH) < stages.index(SPARSITY) < stages.index(PRUNED)
    assert pruner.t_sl_start is not None and pruner.t_star is not None
    assert pruner.t_sl_start < pruner.t_star <= 14
    assert sum(r.sl_started for r in reports) == 1 and sum(r.pruned for r in reports) == 1
    # lambda grows linearly during sparsity learning (Eq. 7), first epoch after t_sl-start
    lams = [r.lam for r in reports if r.stage == SPARSITY and r.lam > 0]
    assert lams == pytest.approx([0.5 + 0.5 * k for k in range(1, len(lams) + 1)])
    # exact final FLOPs: the physically pruned model's hook count equals the engine's number
    achieved = _counted_flops(model, ex)
    assert achieved == pytest.approx(pruner.current_cost("flops"))
    assert 0.5 <= 1 - achieved / pruner.dense_cost <= 0.6
    # afterwards the model is an ordinary module that trains on
    x, y = _data()[0]
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_fixed_schedule_sl_start_and_prune_epoch():
    model = create_model("tiny_convnet", num_classes=4)
    pruner = OCSPruner(model, torch.randn(1, 3, 16, 16), target=0.4, sl_start_epoch=2, max_prune_epoch=5,
                       epsilon=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    reports = _loop(model, pruner, opt, 7, _data())
    # t* comes from Eq. 6 (J_avg may reach exactly 1 on this tiny net) or from the cap at 5
    assert pruner.t_sl_start == 2 and 2 < pruner.t_star <= 5
    t = pruner.t_star
    assert [r.stage for r in reports] == [SEARCH, SEARCH] + [SPARSITY] * (t - 2) + [PRUNED] * (7 - t)
    assert reports[2].lam == 0.0                              # epoch t_sl-start trains plainly
    assert all(r.lam > 0 for r in reports[3:t])               # regularisation from the epoch after
    m2 = create_model("tiny_convnet", num_classes=4)
    p2 = OCSPruner(m2, torch.randn(1, 3, 16, 16), target=0.4, prune_epoch=1)
    r2 = _loop(m2, p2, torch.optim.SGD(m2.parameters(), lr=0.05), 3, _data())
    assert [r.stage for r in r2] == [SEARCH, PRUNED, PRUNED] and p2.t_sl_start is None


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_optimizer_state_of_kept_channels_survives_the_prune(opt_name):
    model = create_model("tiny_convnet", num_classes=4)
    pruner = OCSPruner(model, torch.randn(1, 3, 16, 16), target=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if opt_name == "sgd" \
        else torch.optim.Adam(model.parameters(), lr=1e-3)
    _loop(model, pruner, opt, 2, _data())
    keep = pruner.partition().keep
    old_params = dict(model.named_parameters())
    old_state = {n: {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)}
                 for n, p in old_params.items()}
    from ocspruner.surgery import removed_positions
    removed = removed_positions(pruner.space, keep)
    pruner._prune(2, keep, [opt])
    new_params = dict(model.named_parameters())
    opt_params = [p for g in opt.param_groups for p in g["params"]]
    assert all(any(p is q for q in opt_params) for p in new_params.values())
    sliced = 0
    for name, p in new_params.items():
        for key, old in old_state[name].items():
            exp = old
            if old.dim() == 0:
                assert torch.equal(opt.state[p][key], old)
                continue
            for dim in range(old.dim()):
                gone = removed.get((name, dim))
                if gone is not None:
                    mask = torch.ones(old.shape[dim], dtype=torch.bool)
                    mask[gone] = False
                    exp = exp.index_select(dim, torch.nonzero(mask).flatten())
                    sliced += 1
            assert torch.equal(opt.state[p][key], exp), (name, key)
    assert sliced > 5
    _loop(model, pruner, opt, 4, _data(), start=3)   # trains on with the carried state


def test_state_dict_round_trip_mid_sparsity_and_after_prune():
    ex = torch.randn(1, 3, 16, 16)
    model = create_model("tiny_convnet", num_classes=4)
    pruner = OCSPruner(model, ex, target=0.5, **FAST)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    saved = {}
    for epoch in range(18):
        pruner.epoch_start(epoch, opt)
        buf = io.BytesIO()
        torch.save({"engine": pruner.state_dict(), "model": model.state_dict()}, buf)
        saved[pruner.stage] = (epoch, buf.getvalue(), pruner.regularizing, pruner.lam)
        for x, y in _data():
            loss = F.cross_entropy(model(x), y) + pruner.penalty()
            opt.zero_grad(); loss.backward(); opt.step(); pruner.after_step(opt)
    assert {SPARSITY, PRUNED} <= set(saved)
    for stage in (SPARSITY, PRUNED):
        epoch, blob, regularizing, lam = saved[stage]
        ckpt = torch.load(io.BytesIO(blob), weights_only=True)
        fresh = create_model("tiny_convnet", num_classes=4)
        engine = OCSPruner(fresh, ex, target=0.5, **FAST)
        engine.load_state_dict(ckpt["engine"])
        fresh.load_state_dict(ckpt["model"])          # shapes match: the prune was replayed
        assert engine.stage == stage and engine.t_sl_start == pruner.t_sl_start
        assert len(engine.history) == epoch + 1 if stage == SPARSITY else engine.t_star == pruner.t_star
        assert engine.raw[:epoch + 1] == pruner.raw[:epoch + 1]
        if stage == SPARSITY:   # the t_sl-start epoch itself trains without regularisation (Alg. 1)
            assert (engine.regularizing, engine.lam) == (regularizing, lam)
            assert engine.regularizer.active == regularizing
    with pytest.raises(ValueError, match="different model"):
        OCSPruner(create_model("resnet20"), torch.randn(1, 3, 32, 32)).load_state_dict(ckpt["engine"])


def test_pretrained_start_runs_the_same_cycle():
    """Table 5: start from trained weights; the engine needs nothing else."""
    model = create_model("tiny_convnet", num_classes=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for x, y in _data():
            loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
    pruner = OCSPruner(model, torch.randn(1, 3, 16, 16), target=0.5, **FAST)
    reports = _loop(model, pruner, opt, 18, _data())
    assert reports[-1].stage == PRUNED and reports[-1].reduction >= 0.5


def test_epoch_out_of_order_is_a_clear_error():
    model = create_model("tiny_convnet", num_classes=4)
    pruner = OCSPruner(model, torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="out of order"):
        pruner.epoch_start(3)


def test_no_prune_in_the_epoch_sparsity_learning_starts():
    """Alg. 1: the t* test is the else-branch of 'not SL_STAGE', so even an already-stable
    sub-network is pruned one epoch after t_sl-start at the earliest."""
    model = create_model("tiny_convnet", num_classes=4)
    pruner = OCSPruner(model, torch.randn(1, 3, 16, 16), target=0.4, window=2, offset=1, tau=1.0, epsilon=0.9)
    reports = _loop(model, pruner, torch.optim.SGD(model.parameters(), lr=0.05), 7, _data())
    # window 2, offset 1, lag 2: J_avg^t - J_avg^{t-2} first exists at t = 4
    assert pruner.t_sl_start == 4 and pruner.t_star == 5
    assert [r.stage for r in reports] == [SEARCH] * 4 + [SPARSITY] + [PRUNED] * 2


def test_building_the_engine_leaves_weights_buffers_and_mode_untouched():
    """Tracing runs forwards; they must not move BatchNorm statistics of a pre-trained model."""
    model = create_model("resnet20").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    OCSPruner(model, torch.randn(1, 3, 32, 32))
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
