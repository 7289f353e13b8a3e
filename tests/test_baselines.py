"""The baselines as the literature defines them (GReg-2, PaT, SNIP), ATO's fixes (issue 13),
ignored_layers for every method and the recovery epochs, by hand-computed cases."""
import math

import pytest
import torch
import torch.nn as nn

from ocspruner.ato import enforce_floor, shared_thresholds
from ocspruner.baselines import early_pruning_indicator, snip_scores, width_distance
from ocspruner.greg import growing_penalty, push_ceiling
from ocspruner.config import ConfigError, load_config
from ocspruner.dependency import ChannelSpace
from ocspruner.methods import create_method, prune_cap, recovery_epochs, resolve_ignored_layers
from ocspruner.models import create_model
from ocspruner.partition import reselect_within_groups

EX = torch.randn(1, 3, 16, 16)


def _cfg(method, epochs=6, **updates):
    return load_config(None, updates={"model": "tiny_convnet", "epochs": epochs, "method": method,
                                      "pruning.target": 0.5, **updates})


def _setup(method, epochs=6, **updates):
    torch.manual_seed(0)
    model = create_model("tiny_convnet", num_classes=4)
    m = create_method(method)
    m.setup(model, EX, _cfg(method, epochs, **updates))
    return m, model


def _space_of(m):
    return m.engine.space if hasattr(m, "engine") else (m.space if hasattr(m, "space") else m.cost.space)


# -- recovery epochs -------------------------------------------------------------------------------
def test_recovery_cap_by_hand():
    assert [recovery_epochs(e, 0.2) for e in (8, 15, 3, 5)] == [2, 3, 1, 1]
    assert recovery_epochs(10, 0.0) == 0
    assert [prune_cap(e, 0.2) for e in (8, 15, 3)] == [6, 12, 2]
    assert prune_cap(6, 0.0) == 5                       # no recovery asked: the last epoch at the latest
    m, _ = _setup("ocspruner", epochs=8)
    assert m.engine.config.max_prune_epoch == 6         # 2 of 8 epochs left to recover
    with pytest.raises(ValueError, match="prune_epoch 7 leaves fewer than the recovery epochs"):
        _setup("ocspruner_fixed", epochs=8, method_options={"prune_epoch": 7})
    with pytest.raises(ValueError, match="ato: the mask freezes at epoch 1 .*lower t_end or raise epochs"):
        _setup("ato", epochs=1)
    with pytest.raises(ConfigError, match="recovery_fraction must be in"):
        _cfg("ocspruner", recovery_fraction=1.0)


# -- ignored_layers ----------------------------------------------------------------------------------
def test_ignored_layers_by_name_and_type():
    model = create_model("tiny_convnet", num_classes=4)
    assert resolve_ignored_layers(model, ["Linear"]) == [model.classifier]
    assert resolve_ignored_layers(model, ["nn.Linear", "pw"]) == [model.classifier, model.pw]
    assert resolve_ignored_layers(model, ["down"]) == [model.down] + list(model.down)   # a name covers its children
    with pytest.raises(ValueError, match="ignored_layers entry 'nope' matches no module name or type"):
        resolve_ignored_layers(model, ["nope"])
    with pytest.raises(ConfigError, match="ignored_layers must be a list of module names"):
        _cfg("ocspruner", ignored_layers=[3])


@pytest.mark.parametrize("method", ["dense", "ocspruner", "ocspruner_fixed", "ocs_count_only", "pat", "random",
                                    "magnitude_at_init", "snip", "prune_finetune", "greg", "ato"])
def test_ignored_layers_reach_every_method(method):
    free, _ = _setup(method, epochs=10)
    assert "pw" in {layer for g in _space_of(free).groups for layer in g.layers}
    m, _ = _setup(method, epochs=10, ignored_layers=["pw"])
    assert "pw" not in {layer for g in _space_of(m).groups for layer in g.layers}


