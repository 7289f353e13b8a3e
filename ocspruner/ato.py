"""Auto-Train-Once (ATO), generic over the same DepGraph channel groups as OCSPruner.

The reference ATO code inserts gates by hand and writes FLOPs formulas per architecture. Here:
  * the controller emits one mask entry per channel of every group (the groups' ZIGs);
  * the masked forward pass used to train the controller is done with forward hooks on every
    layer that produces a group's channels (conv/linear/norm outputs are multiplied by the mask);
  * P(w), the FLOPs of the masked model, comes from the analytic cost model evaluated on the
    (straight-through) mask, so R_FLOPs is differentiable with no per-architecture formula;
  * the proximal group-lasso projection (ATO Eq. 3) acts on every parameter slice of a masked
    channel, and the final physical prune uses the same surgery as OCSPruner.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
import torch.nn as nn

from .dependency import _CONV, _CONV_T, _NORM, ChannelSpace
from .methods import ChannelMethod, cost_fields, recovery_epochs, register_method


class _StraightThrough(torch.autograd.Function):
    """Forward: exactly binary (soft > 0.5). Backward: the gradient passes to ``soft`` unchanged.
    (``hard + soft - soft.detach()`` is not exactly binary in floating point.)"""

    @staticmethod
    def forward(ctx, soft):
        return (soft > 0.5).to(soft.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


class Controller(nn.Module):
    """Fixed orthogonal tokens (one per group) -> bi-GRU -> per-group head -> Gumbel-Sigmoid.

    ``offset`` is added to the logits so that the controller starts from the dense network
    (sigmoid(3) = 0.95), as in ATO.
    """

    def __init__(self, group_sizes: list[int], token_dim: int = 64, hidden: int = 128,
                 temperature: float = 0.4, offset: float = 3.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        tokens = torch.empty(len(group_sizes), token_dim)
        nn.init.orthogonal_(tokens, generator=g)
        self.register_buffer("tokens", tokens)
        self.gru = nn.GRU(token_dim, hidden, batch_first=True, bidirectional=True)
        self.heads = nn.ModuleList(nn.Sequential(nn.LayerNorm(2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, c))
                                   for c in group_sizes)
        self.temperature, self.offset = temperature, offset

    def logits(self) -> torch.Tensor:
        h, _ = self.gru(self.tokens.unsqueeze(0))
        return torch.cat([head(h[0, i]) for i, head in enumerate(self.heads)]) + self.offset

    def forward(self, sample: bool = True) -> torch.Tensor:
        """Binary mask in the forward pass, sigmoid gradient in the backward pass (STE)."""
        logits = self.logits()
        if sample:
            u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
            logits = logits + torch.log(u) - torch.log1p(-u)      # logistic = difference of two Gumbels
        return _StraightThrough.apply(torch.sigmoid(logits / self.temperature))

    @torch.no_grad()
    def hard_mask(self) -> torch.Tensor:
        """Deterministic mask (no noise): the architecture the controller currently proposes."""
        return self.logits() > 0


def flops_regularizer(cost: torch.Tensor, dense_cost: float, keep_fraction: float, two_sided: bool = True,
                      tolerance: float = 0.005) -> torch.Tensor:
    """R_FLOPs of ATO Eq. 4 with r = P(w) / P_total and p = ``keep_fraction``.

    ``two_sided=False``: the paper's printed term log(max(r, p) / p), zero at or under budget
    (a controller that undershoots is never pulled back). ``two_sided=True`` (default): the
    released code's term, log(max(r, p + tol) / p) at or above p and log(p / min(r, p - tol))
    below it; within the band of +-tol the term is constant (no gradient)."""
    r = cost / dense_cost
    p = keep_fraction
    if not two_sided:
        return torch.log(torch.clamp(r, min=p) / p)
    if float(r.detach()) >= p:
        return torch.log(torch.clamp(r, min=p + tolerance) / p)
    return torch.log(p / torch.clamp(r, max=p - tolerance))


def shared_thresholds(space: ChannelSpace, channels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per-channel Eq. 3 thresholds shared as in ATO's released code: the channels of group g get
    ``threshold * n_g / N`` (n_g: selected channels of g, N: all selected), so they sum to
    ``threshold`` over the groups. Unselected channels get 0."""
    out = torch.zeros(space.num_channels, dtype=torch.float64)
    total = int(channels.sum())
    if total == 0:
        return out
    for g in space.groups:
        sel = channels[g.offset:g.offset + g.size]
        out[g.offset:g.offset + g.size] = torch.where(sel, threshold * int(sel.sum()) / total, 0.0)
    return out


