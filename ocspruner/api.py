"""One-call structured pruning: ``ocspruner.prune(model, example_inputs, target=0.5)``.

The model is pruned physically and in place to the budget, in one shot (no sparsity learning, no
stability search): channel groups over DepGraph (``dependency``), saliency by ``criterion``
(``importance``), the global partition at the exact analytic cost (``partition``, ``cost``) and
physical removal (``surgery``). It is the "prune now" path of the OCSPruner engine (t* = 0) with
a plain return value::

    removed = ocspruner.prune(model, torch.randn(1, 3, 224, 224), target=0.5, metric="flops")
    removed.channels          # {"layer1.0.conv1": [3, 7, ...], ...} original channel indices
    removed.reduction         # fraction of the metric removed (>= target)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn as nn


@dataclass
class PruneResult:
    """What :func:`prune` removed."""

    channels: dict[str, list[int]]   # group key (root module name) -> removed channel ids (original indices)
    metric: str
    dense_cost: float                # the metric of the model before pruning
    cost: float                      # ... and after (exact for flops/params: the analytic count)
    shapes: dict[str, tuple] = field(default_factory=dict)   # parameter name -> new shape

    @property
    def reduction(self) -> float:
        """Fraction of the dense cost removed."""
        return 1.0 - self.cost / self.dense_cost

    @property
    def removed_channels(self) -> int:
        return sum(len(v) for v in self.channels.values())

    def __repr__(self) -> str:
        return (f"PruneResult({self.removed_channels} channels in {sum(1 for v in self.channels.values() if v)} "
                f"groups, {self.reduction:.2%} {self.metric} removed)")


def prune(model: nn.Module, example_inputs, target: float = 0.5, metric: str = "flops",
          criterion="group_l2", ignored_layers: Sequence[nn.Module] = (), *,
          max_prune_fraction: float = 0.75, round_to: int = 1, ignore_output_layer: bool = True,
          optimizers: Optional[list] = None, check_structures: bool = True, partition: str = "ranking",
          price: Optional[str] = None, latency_batch: Optional[int] = None) -> PruneResult:
    """Prune ``model`` in place so that at least ``target`` of ``metric`` is removed.

    Args:
        model: any nn.Module; pruned in place (its layers shrink; module objects stay).
        example_inputs: a tensor or tuple of tensors the model is traced with.
        target: fraction of the metric to remove, in (0, 1).
        metric: ``"flops"`` (the convention of ``torch_pruning.utils.count_ops_and_params``, see
            ``cost.py``), ``"params"`` or ``"latency"`` (measured on this device).
        criterion: saliency name (``ocspruner.importance.list_criteria()``) or a callable
            ``(named parameters, ChannelSpace) -> scores``; the lowest scores go first.
        ignored_layers: modules whose output channels must not be pruned.
        max_prune_fraction: at most this fraction of any one group's channels is removed.
        round_to: pruned groups keep a multiple of this many channels.
        ignore_output_layer: keep the classifier's outputs (found by running the model).
        optimizers: optimizers whose state is carried over to the surviving slices.
        check_structures: dry-run a one-channel prune of every group first (fails early, by name,
            on structures DepGraph misreads).
        partition: ``"ranking"`` (the paper's global saliency order) or ``"knapsack"`` (the most
            saliency kept under the budget: saliency per unit of cost).
        price: with the knapsack, the cost a channel is priced by (default: ``metric``);
            ``metric="flops", price="latency"`` meets the FLOPs budget with the channels whose
            removal saves the most measured time (a per-layer table is timed here).
        latency_batch: batch size a latency table is timed at (default: the example's).

    Returns:
        a :class:`PruneResult`: the removed channel ids per group, the cost before and after.

    Raises:
        UnsupportedModelError: a structure that cannot be pruned (the message names the module).
        BudgetError: the target cannot be reached with the given ignored layers and caps.
    """
    from .engine import OCSPruner

    pruner = OCSPruner(model, example_inputs, ignored_layers=ignored_layers,
                       ignore_output_layer=ignore_output_layer, check_structures=check_structures,
                       target=target, metric=metric, criterion=criterion,
                       max_prune_fraction=max_prune_fraction, round_to=round_to, partition=partition,
                       price=price, latency_batch=latency_batch, prune_epoch=0, sparsity_learning=False)
    was_training = model.training
    pruner.epoch_start(0, list(optimizers) if optimizers else None)
    model.train(was_training)
    keep = pruner.final_keep
    space = pruner.space
    channels = {g.key: torch.nonzero(~keep[g.offset:g.offset + g.size]).flatten().tolist() for g in space.groups}
    cost = pruner.last_partition.cost
    return PruneResult(channels={k: v for k, v in channels.items() if v}, metric=metric,
                       dense_cost=pruner.partitioner.dense_cost, cost=cost,
                       shapes={n: tuple(p.shape) for n, p in model.named_parameters()})
