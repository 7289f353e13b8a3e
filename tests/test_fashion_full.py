"""benchmarks/fashion_full.py (issue 16): the plan and the summary of synthetic run records."""
import importlib.util
import math
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ff():
    spec = importlib.util.spec_from_file_location("fashion_full", os.path.join(ROOT, "benchmarks", "fashion_full.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def doc(ff):
    import _fashion_full_doc     # benchmarks/ is on sys.path once fashion_full.py is loaded

    return _fashion_full_doc


def rec(label, seed, acc, cpu, speedup=None, val=None):
    r = {"key": f"{label}-s{seed}", "label": label, "seed": seed, "final_test_acc": acc, "cpu_time": cpu,
         "final_val_acc": acc - 1.0 if val is None else val,
         "wall_time": 2 * cpu, "flops_ratio": 1.0 if label == "dense" else 0.5, "params_ratio": 0.4,
         "t_sl_start": None, "t_star": None}
    if speedup is not None:
        r["bench"] = {"speedup": speedup, "train_speedup": speedup - 0.1, "clock": "thread"}
    return r


def test_plan_order_seeds_and_fig_runs(ff):
    keys = [r["key"] for r in ff.plan(15)]
    assert keys[:3] == ["dense-s0", "ocspruner-s0", "ocspruner_knapsack-s0"]
    assert keys.index("ato-s0") < keys.index("dense-s1") < keys.index("dense-s2") < keys.index("fig3-noreg-s0")
    # the later seeds the goals need come before the other methods' later seeds
    assert keys.index("snip-s1") < keys.index("ocspruner_knapsack_cap50-s2") < keys.index("prune_finetune-s1")
    assert keys.index("ato-s1") < keys.index("fig3-noreg-s0")
    assert len(keys) == len(set(keys)) == 3 * 4 + 2 * 5 + 1 + 4
    assert sum(k.startswith("dense-") for k in keys) == 3 and sum(k.startswith("random-") for k in keys) == 2
    assert [k for k in keys if k.startswith("fig4")] == [f"fig4-prune-at-{e}-s0" for e in (3, 6, 9, 12)]
    assert ff.fig4_epochs(2) == [1]
    runs = {r["key"]: r for r in ff.plan(15)}
    assert runs["ocspruner_knapsack-s1"]["updates"] == {"pruning.partition": "knapsack", "pruning.price": "train_latency",
                                                      "pruning.latency_batch": 32}
    assert runs["fig3-noreg-s0"]["updates"] == {"pruning.use_eq8": False, "pruning.use_eq9": False}
    assert [r["key"] for r in ff.select(ff.plan(15), "greg,fig3")] == ["greg-s0", "greg-s1", "fig3-noreg-s0"]
    with pytest.raises(SystemExit, match="unknown name"):
        ff.select(ff.plan(15), "pai")


def test_summary_means_stds_ratios_and_pending(ff):
    records = [rec("dense", 0, 94.0, 100.0), rec("dense", 1, 93.0, 120.0), rec("dense", 2, 92.0, 110.0),
               rec("ocspruner", 0, 93.0, 80.0, 1.6), rec("ocspruner", 1, 92.0, 60.0, 1.8),
               rec("ocspruner_knapsack", 0, 93.5, 99.0, 1.5),
               rec("random", 0, 91.0, 50.0, 1.7), rec("random", 1, 91.4, 50.0, 1.7)]
    s = ff.study_summary({r["key"]: r for r in records}, ["snip-s0", "ato-s0"], 54000, 15)
    assert s["n_train"] == 54000 and s["epochs"] == 15 and s["seeds"] == [0, 1, 2]
    assert s["dense_acc"] == pytest.approx(93.0) and s["dense_acc_std"] == pytest.approx(1.0)
    # knapsack (one seed, validation 92.5) beats ranking (validation 92.0 on seed 0, the seed both
    # finished; 91.5 over its two): the variants are compared on their common seeds
    assert s["best_ocspruner_method"] == "ocspruner_knapsack" and s["best_ocspruner_picked_on_seeds"] == [0]
    assert s["best_ocspruner_pick_val_acc"] == {"ocspruner": pytest.approx(92.0), "ocspruner_knapsack": pytest.approx(92.5)}
    assert s["best_ocspruner_acc"] == pytest.approx(93.5) and s["best_ocspruner_acc_std"] is None
    assert s["best_ocspruner_drop"] == pytest.approx(-0.5)
    assert s["best_ocspruner_cpu_ratio"] == pytest.approx(99.0 / 110.0)
    assert s["random_acc"] == pytest.approx(91.2) and s["random_acc_std"] == pytest.approx(math.sqrt(0.08))
    assert s["pai_acc"] is None and s["ato_acc"] is None and s["ato_acc_std"] is None   # pending, not zero
    assert s["pending"] == ["snip-s0", "ato-s0"] and s["complete"] is False
    ocs = s["methods"]["ocspruner"]
    assert ocs["acc"] == pytest.approx(92.5) and ocs["acc_std"] == pytest.approx(math.sqrt(0.5))
    assert ocs["cpu_ratio"] == pytest.approx(70.0 / 110.0) and ocs["drop"] == pytest.approx(0.5)
    assert ocs["inference_speedup"] == pytest.approx(1.7) and ocs["train_speedup"] == pytest.approx(1.6)
    assert ocs["flops_pct"] == pytest.approx(50.0) and ocs["seeds"] == [0, 1]
    assert s["methods"]["dense"]["cpu_ratio"] == 1.0 and s["methods"]["dense"]["inference_speedup"] is None
    g = s["goals"]
    assert g["drop_within_0.3"] is True and g["cpu_ratio_at_most_0.8"] is False
    assert g["ahead_of_random_by_spread"] is True and g["ahead_of_pai_by_spread"] is None
    assert s["complete"] is False                          # runs pending: the goals are provisional


def test_cpu_ratios_compare_runs_with_dense_on_their_own_machine(ff):
    """A session on a fresh checkout is a new machine (the same epoch cost 282-356 s of CPU on
    the first, 213 s on the next): a run's CPU is compared with dense's on its machine only."""
    def on(machine, r):
        return {**r, "machine": machine}

    records = [rec("dense", 0, 94.0, 100.0), rec("dense", 1, 93.0, 110.0),               # first machine (no stamp)
               rec("ocspruner", 0, 93.0, 70.0), rec("ocspruner", 1, 92.0, 80.0),
               on("b", rec("ocspruner", 2, 92.5, 40.0))]                                # faster machine, no dense there
    s = ff.study_summary({r["key"]: r for r in records}, [], 54000, 15)
    ocs = s["methods"]["ocspruner"]
    assert ocs["cpu_ratio"] == pytest.approx(75.0 / 105.0) and ocs["cpu_ratio_runs"] == 2   # not (190 / 3) / 105
    assert ocs["cpu_time"] == pytest.approx(190.0 / 3)                                  # the mean is still every run's
    records.append(on("b", rec("dense", 2, 93.5, 60.0)))
    s = ff.study_summary({r["key"]: r for r in records}, [], 54000, 15)
    ocs = s["methods"]["ocspruner"]
    assert ocs["cpu_ratio"] == pytest.approx((2 * 75.0 / 105.0 + 40.0 / 60.0) / 3) and ocs["cpu_ratio_runs"] == 3
    assert s["methods"]["dense"]["cpu_ratio"] == 1.0 and s["methods"]["dense"]["cpu_ratio_runs"] == 3
    assert ff.same_machine_ratio([("x", 5.0)], [("y", 10.0)]) == (None, 0)


def test_best_variant_is_picked_on_validation_not_test(ff):
    records = [rec("dense", 0, 94.0, 100.0), rec("ocspruner", 0, 93.0, 80.0, val=92.9),
               rec("ocspruner_knapsack", 0, 93.6, 70.0, val=92.4)]
    s = ff.study_summary({r["key"]: r for r in records}, [], 54000, 15)
    assert s["methods"]["ocspruner"]["val_acc"] == pytest.approx(92.9)
    assert s["best_ocspruner_method"] == "ocspruner"       # higher validation, lower test accuracy
    assert s["best_ocspruner_acc"] == pytest.approx(93.0) and s["best_ocspruner_cpu_ratio"] == pytest.approx(0.8)
    assert s["complete"] is True and s["goals"]["cpu_ratio_at_most_0.8"] is True


def test_an_extra_seed_of_one_variant_does_not_decide_the_pick(ff):
    # ranking: validation 92.0 on seed 0, 94.0 on seed 1 (mean 93.0); knapsack: 92.5 on seed 0 only.
    # On their common seed the knapsack is ahead; a mean over unequal seeds would pick the ranking
    records = [rec("dense", 0, 94.0, 100.0), rec("ocspruner", 0, 93.0, 80.0, val=92.0),
               rec("ocspruner", 1, 93.2, 80.0, val=94.0), rec("ocspruner_knapsack", 0, 93.1, 70.0, val=92.5)]
    s = ff.study_summary({r["key"]: r for r in records}, ["ocspruner_knapsack-s1"], 54000, 15)
    assert s["methods"]["ocspruner"]["val_acc"] == pytest.approx(93.0)
    assert s["best_ocspruner_picked_on_seeds"] == [0] and s["best_ocspruner_method"] == "ocspruner_knapsack"
    s = ff.study_summary({r["key"]: r for r in records + [rec("ocspruner_knapsack", 1, 93.0, 70.0, val=93.0)]},
                         [], 54000, 15)
    assert s["best_ocspruner_picked_on_seeds"] == [0, 1] and s["best_ocspruner_method"] == "ocspruner"   # 93.0 > 92.75


def test_one_seed_has_no_spread_so_ahead_by_spread_is_undecided(ff):
    records = [rec("dense", 0, 94.0, 100.0), rec("ocspruner", 0, 93.6, 80.0), rec("random", 0, 93.5, 70.0)]
    s = ff.study_summary({r["key"]: r for r in records}, ["random-s1"], 54000, 15)
    assert s["random_acc_std"] is None and s["dense_acc_std"] is None
    assert s["goals"]["ahead_of_random_by_spread"] is None        # not True on a 0.1-point gap of one seed
    s = ff.study_summary({r["key"]: r for r in records + [rec("random", 1, 93.3, 70.0)]}, [], 54000, 15)
    assert s["random_acc_std"] == pytest.approx(math.sqrt(0.02))
    assert s["goals"]["ahead_of_random_by_spread"] is True        # 93.6 - 93.4 = 0.2 > 0.141


def test_summary_of_nothing_is_all_pending(ff):
    s = ff.study_summary({}, ["dense-s0"], None, 15)
    assert s["dense_acc"] is None and s["best_ocspruner_acc"] is None and s["methods"] == {}
    assert all(v is None for v in s["goals"].values())


def test_what_it_shows_is_kept_across_rewrites(doc, tmp_path):
    path = tmp_path / "d.md"
    assert doc.kept_section(str(path)) == doc.WHAT_IT_SHOWS_TODO
    path.write_text("# t\n\n## Table\n\nx\n\n## What it shows\n\nOCSPruner wins.\nTwo lines.\n\n## Later\n\ny\n")
    assert doc.kept_section(str(path)) == "OCSPruner wins.\nTwo lines."


def test_fig4_table_has_validation_beside_test_cpu_and_j_avg(doc, tmp_path):
    """J_avg is read from the fixed run that prunes last (until its prune it is OCSPruner on the
    fixed runs' machine), with the epoch Eq. 6 would have fired there; from ocspruner-s0 when no
    fixed run has finished. Each row's CPU is on its own clock: its epochs' CPU over the cycle's
    epochs x its mean full-size epoch."""
    metrics = [{"epoch": e, "similarity_avg": j} for e, j in ((1, None), (2, 0.90), (3, 0.95), (6, 0.985))]
    # 6 epochs of a 6-epoch cycle, cumulative CPU: full-size epochs 10, 10, 10, 10, 10, 10 -> 1.00x
    fixed6 = [{"epoch": e, "stage": st, "similarity_avg": j, "cpu_elapsed": 10.0 * (e + 1)} for e, st, j in
              ((0, "search", None), (1, "search", None), (2, "search", 0.91), (3, "sparsity", 0.96),
               (4, "sparsity", 0.99), (5, "sparsity", 1.0))]
    # pruned at 3: full-size epochs 10, 12, 8 (mean 10), pruned ones 5, 5, 5: (30 + 15) / (6 x 10) = 0.75x
    fixed3 = [{"epoch": e, "stage": st, "cpu_elapsed": c} for e, st, c in
              ((0, "search", 10.0), (1, "search", 22.0), (2, "search", 30.0), (3, "pruned", 35.0),
               (4, "pruned", 40.0), (5, "pruned", 45.0))]
    runs = {"fig4-prune-at-3-s0": {"label": "fig4", "updates": {"method_options": {"prune_epoch": 3}},
                                   "final_test_acc": 92.5, "final_val_acc": 92.1, "metrics": fixed3},
            "fig4-prune-at-6-s0": {"label": "fig4", "updates": {"method_options": {"prune_epoch": 6}},
                                   "final_test_acc": 93.0, "final_val_acc": None, "metrics": fixed6},
            "ocspruner-s0": {"label": "ocspruner", "t_star": 6, "seed": 0, "final_test_acc": 93.2,
                             "final_val_acc": 93.4, "metrics": metrics}}
    lines = doc.fig4_section(runs, str(tmp_path / "f4.png"), epsilon=0.005, epochs=6)
    assert ("| pruning epoch | final validation acc | final test acc | CPU vs dense, own clock | "
            "J_avg at that epoch (fig4-prune-at-6-s0) |") in lines
    assert "| 3 (fixed) | 92.10 | 92.50 | 0.75x | 0.960 |" in lines
    assert "| 6 (fixed) | - | 93.00 | 1.00x | - |" in lines
    assert "| 6 (automatic, seed 0) | 93.40 | 93.20 | - | - |" in lines   # no per-epoch CPU recorded
    assert any(line.startswith("Eq. 6 would have fired at epoch 5 in fig4-prune-at-6-s0") for line in lines)
    only_auto = {"ocspruner-s0": runs["ocspruner-s0"]}
    lines = doc.fig4_section(only_auto, str(tmp_path / "f4b.png"))
    assert "| 6 (automatic, seed 0) | 93.40 | 93.20 | - | 0.985 |" in lines
    assert not any(line.startswith("Eq. 6 would") for line in lines)
    assert doc.fig4_section({}, str(tmp_path / "none.png"))[-2:] == ["Pending.", ""]


def test_fig3_across_machines_says_what_the_machine_alone_moved(doc, tmp_path):
    def run(machine, javg, val0, t_sl):
        return {"label": "x", "machine": machine, "t_sl_start": t_sl, "t_star": 8, "final_test_acc": 93.0,
                "metrics": [{"epoch": e, "similarity_avg": j, "val_acc": val0 if e == 0 else 90.0}
                            for e, j in enumerate(javg)]}
    runs = {"ocspruner-s0": run(None, [None, None, 0.66, 0.79, 0.80, 0.82, 0.95], 84.77, 5),
            "fig3-noreg-s0": run("b", [None, None, 0.70, 0.80, 0.81, 0.83, 0.84], 83.58, 5)}
    text = "\n".join(doc.fig3_section(runs, 0.005, str(tmp_path / "f3.png")))
    assert "epoch-0 validation reads 84.77% and 83.58%" in text
    assert "until Eq. 5 fired (epoch 5) J_avg differs by up to 0.040" in text       # epochs 2-4 only
    runs["fig3-noreg-s0"]["machine"] = None
    assert "different machines" not in "\n".join(doc.fig3_section(runs, 0.005, str(tmp_path / "f3.png")))


def test_cost_split_counts_full_size_epochs_and_the_pruned_epochs_cost(ff, doc):
    def series(stages, per_epoch):
        cum, out = 0.0, []
        for e, (st, c) in enumerate(zip(stages, per_epoch)):
            cum += c
            out.append({"epoch": e, "stage": st, "cpu_elapsed": cum})
        return out
    dense = rec("dense", 0, 94.0, 400.0)
    dense["metrics"] = series(["dense"] * 4, [100.0] * 4)
    ocs = rec("ocspruner", 0, 93.0, 330.0)
    ocs["metrics"] = series(["search", "sparsity", "pruned", "pruned"], [100.0, 110.0, 60.0, 60.0])
    assert ff.epoch_costs(ocs["metrics"]) == ([100.0, 110.0], [60.0, 60.0])
    assert ff.epoch_costs([{"epoch": 0, "stage": "dense"}]) is None
    s = ff.study_summary({r["key"]: r for r in (dense, ocs)}, [], 54000, 4)
    assert s["methods"]["dense"]["epoch_cpu"] == pytest.approx(100.0)
    assert s["methods"]["dense"]["pruned_epoch_cost"] is None
    m = s["methods"]["ocspruner"]
    assert m["full_size_epochs"] == 2 and m["pruned_epoch_cost"] == pytest.approx(0.6)
    # own clock: (100 + 110 + 60 + 60) / (4 epochs x its mean full-size epoch 105) = 330 / 420
    assert m["cpu_ratio_own_clock"] == pytest.approx(330.0 / 420.0)
    assert s["methods"]["dense"]["cpu_ratio_own_clock"] == pytest.approx(1.0)
    assert s["best_ocspruner_cpu_ratio_own_clock"] == pytest.approx(330.0 / 420.0)
    row = next(line for line in doc.table_lines(s, list(ff.METHODS)) if line.startswith("| ocspruner |"))
    assert "| 2.0 / 0.60x |" in row and "| 0.79x |" in row
    assert s["full_size_epoch_cpu_range"] == [100.0, 110.0]
    assert ff.epoch_cpu_range([]) is None
    # a run that never trains at full size has no own clock
    assert ff.own_clock_ratio(series(["pruned"] * 2, [60.0, 60.0]), 4) is None
    assert ff.own_clock_ratio(series(["search"] * 2 + ["pruned"] * 3, [100.0, 100.0, 50.0, 50.0, 50.0]), 4) == \
        pytest.approx(350.0 / 400.0)
    # ATO's controller epochs cost but are no clock: (100 + 200 + 200 + 100) / (4 x 100)
    ato = series(["search", "controller", "controller", "frozen"], [100.0, 200.0, 200.0, 100.0])
    assert ff.clock_epochs(ato) == [100.0, 100.0]
    assert ff.own_clock_ratio(ato, 4) == pytest.approx(1.5)


def test_report_from_run_directories_writes_json_and_doc_and_keeps_the_written_part(ff, tmp_path):
    """The whole --report path on two finished (synthetic) run directories: records, summary,
    the JSON, the doc's table and status, and the hand-written section surviving a rewrite."""
    import json

    def finished(key, acc, cpu, stages, extra=None):
        d = tmp_path / "runs" / key
        d.mkdir(parents=True)
        cum, rows = 0.0, []
        for e, (st, c) in enumerate(stages):
            cum += c
            rows.append({"epoch": e, "stage": st, "cpu_elapsed": cum, "val_acc": acc - 0.5,
                         "similarity_avg": None if st == "dense" else 0.5 + 0.1 * e})
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        summary = {"method": key.split("-")[0], "seed": 0, "epochs": 4, "final_test_acc": acc, "final_val_acc": acc - 0.5,
                   "cpu_time": cpu, "wall_time": cpu, "flops_ratio": 1.0, "params_ratio": 1.0,
                   "benchmark_complete": True, **(extra or {})}
        (d / "summary.json").write_text(json.dumps(summary))
        return d

    finished("dense-s0", 94.0, 400.0, [("dense", 100.0)] * 4)
    ocs = finished("ocspruner-s0", 93.8, 300.0, [("search", 100.0), ("sparsity", 100.0), ("pruned", 50.0), ("pruned", 50.0)],
                   {"flops_ratio": 0.5, "params_ratio": 0.4, "t_sl_start": 1, "t_star": 2})
    (ocs / "bench.json").write_text(json.dumps({"clock": "thread_cpu", "threads": 1, "rows": [
        {"model": "pruned", "batch": 64, "speedup": 1.5, "train_speedup": 1.6, "theoretical_speedup": 2.0,
         "median_ms": 3.0}]}))
    args = ff.parse_args(["--work", str(tmp_path), "--epochs", "4", "--subset", "1000"])
    result = ff.write_outputs(ff.plan(4), args, 900)
    s = result["summary"]
    assert (s["dense_acc"], s["best_ocspruner_method"], s["best_ocspruner_cpu_ratio"]) == (94.0, "ocspruner", 0.75)
    assert s["best_ocspruner_drop"] == pytest.approx(0.2) and not s["complete"] and "random-s0" in s["pending"]
    assert s["methods"]["ocspruner"]["pruned_epoch_cost"] == pytest.approx(0.5)
    on_disk = json.load(open(tmp_path / "fashion_full.json"))      # smoke outputs stay in the work dir
    assert on_disk["summary"]["best_ocspruner_acc"] == 93.8 and set(on_disk["runs"]) == {"dense-s0", "ocspruner-s0"}
    text = (tmp_path / "fashion_full.md").read_text()
    assert f"Status: 2 of {len(ff.plan(4))} runs finished" in text and "| random | pending |" in text
    assert "| ocspruner | 1 (0) | 93.80 ± - | +0.20 | 50.0 | 40.0 | 1.50x | 1.60x | 0.75x |" in text
    assert "| 2.0 / 0.50x | 1/2 |" in text and "provisional" in text
    edited = text.replace("_To be written by a person", "Written by hand. _To be written by a person")
    (tmp_path / "fashion_full.md").write_text(edited)
    ff.write_outputs(ff.plan(4), args, 900)
    assert "Written by hand." in (tmp_path / "fashion_full.md").read_text()


def test_a_fresh_checkout_keeps_the_finished_runs_of_the_results_file(ff, tmp_path, capsys, monkeypatch):
    """WORK is ignored by git, so a new machine's checkout has no run directories: the runs the
    results file holds stay done (never trained again), --report rewrites the file byte for
    byte from it, and a run trained here meanwhile joins them. A record that is not the plan's
    run now (other config updates, another cycle length) is not adopted."""
    import json
    import shutil

    work = tmp_path / "work"
    d = work / "runs" / "dense-s0"
    d.mkdir(parents=True)
    rows = [{"epoch": e, "stage": "dense", "cpu_elapsed": 100.0 * (e + 1), "val_acc": 93.0} for e in range(4)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({"method": "dense", "seed": 0, "epochs": 4, "final_test_acc": 94.0,
                                                "final_val_acc": 93.5, "cpu_time": 400.0, "flops_ratio": 1.0,
                                                "benchmark_complete": True}))
    args = ff.parse_args(["--work", str(work), "--epochs", "4", "--subset", "1000"])
    runs = ff.plan(4)
    first = ff.write_outputs(runs, args, 900)
    results = work / "fashion_full.json"
    before = results.read_text()

    shutil.rmtree(work / "runs")                                   # the new checkout: no run directories
    args.recorded = ff.study_records(runs, args)
    assert set(args.recorded) == {"dense-s0"}
    assert ff.is_done(runs[0], args.work, args.recorded) and not ff.trained(runs[0], args.work)
    ff.write_outputs(runs, args, 900)
    assert results.read_text() == before                           # nothing lost, nothing changed
    ff.dry_run(runs, args)
    out = capsys.readouterr().out
    assert "dense-s0                     done (results file)" in out and f"1 of {len(runs)} done" in out
    started = []
    monkeypatch.setattr(ff, "start_worker", lambda run, a: started.append(run["key"]))
    ff.run_all(runs[:1], args, lambda run, rc: None)                # nothing to start: dense-s0 is done
    assert started == []

    # a run trained in this checkout joins the kept ones
    d = work / "runs" / "ocspruner-s0"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"method": "ocspruner", "seed": 0, "epochs": 4, "final_test_acc": 93.5,
                                                "final_val_acc": 93.0, "cpu_time": 300.0, "flops_ratio": 0.5,
                                                "benchmark_complete": True}))
    (d / "bench.json").write_text(json.dumps({"clock": "thread_cpu", "threads": 1, "rows": [
        {"model": "pruned", "batch": 64, "speedup": 1.5, "theoretical_speedup": 2.0, "median_ms": 3.0}]}))
    again = ff.write_outputs(runs, args, 900)
    assert set(again["runs"]) == {"dense-s0", "ocspruner-s0"}
    here = json.loads((work / "machine.json").read_text())        # WORK's machine, named when first used
    assert again["runs"]["ocspruner-s0"]["machine"] == again["runs"]["dense-s0"]["machine"] == here["id"]
    assert again["machines"] == {here["id"]: here} and here["cores"] == os.cpu_count()
    import torch
    assert here["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert again["runs"]["dense-s0"] == first["runs"]["dense-s0"]

    # a two-cycle method's record holds its own (longer) cycle: still the plan's run
    rec = json.loads(results.read_text())
    rec["runs"]["greg-s0"] = dict(rec["runs"]["dense-s0"], key="greg-s0", label="greg", method="greg", epochs=7)
    results.write_text(json.dumps(rec))
    assert set(ff.recorded_runs(str(results), runs, 4, ff.smoke_updates(args))) == {"dense-s0", "ocspruner-s0", "greg-s0"}
    # not the plan's runs any more: another cycle length, other updates for the label, no smoke flags
    assert ff.recorded_runs(str(results), ff.plan(5), 5, ff.smoke_updates(args)) == {}
    capsys.readouterr()
    changed = [dict(r, updates={"pruning.partition": "knapsack"}) if r["key"] == "dense-s0" else r for r in runs]
    assert "dense-s0" not in ff.recorded_runs(str(results), changed, 4, ff.smoke_updates(args))
    assert "so trained again: dense-s0" in capsys.readouterr().out
    assert ff.recorded_runs(str(results), runs, 4, {}) == {}      # written with smoke flags: not the study's
    results.write_text("{truncated")
    with pytest.raises(SystemExit, match="not readable JSON.*git checkout"):
        ff.study_records(runs, args)


def test_a_failure_is_the_last_attempts_and_only_while_no_worker_holds_the_run(ff, tmp_path, monkeypatch):
    """A worker that failed (no torch on a new machine) and was started again is not a failure
    while it trains; the line reported is the last attempt's own error."""
    run = ff.plan(4)[0]
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / f"{run['key']}.log"
    log.write_text("=== 07:51 start\nTraceback (most recent call last):\nModuleNotFoundError: No module named 'torch'\n"
                   "=== 07:52 start\n[07:53] dense-s0: epoch 0\n")
    alive = {"pid": 4321}
    monkeypatch.setattr(ff, "live_pid", lambda path: alive["pid"])
    assert ff.failure_line(run, str(tmp_path)) is None                 # the second attempt is training
    alive["pid"] = None
    assert ff.failure_line(run, str(tmp_path)) is None                 # it stopped without a traceback
    with open(log, "a") as fh:
        fh.write("Traceback (most recent call last):\nValueError: bad shape\nRuntimeError: in fit\n")
    assert ff.failure_line(run, str(tmp_path)) == "RuntimeError: in fit"
    assert ff.failure_line(run, str(tmp_path), {run["key"]: {}}) is None  # kept in the results file: done


def test_run_all_counts_runs_of_an_earlier_study_process_and_never_starts_them_again(ff, monkeypatch):
    """A study process restarted while its predecessor's workers still train: those runs take
    their slots (never more than --jobs processes), are not started twice, and are reported when
    they finish; one that died unfinished is started again."""
    runs = [ff.run_entry(k, "dense", "dense", 0, {}) for k in ("a", "b", "c", "d")]
    state = {"done": set(), "elsewhere": {"a": 3, "d": 2}, "tick": 0}   # a finishes after 3 polls; d dies after 2
    started, peak = [], [0]

    class Proc:
        def __init__(self, key):
            self.key, self.left = key, 2

        def poll(self):
            self.left -= 1
            if self.left > 0:
                return None
            state["done"].add(self.key)
            return 0

    def live(path):
        key = os.path.basename(path)[:-4]
        return 1234 if state["elsewhere"].get(key, 0) > state["tick"] else None

    def start(run, args):
        started.append(run["key"])
        return Proc(run["key"])

    def sleep(_):
        state["tick"] += 1
        if state["tick"] == 3:
            state["done"].add("a")
        running = sum(1 for k, n in state["elsewhere"].items() if n > state["tick"]) + \
            len(started) - len(state["done"] - {"a"})
        peak[0] = max(peak[0], running)

    monkeypatch.setattr(ff, "is_done", lambda run, work, recorded=None: run["key"] in state["done"])
    monkeypatch.setattr(ff, "live_pid", live)
    monkeypatch.setattr(ff, "start_worker", start)
    monkeypatch.setattr(ff.time, "sleep", sleep)
    monkeypatch.setattr(ff, "failure_line", lambda run, work, recorded=None: None)
    finished = []
    args = ff.parse_args(["--jobs", "2", "--work", "/nonexistent"])
    args.recorded = {}
    ff.run_all(runs, args, lambda run, rc: finished.append((run["key"], rc)))
    assert "a" not in started                      # still trained by the earlier process: never started
    assert started == ["b", "c", "d"]              # d died unfinished: started again, after b and c
    assert sorted(finished) == [("a", 0), ("b", 0), ("c", 0), ("d", 0)]
    assert peak[0] <= 2


def test_paused_stops_processes_while_timing_and_continues_them_after(ff):
    """benchmarks/_pause.py: the study's workers are stopped (state T) inside, running after,
    also when the timing fails; a pid that is gone meanwhile does not hide the error."""
    import subprocess
    import time

    from _pause import paused

    def state(pid):
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]

    worker = subprocess.Popen(["sleep", "30"])
    try:
        with paused([worker.pid]):
            time.sleep(0.1)
            assert state(worker.pid) == "T"
        assert state(worker.pid) in ("R", "S")
        with pytest.raises(RuntimeError, match="timing failed"):
            with paused([worker.pid]):
                raise RuntimeError("timing failed")
        assert state(worker.pid) in ("R", "S")
    finally:
        worker.kill()
        worker.wait()


