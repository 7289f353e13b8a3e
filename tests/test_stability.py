"""Eq. 3-7 and Eq. 9's factor against hand-computed numbers."""
import math

import pytest

from ocspruner import stability as st
from ocspruner.schedule import growing_lambda, shrink_factor

A = {"g1": frozenset({0, 1, 2}), "g2": frozenset({0, 1})}
B = {"g1": frozenset({1, 2, 3}), "g2": frozenset({0, 1})}


def test_jaccard_eq3_by_hand():
    assert st.jaccard(frozenset({0, 1, 2}), frozenset({1, 2, 3})) == pytest.approx(2 / 4)
    assert st.jaccard(frozenset(), frozenset()) == 1.0
    # mean over groups: (2/4 + 1) / 2
    assert st.subnetwork_similarity(A, B) == pytest.approx(0.75)
    # per-layer weighting: g1 holds 3 layers, g2 one -> (3*0.5 + 1*1)/4
    assert st.subnetwork_similarity(A, B, weights={"g1": 3, "g2": 1}) == pytest.approx(2.5 / 4)


def test_identity_vs_count_similarity():
    """PaT's count-only indicator calls A and B identical; identities say otherwise."""
    assert st.subnetwork_similarity(A, B, identity=False) == 1.0
    assert st.subnetwork_similarity(A, B, identity=True) < 1.0
    assert st.count_similarity(frozenset({1}), frozenset({1, 2, 3, 4})) == pytest.approx(0.25)


def test_mismatched_subnetworks_rejected():
    with pytest.raises(ValueError, match="different groups"):
        st.subnetwork_similarity(A, {"g1": frozenset()})


def test_windowed_average_eq4_by_hand():
    hist = [{"g": frozenset(s)} for s in ({0, 1}, {0, 2}, {0, 1}, {0, 1}, {0, 1}, {0, 1})]
    raw = st.raw_similarities(hist, offset=1)
    # J(M0,M1)=1/3, J(M1,M2)=1/3, then 1, 1, 1
    assert raw == [None, pytest.approx(1 / 3), pytest.approx(1 / 3), 1.0, 1.0, 1.0]
    avg = st.windowed_average(raw, window=3)
    assert avg[:3] == [None, None, None]
    assert avg[3] == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert avg[4] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert avg[5] == pytest.approx(1.0)
    raw2 = st.raw_similarities(hist, offset=2)
    assert raw2[:2] == [None, None] and raw2[2] == 1.0 and raw2[3] == pytest.approx(1 / 3)


def test_sl_start_eq5_and_stable_eq6():
    avg = [None, None, 0.50, 0.60, 0.70, 0.75, 0.7502, 0.7503, 0.9995]
    # lag 2: t=4 -> 0.20 ; t=5 -> 0.15 ; t=6 -> 0.0502 ; t=7 -> 0.0003 ; t=8 -> 0.2493
    assert st.first_sl_start(avg, tau=0.06, lag=2) == 6
    assert st.first_sl_start(avg, tau=1e-3, lag=2) == 7
    assert not st.sl_start_reached(avg, 3, tau=10.0, lag=2)   # J_avg^{1} undefined
    assert st.first_sl_start(avg, tau=-1.0, lag=2) is None
    assert st.is_stable(avg, 8, epsilon=1e-3)                 # 0.9995 >= 0.999
    assert not st.is_stable(avg, 7, epsilon=1e-3)
    assert st.first_stable(avg, 1e-3, after=7) == 8
    assert st.first_stable(avg, 1e-3, after=8) is None
    assert st.first_stable(avg, 0.26, after=3) == 5           # 0.75 >= 0.74 > 0.70


def test_growing_lambda_eq7_linear_and_quadratic():
    assert growing_lambda(10, 10, 1e-4, 1e-4, 1) == pytest.approx(1e-4)
    assert growing_lambda(13, 10, 1e-4, 1e-4, 1) == pytest.approx(4e-4)
    assert growing_lambda(13, 10, 1e-4, 1e-4, 2) == pytest.approx(2e-4)   # floor(3/2) = 1
    assert growing_lambda(9, 10, 1e-4, 1e-4, 1) == 0.0
    # literal recursion: increments floor(1/1)+floor(2/1)+floor(3/1) = 6 deltas
    assert growing_lambda(13, 10, 1e-4, 1e-4, 1, mode="quadratic") == pytest.approx(7e-4)
    # with Δt = 2: floor(1/2)+floor(2/2)+floor(3/2)+floor(4/2) = 0+1+1+2 = 4
    assert growing_lambda(14, 10, 1.0, 1.0, 2, mode="quadratic") == pytest.approx(5.0)
    with pytest.raises(ValueError):
        growing_lambda(1, 0, 1, 1, mode="cubic")


def test_shrink_factor_eq9():
    assert shrink_factor(1e-3, 0.1) == pytest.approx(1 - 1e-4)
    assert shrink_factor(20.0, 0.1) == 0.0   # clipped, never negative
    assert math.isclose(shrink_factor(0.0, 0.5), 1.0)
