"""benchmarks/fashion_full_paired.py (issue 16): paired comparisons on one test set, by hand."""
import importlib.util
import math
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fp():
    spec = importlib.util.spec_from_file_location("fashion_full_paired",
                                                  os.path.join(ROOT, "benchmarks", "fashion_full_paired.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mcnemar_exact_by_hand(fp):
    assert fp.mcnemar_exact(0, 0) == 1.0
    assert fp.mcnemar_exact(3, 3) == 1.0                      # 2 * P(X <= 3 | n=6) = 2 * 42/64 -> capped at 1
    assert fp.mcnemar_exact(0, 5) == pytest.approx(2 / 32)    # 2 * (1/2)^5
    assert fp.mcnemar_exact(5, 0) == fp.mcnemar_exact(0, 5)
    assert fp.mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    # a large, even split: exact arithmetic (no underflow), p = 2 * P(X <= 200 | n=450)
    p = fp.mcnemar_exact(200, 250)
    assert 0.01 < p < 0.03


def test_paired_error_and_comparison_by_hand(fp):
    # 10 images: A right on 0-7, B right on 2-8. Only A right: 0, 1 (b = 2); only B: 8 (c = 1)
    a = np.zeros(10, bool); a[:8] = True
    b = np.zeros(10, bool); b[2:9] = True
    assert fp.discordant(a, b) == (2, 1)
    # per-image differences: +1, +1, -1, seven 0: variance 3/10 - (1/10)^2 = 0.29; se = sqrt(0.29/10)
    assert fp.paired_se_points(2, 1, 10) == pytest.approx(100 * math.sqrt(0.029))
    row = fp.compare("x-s0", "y-s0", {"x-s0": a, "y-s0": b})
    assert row["acc_a"] == pytest.approx(80.0) and row["acc_b"] == pytest.approx(70.0)
    assert row["diff_points"] == pytest.approx(10.0) and (row["only_a_right"], row["only_b_right"]) == (2, 1)
    assert row["mcnemar_p"] == pytest.approx(1.0)            # 2 * P(X <= 1 | n=3) = 2 * 4/8
    with pytest.raises(ValueError, match="different test sets"):
        fp.discordant(a, b[:9])


def test_pairs_and_summary(fp):
    keys = ["dense-s0", "dense-s1", "cap-s0", "cap-s1", "random-s0", "snip-s0", "snip-s1"]
    got = fp.pairs(keys, "cap")
    assert ("vs_dense", "cap-s0", "dense-s0") in got and ("vs_dense", "snip-s1", "dense-s1") in got
    assert ("best_ocspruner_vs", "cap-s0", "random-s0") in got and ("best_ocspruner_vs", "cap-s1", "snip-s1") in got
    assert ("seed_vs_seed", "dense-s0", "dense-s1") in got and ("seed_vs_seed", "snip-s0", "snip-s1") in got
    assert not any(k == "best_ocspruner_vs" and b.startswith(("cap", "dense")) for k, _, b in got)
    assert len(got) == 5 + 3 + 3          # vs dense: cap x2, random, snip x2; best vs: random, snip x2
    rng = np.random.default_rng(0)
    truth = rng.random(2000) < 0.9
    correct = {k: truth ^ (rng.random(2000) < 0.05) for k in keys}
    rows = [{"kind": kind, **fp.compare(a, b, correct)} for kind, a, b in got]
    s = fp.summarize(rows, "cap")
    assert [r["seed"] for r in s["best_ocspruner_vs_pai"]] == [0, 1]
    assert [r["seed"] for r in s["best_ocspruner_vs_random"]] == [0]
    r0 = s["best_ocspruner_vs_random"][0]
    assert r0["diff_points"] == pytest.approx(100 * (correct["cap-s0"].mean() - correct["random-s0"].mean()), abs=1e-4)
    d1 = s["best_ocspruner_vs_dense"][1]
    assert d1["diff_points"] == pytest.approx(100 * (correct["cap-s1"].mean() - correct["dense-s1"].mean()), abs=1e-4)
    ses = sorted(r["paired_se_points"] for r in rows if r["kind"] != "seed_vs_seed")
    assert s["median_paired_se_points"] == pytest.approx(float(np.median(ses)))
    assert s["resolvable_difference_points"] == pytest.approx(1.96 * s["median_paired_se_points"])
    assert s["seed_vs_seed_pairs"] == 3


def test_fig_runs_are_compared_with_the_paper_partition_and_dense_only(fp):
    got = fp.pairs(["dense-s0", "ocspruner-s0", "cap-s0", "fig4-prune-at-3-s0", "fig3-noreg-s0"], "cap")
    fig = [p for p in got if "fig" in p[1] or "fig" in p[2]]
    assert sorted(fig) == sorted([("vs_dense", "fig4-prune-at-3-s0", "dense-s0"), ("vs_dense", "fig3-noreg-s0", "dense-s0"),
                                  ("fig_vs_ocspruner", "fig4-prune-at-3-s0", "ocspruner-s0"),
                                  ("fig_vs_ocspruner", "fig3-noreg-s0", "ocspruner-s0")])


def test_fig4_runs_are_paired_with_each_other_in_epoch_order(fp):
    got = fp.pairs(["ocspruner-s0", "fig4-prune-at-12-s0", "fig4-prune-at-3-s0", "fig4-prune-at-6-s0"], None)
    assert [(a, b) for k, a, b in got if k == "fig4_vs_fig4"] == [
        ("fig4-prune-at-3-s0", "fig4-prune-at-6-s0"), ("fig4-prune-at-3-s0", "fig4-prune-at-12-s0"),
        ("fig4-prune-at-6-s0", "fig4-prune-at-12-s0")]


def test_right_wrong_bits_are_kept_and_checked_against_the_record(fp):
    """The JSON keeps each run's right/wrong bits (the models go with the work directory): they
    round-trip, a run is scored from them, a run with neither bits nor model is named, and bits
    that do not give the recorded accuracy stop the script."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 10000)
    c = rng.random(10000) < 0.93
    text = fp.pack(c)
    assert len(text) == 1668 and (fp.unpack(text, 10000) == c).all()
    records = {"a-s0": {"final_test_acc": 100.0 * c.mean()}, "b-s0": {"final_test_acc": 90.0}}
    correct, lost = fp.score_runs(records, {"a-s0": text}, {}, labels, None)
    assert list(correct) == ["a-s0"] and (correct["a-s0"] == c).all() and lost == ["b-s0"]
    records["a-s0"]["final_test_acc"] += 0.01                  # another model than the bits' one
    with pytest.raises(SystemExit, match="a-s0: the kept right/wrong bits score"):
        fp.score_runs(records, {"a-s0": text}, {}, labels, None)


def test_pairs_with_a_lost_run_keep_what_was_scored_and_name_the_rest(fp):
    defined = [("vs_dense", "x-s0", "dense-s0"), ("vs_dense", "x-s1", "dense-s1"), ("vs_dense", "y-s2", "dense-s2"),
               ("seed_vs_seed", "x-s0", "x-s1")]
    old = [{"kind": "vs_dense", "a": "x-s0", "b": "dense-s0", "diff_points": -0.3},
           {"kind": "best_ocspruner_vs", "a": "x-s0", "b": "z-s0", "diff_points": 0.1}]     # no longer defined
    fresh = [{"kind": "vs_dense", "a": "y-s2", "b": "dense-s2", "diff_points": 0.2}]
    rows, unscored = fp.merge_rows(fresh, old, defined, lost=["x-s0", "dense-s0", "dense-s1"])
    assert [(r["kind"], r["a"], r["b"]) for r in rows] == [("vs_dense", "x-s0", "dense-s0"), ("vs_dense", "y-s2", "dense-s2")]
    assert rows[0]["diff_points"] == -0.3                      # as measured while the models existed
    assert unscored == [["vs_dense", "x-s1", "dense-s1"], ["seed_vs_seed", "x-s0", "x-s1"]]
