"""BatchNorm statistics that describe the current weights (used before every evaluation).

Sparsity learning (Eq. 8-9) shrinks the pruning set's weights at every step. BatchNorm's running
statistics are an exponential average (momentum 0.1) over earlier steps, so they describe older
weights; evaluated with them, a model whose training accuracy stays at 97-99% reads far lower on
validation. Measured on the quick start (``benchmarks/bn_lag.py``): in the three epochs after
t_sl-start validation read 41.0%, 56.3%, 95.1% with the running statistics and 98.6%, 97.2%,
99.3% with re-estimated ones (same weights); the running variance was off by 0.3x, 6.6x and
19x on average over the BN layers, against 0.01-0.2x in all other epochs.

:func:`recalibrate` re-estimates them: running statistics reset, then a cumulative average over a
few forward passes in training mode, without gradients. The weights are not touched.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn


def batchnorms(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable, forward: Callable = None) -> int:
    """Re-estimate every BatchNorm's running mean/variance of ``model`` from ``batches`` (inputs;
    ``forward(model, batch)`` runs one, default ``model(batch)``). Returns the batches used
    (0: no BatchNorm or no batch, statistics unchanged)."""
    bns = batchnorms(model)
    if not bns:
        return 0
    saved = [(b.momentum, b.running_mean.clone(), b.running_var.clone(), b.num_batches_tracked.clone()) for b in bns]
    was = model.training
    for b in bns:
        b.reset_running_stats()
        b.momentum = None     # cumulative moving average over the batches below
    model.train()
    used = 0
    try:
        for batch in batches:
            forward(model, batch) if forward else model(batch)
            used += 1
    finally:
        for b, (momentum, mean, var, count) in zip(bns, saved):
            b.momentum = momentum
            if used == 0:      # nothing seen: keep the old statistics
                b.running_mean.copy_(mean)
                b.running_var.copy_(var)
                b.num_batches_tracked.copy_(count)
        model.train(was)
    return used
