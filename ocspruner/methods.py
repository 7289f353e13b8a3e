"""Training methods as strategy objects on the ONE training loop (``trainer.py``).

A method is driven with the same calls the engine offers any loop: ``epoch_start`` (may prune
the model in place), ``after_backward`` (gradient terms), ``after_step`` (after optimizer.step).
Methods differ only here, never by a copy of the loop.

Here: the base classes, ``dense``, OCSPruner and its variants. The classic baselines live in
``baselines.py`` (GReg-2 in ``greg.py``) and Auto-Train-Once in ``ato.py``; they register themselves
on import (bottom).

Two settings bind every method (``RunConfig``):

* ``ignored_layers``: module names (``conv1``, ``layer1.0.conv1``) or type names (``Linear``)
  whose output channels no method may prune (:func:`resolve_ignored_layers`);
* ``recovery_fraction``: every method leaves at least this fraction of its cycle (>= 1 epoch)
  after its final prune, so a pruned network never ends a run untrained (:func:`prune_cap`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from .cost import CostModel
from .dependency import ChannelSpace
from .engine import OCSConfig, OCSPruner, price_table
from .recipe import lr_at

_METHODS: Dict[str, Callable[[], "Method"]] = {}
# names that were renamed for what they are: a one-line error says where they went
_RENAMED = {"pai": "'pai' (Eq. 2 magnitude at initialisation) is now 'magnitude_at_init'; "
                   "the data-driven prune-at-init is 'snip'"}


def register_method(name: str):
    def deco(cls):
        _METHODS[name] = cls
        cls.name = name
        return cls
    return deco


def create_method(name: str) -> "Method":
    if name in _RENAMED and name not in _METHODS:
        raise ValueError(f"unknown method {name!r}: {_RENAMED[name]}")
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]()


def list_methods() -> list[str]:
    return sorted(_METHODS)


# -- small pure helpers shared by the methods ------------------------------------------------------
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


def resolve_ignored_layers(model: nn.Module, specs) -> list[nn.Module]:
    """Modules named by ``specs``: each entry is a module name (``layer1.0.conv1``; a name also
    protects the modules inside it) or a module type name (``Linear``, ``nn.Conv2d``,
    ``torch.nn.Conv2d``). An entry that matches nothing is a one-line error naming the fix."""
    named = dict(model.named_modules())
    out: list[nn.Module] = []
    for spec in specs or []:
        if not isinstance(spec, str) or not spec:
            raise ValueError(f"ignored_layers entries must be module names or type names (strings), got {spec!r}")
        if spec in named:
            found = [m for n, m in named.items() if n == spec or n.startswith(spec + ".")]
        else:
            tname = spec.split(".")[-1]
            found = [m for m in named.values() if type(m).__name__ == tname]
        if not found:
            sample = ", ".join(n for n in list(named)[1:4])
            raise ValueError(f"ignored_layers entry {spec!r} matches no module name or type of the model; "
                             f"use a name from model.named_modules() (e.g. {sample}) or a type such as 'Linear'")
        out += [m for m in found if all(m is not o for o in out)]
    return out


def recovery_epochs(epochs: int, fraction: float) -> int:
    """Epochs a method must train after its final prune: ceil(fraction * epochs), at least 1
    when fraction > 0 (0 only when the fraction is 0)."""
    if fraction <= 0:
        return 0
    return max(1, math.ceil(fraction * epochs - 1e-9))


def prune_cap(epochs: int, fraction: float) -> int:
    """The latest epoch at whose start a method may prune and still train ``recovery_epochs``
    (the prune at the start of epoch t leaves epochs t .. epochs-1 to recover)."""
    return min(epochs - 1, epochs - recovery_epochs(epochs, fraction))


def make_partitioner(cost: CostModel, pruning, round_to: Optional[int] = None):
    """A partitioner at the run's budget metric, per-group cap, round_to and strategy."""
    from .partition import Partitioner

    kwargs = {}
    if getattr(pruning, "partition", None) is not None:
        kwargs["strategy"] = pruning.partition
    if getattr(pruning, "price", None) is not None:
        kwargs["price"] = pruning.price
    return Partitioner(cost, pruning.metric, pruning.max_prune_fraction,
                       pruning.round_to if round_to is None else round_to, **kwargs)


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
        self.ignored = resolve_ignored_layers(model, getattr(cfg, "ignored_layers", None))
        self.recovery_fraction = float(getattr(cfg, "recovery_fraction", 0.0) or 0.0)

    def prune_cap(self, epochs: Optional[int] = None) -> int:
        """Latest epoch this method may prune at (``RunConfig.recovery_fraction``)."""
        return prune_cap(self.cfg.epochs if epochs is None else epochs, self.recovery_fraction)

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
        controller subset, SNIP's batch) take it here."""

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