class ChannelMasker:
    """Multiplies every output of a group's producing layers by a per-channel mask, with hooks."""

    def __init__(self, space: ChannelSpace):
        self.space = space
        self.handles = []
        self.mask: Optional[torch.Tensor] = None

    def __enter__(self):
        for (module, role), (pos, ids) in self.space.layer_maps.items():
            if role != "out" or not isinstance(module, _CONV + _CONV_T + (nn.Linear, nn.MultiheadAttention) + _NORM):
                continue
            channel_dim = -1 if isinstance(module, (nn.Linear, nn.LayerNorm, nn.MultiheadAttention)) else 1
            self.handles.append(module.register_forward_hook(self._hook(pos, ids, channel_dim)))
        return self

    def _hook(self, pos, ids, channel_dim):
        def hook(module, inputs, out):
            if isinstance(out, tuple):   # nn.MultiheadAttention: (output, attention weights)
                return (hook(module, inputs, out[0]),) + tuple(out[1:])
            n = out.shape[channel_dim]
            scale = torch.ones(n, dtype=out.dtype, device=out.device)
            scale = scale.index_put((pos.to(out.device),), self.mask[ids.to(out.device)].to(out.dtype))
            shape = [1] * out.dim()
            shape[channel_dim] = n
            return out * scale.view(shape)
        return hook

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []


@torch.no_grad()
def prox_group_lasso_(model: nn.Module, space: ChannelSpace, channels: torch.Tensor, threshold) -> None:
    """ATO Eq. 3 (proximal operator of the group l2 norm) on each selected channel's group:
    z <- z - t z/||z|| if ||z|| >= t, else 0, where z is ALL of the channel's parameter slices.
    ``threshold``: one t for every channel, or a tensor with one t per channel."""
    if not bool(channels.any()):
        return
    if not torch.is_tensor(threshold):
        if threshold <= 0:
            return
        threshold = torch.full((space.num_channels,), float(threshold), dtype=torch.float64)
    threshold = threshold.to(torch.float64)
    params = dict(model.named_parameters())
    sq = torch.zeros(space.num_channels, dtype=torch.float64)
    entries = []
    for g in space.groups:
        sel_g = channels[g.offset:g.offset + g.size]
        if not bool(sel_g.any()):
            continue
        for s in g.slices:
            mask = sel_g[s.channels]
            if not bool(mask.any()):
                continue
            pos, ch = s.positions[mask], s.channels[mask] + g.offset
            w = params[s.name].detach().index_select(s.dim, pos.to(params[s.name].device))
            per_pos = w.movedim(s.dim, 0).reshape(len(pos), -1).pow(2).sum(1).double().cpu()
            sq.index_add_(0, ch, per_pos)
            entries.append((s.name, s.dim, pos, ch))
    norm = sq.sqrt()
    factor = torch.where(norm >= threshold, 1 - threshold / norm.clamp_min(1e-30), torch.zeros_like(norm))
    for name, dim, pos, ch in entries:
        p = params[name]
        shape = [1] * p.dim()
        shape[dim] = -1
        f = factor[ch].to(p.dtype).to(p.device).view(shape)
        p.data.index_copy_(dim, pos.to(p.device), p.data.index_select(dim, pos.to(p.device)) * f)


def controller_steps(epochs: int, t_start: float, t_end: float) -> tuple[int, int]:
    """Epoch window [start, end) of controller training from fractions of the run."""
    start = int(math.floor(t_start * epochs))
    end = max(start + 1, int(math.ceil(t_end * epochs)))
    return start, end


@torch.no_grad()
def channel_norms(model: nn.Module, space: ChannelSpace) -> torch.Tensor:
    """l2 norm of ALL parameter slices of every channel (weights, biases, norm shifts)."""
    params = dict(model.named_parameters())
    sq = torch.zeros(space.num_channels, dtype=torch.float64)
    for g in space.groups:
        for s in g.slices:
            w = params[s.name].detach().index_select(s.dim, s.positions.to(params[s.name].device))
            sq.index_add_(0, s.channels + g.offset, w.movedim(s.dim, 0).reshape(len(s.positions), -1).pow(2).sum(1).double().cpu())
    return sq.sqrt()


