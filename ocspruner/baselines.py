"""The classic baselines of ``compare``, each as the literature defines it, on the one loop.

* ``prune_finetune``: train dense, prune by Eq. 2, fine-tune (two cycles).
* ``greg``: GReg-2 (Wang et al., ICLR 2021), in ``greg.py`` (it shares the two cycles here).
* ``pat``: PaT (Shen et al., CVPR 2022): dense training while the sub-network at the budget is
  read off the weights every epoch; once its ARCHITECTURE (per-group widths) stops changing
  (the early pruning indicator reaches ``threshold``) the model is pruned and trains on. No
  sparsity learning.
* ``random``, ``magnitude_at_init``, ``snip``: pruning at initialisation (epoch 0) by random
  scores, by Eq. 2 magnitude of the random weights, or by SNIP's connection sensitivity
  (Lee et al., 2019) on a data batch, then training from scratch.

Every baseline meets the run's budget (``pruning.target`` of ``pruning.metric``) with the same
partitioner, per-group cap and round_to as OCSPruner, honours ``ignored_layers`` and leaves
``recovery_fraction`` of its cycle after its prune.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .importance import get_criterion
from .methods import ChannelMethod, OCSPrunerMethod, register_method
from .recipe import lr_at


# -- pruning at initialisation ---------------------------------------------------------------------
def snip_scores(model: nn.Module, space, batches: Sequence, loss_fn=None) -> torch.Tensor:
    """SNIP connection sensitivity per channel (Lee et al. 2019, Eq. 6 there, summed over a
    channel): s_c = sum over every weight w of channel c's parameter sets |dL/dw * w|, with L
    the loss on ``batches`` (summed over them). Biases and norm shifts do not count (as Eq. 2).
    BatchNorm running statistics are left as they were."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    params = dict(model.named_parameters())
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        for n, p in params.items():
            if p.grad is not None:
                grads[n] += p.grad.detach()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
    scores = []
    for g in space.groups:
        s_g = torch.zeros(g.size, dtype=torch.float64)
        for s in g.weight_slices:
            w = params[s.name].detach()
            sens = (grads[s.name] * w).abs().index_select(s.dim, s.positions.to(w.device))
            per_pos = sens.movedim(s.dim, 0).reshape(len(s.positions), -1).sum(1).double().cpu()
            s_g.index_add_(0, s.channels, per_pos)
        scores.append(s_g)
    return torch.cat(scores)


class PruneAtInit(ChannelMethod):
    """Prune at the start of epoch 0 by ``scores()``, then train the pruned network from scratch."""

    def scores(self) -> torch.Tensor:
        raise NotImplementedError

    def epoch_start(self, epoch, optimizer) -> dict:
        now = self.final_keep is None and epoch == 0
        if now:
            self.prune(self.partition(self.scores()), optimizer, epoch)
        return self.pruned_row(epoch, now)


@register_method("random")
class RandomStructure(PruneAtInit):
    """A random sub-network at the budget, pruned at initialisation and trained from scratch."""

    def scores(self):
        return torch.rand(self.space.num_channels, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(self.cfg.seed))


@register_method("magnitude_at_init")
class MagnitudeAtInit(PruneAtInit):
    """Eq. 2 magnitude of the RANDOM initial weights (a weak baseline of its own), then training."""

    def scores(self):
        return get_criterion(self.pruning.criterion)(dict(self.model.named_parameters()), self.space)


@register_method("snip")
class SNIP(PruneAtInit):
    """Data-driven pruning at initialisation: SNIP connection sensitivity (:func:`snip_scores`)
    on ``batches`` training batches, summed per channel, ranked at the budget."""

    options = {"batches": 1}

    def bind_data(self, train_dataset, batch_size, seed) -> None:
        n = int(self.opts["batches"])
        if n < 1:
            raise ValueError(f"snip option batches must be >= 1, got {n}")
        self.snip_data = torch.utils.data.DataLoader(train_dataset, batch_size=batch_size, shuffle=True,
                                                     generator=torch.Generator().manual_seed(seed + 3))

    def scores(self):
        device = next(self.model.parameters()).device
        batches = []
        for x, y in self.snip_data:
            batches.append((x.to(device), y.to(device)))
            if len(batches) == int(self.opts["batches"]):
                break
        return snip_scores(self.model, self.space, batches)


# -- PaT ------------------------------------------------------------------------------------------------
def width_distance(a: Sequence[int], b: Sequence[int], sizes: Sequence[int]) -> float:
    """Distance of two sub-network architectures: the mean over groups of |a_l - b_l| / C_l,
    a_l the channels group l keeps and C_l its original width (0: the same widths)."""
    return sum(abs(x - y) / c for x, y, c in zip(a, b, sizes)) / len(sizes)


def early_pruning_indicator(widths: Sequence[Sequence[int]], t: int, r: int, sizes: Sequence[int]) -> Optional[float]:
    """PaT's early pruning indicator at epoch t: 1 - (1/r) sum_{k=1..r} D(A_t, A_{t-k}), D the
    :func:`width_distance` of the architectures; None until r earlier epochs exist."""
    if t < r:
        return None
    return 1.0 - sum(width_distance(widths[t], widths[t - k], sizes) for k in range(1, r + 1)) / r