# -- ATO -----------------------------------------------------------------------------------------------
class _Data(torch.utils.data.Dataset):
    def __init__(self, n=32):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_ato_controller_step_leaves_batchnorm_statistics_unchanged():
    m, model = _setup("ato", epochs=10, method_options={"subset": 0.5})
    m.bind_data(_Data(), 8, 0)
    model.train()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    before = [p.detach().clone() for p in m.controller.parameters()]
    m.controller_step()
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert model.training                                     # the training mode is restored
    assert any(not torch.equal(a, p) for a, p in zip(before, m.controller.parameters()))   # it learned


def test_ato_shared_thresholds_and_floor_by_hand():
    m = create_model("tiny_convnet", num_classes=4)
    space = ChannelSpace(m, EX)
    sizes = [g.size for g in space.groups]                      # pw 16, dw.0 16, res_conv2 8, res_conv1 8
    sel = torch.zeros(space.num_channels, dtype=torch.bool)
    sel[0] = True                                               # 1 channel of pw
    sel[16:19] = True                                           # 3 channels of dw.0
    t = shared_thresholds(space, sel, 2.0)
    assert t[0].item() == pytest.approx(0.5) and t[16:19].tolist() == pytest.approx([1.5] * 3)
    assert float(t[~sel].abs().sum()) == 0.0 and float(t.sum()) == pytest.approx(2.0 * 0.25 + 1.5 * 3)
    # floor: group res_conv1 (offset 40, 8 channels) keeps only channel 0; its floor is 3
    mask = torch.ones(space.num_channels, dtype=torch.bool)
    mask[40:48] = torch.tensor([True] + [False] * 7)
    logits = torch.zeros(space.num_channels)
    logits[40:48] = torch.tensor([5.0, -1.0, -3.0, -0.5, -2.0, -4.0, -0.1, -6.0])
    out = enforce_floor(mask, logits, space, torch.tensor([1, 1, 1, 3]))
    assert torch.nonzero(out[40:48]).flatten().tolist() == [0, 3, 6]    # the two highest logits of the masked
    assert torch.equal(out[:40], mask[:40]) and sizes == [16, 16, 8, 8]


def test_ato_freeze_repairs_the_budget_both_ways_and_says_what_it_cannot():
    m, model = _setup("ato", epochs=10)
    assert m.floor.tolist() == [16 - 12, 16 - 12, 8 - 6, 8 - 6]     # max_prune_fraction 0.75 -> floor
    m.mask = torch.ones(m.space.num_channels, dtype=torch.bool)       # the controller kept everything
    with pytest.warns(UserWarning, match="controller proposed only 0 of the"):
        msg = m.freeze(None, 5)
    red = 1 - float(m.cost.evaluate(m.mask, "flops")) / m.cost.dense["flops"]
    assert 0.5 <= red < 0.51 and "BUDGET" not in msg and m.repair_added == int((~m.mask).sum())
    from ocspruner.ato import channel_norms
    assert float(channel_norms(model, m.space)[~m.mask].max()) == 0.0    # zeroed at the freeze
    m2, _ = _setup("ato", epochs=10)
    keep = torch.zeros(m2.space.num_channels, dtype=torch.bool)
    m2.mask = enforce_floor(keep, torch.zeros(m2.space.num_channels), m2.space, m2.floor)   # far past the budget
    proposed = m2.mask.clone()
    from ocspruner.surgery import zero_pruned_
    zero_pruned_(m2.model, m2.space, proposed)                # Eq. 3 had zeroed the masked-out channels
    msg = m2.freeze(None, 5)
    red = 1 - float(m2.cost.evaluate(m2.mask, "flops")) / m2.cost.dense["flops"]
    # given back to the budget: nothing the controller kept goes, only masked-out channels return
    assert 0.5 <= red < 0.51 and "BUDGET" not in msg, msg
    assert m2.repair_added == 0 and m2.repair_given == int((m2.mask & ~proposed).sum()) > 0
    assert bool(m2.mask[proposed].all())
    # the channels given back were zero: they are re-drawn, else they would stay dead
    assert bool((channel_norms(m2.model, m2.space)[m2.mask & ~proposed] > 0).all())
    assert f"{m2.repair_given} of them all-zero, re-drawn" in msg
    # within the controller's own band (tolerance 0.5 points) its proposal stands as it is
    m3, _ = _setup("ato", epochs=10)
    m3.mask = m.mask.clone()
    m3.opts["tolerance"] = 0.2
    m3.target = m3.pruning.target = 0.4
    msg = m3.freeze(None, 5)
    assert torch.equal(m3.mask, m.mask) and m3.repair_given == m3.repair_added == 0
    assert "BUDGET MISSED by +1" in msg       # 10 points past 40%: kept, and said


