"""Training methods as strategy objects on the ONE training loop (``trainer.py``).

A method is driven with the same calls the engine offers any loop: ``epoch_start`` (may prune
the model in place), ``penalty`` (added to the loss), ``after_step`` (after optimizer.step).
Methods differ only here, never by a copy of the loop.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from .cost import CostModel
from .dependency import ChannelSpace
from .engine import OCSConfig, OCSPruner
from .recipe import lr_at

_METHODS: Dict[str, Callable[[], "Method"]] = {}


def register_method(name: str):
    def deco(cls):
        _METHODS[name] = cls
        cls.name = name
        return cls
    return deco


def create_method(name: str) -> "Method":
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]()


def list_methods() -> list[str]:
    return sorted(_METHODS)


def architecture_of(space: ChannelSpace, keep: torch.Tensor) -> dict:
    """Kept channels of every group by original index: enough to rebuild the pruned model."""
    return {"groups": [[g.key, g.size] for g in space.groups],
            "kept": {k: sorted(v) for k, v in space.subnetwork(keep).items()}}


def kept_channels_of(cost: CostModel, keep: torch.Tensor) -> list:
    """Output channels (kept, original) per conv/linear layer, for channels.json / Fig. 6."""
    return [{"name": n, "kept": k, "original": o} for n, (k, o) in cost.kept_channels_per_layer(keep).items()]


def cost_fields(cost: CostModel, keep: torch.Tensor) -> dict:
    """FLOPs, params and FLOPs reduction of a keep vector, for the per-epoch metrics."""
    flops = float(cost.evaluate(keep, "flops"))
    return {"flops": flops, "params": float(cost.evaluate(keep, "params")),
            "flops_reduction": 1 - flops / cost.dense["flops"]}


class Method:
    name = "base"
    decision_sync: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def set_decision_sync(self, sync: Optional[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        """Multi-process training: ``sync(tensor) -> tensor`` returns rank 0's copy of a decision
        (a keep mask), so that every process trains and prunes the same sub-network. Set by the
        trainer after :meth:`setup`; None in a single process."""
        self.decision_sync = sync

    def _decided(self, mask: torch.Tensor) -> torch.Tensor:
        return mask if self.decision_sync is None else self.decision_sync(mask).to(mask.dtype)

    def setup(self, model: nn.Module, example_inputs, cfg) -> None:
        self.model, self.example_inputs, self.cfg = model, example_inputs, cfg

    def total_epochs(self) -> int:
        """Epochs the loop runs (a two-cycle pipeline adds its fine-tuning epochs)."""
        return self.cfg.epochs

    def learning_rate(self, epoch: float) -> float:
        """Learning rate at fractional epoch ``epoch`` (the recipe's schedule by default)."""
        c = self.cfg
        return lr_at(epoch, c.epochs, c.optim.lr, c.schedule)

    def epoch_start(self, epoch: int, optimizer) -> dict:
        return {}

    def after_backward(self) -> None:
        """Called after loss.backward() (gradients unscaled), before optimizer.step()."""

    def after_step(self, optimizer) -> None:
        pass

    def bind_data(self, train_dataset, batch_size: int, seed: int) -> None:
        """Called once by the trainer after setup: methods that need data of their own (ATO's
        controller subset) take it here."""

    def on_train_end(self, optimizer) -> None:
        """Called after the last epoch, before the final evaluation."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, optimizer=None) -> None:
        pass

    def architecture(self) -> Optional[dict]:
        """Channels kept per group of the original model, to rebuild the final architecture."""
        return None

    def summary(self) -> dict:
        return {}

    def kept_channels(self) -> list:
        return []


@register_method("dense")
class DenseMethod(Method):
    """Plain training on the same loop: the reference point for cost and accuracy."""

    def setup(self, model, example_inputs, cfg) -> None:
        super().setup(model, example_inputs, cfg)
        space = ChannelSpace(model, example_inputs)
        self.cost = CostModel(space)

    def epoch_start(self, epoch, optimizer) -> dict:
        return {"stage": "dense", "flops": self.cost.dense["flops"], "params": self.cost.dense["params"],
                "flops_reduction": 0.0}

    def summary(self) -> dict:
        return {"dense_flops": self.cost.dense["flops"], "dense_params": self.cost.dense["params"],
                "final_flops": self.cost.dense["flops"], "final_params": self.cost.dense["params"]}


@register_method("ocspruner")
class OCSPrunerMethod(Method):
    """OCSPruner (Algorithm 1) through the engine. Subclasses are the paper's points of
    comparison and the classic baselines: each is a PRESET of engine settings, nothing more.

    ``cfg.method_options`` holds options of the method (``options``) and, for anything else,
    overrides of the engine config (e.g. ``{criterion: layer_l2}`` for the Table 5 ablation).
    """

    options: dict = {}

    def preset(self, opts: dict) -> dict:
        """Engine settings that define this method (on top of ``cfg.pruning``)."""
        return {}

    def setup(self, model, example_inputs, cfg) -> None:
        super().setup(model, example_inputs, cfg)
        given = dict(cfg.method_options)
        self.opts = {**self.options, **{k: given.pop(k) for k in list(given) if k in self.options}}
        fields = set(OCSConfig.__dataclass_fields__)
        unknown = sorted(set(given) - fields)
        if unknown:
            raise ValueError(f"unknown method option '{unknown[0]}' for method '{self.name}'; valid: "
                             f"{', '.join(sorted(self.options))} or any pruning.* key")
        pruning = dataclasses.replace(cfg.pruning, **{**self.preset(self.opts), **given}).validate()
        last = self.total_epochs() - 1
        # a run always ends at the budget: prune by the last epoch at the latest
        if pruning.max_prune_epoch is None or pruning.max_prune_epoch > last:
            pruning.max_prune_epoch = last
        self.engine = OCSPruner(model, example_inputs, pruning)

    def epoch_start(self, epoch, optimizer) -> dict:
        rep = self.engine.epoch_start(epoch, optimizer)
        keep = self.engine.final_keep if self.engine.final_keep is not None else self.engine.last_partition.keep
        return {"stage": rep.stage, "similarity": rep.similarity, "similarity_avg": rep.similarity_avg,
                "lambda": rep.lam, **cost_fields(self.engine.cost_model, keep),
                "events": rep.events, "pruned": rep.pruned, "sl_started": rep.sl_started,
                "group_norms": rep.group_norms}

    def set_decision_sync(self, sync) -> None:
        super().set_decision_sync(sync)
        self.engine.decision_sync = sync     # M_t (and so J, t_sl-start, t*) decided by rank 0

    def after_backward(self) -> None:
        self.engine.after_backward()

    def after_step(self, optimizer) -> None:
        self.engine.after_step(optimizer)

    def state_dict(self) -> dict:
        return self.engine.state_dict()

    def load_state_dict(self, state, optimizer=None) -> None:
        self.engine.load_state_dict(state, optimizer)

    def _final_keep(self) -> torch.Tensor:
        e = self.engine
        return e.final_keep if e.final_keep is not None else torch.ones(e.space.num_channels, dtype=torch.bool)

    def architecture(self) -> Optional[dict]:
        return architecture_of(self.engine.space, self._final_keep())

    def kept_channels(self) -> list:
        return kept_channels_of(self.engine.cost_model, self._final_keep())

    def summary(self) -> dict:
        e, cm = self.engine, self.engine.cost_model
        return {"t_sl_start": e.t_sl_start, "t_star": e.t_star, "target": e.config.target, "metric": e.config.metric,
                "dense_flops": cm.dense["flops"], "dense_params": cm.dense["params"],
                "final_flops": e.current_cost("flops"), "final_params": e.current_cost("params"),
                "pruned": e.t_star is not None}


@register_method("ocspruner_fixed")
class FixedEpochOCSPruner(OCSPrunerMethod):
    """OCSPruner with t* fixed in advance (no stability search): the paper's comparison with
    pruning at a chosen epoch (0 = at initialisation with sparsity learning impossible)."""

    options = {"prune_epoch": None}   # default: 30% of the epochs

    def preset(self, opts):
        epoch = opts["prune_epoch"] if opts["prune_epoch"] is not None else int(round(0.3 * self.cfg.epochs))
        return {"prune_epoch": epoch, "max_prune_epoch": None}


@register_method("pat")
class PaTStability(OCSPrunerMethod):
    """PaT-style stability: sub-networks compared by per-layer channel COUNTS only (the paper's
    Sec. 3.3 contrast), everything else as OCSPruner."""

    def preset(self, opts):
        return {"identity_similarity": False}


@register_method("random")
class RandomStructure(OCSPrunerMethod):
    """A random sub-network at the same FLOPs, pruned at initialisation and trained from scratch."""

    def preset(self, opts):
        return {"criterion": "random", "prune_epoch": 0, "sparsity_learning": False, "max_prune_epoch": None}


@register_method("pai")
class PruneAtInit(OCSPrunerMethod):
    """Pruning at initialisation by Eq. 2 saliency at the same FLOPs, then training from scratch."""

    def preset(self, opts):
        return {"prune_epoch": 0, "sparsity_learning": False, "max_prune_epoch": None}


@register_method("prune_finetune")
class PruneFinetune(OCSPrunerMethod):
    """The classic two-cycle pipeline: train the dense model for ``epochs``, prune it by Eq. 2
    (DepGraph-style group saliency) and fine-tune for ``finetune_epochs`` with the same schedule
    shape at ``finetune_lr``. With ``greg_epochs`` > 0, growing regularisation (GReg, via
    Eq. 7-9) runs on the pruning groups for that many epochs before the prune. Both cycles run
    on the one loop, so the reported wall time is the whole cost."""

    options = {"finetune_epochs": None, "finetune_lr": None, "greg_epochs": 0}

    def setup(self, model, example_inputs, cfg) -> None:
        self.cfg = cfg
        given = cfg.method_options
        self.dense_epochs = cfg.epochs
        ft = given.get("finetune_epochs")
        self.finetune_epochs = int(ft) if ft is not None else max(1, cfg.epochs // 2)
        lr = given.get("finetune_lr")
        self.finetune_lr = float(lr) if lr is not None else 0.1 * cfg.optim.lr
        super().setup(model, example_inputs, cfg)

    def total_epochs(self) -> int:
        return self.dense_epochs + self.finetune_epochs

    def learning_rate(self, epoch: float) -> float:
        c = self.cfg
        if epoch < self.dense_epochs:
            return lr_at(epoch, self.dense_epochs, c.optim.lr, c.schedule)
        return lr_at(epoch - self.dense_epochs, self.finetune_epochs, self.finetune_lr, c.schedule)

    def preset(self, opts):
        greg = int(opts["greg_epochs"])
        if not 0 <= greg < self.dense_epochs:
            raise ValueError(f"greg_epochs must be in [0, epochs), got {greg}")
        # the prune epoch is the pipeline's definition: no cap may move it
        if greg:
            # Alg. 1: sparsity learning starts the epoch after t_sl-start
            return {"prune_epoch": self.dense_epochs, "sl_start_epoch": self.dense_epochs - greg - 1,
                    "max_prune_epoch": None}
        return {"prune_epoch": self.dense_epochs, "sparsity_learning": False, "max_prune_epoch": None}


@register_method("greg")
class GReg(PruneFinetune):
    """Prune-and-fine-tune with growing regularisation before the prune (GReg-style)."""

    options = {"finetune_epochs": None, "finetune_lr": None, "greg_epochs": None}

    def preset(self, opts):
        if opts["greg_epochs"] is None:
            opts["greg_epochs"] = max(1, self.dense_epochs // 5)
        return super().preset(opts)


@register_method("ato")
class AutoTrainOnce(Method):
    """Auto-Train-Once (ATO paper), generic over DepGraph groups; see ``ato.py``.

    The model trains dense; a controller proposes a channel mask; from T_w the masked-out
    channels are projected by ATO Eq. 3 (threshold lr * lambda); the controller is trained every
    ``controller_every`` steps from T_start to T_end on a ``subset`` of the training data with
    CE(masked model) + gamma * R_FLOPs (ATO Eq. 4); the mask is frozen after T_end and the model
    is pruned by it at the end of training. Defaults follow the paper (gamma 4, lambda 10,
    T_start 10%, T_end 50%, T_w 20% of the epochs, 5% subset, Adam 1e-3).
    """

    options = {"gamma": 4.0, "lam": 10.0, "t_start": 0.1, "t_end": 0.5, "t_w": 0.2, "subset": 0.05,
               "controller_lr": 1e-3, "controller_every": 20, "temperature": 0.4, "offset": 3.0}

    def setup(self, model, example_inputs, cfg) -> None:
        from .ato import Controller, controller_steps
        from .partition import Partitioner

        super().setup(model, example_inputs, cfg)
        unknown = sorted(set(cfg.method_options) - set(self.options))
        if unknown:
            raise ValueError(f"unknown method option '{unknown[0]}' for method 'ato'; valid: {', '.join(sorted(self.options))}")
        self.opts = {**self.options, **cfg.method_options}
        self.target = cfg.pruning.target
        self.space = ChannelSpace(model, example_inputs)
        self.cost = CostModel(self.space)
        self.partitioner = Partitioner(self.cost, "flops", max_prune_fraction=1.0)
        self.partitioner.check_target(self.target)
        device = next(model.parameters()).device
        self.controller = Controller([g.size for g in self.space.groups], temperature=self.opts["temperature"],
                                     offset=self.opts["offset"], seed=cfg.seed).to(device)
        self.ctrl_opt = torch.optim.Adam(self.controller.parameters(), lr=self.opts["controller_lr"])
        self.c_start, self.c_end = controller_steps(cfg.epochs, self.opts["t_start"], self.opts["t_end"])
        self.t_w = int(round(self.opts["t_w"] * cfg.epochs))
        self.mask = torch.ones(self.space.num_channels, dtype=torch.bool)
        self.epoch, self.step, self.final_keep, self.frozen = 0, 0, None, False
        self.ctrl_data = None

    def bind_data(self, train_dataset, batch_size: int, seed: int) -> None:
        n = len(train_dataset)
        k = max(1, int(round(self.opts["subset"] * n)))
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))[:k].tolist()
        self.ctrl_data = torch.utils.data.DataLoader(torch.utils.data.Subset(train_dataset, idx),
                                                     batch_size=min(batch_size, k), shuffle=True,
                                                     generator=torch.Generator().manual_seed(seed + 2))
        self._ctrl_iter = iter(self.ctrl_data)

    def _ctrl_batch(self):
        try:
            return next(self._ctrl_iter)
        except StopIteration:
            self._ctrl_iter = iter(self.ctrl_data)
            return next(self._ctrl_iter)

    def epoch_start(self, epoch, optimizer) -> dict:
        self.epoch = epoch
        if self.c_start <= epoch <= self.c_end:        # the mask follows the controller until frozen
            self.mask = self._decided(self.controller.hard_mask().cpu())   # rank 0's controller decides
        elif epoch > self.c_end and not self.frozen:
            # Freeze a mask that meets the budget: if the controller has not reached it, the
            # least salient remaining channels join the masked-out set NOW, so the Eq. 3
            # projection drives them to zero during the remaining epochs and the final prune
            # removes only dead channels (instead of live ones with no training left).
            self.mask, self.frozen = self._decided(self._budget_keep(self.mask)), True
        keep = self.mask if self.frozen else self._budget_keep(self.mask)   # a frozen mask meets the budget
        stage = "search" if epoch < self.c_start else ("controller" if epoch <= self.c_end else "frozen")
        return {"stage": stage, **cost_fields(self.cost, keep),
                "lambda": self.opts["lam"] if epoch >= self.t_w else 0.0}

    def after_step(self, optimizer) -> None:
        from .ato import prox_group_lasso_

        self.step += 1
        if self.epoch >= self.t_w:                     # ATO Eq. 3 on the masked-out groups
            lr = float(optimizer.param_groups[0]["lr"])
            prox_group_lasso_(self.model, self.space, ~self.mask, lr * self.opts["lam"])
        if self.ctrl_data is not None and self.c_start <= self.epoch < self.c_end \
                and self.step % self.opts["controller_every"] == 0:
            self.controller_step()

    def controller_step(self) -> float:
        """One controller update, ATO Eq. 4: CE of the masked model + gamma * R_FLOPs."""
        from .ato import ChannelMasker, flops_regularizer

        x, y = self._ctrl_batch()
        device = next(self.model.parameters()).device
        x, y = x.to(device), y.to(device)
        mask = self.controller(sample=True)
        masker = ChannelMasker(self.space)
        masker.mask = mask
        with masker:
            ce = torch.nn.functional.cross_entropy(self.model(x), y)
        cost = self.cost.evaluate(mask.double().cpu(), "flops")
        loss = ce + self.opts["gamma"] * flops_regularizer(cost, self.cost.dense["flops"], 1 - self.target).to(ce.dtype)
        grads = torch.autograd.grad(loss, list(self.controller.parameters()), allow_unused=True)
        for p, g in zip(self.controller.parameters(), grads):
            p.grad = g
        self.ctrl_opt.step()
        self.ctrl_opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _budget_keep(self, mask: torch.Tensor) -> torch.Tensor:
        """The mask, made to meet the budget: masked-out channels go first, then the least
        salient (Eq. 2) of the rest, and every group keeps at least one channel."""
        from .importance import group_l2

        scores = group_l2(dict(self.model.named_parameters()), self.space)
        scores = scores + torch.where(mask, scores.max() + 1.0, torch.zeros_like(scores))
        keep = mask.clone()
        if float(self.cost.evaluate(keep, "flops")) <= (1 - self.target) * self.cost.dense["flops"]:
            for g in self.space.groups:              # never remove a whole group
                local = keep[g.offset:g.offset + g.size]
                if not bool(local.any()):
                    keep[g.offset + int(torch.argmax(scores[g.offset:g.offset + g.size]))] = True
            return keep
        return self.partitioner.partition(scores, self.target).keep

    def on_train_end(self, optimizer) -> None:
        from .surgery import prune_to

        self.final_keep = self._decided(self._budget_keep(self.mask))
        prune_to(self.model, self.space, self.final_keep, [optimizer])

    def state_dict(self) -> dict:
        return {"controller": self.controller.state_dict(), "ctrl_opt": self.ctrl_opt.state_dict(),
                "mask": self.mask.to(torch.uint8), "step": self.step, "frozen": self.frozen}

    def load_state_dict(self, state, optimizer=None) -> None:
        self.controller.load_state_dict(state["controller"])
        self.ctrl_opt.load_state_dict(state["ctrl_opt"])
        self.mask, self.step, self.frozen = state["mask"].bool(), int(state["step"]), bool(state.get("frozen", False))

    def _final_keep(self) -> torch.Tensor:
        return self.final_keep if self.final_keep is not None else torch.ones(self.space.num_channels, dtype=torch.bool)

    def architecture(self):
        return architecture_of(self.space, self._final_keep())

    def kept_channels(self) -> list:
        return kept_channels_of(self.cost, self._final_keep())

    def summary(self) -> dict:
        keep = self._final_keep()
        return {"target": self.target, "dense_flops": self.cost.dense["flops"], "dense_params": self.cost.dense["params"],
                "final_flops": float(self.cost.evaluate(keep, "flops")),
                "final_params": float(self.cost.evaluate(keep, "params")), "pruned": self.final_keep is not None}
