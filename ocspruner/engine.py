"""The OCSPruner engine: one-cycle structured pruning driven by any training loop (Algorithm 1).

Usage, with any model, optimizer and loop::

    pruner = OCSPruner(model, example_inputs, OCSConfig(target=0.5))
    for epoch in range(epochs):
        report = pruner.epoch_start(epoch, optimizer)   # M_t, J, stage changes, prune at t*
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad(); loss.backward()
            pruner.after_backward()                             # Eq. 8 (no-op outside sparsity learning)
            optimizer.step()
            pruner.after_step(optimizer)                        # Eq. 9

``pruner.after_backward()`` adds Eq. 8's gradient directly; ``loss + pruner.penalty()`` is the
equivalent loss-term form.
        scheduler.step()

Stages: ``search`` (dense training while the stability indicator is watched), ``sparsity``
(sparsity learning with growing regularisation on the current pruning groups), ``pruned`` (the
model was physically pruned to M_{t*} and is an ordinary, smaller nn.Module from then on).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn

from . import stability
from .cost import CostModel
from .dependency import ChannelSpace
from .importance import get_criterion
from .layernorm import KeptChannelStats
from .clock import CLOCKS
from .partition import MEASURED_METRICS, STRATEGIES, BudgetError, Partition, Partitioner
from .regularizer import GroupRegularizer
from .schedule import adaptive_lambda0, growing_lambda, shrink_factor
from .surgery import check_prunable, masked_copy, prune_to

SEARCH, SPARSITY, PRUNED = "search", "sparsity", "pruned"
LATENCY_METRICS = MEASURED_METRICS   # measured on this device (latency.py)
STATE_VERSION = 1


@dataclass
class OCSConfig:
    """Hyper-parameters of OCSPruner. Defaults are the paper's (Table 8, ImageNet column for the
    automatic t_sl-start) unless stated."""

    target: float = 0.5                 # fraction of the metric to remove (alpha of Eq. 1 is 1 - target)
    metric: str = "flops"               # "flops", "params", "latency" (inference, measured on this
                                        # device) or "train_latency" (forward + backward, measured)
    partition: str = "ranking"          # "ranking": the paper's global saliency order (Alg. 1);
                                        # "knapsack": saliency per unit of marginal cost (of `price`)
    price: Optional[str] = None         # knapsack only: the metric that prices a channel (None: the
                                        # budget metric); metric flops + price latency meets the FLOPs
                                        # budget exactly with the channels that save the most time
    latency_batch: Optional[int] = None # batch size the latency table is measured at (None: the example's)
    latency_clock: str = "auto"         # clock of the latency table: auto, thread_cpu, process_cpu, wall
    criterion: str = "group_l2"         # saliency, Eq. 2 by default
    # stability, Eq. 3-6
    window: int = 3                     # r of Eq. 4
    offset: int = 2                     # i of Eq. 4 (compare M_t with M_{t-i})
    sl_start_lag: Optional[int] = None  # lag of Eq. 5; None = r as printed in the paper
    tau: float = 1e-4                   # Eq. 5 threshold
    epsilon: float = 1e-3               # Eq. 6 threshold
    sl_start_epoch: Optional[int] = None   # fixed t_sl-start (Table 4 / CIFAR recipe) instead of Eq. 5
    sparsity_learning: bool = True         # False: never regularise (pruning at init, two-cycle baselines)
    prune_epoch: Optional[int] = None      # fixed t*: prune at this epoch, no stability search (Eq. 6 unused)
    max_prune_epoch: Optional[int] = None  # cap: prune at this epoch at the latest
    identity_similarity: bool = True    # False: PaT's count-only indicator
    per_layer_average: bool = False     # Eq. 3 averaged over layers instead of groups
    # regularisation, Eq. 7-9
    lambda0: float = 1e-4
    delta: float = 1e-4
    lambda_interval: int = 1            # Δt of Eq. 7
    lambda_mode: str = "linear"         # "quadratic": Eq. 7's printed recursion read literally
    use_eq8: bool = True                # group-l2 penalty added to the loss
    use_eq9: bool = True                # multiplicative shrink after each step
    # partition
    max_prune_fraction: float = 0.75    # per group, as the reference's layer limit
    round_to: int = 1
    # self-adaptive thresholds (open question 2): tau, epsilon, lambda0 = delta derived from the run
    adaptive: bool = False
    adaptive_tau_ratio: float = 1.0     # Eq. 5: tau = ratio * steepest earlier rise of J_avg
    adaptive_eps_ratio: float = 0.1     # Eq. 6: epsilon = ratio * (1 - J_avg at t_sl-start)
    adaptive_sl_epochs: Optional[int] = None  # Eq. 7/9: shrink pruning groups to 1% in this many
                                        # epochs (None: 10% of the cycle up to the prune cap, >= 2)
    # learning-rate phases (open question 3): a step drop of the lr starts a new phase, and J is
    # only computed between sub-networks of the same phase (Eq. 3-6 restart their window)
    lr_phase_reset: bool = False
    lr_drop_ratio: float = 0.5          # a drop: lr < ratio * the previous epoch's lr
    # LayerNorm'd widths (issue 15): during sparsity learning, LayerNorms cut by M_t normalise over
    # the kept channels only (what they compute after the prune), so t* costs no accuracy jump
    layernorm_kept_stats: bool = True

    def validate(self) -> "OCSConfig":
        def bad(msg):
            raise ValueError(msg)
        if not isinstance(self.target, (int, float)) or not 0.0 < self.target < 1.0:
            bad(f"target must be a fraction in (0, 1) of {self.metric} to remove, got {self.target!r}")
        for name in ("window", "offset", "lambda_interval"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                bad(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("tau", "epsilon", "lambda0", "delta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(f"{name} must be a finite number >= 0, got {v!r}")
        for name in ("sl_start_epoch", "prune_epoch", "max_prune_epoch", "sl_start_lag"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 0):
                bad(f"{name} must be a non-negative integer or None, got {v!r}")
        if self.lambda_mode not in ("linear", "quadratic"):
            bad(f"lambda_mode must be 'linear' or 'quadratic', got {self.lambda_mode!r}")
        if self.metric not in ("flops", "params", "latency", "train_latency"):
            bad(f"metric must be 'flops', 'params', 'latency' or 'train_latency', got {self.metric!r}")
        if self.partition not in STRATEGIES:
            bad(f"partition must be one of {list(STRATEGIES)} (knapsack: cost-aware), got {self.partition!r}")
        if self.price not in (None, "flops", "params", "latency", "train_latency"):
            bad(f"price must be None, 'flops', 'params', 'latency' or 'train_latency', got {self.price!r}")
        if self.price not in (None, self.metric) and self.partition != "knapsack":
            bad(f"price {self.price!r} prices channels for partition 'knapsack' only (partition is "
                f"{self.partition!r}); set pruning.partition=knapsack or drop pruning.price")
        if self.latency_clock not in CLOCKS:
            bad(f"latency_clock must be one of {list(CLOCKS)}, got {self.latency_clock!r}")
        for name in ("adaptive_tau_ratio", "adaptive_eps_ratio"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                bad(f"{name} must be a number in [0, 1], got {v!r}")
        if not isinstance(self.lr_drop_ratio, (int, float)) or not 0 < self.lr_drop_ratio < 1:
            bad(f"lr_drop_ratio must be in (0, 1) (e.g. 0.5: lr halves or more), got {self.lr_drop_ratio!r}")
        if self.adaptive_sl_epochs is not None and (not isinstance(self.adaptive_sl_epochs, int) or self.adaptive_sl_epochs < 1):
            bad(f"adaptive_sl_epochs must be a positive integer or None, got {self.adaptive_sl_epochs!r}")
        if self.latency_batch is not None and (not isinstance(self.latency_batch, int) or self.latency_batch < 1):
            bad(f"latency_batch must be a positive integer or None, got {self.latency_batch!r}")
        return self


@dataclass
class EpochReport:
    """What :meth:`OCSPruner.epoch_start` saw and did at epoch t."""

    epoch: int
    stage: str                       # stage the model trains in during this epoch
    similarity: Optional[float]      # J(M_{t-i}, M_t), Eq. 3
    similarity_avg: Optional[float]  # J_avg^t, Eq. 4
    lam: float                       # lambda_t used this epoch (0 outside sparsity learning)
    cost: float                      # Psi of M_t (of the pruned model once pruned)
    reduction: float                 # fraction of the dense cost removed by M_t
    sl_started: bool = False         # Eq. 5 fired at this epoch
    pruned: bool = False             # the model was physically pruned at this epoch (t*)
    events: list = field(default_factory=list)
    group_norms: Optional[dict] = None  # Eq. 2 norms of the pruning vs kept set (supplement Fig. 5)


NORM_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def norm_distribution(norms: torch.Tensor, keep: torch.Tensor, quantiles=NORM_QUANTILES) -> dict:
    """Quantiles of per-channel norms in the pruning set (``keep == False``) and the kept set:
    a few numbers per epoch that show sparsity learning driving the pruning set to zero."""
    keep = keep.bool().cpu()
    norms = norms.detach().to(torch.float64).cpu()
    q = torch.tensor(quantiles, dtype=torch.float64)
    out: dict = {"q": list(quantiles)}
    for name, sel in (("pruning", ~keep), ("kept", keep)):
        out[name] = torch.quantile(norms[sel], q).tolist() if bool(sel.any()) else None
        out[f"n_{name}"] = int(sel.sum())
    return out


class OCSPruner:
    """State machine of Algorithm 1. All algorithm state lives on the instance (and in
    :meth:`state_dict`); nothing is global."""

    def __init__(self, model: nn.Module, example_inputs, config: Optional[OCSConfig] = None,
                 ignored_layers: Sequence[nn.Module] = (), ignore_output_layer: bool = True,
                 check_structures: bool = True, decision_sync: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 **overrides):
        # Multi-process training: ``decision_sync(keep) -> keep`` returns rank 0's keep mask
        # (see ocspruner.distributed.decision_sync), so every process prunes to one sub-network.
        self.decision_sync = decision_sync
        self.config = (config or OCSConfig())
        if overrides:
            self.config = OCSConfig(**{**asdict(self.config), **overrides})
        self.config.validate()
        self.model = model
        self.criterion = get_criterion(self.config.criterion)
        self.space = ChannelSpace(model, example_inputs, ignored_layers, ignore_output_layer)
        if check_structures:
            check_prunable(self.space)   # fail now, not at t*, on structures DepGraph misreads
        self.cost_model = CostModel(self.space)
        self.latency_table, self.latency_calibration = None, []
        c = self.config
        self.price_table = price_table(self.cost_model, example_inputs, c.metric, c.price, c.latency_batch,
                                       c.latency_clock)
        if self.config.metric in LATENCY_METRICS:
            from .latency import calibrate_latency
            self.latency_table = build_latency_table(self.cost_model, example_inputs, self.config.latency_batch,
                                                     self.config.metric, self.config.latency_clock)
            self.latency_calibration = calibrate_latency(
                self.latency_table, self.scores, self.config.target,
                max_prune_fraction=self.config.max_prune_fraction, round_to=self.config.round_to,
                strategy=self.config.partition, price=self.config.price)
        self._configure()
        self.partitioner.check_target(self.config.target)   # unreachable budgets fail here
        self.regularizer = GroupRegularizer(self.space)
        # algorithm state
        self.stage = SEARCH
        self.history: list[torch.Tensor] = []        # keep masks of M_0, M_1, ...
        self.raw: list[Optional[float]] = []         # J(M_{t-i}, M_t)
        self.avg: list[Optional[float]] = []         # J_avg^t
        self.lam = 0.0
        self.t_sl_start: Optional[int] = None
        self.t_star: Optional[int] = None
        self.final_keep: Optional[torch.Tensor] = None
        self.regularizing = False
        self._model_pruned = False
        self.last_partition: Optional[Partition] = None
        self.layernorm_stats = KeptChannelStats()   # see OCSConfig.layernorm_kept_stats
        # open questions 2/3: values derived during the run (see OCSConfig.adaptive / lr_phase_reset)
        self.phase_start = 0                  # first epoch of the current learning-rate phase
        self._phase_lr: Optional[float] = None
        self._steps = 0                       # after_step calls in the current epoch
        self._steps_last_epoch = 0
        self.adapted: dict = {}               # tau / epsilon / lambda0 chosen by the adaptive mode

    def _configure(self) -> None:
        """Objects derived from the config (at construction and when a state is restored)."""
        cfg = self.config
        self.partitioner = Partitioner(self.cost_model, cfg.metric, cfg.max_prune_fraction, cfg.round_to,
                                       cfg.partition, cfg.price)
        self.criterion = get_criterion(cfg.criterion)
        self._weights = self.space.layer_weights() if cfg.per_layer_average else None
        self._lag = cfg.sl_start_lag if cfg.sl_start_lag is not None else cfg.window

    # -- the three calls a training loop makes -----------------------------------------------
    def epoch_start(self, epoch: int, optimizers: Union[None, torch.optim.Optimizer, list] = None) -> EpochReport:
        """Algorithm 1, lines 3-20, at the start of epoch ``epoch`` (0-based, one call per epoch).

        Reads M_t off the current weights, updates J and J_avg, applies the stage rules, and at
        t* prunes the model in place, carrying ``optimizers``' state over.
        """
        cfg = self.config
        if self.stage == PRUNED:
            cost = float(self.cost_model.evaluate(self.final_keep, cfg.metric))
            return EpochReport(epoch, PRUNED, None, None, 0.0, cost, 1 - cost / self.partitioner.dense_cost)
        if epoch != len(self.history):
            raise ValueError(f"epoch_start(epoch={epoch}) called out of order: expected epoch {len(self.history)} "
                             f"(call it once per epoch, starting at 0, or restore the engine's state_dict)")
        scores = self.scores()
        part = self.partition(scores)
        if self.decision_sync is not None:
            # M_t is decided once (rank 0) for all processes. J, J_avg and the stage rules below
            # are pure functions of the history of M_t, so every process also takes the same
            # t_sl-start and t* decisions without a second exchange.
            keep = self.decision_sync(part.keep).bool()
            if not torch.equal(keep, part.keep):
                part = replace(part, keep=keep, cost=float(self.cost_model.evaluate(keep, cfg.metric)),
                               removed_channels=int((~keep).sum()))
                self.last_partition = part
        t = epoch
        events = self._track_run(t, optimizers)
        self.history.append(part.keep.clone())
        self._update_similarity()
        report = EpochReport(t, self.stage, self.raw[t], self.avg[t], 0.0, part.cost, part.reduction, events=events)
        # before a prune at t* below; Eq. 2 scores are the group norms already when they rank
        report.group_norms = self.group_norm_distribution(
            part.keep, scores if cfg.criterion == "group_l2" else None)
        self.regularizing = False
        self.layernorm_stats.clear()
        in_sparsity = self.stage == SPARSITY   # Alg. 1: the t* test (line 12) is the else-branch of line 7
        avg = stability.within_phase(self.avg, self.phase_start) if cfg.lr_phase_reset else self.avg
        epsilon = self.adapted.get("epsilon", cfg.epsilon)
        stable = in_sparsity and cfg.prune_epoch is None and stability.is_stable(avg, t, epsilon)  # Eq. 6
        if self.stage == SEARCH:
            tau = stability.adaptive_tau(avg, t, self._lag, cfg.adaptive_tau_ratio) if cfg.adaptive else cfg.tau
            start = (cfg.sl_start_epoch == t) if cfg.sl_start_epoch is not None else \
                stability.sl_start_reached(avg, t, tau, self._lag)
            if start and cfg.sparsity_learning:
                # Algorithm 1 lines 8-10: epoch t still trains without regularisation;
                # sparsity learning begins with the next epoch.
                self.stage, self.t_sl_start = SPARSITY, t
                report.sl_started = True
                report.events.append(f"t_sl-start = {t}")
                if cfg.adaptive:
                    self._adapt_at_sl_start(t, tau, avg, report)
        elif self.stage == SPARSITY:
            if not stable:
                if cfg.adaptive and "lambda0" not in self.adapted:
                    self._adapt_lambda(optimizers, report)
                lam0 = self.adapted.get("lambda0", cfg.lambda0)
                self.lam = growing_lambda(t, self.t_sl_start, lam0, self.adapted.get("delta", cfg.delta),
                                          cfg.lambda_interval, cfg.lambda_mode)            # Eq. 7
                self.regularizer.set_pruned(self.model, ~part.keep)                      # G_prune^t
                self.regularizing = True
                if cfg.layernorm_kept_stats:
                    self.layernorm_stats.set(self.model, self.space, part.keep)
                report.lam = self.lam
            else:
                report.events.append(f"stable: J_avg = {self.avg[t]:.6f} >= 1 - epsilon")
        forced = (cfg.prune_epoch is not None and t >= cfg.prune_epoch) or \
                 (cfg.max_prune_epoch is not None and t >= cfg.max_prune_epoch)
        if stable or forced:
            if forced and not stable:
                report.events.append(f"pruning forced at epoch {t}")
            self._prune(t, part.keep, optimizers)
            report.pruned, report.lam = True, 0.0
            report.events.append(f"t* = {t}: pruned to {part.reduction:.2%} {cfg.metric} reduction")
        report.stage = self.stage
        return report

    def penalty(self) -> torch.Tensor:
        """lambda_t * Eq. 8's group-l2 sum, to add to the loss (a zero tensor when inactive)."""
        if not (self.regularizing and self.config.use_eq8 and self.lam > 0):
            p = next(self.model.parameters())
            return torch.zeros((), device=p.device, dtype=p.dtype)
        return self.lam * self.regularizer.penalty(self.model)

    def after_backward(self, grad_scale: float = 1.0) -> None:
        """Eq. 8 as a gradient: adds lambda_t * w/||w|| for the pruning-group slices to ``.grad``.

        Use this OR ``loss + penalty()``, not both. It is the cheaper path (no autograd graph).
        With a GradScaler, call ``scaler.unscale_(optimizer)`` first, or pass the current scale.
        """
        if self.regularizing and self.config.use_eq8 and self.lam > 0:
            self.regularizer.add_gradient_(self.model, self.lam * grad_scale)

    def after_step(self, lr_or_optimizer) -> None:
        """Eq. 9 after each optimizer step: pruning-group slices *= (1 - lambda_t * lr_t)."""
        self._steps += 1     # steps per epoch, for the adaptive lambda (OCSConfig.adaptive)
        if not (self.regularizing and self.config.use_eq9 and self.lam > 0):
            return
        lr = lr_or_optimizer if isinstance(lr_or_optimizer, (int, float)) else \
            float(lr_or_optimizer.param_groups[0]["lr"])
        self.regularizer.shrink_(self.model, shrink_factor(self.lam, lr))

    # -- helpers ------------------------------------------------------------------------------
    def scores(self) -> torch.Tensor:
        """Saliency of every channel at the current weights (Eq. 2 by default)."""
        return self.criterion(dict(self.model.named_parameters()), self.space)

    def partition(self, scores: Optional[torch.Tensor] = None) -> Partition:
        """M_t: the temporary sub-network at the budget for the current weights (Alg. 1, line 5);
        ``scores`` are this epoch's saliencies if the caller already has them."""
        if self._model_pruned:
            raise RuntimeError("the model is already pruned; partition() works on the unpruned model only")
        scores = self.scores() if scores is None else scores
        self.last_partition = self.partitioner.partition(scores, self.config.target)
        return self.last_partition

    def masked_model(self, keep: Optional[torch.Tensor] = None) -> nn.Module:
        """A copy of the unpruned model with the channels outside ``keep`` (default: the last M_t) zeroed."""
        keep = keep if keep is not None else self.last_partition.keep
        return masked_copy(self.model, self.space, keep)

    def group_norm_distribution(self, keep: torch.Tensor, norms: Optional[torch.Tensor] = None) -> dict:
        """Eq. 2 group norms (whatever the ranking criterion) of the channels ``keep`` prunes vs
        those it keeps, as quantiles (supplement Fig. 5). ``norms``: Eq. 2 scores already computed."""
        if norms is None:
            from .importance import group_l2
            norms = group_l2(dict(self.model.named_parameters()), self.space)
        return norm_distribution(norms, keep)

    def subnetwork(self, t: int = -1) -> dict[str, frozenset]:
        return self.space.subnetwork(self.history[t])

    @property
    def dense_cost(self) -> float:
        return self.partitioner.dense_cost

    def current_cost(self, metric: Optional[str] = None) -> float:
        metric = metric or self.config.metric
        keep = self.final_keep if self._model_pruned else torch.ones(self.space.num_channels, dtype=torch.bool)
        return float(self.cost_model.evaluate(keep, metric))

    # -- open questions 2 and 3 --------------------------------------------------------------------
    @staticmethod
    def _first_lr(optimizers) -> Optional[float]:
        if optimizers is None:
            return None
        opt = optimizers[0] if isinstance(optimizers, (list, tuple)) else optimizers
        return float(opt.param_groups[0]["lr"]) if opt is not None and opt.param_groups else None

    def _track_run(self, t: int, optimizers) -> list:
        """Steps of the last epoch, and (lr_phase_reset) a new learning-rate phase at M_t. The lr
        in the optimizer at epoch_start is the one the last epoch ended with, i.e. the lr that
        shaped M_t, so a drop seen here makes M_t the first sub-network of the new phase."""
        self._steps_last_epoch, self._steps = self._steps, 0
        events = []
        lr = self._first_lr(optimizers)
        if self.config.lr_phase_reset and lr is not None:
            if stability.lr_dropped(self._phase_lr, lr, self.config.lr_drop_ratio):
                self.phase_start = t
                events.append(f"lr phase {self._phase_lr:.3g} -> {lr:.3g}: J restarts at M_{t}")
            self._phase_lr = lr
        return events

    def _adapt_at_sl_start(self, t: int, tau: float, avg: list, report: EpochReport) -> None:
        eps = stability.adaptive_epsilon(avg[t] if t < len(avg) else None, self.config.adaptive_eps_ratio)
        self.adapted.update(tau=tau, **({} if eps is None else {"epsilon": eps}))
        report.events.append(f"adaptive: tau = {tau:.4g} (Eq. 5), epsilon = "
                             f"{self.adapted.get('epsilon', self.config.epsilon):.4g} (Eq. 6)")

    def _adapt_lambda(self, optimizers, report: EpochReport) -> None:
        """lambda_0 = delta from the lr and the steps per epoch (schedule.adaptive_lambda0), once,
        at the first epoch of sparsity learning; the configured values if either is unknown."""
        cfg, lr = self.config, self._first_lr(optimizers)
        if lr is None or lr <= 0 or self._steps_last_epoch < 1:
            return
        if cfg.adaptive_sl_epochs is not None:
            k = cfg.adaptive_sl_epochs
        elif cfg.max_prune_epoch is not None:        # the trainer caps at the cycle's last epoch
            k = max(2, round(0.1 * (cfg.max_prune_epoch + 1)))
        else:
            k = 10
        lam0 = adaptive_lambda0(lr, self._steps_last_epoch, k, cfg.lambda_interval)
        self.adapted.update(lambda0=lam0, delta=lam0)
        report.events.append(f"adaptive: lambda0 = delta = {lam0:.4g} (lr {lr:.3g}, {self._steps_last_epoch} "
                             f"steps/epoch, pruning groups to 1% in {k} epochs)")

    def _update_similarity(self) -> None:
        cfg, t = self.config, len(self.history) - 1
        j = None
        if t >= cfg.offset and (not cfg.lr_phase_reset or t - cfg.offset >= self.phase_start):
            j = stability.subnetwork_similarity(self.space.subnetwork(self.history[t - cfg.offset]),
                                                self.space.subnetwork(self.history[t]),
                                                self._weights, cfg.identity_similarity)   # Eq. 3
        self.raw.append(j)
        self.avg.append(stability.windowed_average(self.raw[-cfg.window:], cfg.window)[-1]
                        if len(self.raw) >= cfg.window else None)                          # Eq. 4

    def _prune(self, t: int, keep: torch.Tensor, optimizers) -> None:
        if optimizers is not None and not isinstance(optimizers, (list, tuple)):
            optimizers = [optimizers]
        self.layernorm_stats.clear()
        prune_to(self.model, self.space, keep, list(optimizers or []))
        self.final_keep, self.t_star, self.stage = keep.clone(), t, PRUNED
        self._model_pruned = True
        self.regularizing, self.lam = False, 0.0
        self.regularizer.clear()

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume: plain tensors and Python scalars (weights_only-safe)."""
        nan = float("nan")
        return {
            "version": STATE_VERSION,
            "config": asdict(self.config),
            "groups": [[g.key, g.size] for g in self.space.groups],
            "stage": self.stage,
            "history": torch.stack(self.history).to(torch.uint8) if self.history
            else torch.zeros(0, self.space.num_channels, dtype=torch.uint8),
            "raw": torch.tensor([nan if v is None else v for v in self.raw], dtype=torch.float64),
            "avg": torch.tensor([nan if v is None else v for v in self.avg], dtype=torch.float64),
            "lam": self.lam,
            "t_sl_start": -1 if self.t_sl_start is None else self.t_sl_start,
            "t_star": -1 if self.t_star is None else self.t_star,
            "final_keep": self.final_keep.to(torch.uint8) if self.final_keep is not None
            else torch.zeros(0, dtype=torch.uint8),
            "regularizing": self.regularizing,
            # open questions 2/3 (absent in older states: defaults on load)
            "phase_start": self.phase_start, "phase_lr": -1.0 if self._phase_lr is None else self._phase_lr,
            "steps": self._steps, "steps_last_epoch": self._steps_last_epoch, "adapted": dict(self.adapted),
            # metric 'latency': the calibration map (the table's timings: latency_measurements)
            "latency_points": torch.tensor(self.latency_table.points, dtype=torch.float64).reshape(-1, 2)
            if self.latency_table is not None else torch.zeros(0, 2, dtype=torch.float64),
            # the timings of every measured table (budget and price): a resume predicts as before
            "latency_measurements": {t.metric: t.measurements() for t in (self.latency_table, self.price_table)
                                     if t is not None},
        }

    def load_state_dict(self, state: dict, optimizers=None) -> None:
        """Restore the engine. If the saved run had already pruned and this engine's model is
        still unpruned, the prune is replayed on it, so that the caller can then load the pruned
        model's state_dict (and build/restore its optimizer) as usual."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError("not an OCSPruner state (missing or unknown 'version'); was it written by this engine?")
        if [[g.key, g.size] for g in self.space.groups] != [list(x) for x in state["groups"]]:
            raise ValueError("the saved pruning state belongs to a different model (its channel groups differ)")
        saved_cfg = {k: v for k, v in state["config"].items() if k in {f.name for f in fields(OCSConfig)}}
        self.config = OCSConfig(**saved_cfg).validate()
        cfg = self.config
        # the measured tables this state's config needs (budget, price); one this engine already
        # has for the same metric is kept, its timings replaced by the saved ones below
        have = {t.metric: t for t in (self.latency_table, self.price_table) if t is not None}

        def table_for(metric):
            if metric not in LATENCY_METRICS:
                return None
            return have.get(metric) or build_latency_table(self.cost_model, self.space.example_inputs,
                                                           cfg.latency_batch, metric, cfg.latency_clock)
        self.latency_table = table_for(cfg.metric)
        self.price_table = table_for(cfg.price) if cfg.price != cfg.metric else None
        if self.latency_table is not None:
            # the saved calibration, not a new one: the partition must decide as before the stop
            points = state.get("latency_points")
            if points is not None and len(points):
                self.latency_table.points = tuple((float(x), float(y)) for x, y in points.tolist())
        for table in (self.latency_table, self.price_table):
            saved = state.get("latency_measurements", {}).get(table.metric) if table is not None else None
            if saved is not None:
                table.load_measurements(saved)
        self._configure()
        self.history = [row.bool() for row in state["history"]]
        self.raw = [None if math.isnan(v) else v for v in state["raw"].tolist()]
        self.avg = [None if math.isnan(v) else v for v in state["avg"].tolist()]
        self.lam = float(state["lam"])
        self.t_sl_start = None if state["t_sl_start"] < 0 else int(state["t_sl_start"])
        self.t_star = None if state["t_star"] < 0 else int(state["t_star"])
        self.stage = state["stage"]
        if self.stage == PRUNED:
            keep = state["final_keep"].bool()
            if not self._model_pruned:
                self._prune(self.t_star, keep, optimizers)
            self.final_keep = keep
        self.regularizing = bool(state["regularizing"]) and self.stage == SPARSITY
        self.phase_start = int(state.get("phase_start", 0))
        self._phase_lr = None if state.get("phase_lr", -1.0) < 0 else float(state["phase_lr"])
        self._steps, self._steps_last_epoch = int(state.get("steps", 0)), int(state.get("steps_last_epoch", 0))
        self.adapted = {k: float(v) for k, v in state.get("adapted", {}).items()}
        if self.regularizing and self.history:
            self.regularizer.set_pruned(self.model, ~self.history[-1])
            if self.config.layernorm_kept_stats:
                self.layernorm_stats.set(self.model, self.space, self.history[-1])