def test_revived_channels_leave_the_function_unchanged_and_can_train_again():
    from ocspruner.ato import channel_norms, revive_channels_
    from ocspruner.surgery import zero_pruned_
    torch.manual_seed(0)
    model = create_model("tiny_convnet", num_classes=4)
    space = ChannelSpace(model, EX)
    dead = torch.zeros(space.num_channels, dtype=torch.bool)
    dead[[1, 5, 20, 41]] = True
    zero_pruned_(model, space, ~dead)                          # all slices of 4 channels zero
    model.eval()
    x = torch.randn(4, 3, 16, 16)
    before = model(x)
    revived = revive_channels_(model, space, dead | (torch.arange(space.num_channels) == 2), seed=1)
    assert torch.equal(revived, dead)                          # channel 2 was live: left as it is
    assert torch.allclose(model(x), before, atol=1e-6)         # consumers' columns are still zero
    norms = channel_norms(model, space)
    assert bool((norms[dead] > 0).all())
    model.train()
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    params = dict(model.named_parameters())
    g = next(g for g in space.groups if g.offset <= 20 < g.offset + g.size)
    consumers = [s for s in g.slices if s.dim == 1 and bool((s.channels == 20 - g.offset).any())]
    assert consumers and all(float(params[s.name].grad.index_select(
        1, s.positions[s.channels == 20 - g.offset]).abs().sum()) > 0 for s in consumers)


def test_ato_refuses_what_it_cannot_honour():
    with pytest.raises(ValueError, match="pruning.round_to must be 1"):
        _setup("ato", **{"pruning.round_to": 2})
    with pytest.raises(ValueError, match="method 'ato' meets a flops or params budget"):
        _setup("ato", **{"pruning.metric": "latency"})
    m, _ = _setup("ato", **{"pruning.metric": "params", "pruning.max_prune_fraction": 0.5})
    assert m.metric == "params" and m.floor.tolist() == [8, 8, 4, 4]


