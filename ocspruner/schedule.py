"""Growing penalty factor lambda_t (paper Eq. 7) as pure functions."""
from __future__ import annotations

import math


def growing_lambda(t: int, t_sl_start: int, lambda0: float, delta: float, interval: int = 1,
                   mode: str = "linear") -> float:
    """Eq. 7: the penalty factor at epoch t >= t_sl-start.

    The paper prints the recursion lambda_t = lambda_{t-1} + delta * floor((t - t_sl)/Δt). Its text
    ("the penalty increases by delta in every Δt epoch interval") and the authors' code both mean
    the LINEAR schedule lambda_t = lambda_0 + delta * floor((t - t_sl)/Δt), which is the default.
    ``mode="quadratic"`` evaluates the printed recursion literally (lambda_{t_sl} = lambda_0, then
    the increments add up to delta * sum_{s=1}^{t-t_sl} floor(s/Δt)), as an ablation.
    """
    if interval < 1:
        raise ValueError(f"Δt (lambda interval) must be >= 1, got {interval}")
    if t < t_sl_start:
        return 0.0
    steps = t - t_sl_start
    if mode == "linear":
        return lambda0 + delta * (steps // interval)
    if mode == "quadratic":
        return lambda0 + delta * sum(s // interval for s in range(1, steps + 1))
    raise ValueError(f"unknown lambda schedule mode {mode!r}; use 'linear' or 'quadratic'")


def shrink_factor(lam: float, lr: float) -> float:
    """Eq. 9's multiplier (1 - lambda_t * learning-rate_t), clipped at 0 so a huge lambda*lr
    zeroes a channel instead of flipping its sign."""
    return max(0.0, 1.0 - lam * lr)


def adaptive_lambda0(lr: float, steps_per_epoch: int, sl_epochs: int, interval: int = 1,
                     shrink_to: float = 0.01) -> float:
    """lambda_0 (= delta) of Eq. 7 chosen so that Eq. 9 alone shrinks a pruning group to
    ``shrink_to`` of its norm within ``sl_epochs`` epochs of sparsity learning (open question 2).

    Eq. 9 multiplies a group by (1 - lambda_t * lr) at each of the S steps of an epoch, about
    exp(-lambda_t * lr * S). Epoch t_sl-start trains plainly (Alg. 1), so the regularised epochs
    are k = 1..K after it, with Eq. 7's lambda_k = lambda_0 * (1 + floor(k / Δt)) when delta =
    lambda_0; together they multiply to exp(-lambda_0 * lr * S * sum_{k=1..K} (1 + floor(k / Δt))),
    which is set to ``shrink_to``. The strength is thus fixed relative to the run (its lr and steps
    per epoch) instead of per data set. The paper's ImageNet values (lambda_0 = 1e-4, lr 0.1,
    ~5000 steps per epoch, Δt = 2) are this formula with K = 13 (10% of 130 epochs) within a factor
    1.7 (it gives 1.7e-4).
    """
    if lr <= 0 or steps_per_epoch < 1 or sl_epochs < 1 or interval < 1 or not 0 < shrink_to < 1:
        raise ValueError(f"adaptive lambda needs lr > 0, steps >= 1, sl_epochs >= 1, interval >= 1 and "
                         f"0 < shrink_to < 1; got {lr}, {steps_per_epoch}, {sl_epochs}, {interval}, {shrink_to}")
    growth = sum(1 + k // interval for k in range(1, sl_epochs + 1))
    return math.log(1.0 / shrink_to) / (lr * steps_per_epoch * growth)
