"""Open questions 2 and 3: self-adaptive tau / epsilon / lambda, and learning-rate phases.
Hand-computed values on a 4-channel group whose kept channels are set by hand."""
import math

import pytest
import torch
import torch.nn as nn

from ocspruner import PRUNED, SEARCH, SPARSITY, OCSPruner
from ocspruner.schedule import adaptive_lambda0, growing_lambda, shrink_factor
from ocspruner.stability import adaptive_epsilon, adaptive_tau, lr_dropped, within_phase


# -- pure functions ------------------------------------------------------------------------------
def test_adaptive_tau_is_a_fraction_of_the_steepest_earlier_rise():
    avg = [None, None, 0.6, 0.8, 0.85, 0.86]
    assert adaptive_tau(avg, 3, 1, 0.5) == 0.0                     # no rise before t = 3
    assert adaptive_tau(avg, 4, 1, 0.5) == pytest.approx(0.1)      # rise 0.2 at t = 3
    assert adaptive_tau(avg, 5, 1, 1.0) == pytest.approx(0.2)      # rises 0.2, 0.05 before t = 5
    assert adaptive_tau(avg, 5, 2, 0.25) == pytest.approx(0.25 * 0.25)   # lag 2: 0.25 at t = 4
    assert adaptive_tau([0.5, 0.4, 0.3], 2, 1, 0.5) == 0.0         # J_avg only fell


def test_adaptive_epsilon_is_a_fraction_of_the_instability_at_sl_start():
    assert adaptive_epsilon(0.8, 0.1) == pytest.approx(0.02)
    assert adaptive_epsilon(1.0, 0.1) == 0.0
    assert adaptive_epsilon(None, 0.1) is None


def test_lr_drop_detection_step_vs_cosine():
    assert lr_dropped(0.1, 0.02, 0.5) and not lr_dropped(0.1, 0.09, 0.5) and not lr_dropped(None, 0.1, 0.5)
    # a 300-epoch cosine: the epoch-to-epoch ratio (1 + cos(pi t/T)) / (1 + cos(pi (t-1)/T)) stays
    # above 0.5 until the last few epochs, so no phase change is seen before then
    lrs = [0.05 * (1 + math.cos(math.pi * t / 300)) for t in range(300)]
    drops = [t for t in range(1, 300) if lr_dropped(lrs[t - 1], lrs[t], 0.5)]
    assert drops and min(drops) >= 295


def test_within_phase_hides_earlier_phases():
    assert within_phase([0.1, 0.2, None, 0.4], 1) == [None, 0.2, None, 0.4]
    assert within_phase([0.1, 0.2], 0) == [0.1, 0.2]


def test_adaptive_lambda0_hand_values_and_the_shrink_it_promises():
    # K = 4 regularised epochs, Δt = 1: growth 2 + 3 + 4 + 5 = 14; ln(100) / (0.1 * 10 * 14)
    assert adaptive_lambda0(0.1, 10, 4) == pytest.approx(math.log(100) / 14)
    # Δt = 2: 1+floor(k/2) for k = 1..4 is 1, 2, 2, 3 -> 8
    assert adaptive_lambda0(0.1, 10, 4, interval=2) == pytest.approx(math.log(100) / 8)
    # Eq. 7 + Eq. 9 with these values shrink a group to about 1% (exactly: a bit more, since
    # (1 - x)^S <= exp(-x S))
    lam0, lr, steps = adaptive_lambda0(0.01, 50, 5), 0.01, 50
    kept = 1.0
    for t in range(1, 6):   # t_sl-start = 0 trains plainly; epochs 1..5 are regularised
        kept *= shrink_factor(growing_lambda(t, 0, lam0, lam0), lr) ** steps
    assert 0.009 < kept <= 0.01
    with pytest.raises(ValueError, match="adaptive lambda"):
        adaptive_lambda0(0.0, 10, 4)


