"""ocspruner bench (issue 7): interleaved timing, percentiles, exact theoretical speedups, channel
rounding at the same budget, and the command on a tiny model. No timed assertions: only the
structure and the exactly computable numbers are checked."""
import json
import math

import pytest
import torch
import torch.nn as nn

from ocspruner.bench import (bench_models, percentile, pruned_variant, rounded_variant,
                             time_interleaved)
from ocspruner.cli import main
from ocspruner.cost import CostModel
from ocspruner.dependency import ChannelSpace
from ocspruner.models import create_model




def test_percentile_hand_computed():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4], 90) == pytest.approx(3.7)      # position 2.7: 3 + 0.7 * (4 - 3)
    assert percentile([5], 90) == 5
    with pytest.raises(ValueError):
        percentile([], 50)


class Recorder(nn.Module):
    def __init__(self, name, log):
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x):
        self.log.append(self.name)
        return x


def test_timing_is_interleaved_and_alternates_order():
    log = []
    models = {"a": Recorder("a", log), "b": Recorder("b", log), "c": Recorder("c", log)}
    times = time_interleaved(models, torch.zeros(1), warmup=2, repeats=3)
    assert log[:6] == ["a", "a", "b", "b", "c", "c"]                       # warm-up
    assert log[6:] == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]        # order reversed every other round
    assert all(len(t) == 3 and min(t) >= 0 for t in times.values())


def test_time_calls_takes_any_callables_interleaved():
    from ocspruner.latency import time_calls

    log = []
    calls = {k: (lambda k=k: log.append(k)) for k in "xy"}
    times = time_calls(calls, warmup=1, repeats=4, clock="wall")
    assert log == ["x", "y", "x", "y", "y", "x", "x", "y", "y", "x"]
    assert [len(times[k]) for k in "xy"] == [4, 4]


def test_epoch_gap_loop_step_is_a_real_training_step():
    """benchmarks/epoch_gap.py times the trainer's step: each call takes the next batch (epoch
    after epoch) and moves the weights by an SGD step."""
    import sys
    import os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    from epoch_gap import forever, loop_step
    from ocspruner.config import OptimConfig

    assert list(zip(range(5), forever([1, 2]))) == [(0, 1), (1, 2), (2, 1), (3, 2), (4, 1)]
    model = _tiny().train()
    seen = []

    class Batches:
        def __iter__(self):
            for i in range(2):
                seen.append(i)
                yield torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    step = loop_step(model, Batches(), OptimConfig(name="sgd", lr=0.1, momentum=0.9))
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        step()
    assert seen == [0, 1, 0]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if b.dim() > 1)
    # the bench setting times the latency bench's training step on the loader's first batch,
    # leaving the models as they were (weights and BatchNorm statistics)
    from epoch_gap import time_setting
    models = {"a": _tiny().train(), "b": _tiny().train()}
    state = {k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in models.items()}
    times = time_setting(models, "bench", list(Batches()), None, warmup=1, repeats=2)
    assert [len(times[k]) for k in "ab"] == [2, 2]
    assert all(torch.equal(state[k][n], t) for k, m in models.items() for n, t in m.state_dict().items())


def _tiny():
    torch.manual_seed(0)
    return create_model("tiny_convnet", num_classes=4).eval()


def test_bench_rows_and_exact_theoretical_speedup():
    dense = _tiny()
    ex = torch.randn(1, 3, 16, 16)
    pruned, keep, reduction = pruned_variant(dense, ex, None, 0.5)
    cost = CostModel(ChannelSpace(_tiny(), ex))
    assert reduction == pytest.approx(1 - float(cost.evaluate(keep, "flops")) / cost.dense["flops"])
    assert 0.5 <= reduction < 0.55
    res = bench_models({"dense": dense, "pruned": pruned}, (3, 16, 16), batch_sizes=(1, 3), warmup=1, repeats=3)
    assert [(r["model"], r["batch"]) for r in res["rows"]] == [("dense", 1), ("pruned", 1), ("dense", 3), ("pruned", 3)]
    for r in res["rows"]:
        if r["model"] == "dense":
            assert r["speedup"] == 1.0 and r["theoretical_speedup"] == 1.0
        else:   # FLOPs of the physically pruned model == the analytic cost of its keep mask
            assert r["theoretical_speedup"] == pytest.approx(cost.dense["flops"] / float(cost.evaluate(keep, "flops")))
            assert r["params"] == sum(p.numel() for p in pruned.parameters())
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["theoretical_speedup"])
        assert r["p90_ms"] >= r["median_ms"] > 0
        assert r["throughput"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3))
    assert res["widths"]["pruned"] != res["widths"]["dense"] and res["threads"] == 1


