"""Training recipe: optimizers and learning-rate schedules as plain functions of progress.

The learning rate is a pure function of the fractional epoch, set before every step, so a
physical prune (which swaps parameters inside the optimizer) or a resume cannot disturb the
schedule: there is no scheduler object whose internal counter could drift (the reference code
fast-forwards a rebuilt scheduler and is off by one).
"""
from __future__ import annotations

import math

import torch

from .config import ConfigError, OptimConfig, ScheduleConfig


def lr_at(epoch: float, total_epochs: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """Learning rate at fractional epoch ``epoch`` in [0, total_epochs)."""
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return base_lr * (epoch + 1e-8) / cfg.warmup_epochs
    name = cfg.name
    if name == "constant":
        return base_lr
    if name == "cosine":
        span = max(total_epochs - cfg.warmup_epochs, 1e-8)
        progress = min(max((epoch - cfg.warmup_epochs) / span, 0.0), 1.0)
        return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    if name == "linear":
        span = max(total_epochs - cfg.warmup_epochs, 1e-8)
        progress = min(max((epoch - cfg.warmup_epochs) / span, 0.0), 1.0)
        return base_lr + (cfg.min_lr - base_lr) * progress
    if name == "multistep":
        return base_lr * cfg.gamma ** sum(1 for m in cfg.milestones if int(epoch) >= m)
    if name == "step":
        return base_lr * cfg.gamma ** (int(epoch) // max(cfg.step_size, 1))
    raise ConfigError(f"unknown schedule.name {name!r}; use cosine, multistep, step, linear or constant")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    name = cfg.name.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optim.name {cfg.name!r}; use sgd or adamw")