def test_paired_section_orders_rows_by_the_table_and_names_unscored_runs(doc):
    def row(kind, a, b, diff, se=0.2, p=0.5):
        return {"kind": kind, "a": a, "b": b, "diff_points": diff, "paired_se_points": se, "mcnemar_p": p}
    paired = {"runs": {"dense-s0": 93.8, "cap-s0": 93.4, "random-s0": 93.5, "snip-s0": 93.2, "ocspruner-s0": 93.6,
                       "fig4-prune-at-3-s0": 93.0},
              "summary": {"best_ocspruner_method": "cap", "median_paired_se_points": 0.17,
                          "resolvable_difference_points": 0.3332, "seed_vs_seed_significant": 0, "seed_vs_seed_pairs": 0},
              "pairs": [row("vs_dense", "cap-s0", "dense-s0", -0.4, 0.15, 0.01),
                        row("best_ocspruner_vs", "cap-s0", "snip-s0", 0.2),
                        row("best_ocspruner_vs", "cap-s0", "random-s0", -0.1),
                        row("fig_vs_ocspruner", "fig4-prune-at-3-s0", "ocspruner-s0", -0.6, 0.19, 0.002)]}
    lines = doc.paired_section(paired, ["dense-s0", "cap-s0", "random-s0", "snip-s0", "dense-s1"],
                               ["dense", "cap", "random", "snip"])
    text = "\n".join(lines)
    assert "| cap minus | seed 0 |" in text and "about 0.33 points" in text
    assert "| dense | -0.40 ± 0.15 (p 0.010) |" in text
    assert text.index("| random | -0.10") < text.index("| snip | +0.20")      # the table's order, not the alphabet
    assert "| fig4-prune-at-3-s0 - ocspruner-s0 | -0.60 ± 0.19 (p 0.002) |" in text
    assert "Not scored yet (finished since): dense-s1" in text
    assert "Not scorable" not in text
    paired["summary"].update(runs_without_predictions=["dense-s0", "ocspruner-s0"],
                             unscored_pairs=[["fig4_vs_fig4", "fig4-prune-at-3-s0", "fig4-prune-at-6-s0"],
                                             ["vs_dense", "cap-s2", "dense-s2"]])
    text = "\n".join(doc.paired_section(paired, ["dense-s0"], ["dense", "cap"]))
    assert "Not scorable: 2 pairs with one of 2 runs whose models went with an earlier machine's work" in text
    assert "kept above): fig4-prune-at-3-s0 - fig4-prune-at-6-s0, cap-s2 - dense-s2." in text
    assert doc.paired_section(None, ["dense-s0"])[-2] == "Not computed yet."
