"""Latency budget machinery (no timed assertions: timings only feed the table)."""
import pytest
import torch

from ocspruner import OCSPruner
from ocspruner.cost import CostModel
from ocspruner.dependency import ChannelSpace
from ocspruner.latency import LatencyTable, calibrated_saving, fit_layer_latency, layer_latency
from ocspruner.models import create_model


@pytest.fixture(scope="module")
def table():
    model = create_model("tiny_convnet").eval()
    space = ChannelSpace(model, torch.randn(1, 3, 16, 16))
    return LatencyTable(CostModel(space), torch.randn(4, 3, 16, 16), repeats=1)


def test_layer_fit_recovers_known_coefficients_and_resists_an_outlier():
    g_in = torch.tensor([2.0, 4.0, 8.0, 12.0, 16.0], dtype=torch.float64)
    g_out = torch.tensor([4.0, 8.0, 16.0, 24.0, 32.0], dtype=torch.float64)
    ci, co = torch.meshgrid(g_in, g_out, indexing="ij")
    exact = 2e-5 + 3e-8 * ci * co + 5e-7 * (ci + co)           # a, b, c chosen by hand
    coef = fit_layer_latency(g_in, g_out, exact)
    assert coef.tolist() == pytest.approx([2e-5, 3e-8, 5e-7], rel=1e-6)
    assert float(layer_latency(coef, torch.tensor(10.0), torch.tensor(20.0))) == pytest.approx(
        2e-5 + 3e-8 * 200 + 5e-7 * 30, rel=1e-6)
    # one cell timed spuriously fast (the kind of error a partition would exploit) moves the
    # fitted model by a few percent there, not to the cell's value
    noisy = exact.clone()
    noisy[2, 2] *= 0.3
    fitted = layer_latency(fit_layer_latency(g_in, g_out, noisy), g_in[2], g_out[2])
    assert float(fitted) > 0.85 * float(exact[2, 2])
    # single-axis layers (norms, depthwise): t = a + c * c_out, never negative coefficients
    single = fit_layer_latency(torch.tensor([16.0], dtype=torch.float64), g_out, 1e-5 + 2e-7 * g_out[None])
    assert single.tolist() == pytest.approx([1e-5, 0.0, 2e-7], rel=1e-6, abs=1e-15)


def test_measured_tables_are_monotone_and_fitted(table):
    name, in_seg, out_seg, g_in, g_out, grid, _, coef = next(e for e in table.entries if e[1] is not None)
    assert grid.shape == (len(g_in), len(g_out)) and bool((grid > 0).all())
    # monotone by construction: a narrower layer is never slower than a wider one
    assert bool((grid[:-1] <= grid[1:]).all()) and bool((grid[:, :-1] <= grid[:, 1:]).all())
    assert bool((coef >= 0).all())


def test_calibration_maps_predicted_savings_through_measured_points_by_hand(table):
    space = table.cost_model.space
    n = space.num_channels
    keep = torch.ones(n, dtype=torch.bool)
    keep[: n // 2] = False
    # a known table response: 10 ms dense, -8 ms at 0 kept, linear in the kept fraction
    table.raw = lambda k: torch.tensor(10.0, dtype=torch.float64) - 8.0 * (1 - k.double().mean())
    saving = 1 - float(table.raw(keep)) / table.dense_raw
    assert saving == pytest.approx(0.8 * (n // 2) / n)
    table.calibrate(keep, measured_ratio=1 - 1.2 * saving)   # the real saving is 20% larger
    assert table.points == ((pytest.approx(saving), pytest.approx(1.2 * saving)),)
    assert float(table.evaluate(keep)) / table.dense_raw == pytest.approx(1 - 1.2 * saving)
    full = torch.ones(n, dtype=torch.bool)
    assert float(table.evaluate(full)) == pytest.approx(table.dense_raw)          # dense point fixed
    # between 0 and the point: the line through the origin; beyond it: the line to (1, 1)
    assert float(calibrated_saving(torch.tensor(saving / 2), table.points)) == pytest.approx(0.6 * saving)
    x = (1 + saving) / 2
    expected = 1.2 * saving + (x - saving) * (1 - 1.2 * saving) / (1 - saving)
    assert float(calibrated_saving(torch.tensor(x), table.points)) == pytest.approx(expected)
    # a noisy point below an earlier one cannot make the map decrease
    bumpy = ((0.2, 0.3), (0.4, 0.25))
    assert float(calibrated_saving(torch.tensor(0.4), bumpy)) == pytest.approx(0.3)
    table.points = ()
    del table.raw



def test_latency_budget_through_the_engine(flop_clock):
    # the machinery end to end (table, closed-loop calibration, partition) on a deterministic
    # clock, so the test does not depend on how loaded the machine is
    model = create_model("resnet20")
    pruner = OCSPruner(model, torch.randn(1, 3, 16, 16), target=0.05, metric="latency", latency_batch=8,
                       max_prune_fraction=0.9, round_to=4)
    assert "latency" in pruner.cost_model.dense and pruner.latency_calibration
    part = pruner.partition()
    predicted = 1 - float(pruner.cost_model.evaluate(part.keep, "latency")) / pruner.cost_model.dense["latency"]
    assert predicted >= 0.05
    # the clock is FLOPs-proportional, so the calibrated prediction must match the measured ratio
    predicted_ratio, measured_ratio = pruner.latency_calibration[-1]
    assert predicted_ratio == pytest.approx(measured_ratio, abs=0.02)
    with pytest.raises(ValueError, match="metric must be"):
        OCSPruner(create_model("tiny_convnet"), torch.randn(1, 3, 16, 16), metric="energy")


def test_latency_calibration_is_restored_with_the_engine_state(flop_clock):
    """The calibration map is algorithm state: a resumed run partitions as before the stop."""
    kw = dict(target=0.3, metric="latency", latency_batch=8, max_prune_fraction=0.9, round_to=4)
    first = OCSPruner(create_model("resnet20"), torch.randn(1, 3, 16, 16), **kw)
    first.latency_table.points = ((0.25, 0.3),)            # a measured point, as calibration adds
    state = first.state_dict()
    fresh = OCSPruner(create_model("resnet20"), torch.randn(1, 3, 16, 16), **kw)
    fresh.latency_table.points = ()
    fresh.load_state_dict(state)
    assert fresh.latency_table.points == ((0.25, 0.3),)
    flops_state = OCSPruner(create_model("tiny_convnet"), torch.randn(1, 3, 16, 16)).state_dict()
    assert flops_state["latency_points"].shape == (0, 2)