# -- the engine ----------------------------------------------------------------------------------
class Group4(nn.Module):
    """conv1 (2->4) -> BN -> conv2 (4->3): one group of 4 channels; 50% FLOPs keeps 2."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 1, bias=False)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv1(x)))).mean(dim=(2, 3))


def _keep(model, channels):
    """Make ``channels`` the two most salient (Eq. 2) channels."""
    with torch.no_grad():
        scale = torch.full((4,), 0.01)
        scale[list(channels)] = 1.0
        model.conv1.weight.copy_(scale.view(4, 1, 1, 1).expand(4, 2, 1, 1))
        model.bn.weight.copy_(scale)
        model.bn.bias.zero_()
        model.conv2.weight.copy_(scale.view(1, 4, 1, 1).expand(3, 4, 1, 1))


def _drive(pruner, model, opt, plan, lrs, steps=0):
    reports = []
    for t, (chans, lr) in enumerate(zip(plan, lrs)):
        if pruner.stage == PRUNED:      # physically pruned at t*: the hand-set channels are gone
            break
        _keep(model, chans)
        for g in opt.param_groups:
            g["lr"] = lr
        reports.append(pruner.epoch_start(t, opt))
        for _ in range(steps):
            pruner.after_step(opt)
    return reports


def _engine(**cfg):
    model = Group4()
    pruner = OCSPruner(model, torch.randn(1, 2, 4, 4), target=0.5, window=2, offset=1, sl_start_lag=1, **cfg)
    return model, pruner, torch.optim.SGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize("reset", [False, True])
def test_lr_phase_reset_restarts_the_stability_window(reset):
    """Same sub-network every epoch, lr drops 10x before epoch 2. Without the option J is computed
    across the drop; with it, M_2 starts a new phase: J(M_1, M_2) is not computed, J_avg needs two
    new comparisons, and Eq. 5 (tau = 1: fires as soon as it can) waits for two in-phase averages."""
    model, pruner, opt = _engine(tau=1.0, epsilon=0.0, lr_phase_reset=reset)
    reports = _drive(pruner, model, opt, [(0, 1)] * 6, [0.1, 0.1, 0.01, 0.01, 0.01, 0.01])
    if not reset:
        assert pruner.raw == [None, 1.0, 1.0, 1.0, 1.0]
        assert pruner.avg[:4] == [None, None, 1.0, 1.0]
        assert pruner.t_sl_start == 3            # avg[3] - avg[2] = 0 <= tau
        assert pruner.t_star == 4                # J_avg = 1 >= 1 - epsilon one epoch later
    else:
        assert pruner.raw[:5] == [None, 1.0, None, 1.0, 1.0]
        assert pruner.avg[:5] == [None, None, None, None, 1.0]
        assert pruner.phase_start == 2 and any("lr phase" in e for e in reports[2].events)
        assert pruner.t_sl_start == 5            # avg[5] - avg[4]: the first in-phase pair


def test_gradual_lr_decay_is_one_phase():
    model, pruner, opt = _engine(tau=1.0, epsilon=0.0, lr_phase_reset=True)
    _drive(pruner, model, opt, [(0, 1)] * 4, [0.1, 0.09, 0.08, 0.07])
    assert pruner.phase_start == 0 and pruner.raw == [None, 1.0, 1.0, 1.0]


def test_adaptive_mode_sets_tau_epsilon_and_lambda_from_the_run():
    """Kept sets {2,3}, {0,1}, {0,1}, {0,2}, {0,1}, {0,2}: raw J (i = 1) = -, 0, 1, 1/3, 1/3, 1/3;
    J_avg (r = 2) = -, -, 1/2, 2/3, 1/3, 1/3. Eq. 5 with lag 1 and tau = 0.5 * steepest earlier
    rise: t = 3: rise 1/6 > 0 (no earlier rise); t = 4: rise -1/3 <= 0.5 * 1/6 -> t_sl-start = 4,
    epsilon = 0.1 * (1 - 1/3).
    Epoch 4 has 10 steps at lr 0.1, K = 4: lambda_0 = ln(100) / (0.1 * 10 * 14); epoch 5 uses
    Eq. 7's lambda_0 + delta."""
    model, pruner, opt = _engine(tau=0.0, epsilon=0.0, adaptive=True, adaptive_tau_ratio=0.5, adaptive_sl_epochs=4)
    plan = [(2, 3), (0, 1), (0, 1), (0, 2), (0, 1), (0, 2)]
    reports = _drive(pruner, model, opt, plan, [0.1] * 6, steps=10)
    assert pruner.avg[2:] == pytest.approx([0.5, 2 / 3, 1 / 3, 1 / 3])
    assert pruner.t_sl_start == 4 and [r.stage for r in reports] == [SEARCH] * 4 + [SPARSITY] * 2
    assert pruner.adapted["tau"] == pytest.approx(1 / 12)
    assert pruner.adapted["epsilon"] == pytest.approx(0.1 * 2 / 3)
    lam0 = math.log(100) / 14
    assert pruner.adapted["lambda0"] == pytest.approx(lam0) and pruner.adapted["delta"] == pytest.approx(lam0)
    assert reports[5].lam == pytest.approx(2 * lam0)
    # the adapted values survive a checkpoint
    state = pruner.state_dict()
    model2, pruner2, _ = _engine(tau=0.0, epsilon=0.0, adaptive=True, adaptive_tau_ratio=0.5, adaptive_sl_epochs=4)
    pruner2.load_state_dict(state)
    assert pruner2.adapted == pytest.approx(pruner.adapted) and pruner2._steps_last_epoch == 10


def test_fixed_thresholds_unchanged_when_adaptive_is_off():
    model, pruner, opt = _engine(tau=0.0, epsilon=0.0)
    _drive(pruner, model, opt, [(2, 3), (0, 1), (0, 1), (0, 2), (0, 1), (0, 2)], [0.1] * 6, steps=10)
    assert pruner.t_sl_start == 4 and pruner.adapted == {}     # rise -1/3 <= tau = 0 at t = 4 too
    assert pruner.lam == pytest.approx(1e-4 + 1e-4)             # configured lambda0 + delta at epoch 5


def test_bad_adaptive_options_are_clear_errors():
    with pytest.raises(ValueError, match="adaptive_tau_ratio must be a number in"):
        OCSPruner(Group4(), torch.randn(1, 2, 4, 4), adaptive_tau_ratio=2.0)
    with pytest.raises(ValueError, match="lr_drop_ratio must be in"):
        OCSPruner(Group4(), torch.randn(1, 2, 4, 4), lr_drop_ratio=1.5)