# -- GReg-2 ---------------------------------------------------------------------------------------------
def test_greg_growing_penalty_and_gradient_by_hand():
    assert growing_penalty(0, 0.1, 10, 1.0) == 0.0
    assert growing_penalty(25, 0.1, 10, 1.0) == pytest.approx(0.2)      # floor(25/10) = 2 updates
    assert growing_penalty(1000, 0.1, 10, 1.0) == 1.0                    # the ceiling
    m, model = _setup("greg", epochs=10, method_options={"reg_epochs": 3, "update_every": 5})
    assert m.total_epochs() == 10 + 3 + 5 and m.pick_epoch == 11 and m.prune_epoch == 13   # pick 3 // 3 = 1 epoch
    m.steps_first_epoch = 50
    # the pick's ceiling from its length: growing for 40 of its 50 iterations, held 10, at lr 1e-3
    # with momentum 0.9, the penalty alone must shrink a filter exp(0.25)-fold (the authors' pick):
    # 1e-3 / 0.1 * top * (40 / 2 + 10) = 0.25, top = 25 / 30
    assert m.ceiling() == pytest.approx(25.0 / 30.0)
    assert m.delta() == pytest.approx(25.0 / 30.0 / 8)                  # ceiling / floor(0.8 * 1 * 50 / 5)
    fixed, _ = _setup("greg", epochs=10, method_options={"reg_epochs": 3, "update_every": 5, "ceiling": 1.0})
    fixed.steps_first_epoch = 50
    assert fixed.ceiling() == 1.0 and fixed.delta() == pytest.approx(1.0 / 8)   # an explicit ceiling is kept
    with pytest.raises(ValueError, match="pick_shrink > 1"):
        _setup("greg", method_options={"pick_shrink": 1.0})
    assert m.learning_rate(3.0) > m.learning_rate(9.9)
    # the regularisation phase at lr/100: the authors' fixed 1e-3 after their 0.1 recipe
    assert m.cfg.optim.lr == 0.1 and m.learning_rate(10.5) == pytest.approx(0.001)
    assert m.learning_rate(13.0) == pytest.approx(0.01)                  # fine-tuning starts at lr/10
    # the push: 100 iterations, growing for 60 of them from the pick's ceiling to the top
    growth, hold, top = m.push_schedule()
    c = m.ceiling()
    assert (growth, hold) == (60, 40) and top == pytest.approx(push_ceiling(1000, 0.001, 0.9, c, 60, 40))
    assert m.push_penalty(0) == pytest.approx(c) and m.push_penalty(34) == pytest.approx(c + (top - c) * 30 / 60)
    assert m.push_penalty(60) == m.push_penalty(99) == pytest.approx(top)
    m.epoch, m.lam = 10, 0.5     # the pick: every filter of a prunable layer, lambda W
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    m.after_backward()
    grads = dict(model.named_parameters())
    assert torch.allclose(grads["pw.weight"].grad, 0.5 * grads["pw.weight"].detach())      # d/dW lambda/2 ||W||^2
    assert torch.allclose(grads["stem.0.weight"].grad, 0.5 * grads["stem.0.weight"].detach())
    assert float(grads["stem.1.weight"].grad.abs().sum()) == 0.0        # norm scales are not filters
    assert float(grads["classifier.weight"].grad.abs().sum()) == 0.0    # the head is not pruned
    # the push: picked filters get lambda W, the kept ones ``recover`` W
    m.opts["recover"] = -0.01
    m.picked = torch.zeros(m.space.num_channels, dtype=torch.bool)
    g = next(g for g in m.space.groups if "pw" in g.layers)
    m.picked[g.offset] = True                                           # pw's first filter goes
    m._row_penalties()
    m.epoch, m.lam = 11, 7.0
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    m.after_backward()
    w = grads["pw.weight"].detach()
    row = [s for s in g.slices if s.name == "pw.weight" and s.dim == 0][0].positions[0]
    expect = -0.01 * w.clone()
    expect[row] = 7.0 * w[row]
    assert torch.allclose(grads["pw.weight"].grad, expect)
    assert torch.allclose(grads["stem.0.weight"].grad, -0.01 * grads["stem.0.weight"].detach())


def test_push_ceiling_by_hand_and_against_sgd_with_momentum():
    # need = ln(e^2) * (1 - 0.5) / 0.1 = 10 = 0.2^-1 ...: (10 - 1 * 4 / 2) / (4 / 2 + 2) = 2
    assert push_ceiling(math.exp(2), 0.1, 0.5, 1.0, 4, 2) == pytest.approx(2.0)
    assert push_ceiling(1.5, 0.1, 0.0, 5.0, 4, 2) == 5.0                 # never below where it starts
    with pytest.raises(ValueError):
        push_ceiling(1.0, 0.1, 0.9, 1.0, 4, 2)
    # the schedule it sets really shrinks a weight ~1000-fold under SGD with momentum 0.9
    # (the momentum buffer builds up over the first ~10 steps, so a little less)
    top = push_ceiling(1000, 1e-3, 0.9, 1.0, 84, 56)
    w = torch.ones(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=1e-3, momentum=0.9)
    for i in range(140):
        w.grad = (1.0 + (top - 1.0) * min(1.0, i / 84)) * w.detach().clone()
        opt.step()
    assert 500 < 1 / float(w.detach()) < 1500