class ChannelMethod(Method):
    """A method that prunes once to a keep mask of its own choosing (the baselines, ATO): the
    channel space, cost model and partitioner at the run's budget, the physical prune, and
    the state and summary that follow from the final keep mask."""

    metrics = ("flops", "params")     # budget metrics a method of this kind can meet
    options: dict = {}
    price_table = None                # the knapsack's measured price, when pruning.price asks for one

    def setup(self, model, example_inputs, cfg) -> None:
        from .surgery import check_prunable

        super().setup(model, example_inputs, cfg)
        # method options are the method's own keys; any pruning.* key overrides the run's pruning
        given = dict(cfg.method_options)
        unknown = sorted(k for k in given if k not in self.options and k not in OCSConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown method option '{unknown[0]}' for method '{self.name}'; valid: "
                             f"{', '.join(sorted(self.options)) or '(none)'} or any pruning.* key")
        over = {k: given.pop(k) for k in list(given) if k not in self.options}
        self.opts = {**self.options, **given}
        self.pruning = p = dataclasses.replace(cfg.pruning, **over).validate()
        if p.metric not in self.metrics:
            raise ValueError(f"method '{self.name}' meets a {' or '.join(self.metrics)} budget, not "
                             f"pruning.metric={p.metric!r}; use method 'ocspruner' or 'prune_finetune' for it")
        self.target, self.metric = p.target, p.metric
        self.space = ChannelSpace(model, example_inputs, self.ignored)
        check_prunable(self.space)
        self.cost = CostModel(self.space)
        # a latency price is measured here
        self.price_table = price_table(self.cost, example_inputs, p.metric, p.price, p.latency_batch, p.latency_clock)
        self.partitioner = make_partitioner(self.cost, p)
        self.partitioner.check_target(self.target)
        self.final_keep: Optional[torch.Tensor] = None
        self.t_star: Optional[int] = None

    def partition(self, scores: torch.Tensor) -> torch.Tensor:
        """Keep mask at the budget by ``scores`` (rank 0's in multi-process training)."""
        return self._decided(self.partitioner.partition(scores, self.target).keep)

    def prune(self, keep: torch.Tensor, optimizers, epoch: int) -> None:
        from .surgery import prune_to

        if optimizers is not None and not isinstance(optimizers, (list, tuple)):
            optimizers = [optimizers]
        prune_to(self.model, self.space, keep, list(optimizers or []))
        self.final_keep, self.t_star = keep.clone(), epoch

    def _final_keep(self) -> torch.Tensor:
        return self.final_keep if self.final_keep is not None else torch.ones(self.space.num_channels, dtype=torch.bool)

    def pruned_row(self, epoch: int, pruned_now: bool, **extra) -> dict:
        """The per-epoch metrics of a model that is pruned (or dense) at its final keep mask."""
        keep = self._final_keep()
        events = [f"t* = {epoch}: pruned to {1 - float(self.cost.evaluate(keep, 'flops')) / self.cost.dense['flops']:.2%} "
                  f"FLOPs reduction"] if pruned_now else []
        # "dense" would mark the epoch's model as final (best.pt): only a pruned model is final here
        return {"stage": "pruned" if self.final_keep is not None else "search", **cost_fields(self.cost, keep),
                "pruned": pruned_now, "events": events, **extra}

    def state_dict(self) -> dict:
        state = {"final_keep": self.final_keep.to(torch.uint8) if self.final_keep is not None
                 else torch.zeros(0, dtype=torch.uint8), "t_star": -1 if self.t_star is None else self.t_star}
        if self.price_table is not None:     # a resumed run prices channels as before the stop
            state["price_measurements"] = self.price_table.measurements()
        return state

    def load_state_dict(self, state, optimizer=None) -> None:
        if self.price_table is not None and state.get("price_measurements") is not None:
            self.price_table.load_measurements(state["price_measurements"])   # re-registers the price
        keep = state.get("final_keep")
        if keep is not None and len(keep) and self.final_keep is None:   # replay the prune, then the trainer loads weights
            self.prune(keep.bool(), optimizer, int(state["t_star"]))

    def architecture(self):
        return architecture_of(self.space, self._final_keep())

    def kept_channels(self) -> list:
        return kept_channels_of(self.cost, self._final_keep())

    def summary(self) -> dict:
        keep = self._final_keep()
        return {"target": self.target, "metric": self.metric, "t_star": self.t_star,
                "dense_flops": self.cost.dense["flops"], "dense_params": self.cost.dense["params"],
                "final_flops": float(self.cost.evaluate(keep, "flops")),
                "final_params": float(self.cost.evaluate(keep, "params")), "pruned": self.final_keep is not None}


