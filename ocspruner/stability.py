"""Sub-network stability (paper Sec. 3.3, Eq. 3-6) as small pure functions.

A sub-network M_t is a mapping ``group key -> set of kept channel ids``. Channel ids are indices
in the ORIGINAL, unpruned model, so two sub-networks are compared by the identity of their
channels and not only by their counts (the latter is PaT's indicator, kept here as an option for
the paper's comparison).

Indexing convention used throughout: ``history[t]`` is M_t, the sub-network read off the weights
at the start of epoch t (after t epochs of training). ``raw[t]`` is J(M_{t-i}, M_t) and ``avg[t]``
is J_avg^t; both are ``None`` where the window does not reach back far enough yet.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

SubNetwork = Mapping[str, frozenset]


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a ∩ b| / |a ∪ b| for two sets of channel ids (Eq. 3, one layer/group). Two empty sets are
    identical, so they score 1."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def count_similarity(a: frozenset, b: frozenset) -> float:
    """PaT-style similarity: compares only how MANY channels are kept, not which ones.
    min/max of the counts, so it is 1 whenever the widths agree even if every identity changed."""
    hi = max(len(a), len(b))
    return 1.0 if hi == 0 else min(len(a), len(b)) / hi


def subnetwork_similarity(
    prev: SubNetwork,
    cur: SubNetwork,
    weights: Optional[Mapping[str, float]] = None,
    identity: bool = True,
) -> float:
    """Eq. 3: J(M_prev, M_cur) = (1/L) sum_l |F_prev^l ∩ F_cur^l| / |F_prev^l ∪ F_cur^l|.

    The average runs over the groups of the sub-network. ``weights`` (group -> weight) turns it
    into a weighted mean, e.g. the number of layers in each group to average per layer exactly as
    Eq. 3 is printed (all layers of a DepGraph group share one channel set). ``identity=False``
    gives PaT's count-only indicator.
    """
    if set(prev) != set(cur):
        raise ValueError("sub-networks cover different groups; they come from different models")
    if not cur:
        raise ValueError("cannot compare empty sub-networks (no prunable groups)")
    sim = jaccard if identity else count_similarity
    total = norm = 0.0
    for key in cur:
        w = 1.0 if weights is None else float(weights[key])
        total += w * sim(prev[key], cur[key])
        norm += w
    return total / norm


def raw_similarities(
    history: Sequence[SubNetwork],
    offset: int = 2,
    weights: Optional[Mapping[str, float]] = None,
    identity: bool = True,
) -> list[Optional[float]]:
    """J(M_{t-i}, M_t) for every t in the history (i = ``offset``); None for t < i."""
    if offset < 1:
        raise ValueError(f"comparison offset i must be >= 1, got {offset}")
    return [
        None if t < offset else subnetwork_similarity(history[t - offset], history[t], weights, identity)
        for t in range(len(history))
    ]


def windowed_average(raw: Sequence[Optional[float]], window: int = 3) -> list[Optional[float]]:
    """Eq. 4: J_avg^t = (1/r) sum_{k=0}^{r-1} J(M_{t-k-i}, M_{t-k}); None until r raw values exist."""
    if window < 1:
        raise ValueError(f"window r must be >= 1, got {window}")
    out: list[Optional[float]] = []
    for t in range(len(raw)):
        vals = raw[t - window + 1 : t + 1] if t + 1 >= window else []
        out.append(sum(vals) / window if vals and all(v is not None for v in vals) else None)
    return out


def sl_start_reached(avg: Sequence[Optional[float]], t: int, tau: float, lag: int) -> bool:
    """Eq. 5 test at epoch t: J_avg^t - J_avg^{t-lag} <= tau (the paper uses lag = r).

    t_sl-start = min{t : this holds}; the caller takes the first t for which it is True. False
    while either average is undefined, so the indicator never fires on an empty window.
    """
    if t < lag or t >= len(avg) or avg[t] is None or avg[t - lag] is None:
        return False
    return avg[t] - avg[t - lag] <= tau


def is_stable(avg: Sequence[Optional[float]], t: int, epsilon: float) -> bool:
    """Eq. 6 test at epoch t: J_avg^t >= 1 - epsilon. t* is the first epoch after sparsity
    learning began for which this holds."""
    return t < len(avg) and avg[t] is not None and avg[t] >= 1.0 - epsilon


def first_sl_start(avg: Sequence[Optional[float]], tau: float, lag: int) -> Optional[int]:
    """Eq. 5 over a whole curve: the first epoch that satisfies the t_sl-start test."""
    return next((t for t in range(len(avg)) if sl_start_reached(avg, t, tau, lag)), None)


def first_stable(avg: Sequence[Optional[float]], epsilon: float, after: int) -> Optional[int]:
    """Eq. 6 over a whole curve: the first epoch t > ``after`` with J_avg^t >= 1 - epsilon."""
    return next((t for t in range(after + 1, len(avg)) if is_stable(avg, t, epsilon)), None)


# -- self-adaptive thresholds (open question 2) and learning-rate phases (open question 3) -----
def adaptive_tau(avg: Sequence[Optional[float]], t: int, lag: int, ratio: float) -> float:
    """Eq. 5's tau relative to this run's own stability curve: ``ratio`` times the steepest rise
    of J_avg over ``lag`` epochs seen BEFORE epoch t (0 while none is defined, or if J_avg only
    fell). With ratio 1 sparsity learning starts once J_avg's rise stops accelerating (the
    inflection of the curve); smaller ratios wait for a flatter curve. Scale-free: it does not
    depend on the data set's absolute level or speed of J."""
    rises = [avg[s] - avg[s - lag] for s in range(lag, min(t, len(avg)))
             if avg[s] is not None and avg[s - lag] is not None]
    return ratio * max([0.0, *rises])


def adaptive_epsilon(j_avg_at_sl_start: Optional[float], ratio: float) -> Optional[float]:
    """Eq. 6's epsilon relative to the instability left when sparsity learning starts: the
    sub-network counts as stable once 1 - J_avg has shrunk to ``ratio`` times 1 - J_avg^{t_sl-start}.
    None when J_avg at t_sl-start is undefined (a fixed t_sl-start before the window fills)."""
    if j_avg_at_sl_start is None:
        return None
    return ratio * max(0.0, 1.0 - j_avg_at_sl_start)


def lr_dropped(prev_lr: Optional[float], lr: float, drop_ratio: float) -> bool:
    """An abrupt learning-rate drop between two epochs: lr < drop_ratio * prev_lr. A step
    schedule (gamma 0.1-0.2) passes; one epoch of a cosine or linear decay does not (except in
    the last few epochs of a cosine cycle, long after t*)."""
    return prev_lr is not None and prev_lr > 0 and lr < drop_ratio * prev_lr


def within_phase(values: Sequence[Optional[float]], phase_start: int) -> list[Optional[float]]:
    """``values`` with every entry before ``phase_start`` hidden (None), so that Eq. 5/6 never
    compare a J_avg of the current learning-rate phase with one of an earlier phase."""
    return [None if t < phase_start else v for t, v in enumerate(values)]
