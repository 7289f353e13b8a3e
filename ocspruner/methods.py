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
from .engine import OCSPruner

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


class Method:
    name = "base"

    def setup(self, model: nn.Module, example_inputs, cfg) -> None:
        self.model, self.example_inputs, self.cfg = model, example_inputs, cfg

    def epoch_start(self, epoch: int, optimizer) -> dict:
        return {}

    def after_backward(self) -> None:
        """Called after loss.backward() (gradients unscaled), before optimizer.step()."""

    def after_step(self, optimizer) -> None:
        pass

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
    """OCSPruner (Algorithm 1) through the engine."""

    def setup(self, model, example_inputs, cfg) -> None:
        super().setup(model, example_inputs, cfg)
        pruning = dataclasses.replace(cfg.pruning)
        last = cfg.epochs - 1
        # a run always ends at the budget: prune by the last epoch at the latest
        if pruning.max_prune_epoch is None or pruning.max_prune_epoch > last:
            pruning.max_prune_epoch = last
        self.engine = OCSPruner(model, example_inputs, pruning, **cfg.method_options)
        self.t_star_time: Optional[float] = None

    def epoch_start(self, epoch, optimizer) -> dict:
        rep = self.engine.epoch_start(epoch, optimizer)
        cm = self.engine.cost_model
        keep = self.engine.final_keep if self.engine.final_keep is not None else self.engine.last_partition.keep
        return {"stage": rep.stage, "similarity": rep.similarity, "similarity_avg": rep.similarity_avg,
                "lambda": rep.lam, "flops": float(cm.evaluate(keep, "flops")),
                "params": float(cm.evaluate(keep, "params")),
                "flops_reduction": 1 - float(cm.evaluate(keep, "flops")) / cm.dense["flops"],
                "events": rep.events, "pruned": rep.pruned, "sl_started": rep.sl_started}

    def after_backward(self) -> None:
        self.engine.after_backward()

    def after_step(self, optimizer) -> None:
        self.engine.after_step(optimizer)

    def state_dict(self) -> dict:
        return self.engine.state_dict()

    def load_state_dict(self, state, optimizer=None) -> None:
        self.engine.load_state_dict(state, optimizer)

    def architecture(self) -> Optional[dict]:
        e = self.engine
        keep = e.final_keep if e.final_keep is not None else torch.ones(e.space.num_channels, dtype=torch.bool)
        return {"groups": [[g.key, g.size] for g in e.space.groups],
                "kept": {k: sorted(v) for k, v in e.space.subnetwork(keep).items()}}

    def kept_channels(self) -> list:
        e = self.engine
        keep = e.final_keep if e.final_keep is not None else torch.ones(e.space.num_channels, dtype=torch.bool)
        return [{"name": n, "kept": k, "original": o} for n, (k, o) in e.cost_model.kept_channels_per_layer(keep).items()]

    def summary(self) -> dict:
        e, cm = self.engine, self.engine.cost_model
        return {"t_sl_start": e.t_sl_start, "t_star": e.t_star, "target": e.config.target, "metric": e.config.metric,
                "dense_flops": cm.dense["flops"], "dense_params": cm.dense["params"],
                "final_flops": e.current_cost("flops"), "final_params": e.current_cost("params"),
                "pruned": e.t_star is not None}