@register_method("pat")
class PaT(ChannelMethod):
    """PaT (Shen et al. 2022): dense training; every epoch the sub-network at the budget is
    ranked by ``pruning.criterion`` (Eq. 2 by default); the model is pruned to it at the first
    epoch whose early pruning indicator over ``window`` epochs reaches ``threshold`` (by the
    recovery cap at the latest), then trains on. No sparsity learning."""

    options = {"window": 3, "threshold": 0.99}

    def setup(self, model, example_inputs, cfg) -> None:
        super().setup(model, example_inputs, cfg)
        if not 0 < float(self.opts["threshold"]) <= 1 or int(self.opts["window"]) < 1:
            raise ValueError("pat options: threshold must be in (0, 1] and window an integer >= 1")
        self.criterion = get_criterion(self.pruning.criterion)
        self.sizes = [g.size for g in self.space.groups]
        self.widths: list[list[int]] = []
        self.indicator: list[Optional[float]] = []

    def widths_of(self, keep: torch.Tensor) -> list[int]:
        return [int(keep[g.offset:g.offset + g.size].sum()) for g in self.space.groups]

    def epoch_start(self, epoch, optimizer) -> dict:
        if self.final_keep is not None:
            return self.pruned_row(epoch, False)
        keep = self.partition(self.criterion(dict(self.model.named_parameters()), self.space))
        self.widths.append(self.widths_of(keep))
        epi = early_pruning_indicator(self.widths, len(self.widths) - 1, int(self.opts["window"]), self.sizes)
        self.indicator.append(epi)
        stable = epi is not None and epi >= float(self.opts["threshold"])
        if stable or epoch >= self.prune_cap():
            self.prune(keep, optimizer, epoch)
            row = self.pruned_row(epoch, True, similarity_avg=epi)
            if not stable:
                row["events"].insert(0, f"pruning forced at epoch {epoch} (recovery cap)")
            return row
        return {**self.pruned_row(epoch, False), "stage": "search", "similarity_avg": epi}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "widths": torch.tensor(self.widths, dtype=torch.long).reshape(-1, len(self.sizes)),
                "indicator": torch.tensor([math.nan if v is None else v for v in self.indicator], dtype=torch.float64)}

    def load_state_dict(self, state, optimizer=None) -> None:
        super().load_state_dict(state, optimizer)
        self.widths = state["widths"].tolist()
        self.indicator = [None if math.isnan(v) else v for v in state["indicator"].tolist()]


# -- two-cycle pipelines ---------------------------------------------------------------------------
class _TwoCycle:
    """Learning rate of dense training (``epochs``, the recipe), an optional constant-lr phase,
    then fine-tuning (``finetune_epochs`` at ``finetune_lr``, the recipe's shape)."""

    def _cycles(self, cfg, opts) -> None:
        self.dense_epochs = cfg.epochs
        ft = opts.get("finetune_epochs")
        self.finetune_epochs = int(ft) if ft is not None else max(1, cfg.epochs // 2)
        if self.finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be >= 1 (the fine-tuning is the recovery), got {self.finetune_epochs}")
        lr = opts.get("finetune_lr")
        self.finetune_lr = float(lr) if lr is not None else 0.1 * cfg.optim.lr
        self.middle_epochs, self.middle_lr = 0, self.finetune_lr

    def total_epochs(self) -> int:
        return self.dense_epochs + self.middle_epochs + self.finetune_epochs

    def learning_rate(self, epoch: float) -> float:
        c = self.cfg
        if epoch < self.dense_epochs:
            return lr_at(epoch, self.dense_epochs, c.optim.lr, c.schedule)
        if epoch < self.dense_epochs + self.middle_epochs:
            return self.middle_lr
        return lr_at(epoch - self.dense_epochs - self.middle_epochs, self.finetune_epochs, self.finetune_lr, c.schedule)


@register_method("prune_finetune")
class PruneFinetune(_TwoCycle, OCSPrunerMethod):
    """The classic two-cycle pipeline: train the dense model for ``epochs``, prune it by Eq. 2
    (DepGraph-style group saliency) and fine-tune for ``finetune_epochs`` with the same schedule
    shape at ``finetune_lr``. Both cycles run on the one loop, so the reported time is the
    whole cost; the fine-tuning cycle is its recovery."""

    options = {"finetune_epochs": None, "finetune_lr": None}

    def setup(self, model, example_inputs, cfg) -> None:
        self.cfg = cfg
        self._cycles(cfg, cfg.method_options)
        super().setup(model, example_inputs, cfg)

    def prune_cap(self, epochs=None) -> int:
        return self.total_epochs() - 1     # the prune epoch is the pipeline's definition

    def check_schedule(self, pruning) -> None:
        pass

    def preset(self, opts):
        return {"prune_epoch": self.dense_epochs, "sparsity_learning": False, "max_prune_epoch": None}
