"""PyTorch Lightning callback that drives the OCSPruner engine (Algorithm 1) inside ``Trainer.fit``.

    from ocspruner.integrations.lightning import OCSPrunerCallback
    trainer = L.Trainer(max_epochs=30, callbacks=[OCSPrunerCallback(torch.randn(1, 3, 32, 32), target=0.5)])
    trainer.fit(module, datamodule)

The engine's three calls map to Lightning hooks as follows (Lightning 2.x, automatic optimization):

* ``epoch_start`` at ``on_train_epoch_start``, with ``trainer.optimizers``: M_t, J, the stage rules,
  and at t* the physical prune IN PLACE. The optimizer's ``param_groups`` are re-pointed to the
  new, smaller parameters and its state (momentum, Adam moments) is sliced onto them
  (``surgery.remap_optimizer``), so the optimizer Lightning holds keeps working; LR schedulers
  hold the optimizer, not parameters, and are unaffected.
* Eq. 8's gradient (``after_backward``) at ``on_before_optimizer_step``, not ``on_after_backward``:
  Lightning calls it once per optimizer step, after the gradients of all accumulated micro-batches
  are summed and, with mixed precision, after ``GradScaler.unscale_``. ``on_after_backward`` runs
  per micro-batch on scaled gradients, which would add the term ``accumulate_grad_batches`` times
  and scaled.
* Eq. 9's shrink (``after_step``) at ``on_train_batch_end`` when an optimizer step happened in that
  batch, with the learning rate the step used (read at ``on_before_optimizer_step``: a per-step LR
  scheduler has already moved on by ``on_train_batch_end``). ``on_before_zero_grad`` would come
  only at the next batch, after the next epoch's ``epoch_start`` at an epoch boundary.

Checkpoints: the engine's state is saved with the callback's state. Resuming a fit after t*
(``trainer.fit(..., ckpt_path=...)``) replays the prune on the freshly built, dense module before
Lightning loads the pruned weights into it (``on_load_checkpoint`` runs before the weights load).

One device only: a physical prune under DDP would leave the DDP wrapper's gradient buckets on the
old parameters (ocspruner's own Trainer handles multi-process training).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch

try:
    import lightning.pytorch as pl
except ImportError:   # the standalone package
    try:
        import pytorch_lightning as pl
    except ImportError:
        raise ImportError("the Lightning callback needs PyTorch Lightning: pip install lightning") from None

from ..engine import PRUNED, EpochReport, OCSConfig, OCSPruner


class OCSPrunerCallback(pl.Callback):
    """Prune the LightningModule (or ``module(pl_module)``) while it trains, to ``target``.

    Args:
        example_inputs: one input batch for tracing the model (e.g. ``torch.randn(1, 3, 32, 32)``).
        config: an :class:`OCSConfig`; keyword ``overrides`` are applied on top (``target=0.5``).
        module: which ``nn.Module`` to prune: None for the LightningModule itself, an attribute
            name (``"model"``) or a callable ``pl_module -> nn.Module``.
        ignored_layers: callable ``pruned_module -> list of modules`` to protect (the classifier is
            found and kept by default).
        log: log stage, J_avg, lambda and the cost reduction through ``pl_module.log``.
    """

    def __init__(self, example_inputs, config: Optional[OCSConfig] = None,
                 module: Union[None, str, Callable] = None, ignored_layers: Optional[Callable] = None,
                 log: bool = True, **overrides):
        super().__init__()
        self.example_inputs = example_inputs
        self.config = config
        self.overrides = overrides
        self.module_selector = module
        self.ignored_layers = ignored_layers
        self.log = log
        self.pruner: Optional[OCSPruner] = None
        self.reports: list[EpochReport] = []
        self._pending_lr: Optional[float] = None
        self._restored = False

    # -- building the engine --------------------------------------------------------------------
    def _target_module(self, pl_module) -> torch.nn.Module:
        sel = self.module_selector
        if sel is None:
            return pl_module
        return getattr(pl_module, sel) if isinstance(sel, str) else sel(pl_module)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.pruner is not None:
            return
        if trainer.world_size > 1:
            raise ValueError("OCSPrunerCallback runs on one device (a prune under DDP would break its gradient "
                             "buckets); use devices=1, or ocspruner's Trainer for multi-process runs")
        model = self._target_module(pl_module)
        device = next(model.parameters()).device
        ex = self.example_inputs.to(device) if isinstance(self.example_inputs, torch.Tensor) else self.example_inputs
        ignored = list(self.ignored_layers(model)) if self.ignored_layers else ()
        self.pruner = OCSPruner(model, ex, self.config, ignored_layers=ignored, **self.overrides)
        # Resuming after t*: the checkpoint's weights are pruned, the module is not yet. Lightning
        # calls the module's on_load_checkpoint BEFORE it loads the weights, so the prune is
        # replayed there (callbacks' own restore hooks run only after the weights).
        original = pl_module.on_load_checkpoint

        def on_load_checkpoint(checkpoint: dict, _original=original) -> None:
            state = (checkpoint.get("callbacks") or {}).get(self.state_key)
            if state and "engine" in state:
                self.pruner.load_state_dict(state["engine"])
                self._restored = True
            return _original(checkpoint)

        pl_module.on_load_checkpoint = on_load_checkpoint

    # -- the engine's three calls -------------------------------------------------------------
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        p = self.pruner
        if p.stage != PRUNED and epoch < len(p.history):
            return   # resumed inside an epoch that had already started: M_t was taken then
        report = p.epoch_start(epoch, list(trainer.optimizers))
        self.reports.append(report)
        if self.log:
            values = {"ocs/reduction": report.reduction, "ocs/lambda": report.lam,
                      "ocs/similarity_avg": report.similarity_avg}
            for name, value in values.items():
                if value is not None:
                    pl_module.log(name, float(value), on_step=False, on_epoch=True)
        for event in report.events:
            pl.utilities.rank_zero_info(f"[ocspruner] epoch {epoch}: {event}")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.pruner.after_backward()                              # Eq. 8 on the unscaled, summed gradient
        self._pending_lr = float(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._pending_lr is not None:                          # an optimizer step happened
            self.pruner.after_step(self._pending_lr)              # Eq. 9 with the step's lr
            self._pending_lr = None

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"engine": self.pruner.state_dict()} if self.pruner is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if self._restored or "engine" not in state_dict or self.pruner is None:
            return   # already restored (and the prune replayed) before the weights were loaded
        self.pruner.load_state_dict(state_dict["engine"])


__all__ = ["OCSPrunerCallback"]
