"""GReg-2 (Wang et al., "Neural Pruning via Growing Regularization", ICLR 2021) on the one loop.

The schedules are pure functions (:func:`growing_penalty`, :func:`push_ceiling`); the method
(:class:`GReg`) is a two-cycle pipeline like ``prune_finetune`` (``baselines._TwoCycle``) with a
regularisation phase between the cycles, in two stages as the authors' code runs it: a uniform
growing penalty *picks* the filters to go, then their penalty keeps growing while the kept ones
are released (*push*), and once they are ~0 they are pruned.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch

from .baselines import _TwoCycle
from .importance import get_criterion
from .methods import ChannelMethod, register_method
from .partition import reselect_within_groups
from .surgery import removed_positions


def growing_penalty(iteration: int, delta: float, update_every: int, ceiling: float) -> float:
    """GReg's penalty factor after ``iteration`` iterations of a growing phase:
    lambda = min(ceiling, delta * floor(iteration / update_every))."""
    return min(ceiling, delta * (iteration // update_every))


# share of the push phase over which the picked filters' penalty grows; it is then held (the
# authors hold it for 40k iterations, "stabilize_reg", before they prune)
PUSH_GROWTH = 0.6
# share of the pick phase over which the uniform penalty grows to its ceiling (then held)
PICK_GROWTH = 0.8
# What the authors' pick does to every filter by the penalty alone: lambda grows by 1e-5 every 5
# iterations to their reg_upper_limit_pick of 1e-2 (5000 iterations, integral 25) at lr_prune 1e-3
# with momentum 0.9, i.e. a factor exp(-1e-3 / 0.1 * 25) = exp(-0.25). Our pick has one epoch of
# iterations, a few hundred or fewer, so its ceiling follows from its length (as the push's top):
# a fixed ceiling of 1.0 shrank every filter 1.5x over 70 iterations (Fashion-MNIST 10k) but 12x
# over 422 (all of it), where validation accuracy fell from 93.97% to 85.92% inside the pick.
AUTHORS_PICK_SHRINK = math.exp(0.25)


def push_ceiling(shrink: float, lr: float, momentum: float, start: float, growth: int, hold: int) -> float:
    """The penalty the push phase must grow to (linearly from ``start`` over ``growth`` iterations,
    then held for ``hold``) so that the penalty alone shrinks a filter by ``shrink``.

    SGD with momentum beta on lambda/2 ||w||^2 multiplies w by about exp(-lr * lambda / (1 - beta))
    per iteration once the momentum buffer has built up, so the phase multiplies it by
    exp(-lr / (1 - beta) * ((start + top) / 2 * growth + top * hold)). Solved for ``top``."""
    if shrink <= 1 or lr <= 0 or not 0 <= momentum < 1 or growth + hold < 1:
        raise ValueError("push_ceiling needs shrink > 1, lr > 0, 0 <= momentum < 1 and at least one iteration")
    need = math.log(shrink) * (1 - momentum) / lr
    return max(start, (need - start * growth / 2) / (growth / 2 + hold))


@register_method("greg")
class GReg(_TwoCycle, ChannelMethod):
    """GReg-2 (Wang et al., ICLR 2021) on the one loop, in four phases:

    1. ``epochs`` of dense training (the pre-trained model);
    2. pick (``pick_epochs``): a uniform L2 penalty lambda/2 ||W||^2 on the filters of every
       prunable layer, lambda growing by ``delta`` every ``update_every`` iterations up to
       ``ceiling`` (``delta`` None: reached after 80% of the phase; ``ceiling`` None: the one at
       which the penalty alone shrinks every filter ``pick_shrink``-fold over the phase, by
       default as much as the authors' pick does, :data:`AUTHORS_PICK_SHRINK`). Filters the loss needs
       little (flat Hessian directions) shrink most, so at its end each layer's smallest-L1
       filters are *picked* to go (the authors' "picking" stage);
    3. push (the rest of ``reg_epochs``): the picked filters' penalty keeps growing, the kept
       filters are released (penalty ``recover``), so the picked ones go to ~0 while the network
       adapts to their loss (GReg-1 on the picked set). It grows linearly for 60% of the phase
       and is held for the rest; its top is set so that the penalty alone shrinks a picked filter
       ``push_shrink``-fold (the authors grow it until the kept/picked magnitude ratio reaches
       their limit, over ~10^4 iterations; this phase has ~10^2, so the rate follows from its
       length: :func:`push_ceiling`);
    4. prune the picked filters (the budget is met exactly, as by every row) and fine-tune for
       ``finetune_epochs`` at ``finetune_lr``.

    Both penalty phases run at the constant ``reg_lr`` (default lr/100: the authors' ``lr_prune``
    1e-3 after a 0.1 recipe). Which widths: the authors preset per-layer ratios and pick by L1
    within each layer. Here (``widths="before_reg"``) the per-layer widths are those of the shared
    global partition of the dense model by the run's criterion (Eq. 2), taken when the penalty
    starts; ``widths="after_reg"`` ranks all filters globally by ``criterion`` at the pick.

    Measured on Fashion-MNIST 10k (seed 0): without the push (pruning right after the uniform
    penalty, as this method first did) 82-85%, against prune_finetune's 90.0%: the prune cut
    picked filters that were still live, and one epoch after it every variant sat at 75-76%
    validation accuracy. With the push, the largest picked filter was 0.06x the median kept one at
    the prune, 87.9% one epoch after it, 90.49% at the end (docs/methods_fashion.md).
    """

    options = {"finetune_epochs": None, "finetune_lr": None, "reg_epochs": None, "reg_lr": None,
               "ceiling": None, "pick_shrink": AUTHORS_PICK_SHRINK, "delta": None, "update_every": 10,
               "pick_epochs": None, "push_shrink": 1000.0,
               "recover": 0.0, "criterion": "group_l1", "widths": "before_reg"}

    def setup(self, model, example_inputs, cfg) -> None:
        self.cfg = cfg
        opts = {**self.options, **{k: v for k, v in cfg.method_options.items() if k in self.options}}
        self._cycles(cfg, opts)
        reg = opts["reg_epochs"]
        self.middle_epochs = int(reg) if reg is not None else max(2, round(0.2 * cfg.epochs))
        pick = opts["pick_epochs"]
        self.pick_epochs = int(pick) if pick is not None else max(1, self.middle_epochs // 3)
        # the authors' regularisation stage runs at a fixed lr of 1e-3 (their ``lr_prune``) after a
        # 0.1 recipe: lr/100. At lr/10 the penalty at its ceiling turned each step into a large
        # random rotation of the BN-normalised filters (angular step ~ sqrt(2 lr lambda)): measured
        # on Fashion-MNIST 10k, validation accuracy fell from 90.7% to 38% inside the phase.
        self.middle_lr = float(opts["reg_lr"]) if opts["reg_lr"] is not None else 0.01 * cfg.optim.lr
        if not 1 <= self.pick_epochs < self.middle_epochs:
            raise ValueError(f"greg: reg_epochs ({self.middle_epochs}) must exceed pick_epochs ({self.pick_epochs}) "
                             f"and pick_epochs be >= 1: the pick and the push need an epoch each")
        if (opts["ceiling"] is not None and float(opts["ceiling"]) <= 0) or int(opts["update_every"]) < 1 \
                or float(opts["push_shrink"]) <= 1 or float(opts["pick_shrink"]) <= 1:
            raise ValueError("greg options: ceiling > 0 (or none: from pick_shrink), update_every >= 1, "
                             "pick_shrink > 1 and push_shrink > 1 are required")
        if opts["widths"] not in ("before_reg", "after_reg"):
            raise ValueError(f"greg option widths must be 'before_reg' or 'after_reg', got {opts['widths']!r}")
        super().setup(model, example_inputs, cfg)
        self.criterion = get_criterion(self.opts["criterion"])
        self.pick_epoch = self.dense_epochs + self.pick_epochs
        self.prune_epoch = self.dense_epochs + self.middle_epochs
        self.width_keep: Optional[torch.Tensor] = None   # the per-layer widths (before_reg)
        self.picked: Optional[torch.Tensor] = None       # the channels the pick chose to go
        # the filters (output rows) of every layer that produces a prunable group
        names = {f"{layer}.weight" for g in self.space.groups for layer in g.layers}
        self.reg_params = [n for n, p in model.named_parameters() if n in names and p.dim() > 1]
        self.rows: dict[str, torch.Tensor] = {}          # push: per-filter penalty of each reg param
        self.picked_ratio: Optional[float] = None        # at the prune: how live the pruned filters were
        self.lam, self.reg_steps, self.steps_first_epoch, self.epoch = 0.0, 0, 0, 0

    def bind_data(self, train_dataset, batch_size: int, seed: int) -> None:
        """Check the push before training, with the epoch length the data gives (the run checks
        it again with the iterations it counted, which a sharded loader makes fewer)."""
        saved, self.steps_first_epoch = self.steps_first_epoch, math.ceil(len(train_dataset) / batch_size)
        try:
            self.push_schedule()
            steps = (self.middle_epochs - self.pick_epochs) * self.steps_first_epoch
            beta = self._momentum()
            # heavy-ball SGD shrinks a weight at best by sqrt(beta) per iteration, whatever the penalty
            if beta > 0 and beta ** (steps / 2) * float(self.opts["push_shrink"]) > 1:
                warnings.warn(f"greg: the push has {steps} iterations; SGD with momentum {beta:g} shrinks the picked "
                              f"filters at most ~{beta ** (-steps / 2):.3g}-fold in them (push_shrink "
                              f"{float(self.opts['push_shrink']):g}); they are pruned anyway, raise reg_epochs for a "
                              f"gentler prune")
        finally:
            self.steps_first_epoch = saved

    # -- schedules -------------------------------------------------------------------------------
    def _momentum(self) -> float:
        o = self.cfg.optim
        return float(o.momentum) if o.name == "sgd" else 0.0

    def pick_steps(self) -> int:
        return self.pick_epochs * max(1, self.steps_first_epoch)

    def ceiling(self) -> float:
        """The pick's top penalty: the ``ceiling`` option, or the one at which a penalty growing
        linearly for ``PICK_GROWTH`` of the pick and then held shrinks every filter
        ``pick_shrink``-fold by itself (SGD-with-momentum arithmetic, :func:`push_ceiling`)."""
        if self.opts["ceiling"] is not None:
            return float(self.opts["ceiling"])
        steps = self.pick_steps()
        growth = round(PICK_GROWTH * steps)
        return push_ceiling(float(self.opts["pick_shrink"]), self.middle_lr, self._momentum(), 0.0,
                            growth, steps - growth)

    def delta(self) -> float:
        if self.opts["delta"] is not None:
            return float(self.opts["delta"])
        updates = PICK_GROWTH * self.pick_steps() / int(self.opts["update_every"])
        return self.ceiling() / max(1.0, math.floor(updates))

    def push_schedule(self) -> tuple[int, int, float]:
        """(growth iterations, hold iterations, top penalty) of the push phase."""
        steps = (self.middle_epochs - self.pick_epochs) * max(1, self.steps_first_epoch)
        growth = round(PUSH_GROWTH * steps)
        top = push_ceiling(float(self.opts["push_shrink"]), self.middle_lr, self._momentum(),
                           self.ceiling(), growth, steps - growth)
        if self.middle_lr * top > 1.0:
            raise ValueError(f"greg: the push needs a penalty of {top:.3g} at reg_lr {self.middle_lr:g}, an unstable "
                             f"step; raise reg_epochs or lower push_shrink")
        return growth, steps - growth, top

    def push_penalty(self, step: int) -> float:
        """The picked filters' penalty ``step`` iterations into the push phase."""
        growth, _, top = self.push_schedule()
        start, every = self.ceiling(), int(self.opts["update_every"])
        done = min(1.0, (step // every) * every / max(1, growth))
        return start + (top - start) * done

    def in_reg(self) -> bool:
        return self.dense_epochs <= self.epoch < self.prune_epoch

    # -- phases ----------------------------------------------------------------------------------
    def _row_penalties(self) -> None:
        """Per-filter penalty multipliers of the push: 1 on the picked filters, 0 on the kept."""
        params = dict(self.model.named_parameters())
        rows = {n: torch.zeros(params[n].shape[0], dtype=params[n].dtype, device=params[n].device)
                for n in self.reg_params}
        for (name, dim), pos in removed_positions(self.space, ~self.picked).items():
            if dim == 0 and name in rows:
                rows[name][pos.to(rows[name].device)] = 1.0
        self.rows = rows

    def _pick(self) -> None:
        named = dict(self.model.named_parameters())
        scores = self.criterion(named, self.space)
        keep = self.partition(scores) if self.width_keep is None else \
            self._decided(reselect_within_groups(self.width_keep, scores, self.space.groups))
        self.picked = ~keep.bool()
        self._row_penalties()

    def _picked_ratio(self) -> float:
        """Largest picked filter norm over the median kept one (how live the pruned filters are)."""
        params = dict(self.model.named_parameters())
        picked, kept = [], []
        for n, ind in self.rows.items():
            norms = params[n].detach().flatten(1).norm(dim=1)
            picked.append(norms[ind > 0])
            kept.append(norms[ind == 0])
        picked, kept = torch.cat(picked), torch.cat(kept)
        if not len(picked) or not len(kept):
            return 0.0
        return float(picked.max() / kept.median().clamp_min(1e-30))

    def epoch_start(self, epoch, optimizer) -> dict:
        self.epoch = epoch
        now = epoch == self.prune_epoch and self.final_keep is None
        events, log = [], {}
        if epoch == self.dense_epochs and self.width_keep is None and self.opts["widths"] == "before_reg":
            # the run's saliency (Eq. 2 by default), as prune_finetune ranks the dense model
            named = dict(self.model.named_parameters())
            self.width_keep = self.partition(get_criterion(self.pruning.criterion)(named, self.space))
        if epoch == self.pick_epoch and self.picked is None:
            self._pick()
            growth, hold, top = self.push_schedule()
            events.append(f"greg picked {int(self.picked.sum())} channels to go; push: penalty "
                          f"{self.ceiling():.3g} -> {top:.3g} over {growth} iterations, held {hold}")
        if now:
            self.lam = 0.0
            self.picked_ratio = ratio = self._picked_ratio()
            log["final_prune_picked_ratio"] = ratio
            events.append(f"greg prunes the picked channels: largest picked filter norm {ratio:.2e} x the median kept")
            self.prune(~self.picked, optimizer, epoch)
            self.rows = {}
        stage = "pruned" if self.final_keep is not None else \
            ("push" if self.picked is not None else ("pick" if self.in_reg() else "pretrain"))
        row = self.pruned_row(epoch, now)
        return {**row, "stage": stage, "lambda": self.lam, "events": row.get("events", []) + events,
                "log": {**row.get("log", {}), **log}}

    @torch.no_grad()
    def after_backward(self) -> None:
        if not self.in_reg() or self.final_keep is not None:
            return
        params = dict(self.model.named_parameters())
        recover = float(self.opts["recover"])
        for n in self.reg_params:
            p = params[n]
            if p.grad is None:
                continue
            if self.picked is None:
                if self.lam > 0:
                    p.grad.add_(p.detach(), alpha=self.lam)   # d/dW of lambda/2 ||W||^2, every filter
            else:   # picked filters: the push penalty; kept: ``recover``
                per_row = self.rows[n] * (self.lam - recover) + recover
                p.grad.add_(p.detach() * per_row.view(-1, *([1] * (p.dim() - 1))))

    def after_step(self, optimizer) -> None:
        if self.epoch == 0:
            self.steps_first_epoch += 1
        if self.in_reg():
            self.reg_steps += 1
            if self.picked is None:
                self.lam = growing_penalty(self.reg_steps, self.delta(), int(self.opts["update_every"]),
                                           self.ceiling())
            else:
                self.lam = self.push_penalty(self.reg_steps - self.pick_steps())

    def state_dict(self) -> dict:
        def mask(t):
            return t.to(torch.uint8) if t is not None else torch.zeros(0, dtype=torch.uint8)
        return {**super().state_dict(), "lam": self.lam, "reg_steps": self.reg_steps,
                "steps_first_epoch": self.steps_first_epoch, "width_keep": mask(self.width_keep),
                "picked": mask(self.picked), "picked_ratio": self.picked_ratio}

    def load_state_dict(self, state, optimizer=None) -> None:
        super().load_state_dict(state, optimizer)
        self.lam, self.reg_steps = float(state["lam"]), int(state["reg_steps"])
        self.steps_first_epoch = int(state["steps_first_epoch"])
        widths, picked = state.get("width_keep"), state.get("picked")
        self.width_keep = widths.bool() if widths is not None and len(widths) else None
        self.picked = picked.bool() if picked is not None and len(picked) else None
        self.picked_ratio = state.get("picked_ratio")
        if self.picked is not None and self.final_keep is None:
            self._row_penalties()

    def summary(self) -> dict:
        return {**super().summary(), "final_penalty": self.lam, "final_prune_picked_ratio": self.picked_ratio}