def enforce_floor(mask: torch.Tensor, logits: torch.Tensor, space: ChannelSpace, floor: torch.Tensor) -> torch.Tensor:
    """The mask with every group keeping at least ``floor[g]`` channels: the highest-logit
    masked-out channels of a group below its floor come back (``pruning.max_prune_fraction``,
    and never an empty group)."""
    out = mask.clone()
    for i, g in enumerate(space.groups):
        local = out[g.offset:g.offset + g.size]
        missing = int(floor[i]) - int(local.sum())
        if missing > 0:
            cand = torch.nonzero(~local).flatten()
            best = cand[torch.argsort(logits[g.offset:g.offset + g.size][cand], descending=True)[:missing]]
            local[best] = True
    return out


@torch.no_grad()
def revive_channels_(model: nn.Module, space: ChannelSpace, channels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Make the all-zero channels among ``channels`` trainable again without changing the function.

    A channel whose every slice is zero is a fixed point of training: its filter's gradient
    passes through its consumers' weights, which are zero, and theirs through its activation,
    which is zero. Its output side (filter rows, norm scale/shift, biases: the dim-0 slices) is
    re-drawn at its layer's scale: rows ~ N(0, RMS of the layer's live rows^2), a norm scale at the
    mean of the live ones, shifts and biases 0, BatchNorm running statistics reset. Its consumer
    columns stay zero, so the network computes what it did; their gradient is now not zero.
    Returns the mask of the channels revived."""
    dead = channels.bool() & (channel_norms(model, space) == 0)
    if not bool(dead.any()):
        return dead
    from .surgery import removed_positions

    params, modules = dict(model.named_parameters()), dict(model.named_modules())
    gen = torch.Generator().manual_seed(int(seed))
    for (name, dim), pos in removed_positions(space, ~dead).items():
        if dim != 0:                             # consumer columns stay zero
            continue
        p = params[name]
        pos = pos.to(p.device)
        rows = p.data.flatten(1) if p.dim() > 1 else p.data.view(-1, 1)
        live = torch.ones(p.shape[0], dtype=torch.bool, device=p.device)
        live[pos] = False
        live &= rows.abs().sum(1) > 0
        if p.dim() > 1:
            scale = float(rows[live].pow(2).mean().sqrt()) if bool(live.any()) else 1.0 / math.sqrt(rows.shape[1])
            fresh = torch.randn((len(pos),) + tuple(p.shape[1:]), generator=gen, dtype=p.dtype) * scale
            p.data.index_copy_(0, pos, fresh.to(p.device))
        elif name.endswith("weight"):            # a norm's scale
            p.data[pos] = float(p.data[live].mean()) if bool(live.any()) else 1.0
        else:                                    # shifts and biases
            p.data[pos] = 0.0
        module = modules.get(name.rsplit(".", 1)[0])
        if getattr(module, "running_mean", None) is not None and name.endswith("weight"):
            module.running_mean[pos] = 0.0
            module.running_var[pos] = 1.0
    return dead


@torch.no_grad()
def zero_optimizer_state_(optimizer, model: nn.Module, space: ChannelSpace, keep: torch.Tensor) -> None:
    """Zero the optimizer state (momentum, Adam moments) of the removed channels' slices."""
    from .surgery import removed_positions

    if optimizer is None:
        return
    params = dict(model.named_parameters())
    for (name, dim), pos in removed_positions(space, keep).items():
        for value in optimizer.state.get(params[name], {}).values():
            if torch.is_tensor(value) and value.shape == params[name].shape:
                value.index_fill_(dim, pos.to(value.device), 0.0)