def build_latency_table(cost_model: CostModel, example_inputs, batch: Optional[int], metric: str = "latency",
                        clock: str = "auto"):
    """Measure the per-layer latency table at ``batch`` (default: the example's) and register
    ``metric`` (``"latency"``: inference; ``"train_latency"``: forward + backward) on the cost
    model."""
    from .latency import LatencyTable

    ex = example_inputs
    if batch is not None and isinstance(ex, torch.Tensor):
        ex = ex[:1].expand(batch, *ex.shape[1:]).contiguous()
    table = LatencyTable(cost_model, ex, mode="train" if metric == "train_latency" else "inference", clock=clock)
    table.attach()
    return table


def price_table(cost_model: CostModel, example_inputs, metric: str, price: Optional[str],
                latency_batch: Optional[int] = None, clock: str = "auto"):
    """The latency table that prices channels for the knapsack, when the price is a measured
    metric the cost model does not know yet (a FLOPs budget priced by latency). Pricing needs no
    calibration: the calibration map scales every channel's marginal cost by the same slope at a
    given sub-network, so it cannot change the knapsack's order. None when no table is needed."""
    if price in LATENCY_METRICS and price not in cost_model.dense and price != metric:
        return build_latency_table(cost_model, example_inputs, latency_batch, price, clock)
    return None


__all__ = ["OCSPruner", "OCSConfig", "EpochReport", "BudgetError", "SEARCH", "SPARSITY", "PRUNED"]