def test_rounded_variant_meets_the_budget_with_multiples():
    dense = create_model("resnet20", num_classes=10).eval()
    ex = torch.randn(1, 3, 32, 32)
    found, keep, red = pruned_variant(dense, ex, None, 0.5)
    space = ChannelSpace(create_model("resnet20", num_classes=10).eval(), ex)
    kept = {k: sorted(v) for k, v in space.subnetwork(keep).items()}
    rounded, rkeep, rred = rounded_variant(dense, ex, kept, round_to=8)
    assert rred >= red - 1e-12                               # at least the same FLOPs removed
    for g in space.groups:
        k = int(rkeep[g.offset:g.offset + g.size].sum())
        assert k == g.size or k % 8 == 0, (g.key, k)
    # the partition's block refill leaves no whole block that would still fit under the budget
    cost = CostModel(space)
    budget = (1 - red) * cost.dense["flops"]
    assert float(cost.evaluate(rkeep, "flops")) <= budget * (1 + 1e-12)
    for g in space.groups:
        gone = torch.nonzero(~rkeep[g.offset:g.offset + g.size]).flatten() + g.offset
        if len(gone):
            trial = rkeep.clone()
            trial[gone[:8]] = True
            assert float(cost.evaluate(trial, "flops")) > budget, g.key
    with torch.no_grad():
        assert rounded(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bench_command_on_a_tiny_model(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "--model", "tiny_convnet", "--input-size", "16", "--batch-sizes", "1,2", "--warmup", "1",
               "--repeats", "2", "--round-to", "4", "--threads", "1", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [r["model"] for r in res["rows"]] == ["dense", "pruned", "pruned_r4"] * 2
    assert all(math.isfinite(r["median_ms"]) for r in res["rows"]) and res["round_to"] == 4
    assert "speedup" in capsys.readouterr().out


def test_bench_knapsack_partition_training_speedup_and_clock(tmp_path, capsys):
    out = tmp_path / "k.json"
    rc = main(["bench", "--model", "resnet20", "--input-size", "16", "--batch-sizes", "2", "--warmup", "1",
               "--repeats", "3", "--threads", "1", "--partition", "knapsack", "--metric", "params",
               "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["partition"] == "knapsack" and res["metric"] == "params" and res["clock"] == "thread_cpu"
    assert res["achieved_reduction"] >= 0.5
    pruned = next(r for r in res["rows"] if r["model"] == "pruned")
    dense = next(r for r in res["rows"] if r["model"] == "dense")
    assert pruned["params"] == pytest.approx(dense["params"] * (1 - res["achieved_reduction"]))
    assert pruned["train_speedup"] > 0 and pruned["train_median_ms"] > 0
    printed = capsys.readouterr().out
    assert "clock: per-thread CPU time" in printed and "train sp." in printed


@pytest.mark.parametrize("args,needle", [
    ([], "give a run directory or --model NAME"),
    (["--model", "tiny_convnet", "--clock", "thread_cpu", "--threads", "2"], "use 1 thread"),
    (["/nonexistent/run", "--partition", "knapsack"], "--partition, --metric and --price apply to --model"),
    (["--model", "tiny_convnet", "--batch-sizes", "1,x"], "--batch-sizes must be a comma list"),
    (["--model", "tiny_convnet", "--round-to", "0"], "--round-to must be >= 1"),
    (["/nonexistent/run"], "has no final_model.pt"),
])
def test_bench_bad_input_is_one_line(args, needle, capsys):
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err


def test_step_allocator_refuses_a_missing_model_before_any_work(tmp_path):
    """benchmarks/step_allocator.py names the missing pruned model and how to give one, in one
    line, before it starts a child process or writes its results file."""
    import os
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "step_allocator.py")
    missing = str(tmp_path / "nope.pt")
    got = subprocess.run([sys.executable, script, "--pruned", missing], capture_output=True, text=True)
    assert got.returncode != 0 and got.stdout == ""
    assert got.stderr.strip().splitlines() == [
        f"--pruned {missing!r}: give a pruned run's final_model.pt (e.g. benchmarks/work/fashion_full/runs/"
        "fig4-prune-at-3-s0/final_model.pt)"]