@register_method("ato")
class AutoTrainOnce(ChannelMethod):
    """Auto-Train-Once (ATO paper), generic over DepGraph groups.

    The model trains dense; from T_start to T_end a controller proposes a channel mask every
    epoch and is trained every ``controller_every`` steps on a ``subset`` of the training data,
    with the model in eval mode (BatchNorm statistics untouched), on CE(masked model) +
    gamma * R_FLOPs (ATO Eq. 4; ``flops_term``: ``two_sided`` as the released code, default, or
    ``one_sided`` as printed). From T_w the masked-out channels are projected by ATO Eq. 3 with
    threshold lr * lambda for every masked channel (``threshold: group``, the paper's
    lambda_g = lambda of Eq. 1) or lr * lambda shared by the groups' share of masked channels
    (``threshold: shared``, the released code). At T_end the mask freezes: if it keeps more than
    the budget, the least salient kept channels (``pruning.criterion``, Eq. 2 by
    default) join it; if it removes more than the budget plus ``tolerance``, the most salient
    masked-out channels come back (those Eq. 3 had zeroed are re-drawn on their output side:
    :func:`revive_channels_`); every masked-out channel is set
    to zero with its optimizer state (a dead channel stays dead: its gradient is 0), and the
    remaining epochs (at least ``recovery_fraction`` of the run) train the network that the
    final prune then cuts out exactly. Defaults follow the paper (gamma 4, lambda 10, T_start
    10%, T_end 50%, T_w 20% of the epochs, 5% subset, Adam 1e-3).

    ``pruning.metric`` (flops or params) is the budget of R_FLOPs; ``max_prune_fraction`` is a
    floor on every group's kept channels; ``round_to`` other than 1 is refused (ATO decides
    every channel on its own).
    """

    options = {"gamma": 4.0, "lam": 10.0, "t_start": 0.1, "t_end": 0.5, "t_w": 0.2, "subset": 0.05,
               "controller_lr": 1e-3, "controller_every": 20, "temperature": 0.4, "offset": 3.0,
               "flops_term": "two_sided", "tolerance": 0.005, "threshold": "group"}

    def setup(self, model, example_inputs, cfg) -> None:
        round_to = dict(cfg.method_options).get("round_to", cfg.pruning.round_to)
        if round_to != 1:
            raise ValueError(f"method 'ato' decides every channel on its own: pruning.round_to must be 1, "
                             f"got {round_to}; use method 'ocspruner' for rounded widths")
        super().setup(model, example_inputs, cfg)
        o = self.opts
        if o["flops_term"] not in ("two_sided", "one_sided") or o["threshold"] not in ("group", "shared"):
            raise ValueError(f"ato options: flops_term must be 'two_sided' or 'one_sided' and threshold 'group' or "
                             f"'shared', got {o['flops_term']!r} and {o['threshold']!r}")
        device = next(model.parameters()).device
        self.controller = Controller([g.size for g in self.space.groups], temperature=o["temperature"],
                                     offset=o["offset"], seed=cfg.seed).to(device)
        self.ctrl_opt = torch.optim.Adam(self.controller.parameters(), lr=o["controller_lr"])
        self.c_start, self.c_end = controller_steps(cfg.epochs, o["t_start"], o["t_end"])
        if self.c_end > self.prune_cap():
            raise ValueError(f"ato: the mask freezes at epoch {self.c_end} (t_end={o['t_end']} of {cfg.epochs} epochs), "
                             f"leaving fewer than {recovery_epochs(cfg.epochs, self.recovery_fraction)} recovery epochs "
                             f"(recovery_fraction={self.recovery_fraction}); lower t_end or raise epochs")
        self.t_w = int(round(o["t_w"] * cfg.epochs))
        self.floor = torch.tensor([g.size for g in self.space.groups]) - self.partitioner.caps
        self.mask = torch.ones(self.space.num_channels, dtype=torch.bool)
        self.epoch, self.step, self.frozen, self.freeze_epoch = 0, 0, False, None
        self.ctrl_data = None
        self.final_prune_max_norm: Optional[float] = None
        self.repair_added: Optional[int] = None     # channels the freeze added to the controller's mask
        self.repair_given: Optional[int] = None     # masked-out channels the freeze gave back (over-pruned)

    def bind_data(self, train_dataset, batch_size: int, seed: int) -> None:
        n = len(train_dataset)
        k = max(1, int(round(self.opts["subset"] * n)))
        self.ctrl_data = torch.utils.data.Subset(
            train_dataset, torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))[:k].tolist())
        self.ctrl_batch_size = min(batch_size, k)
        self._ctrl_gen = torch.Generator().manual_seed(seed + 2)
        self._new_pass()

    # The controller's batches: shuffled passes over the subset. The generator state at the start
    # of the current pass and the batches drawn from it are saved, so a resumed run draws the
    # same batches as an uninterrupted one (no data is loaded to get back there).
    def _new_pass(self, state: Optional[torch.Tensor] = None, drawn: int = 0) -> None:
        if state is not None:
            self._ctrl_gen.set_state(state)
        self._pass_state = self._ctrl_gen.get_state()
        order = torch.randperm(len(self.ctrl_data), generator=self._ctrl_gen)
        self._pass = list(order.split(self.ctrl_batch_size))
        self._pass_drawn = drawn

    def _ctrl_batch(self):
        if self._pass_drawn >= len(self._pass):
            self._new_pass()
        idx = self._pass[self._pass_drawn]
        self._pass_drawn += 1
        return torch.utils.data.default_collate([self.ctrl_data[int(i)] for i in idx])

    def _reduction(self, keep: torch.Tensor) -> float:
        return 1 - float(self.cost.evaluate(keep, self.metric)) / self.cost.dense[self.metric]

    def epoch_start(self, epoch, optimizer) -> dict:
        self.epoch = epoch
        events, log = [], {}
        row_keep = self.mask
        if self.c_start <= epoch <= self.c_end and not self.frozen:   # the controller's latest proposal
            with torch.no_grad():
                logits = self.controller.logits().cpu()
            proposal = logits > 0
            self.mask = self._decided(enforce_floor(proposal, logits, self.space, self.floor))
            row_keep = proposal                          # metrics show what the controller proposes
            log = {"proposal_flops_reduction": 1 - float(self.cost.evaluate(proposal, "flops")) / self.cost.dense["flops"],
                   "floor_restored": int((self.mask & ~proposal).sum())}
        if epoch >= self.c_end and not self.frozen:     # T_end: the mask freezes at the budget
            events.append(self.freeze(optimizer, epoch))
            row_keep = self.mask
        stage = "search" if epoch < self.c_start else ("controller" if epoch < self.c_end else "frozen")
        return {"stage": stage, **cost_fields(self.cost, row_keep), "log": log, "events": events,
                "lambda": self.opts["lam"] if epoch >= self.t_w else 0.0}

    def freeze(self, optimizer, epoch: int) -> str:
        """Fix the mask at the budget and zero its masked-out channels (see the class doc)."""
        from .importance import get_criterion
        from .surgery import zero_pruned_

        keep = proposed = self.mask.clone()
        over = self._reduction(keep) > self.target + float(self.opts["tolerance"])   # the controller's own band
        if over or float(self.cost.evaluate(keep, self.metric)) > self.partitioner.dense_cost * (1 - self.target) * (1 + 1e-9):
            # the budget repair, both ways: the partition at the target removes the masked-out channels
            # first, by Eq. 2 saliency; short of the budget it adds the least salient masked-in ones,
            # past it (measured: 54.7% FLOPs removed on a 50% budget, Fashion-MNIST seed 1) it gives
            # back the most salient masked-out ones
            scores = get_criterion(self.pruning.criterion)(dict(self.model.named_parameters()), self.space)
            scores = scores + torch.where(keep, scores.max() + 1.0, torch.zeros_like(scores))   # masked-out go first
            keep = self.partitioner.partition(scores, self.target).keep
        keep = self._decided(keep)
        norms = channel_norms(self.model, self.space)[~keep]
        live = norms[norms > 0]
        zero_pruned_(self.model, self.space, keep)
        zero_optimizer_state_(optimizer, self.model, self.space, keep)
        # channels given back that Eq. 3 had already zeroed would stay dead: re-draw their output side
        revived = revive_channels_(self.model, self.space, ~proposed & keep, seed=self.cfg.seed)
        zero_optimizer_state_(optimizer, self.model, self.space, ~revived)
        self.mask, self.frozen, self.freeze_epoch = keep, True, epoch
        got = self._reduction(keep)
        self.repair_added = int((proposed & ~keep).sum())
        self.repair_given = int((~proposed & keep).sum())
        msg = (f"mask frozen at epoch {epoch}: {int((~keep).sum())} channels out ({self.repair_added} added to and "
               f"{self.repair_given} given back ({int(revived.sum())} of them all-zero, re-drawn) from the controller's by "
               f"the budget repair; it proposed "
               f"{self._reduction(proposed):.2%}), {got:.2%} {self.metric} removed "
               f"(target {self.target:.2%}); {len(live)} still-live channels zeroed (max norm "
               f"{float(live.max()) if len(live) else 0.0:.3g}); {self.cfg.epochs - epoch} epochs to recover")
        if self.repair_added > 0.5 * int((~keep).sum()):
            warnings.warn(f"ATO's controller proposed only {int((~proposed).sum())} of the {int((~keep).sum())} channels "
                          f"the budget needs; the freeze chose the other {self.repair_added} by Eq. 2 saliency. Give the "
                          f"controller more updates (method option controller_every, or a longer t_start..t_end)")
            msg += "; CONTROLLER SHORT of the budget (see the warning)"
        if abs(got - self.target) > 0.01:
            warnings.warn(f"ATO misses the budget: {got:.2%} of {self.metric} removed for a target of {self.target:.2%} "
                          f"(controller undershoot; try a larger gamma or the two-sided flops_term)")
            msg += f"; BUDGET MISSED by {100 * (got - self.target):+.2f} points"
        return msg

    def after_step(self, optimizer) -> None:
        self.step += 1
        if self.epoch >= self.t_w:                     # ATO Eq. 3 on the masked-out channels
            t = float(optimizer.param_groups[0]["lr"]) * self.opts["lam"]
            if self.opts["threshold"] == "shared":
                t = shared_thresholds(self.space, ~self.mask, t)
            prox_group_lasso_(self.model, self.space, ~self.mask, t)
        if self.ctrl_data is not None and self.c_start <= self.epoch < self.c_end \
                and self.step % self.opts["controller_every"] == 0:
            self.controller_step()

    def controller_step(self) -> float:
        """One controller update, ATO Eq. 4: CE of the masked model (in eval mode: BatchNorm
        uses and keeps its running statistics) + gamma * R_FLOPs."""
        x, y = self._ctrl_batch()
        device = next(self.model.parameters()).device
        x, y = x.to(device), y.to(device)
        mask = self.controller(sample=True)
        masker = ChannelMasker(self.space)
        masker.mask = mask
        was = self.model.training
        self.model.eval()
        try:
            with masker:
                ce = torch.nn.functional.cross_entropy(self.model(x), y)
        finally:
            self.model.train(was)
        cost = self.cost.evaluate(mask.double().cpu(), self.metric)
        reg = flops_regularizer(cost, self.cost.dense[self.metric], 1 - self.target,
                                two_sided=self.opts["flops_term"] == "two_sided", tolerance=self.opts["tolerance"])
        loss = ce + self.opts["gamma"] * reg.to(ce.dtype).to(ce.device)
        grads = torch.autograd.grad(loss, list(self.controller.parameters()), allow_unused=True)
        for p, g in zip(self.controller.parameters(), grads):
            p.grad = g
        self.ctrl_opt.step()
        self.ctrl_opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def on_train_end(self, optimizer) -> None:
        if not self.frozen:                              # only when driven by hand past T_end
            self.freeze(optimizer, self.epoch)
        norms = channel_norms(self.model, self.space)[~self.mask]
        self.final_prune_max_norm = float(norms.max()) if len(norms) else 0.0
        if self.final_prune_max_norm > 1e-6:
            warnings.warn(f"ATO's final prune removes live channels (norm up to {self.final_prune_max_norm:.3g})")
        self.prune(self.mask, [optimizer], self.freeze_epoch)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "controller": self.controller.state_dict(), "ctrl_opt": self.ctrl_opt.state_dict(),
                "mask": self.mask.to(torch.uint8), "step": self.step, "frozen": self.frozen,
                "freeze_epoch": -1 if self.freeze_epoch is None else self.freeze_epoch,
                "repair_added": -1 if self.repair_added is None else self.repair_added,
                "repair_given": -1 if self.repair_given is None else self.repair_given,
                **({"ctrl_pass_state": self._pass_state, "ctrl_pass_drawn": self._pass_drawn}
                   if self.ctrl_data is not None else {})}

    def load_state_dict(self, state, optimizer=None) -> None:
        super().load_state_dict(state, optimizer)
        self.controller.load_state_dict(state["controller"])
        self.ctrl_opt.load_state_dict(state["ctrl_opt"])
        self.mask, self.step, self.frozen = state["mask"].bool(), int(state["step"]), bool(state.get("frozen", False))
        self.freeze_epoch = None if state.get("freeze_epoch", -1) < 0 else int(state["freeze_epoch"])
        self.repair_added = None if state.get("repair_added", -1) < 0 else int(state["repair_added"])
        self.repair_given = None if state.get("repair_given", -1) < 0 else int(state["repair_given"])
        if self.ctrl_data is not None and "ctrl_pass_state" in state:
            self._new_pass(state["ctrl_pass_state"], int(state["ctrl_pass_drawn"]))

    def summary(self) -> dict:
        out = super().summary()
        return {**out, "t_star": self.freeze_epoch, "final_prune_max_norm": self.final_prune_max_norm,
                "repair_added": self.repair_added, "repair_given": self.repair_given,
                "budget_miss": (1 - out["final_" + self.metric] / out["dense_" + self.metric]) - self.target}


__all__ = ["Controller", "ChannelMasker", "flops_regularizer", "shared_thresholds", "prox_group_lasso_",
           "controller_steps", "channel_norms", "enforce_floor", "revive_channels_", "AutoTrainOnce"]