@register_method("dense")
class DenseMethod(Method):
    """Plain training on the same loop: the reference point for cost and accuracy."""

    def setup(self, model, example_inputs, cfg) -> None:
        super().setup(model, example_inputs, cfg)
        space = ChannelSpace(model, example_inputs, self.ignored)
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
    comparison: each is a PRESET of engine settings, nothing more.

    ``cfg.method_options`` holds options of the method (``options``) and, for anything else,
    overrides of the engine config (e.g. ``{criterion: layer_l2}`` for the Table 5 ablation).
    The prune happens by ``prune_cap`` at the latest (``recovery_fraction`` of the cycle left).
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
        self.check_schedule(pruning)
        cap = self.prune_cap(self.total_epochs())
        # a run always ends at the budget, with recovery epochs: prune by the cap at the latest
        if pruning.max_prune_epoch is None or pruning.max_prune_epoch > cap:
            pruning.max_prune_epoch = cap
        self.engine = OCSPruner(model, example_inputs, pruning, ignored_layers=self.ignored)

    def check_schedule(self, pruning: OCSConfig) -> None:
        """A fixed prune epoch must leave the recovery epochs (one line, before training)."""
        cap = self.prune_cap(self.total_epochs())
        if pruning.prune_epoch is not None and pruning.prune_epoch > cap:
            raise ValueError(f"prune_epoch {pruning.prune_epoch} leaves fewer than the recovery epochs "
                             f"(recovery_fraction={self.recovery_fraction} of {self.total_epochs()} epochs: prune by "
                             f"epoch {cap}); lower prune_epoch or recovery_fraction")

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
                "partition": e.config.partition, "price": e.config.price or e.config.metric,
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


@register_method("ocs_count_only")
class OCSCountOnly(OCSPrunerMethod):
    """Ablation of Sec. 3.3: OCSPruner whose stability score compares sub-networks by per-group
    channel COUNTS only (PaT's kind of similarity), everything else as OCSPruner. Not PaT: PaT
    has no sparsity learning (see ``baselines.PaT``)."""

    def preset(self, opts):
        return {"identity_similarity": False}


from . import ato, baselines, greg  # noqa: E402,F401  (they register their methods)