def test_reselect_within_groups_keeps_every_width_and_takes_the_top_scores_by_hand():
    from types import SimpleNamespace as G
    groups = [G(offset=0, size=4, blocks=1, heads_of=None), G(offset=4, size=3, blocks=1, heads_of=None),
              G(offset=7, size=2, blocks=2, heads_of=None)]
    keep = torch.tensor([1, 1, 0, 0, 1, 0, 0, 1, 0], dtype=torch.bool)
    scores = torch.tensor([0.1, 0.5, 0.9, 0.5, 0.2, 0.3, 0.3, 0.0, 9.0])
    out = reselect_within_groups(keep, scores, groups)
    # group 0 keeps 2: channels 2 (0.9) and 1 (0.5, the lower index of the tie with 3);
    # group 1 keeps 1: channel 5 (0.3, the lower index of the tie); group 2 moves in blocks: as given
    assert out.tolist() == [False, True, True, False, False, True, False, True, False]


def test_greg_picks_at_the_dense_eq2_widths_by_filter_l1_and_pushes_the_picked_to_zero(tmp_path):
    from ocspruner.importance import group_l1, group_l2
    from ocspruner.trainer import Trainer

    def run(name, **options):
        cfg = load_config(None, updates={"model": "tiny_convnet", "data.name": "synthetic", "data.image_size": 16,
                                         "data.batch_size": 8, "progress": False, "threads": 1, "epochs": 2, "optim.momentum": 0.0,
                                         "data.options": {"num_samples": 160, "num_test": 16, "num_classes": 4},
                                         "method": "greg", "method_options": {"reg_epochs": 4, "finetune_epochs": 1,
                                                                              "reg_lr": 0.01, "update_every": 1,
                                                                              **options},
                                         "out_dir": str(tmp_path), "name": name})
        trainer = Trainer(cfg)
        m = trainer.method
        seen = {}
        start = m.epoch_start

        def watch(epoch, optimizer):
            named = dict(m.model.named_parameters())
            if epoch == m.dense_epochs:       # the penalty starts: the widths are the dense model's Eq. 2 partition
                seen["widths"] = m.partition(group_l2(named, m.space))
            if epoch == m.pick_epoch:         # the pick: each layer's own top filters by L1, at those widths
                seen["l1"] = group_l1(named, m.space)
            if epoch == m.prune_epoch:        # mean filter norm of the picked over the kept, before the prune
                norms = {n: named[n].detach().flatten(1).norm(dim=1) for n in m.rows}
                picked = torch.cat([norms[n][r > 0] for n, r in m.rows.items()])
                kept = torch.cat([norms[n][r == 0] for n, r in m.rows.items()])
                seen["ratio"] = float(picked.mean() / kept.mean())
            return start(epoch, optimizer)

        m.epoch_start = watch
        return trainer.fit(), m, seen

    s, m, seen = run("greg")
    assert (m.pick_epoch, m.prune_epoch) == (3, 6) and s["t_star"] == 6 and s["pruned"]
    index = m.space.channel_group_index()
    widths = torch.bincount(index[seen["widths"]], minlength=len(m.space.groups))
    assert torch.equal(torch.bincount(index[m.final_keep], minlength=len(m.space.groups)), widths)
    assert torch.equal(m.final_keep, reselect_within_groups(seen["widths"], seen["l1"], m.space.groups))
    # the push drove the picked filters towards zero before the prune; a push that stays at the
    # pick's ceiling (push_shrink barely above 1) leaves them live. (Plain SGD here: with momentum
    # 0.9 this 54-iteration push at lr 0.01 sits inside the heavy ball's oscillation, which the
    # real runs' 140 iterations at lr 0.001 outlast: test_push_ceiling_by_hand_and_against_sgd...)
    weak, _, weak_seen = run("weak", push_shrink=1.0001)
    assert s["final_prune_picked_ratio"] < 0.1 < weak["final_prune_picked_ratio"]     # measured 0.048 vs 0.66
    assert seen["ratio"] < 0.1 * weak_seen["ratio"]                                 # measured 0.018 vs 0.56
    with pytest.raises(ValueError, match="reg_epochs .2. must exceed pick_epochs .2."):
        _setup("greg", method_options={"reg_epochs": 2, "pick_epochs": 2})
    # a push too short for its penalty is refused before training; one too short for momentum SGD
    # to shrink the picked filters push_shrink-fold is said before training
    short, _ = _setup("greg", method_options={"reg_epochs": 2})
    with pytest.raises(ValueError, match="the push needs a penalty of .* an unstable step; raise reg_epochs"):
        short.bind_data(list(range(16)), 16, 0)                     # 1 iteration an epoch at lr 0.001
    with pytest.warns(UserWarning, match="greg: the push has 30 iterations; SGD with momentum 0.9 shrinks the "
                                         "picked filters at most ~4.86-fold"):
        short.bind_data(list(range(480)), 16, 0)


