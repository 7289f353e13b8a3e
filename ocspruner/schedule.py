"""Growing penalty factor lambda_t (paper Eq. 7) as pure functions."""
from __future__ import annotations


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
