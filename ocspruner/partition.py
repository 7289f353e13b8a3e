"""Global partition of channels at a budget (paper Eq. 1 and Algorithm 1, line 5).

Two strategies decide the global removal order; everything after it is shared:

* ``ranking`` (the paper's Algorithm 1, the default): channels of all groups are ranked by
  saliency alone; the least salient are removed first until the cost falls to the budget.
* ``knapsack`` (cost-aware, after the idea of HALP's latency-saliency knapsack): keep the set that
  maximises the total saliency kept under the budget. Greedily, a channel's priority is its
  saliency per unit of cost it saves (its marginal cost), and the lowest priority goes first.
  Marginal costs change as channels go (a conv's FLOPs are bilinear in its input and output
  widths), so they are re-taken every round while the greedy closes half the remaining gap at a
  time (:func:`knapsack_order`). Within a group, all channels share one marginal cost, so the
  knapsack decides *how many* channels each group keeps and saliency still decides *which*.

The number of removed channels is then found by binary search on a prefix of that order; every
probe is one evaluation of the cost model on a flat keep vector, so a ResNet-50 partition takes
milliseconds (the reference deep-copies and prunes the model per probe). Leftover budget is
refilled with the highest-priority removed channels that still fit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Union

import torch

from .cost import CostModel

STRATEGIES = ("ranking", "knapsack")
MEASURED_METRICS = ("latency", "train_latency")   # timed on the device (latency.py), not counted


class BudgetError(ValueError):
    """The requested budget is invalid or cannot be reached with the given constraints."""


@dataclass
class Partition:
    keep: torch.Tensor        # bool, one entry per global channel
    cost: float               # Psi of the kept sub-network
    dense_cost: float
    removed_channels: int

    @property
    def reduction(self) -> float:
        """Fraction of the dense cost removed."""
        return 1.0 - self.cost / self.dense_cost


class Partitioner:
    """Turns per-channel scores into a keep mask that meets a cost budget.

    Args:
        cost_model: the analytic cost model of the unpruned model.
        metric: ``"flops"`` or ``"params"`` (any metric the cost model knows).
        max_prune_fraction: at most this fraction of a group's channels may go; a float for all
            groups or a mapping group key -> fraction (missing keys use 1.0).
        round_to: a pruned group keeps a multiple of ``round_to`` channels (hardware-friendly
            widths); an unpruned group keeps its original width.
        strategy: ``"ranking"`` (saliency order, the paper's) or ``"knapsack"`` (saliency per
            unit of marginal cost of the ``price`` metric, by default the budget metric).
        price: the knapsack's price of a channel, a metric of the cost model (default: the
            budget ``metric``). ``metric="flops", price="latency"`` meets a FLOPs budget exactly
            and, of the ways to meet it, prefers the channels whose removal saves the most
            measured time per saliency lost.
    """

    def __init__(self, cost_model: CostModel, metric: str = "flops",
                 max_prune_fraction: Union[float, Mapping[str, float]] = 1.0, round_to: int = 1,
                 strategy: str = "ranking", price: Optional[str] = None):
        if strategy not in STRATEGIES:
            raise BudgetError(f"unknown partition {strategy!r}; use one of {list(STRATEGIES)}")
        self.strategy = strategy
        if metric not in cost_model.dense:
            raise BudgetError(f"unknown budget metric {metric!r}; use one of {sorted(cost_model.dense)}")
        self.price = metric if price is None else price
        if self.price not in cost_model.dense:
            raise BudgetError(f"unknown price metric {self.price!r}; use one of {sorted(cost_model.dense)} "
                              f"(a latency price needs the latency table built first)")
        if self.price != metric and strategy != "knapsack":
            raise BudgetError(f"a price metric ({self.price!r}) only applies to partition 'knapsack', "
                              f"not {strategy!r}; drop it or use the knapsack")
        if int(round_to) < 1:
            raise BudgetError(f"round_to must be a positive integer, got {round_to!r}")
        self.cost_model, self.metric, self.round_to = cost_model, metric, int(round_to)
        space = cost_model.space
        if not space.groups:
            raise BudgetError("the model has no prunable channel groups (is every layer ignored?)")
        self.sizes = torch.tensor([g.size for g in space.groups], dtype=torch.long)
        self.group_of = space.channel_group_index()
        self.offsets = torch.tensor([g.offset for g in space.groups], dtype=torch.long)
        fractions = []
        for g in space.groups:
            f = max_prune_fraction.get(g.key, 1.0) if isinstance(max_prune_fraction, Mapping) else max_prune_fraction
            if not 0.0 <= float(f) <= 1.0:
                raise BudgetError(f"max_prune_fraction for group '{g.key}' must be in [0, 1], got {f}")
            fractions.append(float(f))
        caps = torch.floor(torch.tensor(fractions, dtype=torch.float64) * self.sizes).long()
        # kept widths are multiples of round_to and of each group's own step (GroupNorm groups)
        # (in units: a unit of a blocked group is `blocks` channels, so round_to shrinks accordingly)
        self.multiple = torch.tensor([math.lcm(self.round_to // math.gcd(self.round_to, g.blocks), g.step)
                                      for g in space.groups], dtype=torch.long)
        min_keep = torch.clamp(self.multiple, max=self.sizes)
        self.caps = torch.minimum(caps, self.sizes - torch.clamp(min_keep, min=1))  # >= 1 channel kept
        self.dense_cost = cost_model.dense[metric]
        # knapsack value = score x |g| (parameter sets of the channel's group): see the module doc
        self.value_scale = torch.tensor([float(max(1, len(g.weight_slices))) for g in space.groups],
                                        dtype=torch.float64)[self.group_of]

    # ------------------------------------------------------------------------------------------
    def max_reduction(self) -> float:
        """Largest reachable fraction of the dense cost removed (every group at its cap)."""
        # the cost depends only on how many channels each group keeps, not on which ones
        within = torch.arange(self.group_of.numel()) - self.offsets[self.group_of]
        keep = self._keep_from_counts(self.caps, within)
        return 1.0 - self._evaluate(keep) / self.dense_cost

    def check_target(self, reduction: float) -> None:
        if not (isinstance(reduction, (int, float)) and 0.0 < reduction < 1.0):
            raise BudgetError(f"budget must be a fraction of {self.metric} to remove in (0, 1), got {reduction!r}")
        best = self.max_reduction()
        if reduction > best + 1e-12:
            measured = self.metric in MEASURED_METRICS
            raise BudgetError(
                f"a {reduction:.1%} {self.metric} reduction cannot be reached: at most {best:.2%} is removable "
                f"with the ignored layers, per-group caps and round_to given" +
                (", as timed on this device (timings on several threads of a loaded machine can make narrow "
                 "layers look barely faster); time on one thread or at a quieter moment, or lower the budget"
                 if measured else "; lower the budget or ignore fewer layers"))

    def partition(self, scores: torch.Tensor, reduction: float) -> Partition:
        """Keep mask removing at least ``reduction`` of the dense cost with the fewest removals
        in the strategy's global order (lowest saliency, or lowest saliency per unit of cost,
        goes first)."""
        self.check_target(reduction)
        scores = scores.detach().to(torch.float64).cpu()
        n = self.group_of.numel()
        if scores.shape != (n,):
            raise ValueError(f"expected {n} scores (one per channel), got shape {tuple(scores.shape)}")
        # rank within each group (0 = least salient); a stable sort on (group, score) gives it
        order = torch.argsort(scores, stable=True)
        order = order[torch.argsort(self.group_of[order], stable=True)]
        within = torch.empty(n, dtype=torch.long)
        within[order] = torch.arange(n) - self.offsets[self.group_of[order]]
        eligible = within < self.caps[self.group_of]
        cand = torch.nonzero(eligible).flatten()
        target = (1.0 - reduction) * self.dense_cost
        if self.strategy == "knapsack":
            global_order = knapsack_order(scores * self.value_scale, within, cand, target, self._evaluate,
                                          self._marginal, price=self._priced if self.price != self.metric else None)
        else:
            global_order = cand[torch.argsort(scores[cand], stable=True)]

        def keep_for(k: int) -> tuple[torch.Tensor, float]:
            counts = torch.bincount(self.group_of.index_select(0, global_order[:k]), minlength=len(self.sizes))
            keep = self._keep_from_counts(counts, within)
            return keep, self._evaluate(keep)

        lo, hi = 0, len(global_order)          # cost(lo) > target >= cost(hi) once checked
        keep, cost = keep_for(hi)
        best = (keep, cost, hi)
        while lo < hi:
            mid = (lo + hi) // 2
            keep, cost = keep_for(mid)
            if cost <= target * (1 + 1e-12):
                hi, best = mid, (keep, cost, mid)
            else:
                lo = mid + 1
        keep, cost, k = best
        # refill single channels only where that cannot break a multiple ...
        refillable = global_order[:k][self.multiple[self.group_of[global_order[:k]]] == 1]
        keep, cost = self._restore(keep, cost, target, refillable)
        if bool((self.multiple > 1).any()):   # ... and whole multiples elsewhere
            value = scores if self.strategy == "ranking" else \
                scores * self.value_scale / self._priced(keep).clamp_min(_TINY)   # knapsack: value per cost
            keep, cost = self._restore_blocks(keep, cost, target, value)
        return Partition(keep=keep, cost=cost, dense_cost=self.dense_cost, removed_channels=int((~keep).sum()))

    def _evaluate(self, keep: torch.Tensor) -> float:
        return float(self.cost_model.evaluate(keep, self.metric))

    def _marginal(self, keep: torch.Tensor) -> torch.Tensor:
        return self.cost_model.marginal_costs(keep, self.metric).detach()

    def _priced(self, keep: torch.Tensor) -> torch.Tensor:
        """The knapsack's price of every channel at ``keep``: marginal costs of the price metric."""
        return self.cost_model.marginal_costs(keep, self.price).detach()

    def _restore(self, keep: torch.Tensor, cost: float, target: float,
                 removed: torch.Tensor, rounds: int = 4) -> tuple[torch.Tensor, float]:
        """Give back removed channels that still fit under the budget, most salient first.

        The prefix search stops at the first channel that brings the cost under the target; that
        channel may be expensive (a residual-stream channel of an early stage can carry ~5% of
        a small CIFAR ResNet's FLOPs) and overshoot. The gap is refilled greedily with the most
        salient removed channels whose marginal cost fits. Marginal costs of ALL channels come
        from one backward pass through the cost model (exact for one channel: the cost is linear
        in each channel's keep entry; two restored channels add a bilinear cross term, corrected
        by the exact check, which undoes the last ones). Each round re-takes the marginal costs
        at the refilled sub-network, so channels the cross terms turned away get a second look;
        it ends when a round restores nothing, after ``rounds`` rounds at most (measured: one
        round alone left 432 single channels that each still fit on ResNet-56 at 70% FLOPs).
        """
        keep = keep.clone()
        pending = removed
        for _ in range(rounds):
            gap = target - cost
            if gap <= 0 or len(pending) == 0:
                break
            marginal = self._marginal(keep).index_select(0, pending).tolist()
            accepted = []
            for c, m in zip(reversed(pending.tolist()), reversed(marginal)):
                if m <= gap:
                    keep[c] = True
                    accepted.append(c)
                    gap -= m
            trial = self._evaluate(keep)
            while trial > target * (1 + 1e-12) and accepted:   # cross terms pushed it over: undo the last
                keep[accepted.pop()] = False
                trial = self._evaluate(keep)
            if not accepted:
                break
            cost = trial
            pending = pending[~keep.index_select(0, pending)]
        return keep, cost

    def _restore_blocks(self, keep: torch.Tensor, cost: float, target: float,
                        scores: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The refill for groups whose kept width must stay a multiple m > 1 (round_to, GroupNorm,
        heads): removed channels go back m at a time, the most valuable block first (by mean
        ``scores``: saliency, or saliency per unit of cost for the knapsack), whenever the exact
        cost stays within the budget. Without it, one coarse step of the prefix search can
        overshoot a 50% target by 15 points on a small ResNet."""
        blocks = []
        for gi, g in enumerate(self.cost_model.space.groups):
            m = int(self.multiple[gi])
            gone = torch.nonzero(~keep[g.offset:g.offset + g.size]).flatten() + g.offset
            if m == 1 or len(gone) == 0:
                continue
            gone = gone[torch.argsort(scores[gone], descending=True, stable=True)]
            for j, start in enumerate(range(0, len(gone), m)):
                chunk = gone[start:start + m]
                blocks.append((float(scores[chunk].mean()), gi, j, chunk))
        blocks.sort(key=lambda b: (-b[0], b[1], b[2]))
        next_block, closed = {}, set()
        keep = keep.clone()
        for _, gi, j, chunk in blocks:
            if gi in closed or next_block.get(gi, 0) != j:
                continue
            keep[chunk] = True
            trial = self._evaluate(keep)
            if trial <= target * (1 + 1e-12):
                cost, next_block[gi] = trial, j + 1
            else:   # later blocks of this group cost as much: the group is done
                keep[chunk] = False
                closed.add(gi)
        return keep, cost

    # ------------------------------------------------------------------------------------------
    def _keep_from_counts(self, removed: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
        """Keep mask that removes the ``removed[g]`` lowest-ranked channels of each group g,
        after rounding the kept width up to a multiple of ``round_to``."""
        kept = self.sizes - removed
        if bool((self.multiple > 1).any()):
            r = self.multiple
            rounded = torch.minimum(self.sizes, ((kept + r - 1) // r) * r)
            kept = torch.where(removed > 0, rounded, self.sizes)
        # index_select, not [self.group_of]: advanced indexing takes a slow parallel path on CPU
        # (milliseconds per call on a shared machine), and this runs at every search probe
        return within >= (self.sizes - kept).index_select(0, self.group_of)


_TINY = 1e-30


def knapsack_order(scores: torch.Tensor, within: torch.Tensor, candidates: torch.Tensor, target: float,
                   evaluate, marginal, close: float = 0.5, settle: float = 0.02, max_rounds: int = 64,
                   price=None) -> torch.Tensor:
    """Removal order of ``candidates`` (channel ids) for the cost-aware partition: a greedy
    knapsack that maximises the saliency kept under the budget ``target``.

    Each round takes the marginal costs ``marginal(keep)`` (the first-order saving of removing
    each channel at the current sub-network), ranks the remaining candidates by ``score / cost``
    and removes the lowest-priority ones whose first-order savings add up to ``close`` of the
    remaining gap (at least one). Rounds repeat until the exact cost ``evaluate(keep)`` is within
    ``settle`` of the initial gap from the target (marginal costs barely move over the last 2%);
    the channels left over follow in the last round's priority order, so the caller's prefix
    search places the cut exactly. Within a group the channels go in saliency
    order (``within``: rank in the group), because they share one marginal cost.

    ``price(keep) -> tensor``, if given, prices the channels instead of ``marginal`` (a FLOPs
    budget whose channels are priced by measured latency: the budget is still met in FLOPs, and
    of the ways to meet it the greedy prefers the one that saves the most time per saliency lost).

    Pure in its inputs: ``evaluate(keep) -> float``, ``marginal(keep) -> tensor`` and ``price`` are
    the cost model's. Each round is one backward pass through the cost model, and the gap shrinks
    geometrically, so a call costs a few dozen evaluations (milliseconds on a ResNet-56).
    """
    n = scores.numel()
    keep = torch.ones(n, dtype=torch.bool)
    remaining = candidates[torch.argsort(within[candidates], stable=True)]   # lowest rank first
    order: list[torch.Tensor] = []
    first_gap = None
    for _ in range(max_rounds):
        cost = evaluate(keep)
        first_gap = cost - target if first_gap is None else first_gap
        if cost - target <= settle * first_gap or len(remaining) == 0:
            break
        m = marginal(keep).index_select(0, remaining).clamp_min(_TINY)
        p = m if price is None else price(keep).index_select(0, remaining).clamp_min(_TINY)
        priority = scores.index_select(0, remaining) / p
        # a channel ranked below another of its group must not go after it: priorities are
        # equal-cost within a group, so sorting (priority, within-rank) keeps the group's order
        idx = torch.argsort(priority, stable=True)
        ranked = remaining[idx]
        savings = torch.cumsum(m[idx], 0)
        take = max(1, int(torch.searchsorted(savings, close * (cost - target), right=True)))
        order.append(ranked[:take])
        keep[ranked[:take]] = False
        remaining = ranked[take:]
    if len(remaining):
        p = (marginal if price is None else price)(keep).index_select(0, remaining).clamp_min(_TINY)
        order.append(remaining[torch.argsort(scores.index_select(0, remaining) / p, stable=True)])
    return torch.cat(order) if order else candidates[:0]


def reselect_within_groups(keep: torch.Tensor, scores: torch.Tensor, groups) -> torch.Tensor:
    """Keep as many channels in every group as ``keep`` does, but the ones with the highest
    ``scores`` (ties: the lower index). The per-layer widths, and so every cost, stay those of
    ``keep``; only which channels survive changes. Groups whose channels go in whole blocks
    (attention heads, ``blocks > 1``) keep ``keep``'s choice."""
    out = keep.clone().bool()
    for g in groups:
        if g.blocks > 1 or g.heads_of is not None:
            continue
        part = slice(g.offset, g.offset + g.size)
        n = int(out[part].sum())
        # a stable descending sort: equal scores keep the lower channel index
        order = torch.sort(scores[part].to(torch.float64), descending=True, stable=True).indices
        chosen = torch.zeros(g.size, dtype=torch.bool)
        chosen[order[:n]] = True
        out[part] = chosen
    return out