# -- PaT ----------------------------------------------------------------------------------------------
def test_pat_indicator_by_hand(tmp_path):
    sizes = [4, 8]
    widths = [[2, 4], [3, 4], [3, 6]]
    assert width_distance(widths[2], widths[1], sizes) == pytest.approx((0 / 4 + 2 / 8) / 2)
    assert early_pruning_indicator(widths, 2, 2, sizes) == pytest.approx(1 - (0.125 + 0.25) / 2)
    assert early_pruning_indicator(widths, 1, 2, sizes) is None
    from ocspruner.trainer import Trainer
    cfg = load_config(None, updates={"model": "tiny_convnet", "data.name": "synthetic", "data.image_size": 16,
                                     "data.batch_size": 16, "progress": False, "threads": 1, "epochs": 4,
                                     "data.options": {"num_samples": 48, "num_test": 16, "num_classes": 4},
                                     "method": "pat", "method_options": {"window": 1, "threshold": 1e-9},
                                     "out_dir": str(tmp_path), "name": "pat"})
    s = Trainer(cfg).fit()
    assert s["t_star"] == 1 and s["pruned"]          # the first epoch with an indicator (t = r = 1)


# -- SNIP ---------------------------------------------------------------------------------------------
class _TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 2, bias=False)
        self.fc2 = nn.Linear(2, 2, bias=False)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_snip_connection_sensitivity_by_hand():
    m = _TwoLinear()
    with torch.no_grad():
        m.fc1.weight.copy_(torch.eye(2))
        m.fc2.weight.copy_(torch.eye(2))
    space = ChannelSpace(m, torch.randn(1, 2))
    # x = (1, 2): h = (1, 2), z = (1, 2), y = 0: dL/dz = (-s, s) with s = e^2 / (e + e^2)
    # channel 0: |g w| of fc1[0, 0] = s * 1 and fc2[0, 0] = s * 1; channel 1: 2s and 2s
    s = math.exp(2) / (math.e + math.exp(2))
    scores = snip_scores(m, space, [(torch.tensor([[1.0, 2.0]]), torch.tensor([0]))])
    assert scores.tolist() == pytest.approx([2 * s, 4 * s])
    assert all(p.grad is None for p in m.parameters())


def test_ato_eq3_projection_group_vs_shared_threshold():
    """Eq. 3 shrinks every masked channel's norm by its threshold: lr * lambda each (group), or
    lr * lambda * n_g / N (shared as the released code): here 1 channel of pw, 3 of res_conv1
    (groups whose parameter slices do not overlap)."""
    from ocspruner.ato import channel_norms

    class _Opt:
        param_groups = [{"lr": 0.001}]

    for mode, want in (("group", [0.01, 0.01, 0.01, 0.01]), ("shared", [0.0025, 0.0075, 0.0075, 0.0075])):
        m, model = _setup("ato", epochs=10, method_options={"threshold": mode})
        m.epoch = m.t_w
        m.mask = torch.ones(m.space.num_channels, dtype=torch.bool)
        sel = [0, 40, 41, 42]
        m.mask[sel] = False
        before = channel_norms(model, m.space)
        m.after_step(_Opt())                                  # lr 0.001 * lambda 10 = 0.01 in all
        after = channel_norms(model, m.space)
        assert (before[sel] - after[sel]).tolist() == pytest.approx(want, rel=1e-5)
        assert torch.equal(before[43:48], after[43:48])       # kept channels of res_conv1 untouched
