"""What a training checkpoint holds, and how a run continues from it (``Trainer.resume``).

Besides model, optimizer and method state: the random streams that make a resumed run bit-exact
(the global torch RNG, the training loader's shuffle generator, the augmentation generator,
CUDA's), the run's clocks and best epoch, and the config, which a run must resume with unchanged
(``config_mismatch``; keys that cannot change the result excepted).
"""
from __future__ import annotations

import json
from typing import Mapping, Optional

import torch

from . import distributed

# config keys that may differ between a run and its resumption (they do not change the result)
RESUME_FREE = frozenset({"progress", "threads", "device", "compile", "out_dir", "name", "checkpoint_every",
                         "keep_checkpoints", "export"})
# dict-valued keys that are options passed through whole, compared as one value
_OPAQUE = ("options", "model_options", "method_options")


def flatten_config(tree: Mapping, prefix: str = "") -> dict:
    """``{"data": {"subset": 5}}`` -> ``{"data.subset": 5}``; option dicts stay one value."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v) and k not in _OPAQUE:
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_mismatch(current: Mapping, saved: Mapping, defaults: Mapping) -> Optional[str]:
    """The first config key (flattened) at which a run may not resume, with both values, or None.

    A key the checkpoint's code did not have yet ran with its default: a checkpoint written
    before a release added a key resumes as long as this run keeps that key at its default."""
    mine, theirs = flatten_config(current), flatten_config(saved)
    theirs = {**{k: v for k, v in flatten_config(defaults).items() if k not in theirs and k in mine}, **theirs}
    diff = sorted(k for k in set(mine) | set(theirs)
                  if k.split(".")[0] not in RESUME_FREE and mine.get(k) != theirs.get(k))
    if not diff:
        return None
    return f"'{diff[0]}' ({theirs.get(diff[0])!r} saved, {mine.get(diff[0])!r} now)"


class RngStreams:
    """The random streams of one training process, captured and restored as one state dict."""

    def __init__(self, generators: Mapping[str, torch.Generator]):
        self.generators = dict(generators)

    @classmethod
    def of(cls, train_loader, train_dataset) -> "RngStreams":
        """The loader's shuffle generator and the first augmentation generator found down the
        (possibly wrapped: Subset, ...) training dataset."""
        gens = {"loader": getattr(train_loader, "generator", None)}
        ds = train_dataset
        while ds is not None and "augment" not in gens:
            if isinstance(getattr(ds, "generator", None), torch.Generator):
                gens["augment"] = ds.generator
            ds = getattr(ds, "dataset", None)
        return cls({k: g for k, g in gens.items() if g is not None})

    def state(self) -> dict:
        state = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in self.generators.items()}}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def restore(self, state: Mapping) -> None:
        """Back to ``state``; a stream the state does not hold is left as it is."""
        if "torch" in state:
            torch.set_rng_state(state["torch"])
        for key, gen in self.generators.items():
            if key in state:
                gen.set_state(state[key])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def reseed(self, seed: int) -> None:
        """A different data-order/augmentation stream (another process of a multi-process run)."""
        for gen in self.generators.values():
            gen.manual_seed(seed)


# -- a Trainer's checkpoint -------------------------------------------------------------------
CHECKPOINT_KEYS = frozenset({"epoch", "model", "optimizer", "method", "config"})


def checkpoint_state(trainer, epoch: int) -> dict:
    """The checkpoint of ``trainer``'s process after ``epoch`` (collective under torchrun: every
    process's random streams are gathered, each has its own augmentation stream)."""
    rng = trainer.rng.state()
    state = {"epoch": epoch, "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
             "method": trainer.method.state_dict(), "config": trainer.cfg.to_dict(), "best": dict(trainer.best),
             "elapsed": trainer.elapsed, "cpu_elapsed": trainer.cpu_elapsed, "time_to_prune": trainer.time_to_prune,
             "rng": rng}
    if trainer.dist.enabled:
        state["rng_ranks"] = distributed.all_gather_object(rng)
    return state


def restore(trainer, checkpoint: Optional[str] = None) -> int:
    """Put ``trainer`` back at the newest readable checkpoint of its run directory (or at
    ``checkpoint``) and return the epoch training continues from. The method's state goes first:
    a run that had pruned replays its prune on the fresh full-size model, so the pruned weights
    and the optimizer's state then load as saved. Metrics rows after the checkpoint are dropped
    (those epochs are trained again)."""
    from .config import RunConfig
    from .io import CheckpointError, read_checkpoint
    from .rundir import RunDir

    main = trainer.dist.is_main
    if main and trainer.rundir.is_finished() and checkpoint is None:
        raise CheckpointError(f"{trainer.run_dir!r} is a finished run, there is nothing to resume; export, bench or "
                              f"report it, or start a new run")
    path, state = None, None
    if main:
        path, state = (checkpoint, None) if checkpoint else trainer.ckpt.read_newest()
    path = distributed.broadcast_object(path)   # every rank loads rank 0's pick
    if state is None:
        state = read_checkpoint(path)
    if not CHECKPOINT_KEYS <= set(state):
        raise CheckpointError(f"{path!r} is not an ocspruner training checkpoint")
    mismatch = config_mismatch(trainer.cfg.to_dict(), state["config"], RunConfig().to_dict())
    if mismatch:
        raise CheckpointError(f"cannot resume: the config differs from the checkpoint's at {mismatch}; "
                              f"resume with the run's own config")
    try:
        trainer.method.load_state_dict(state["method"], [trainer.optimizer])
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path!r} does not fit this run ({str(exc).splitlines()[0][:120]})") from None
    per_rank = state.get("rng_ranks")
    dist = trainer.dist
    rng = per_rank[dist.rank] if per_rank and len(per_rank) == dist.world_size else state.get("rng", {})
    trainer.rng.restore(rng)
    trainer.start_epoch = int(state["epoch"]) + 1
    trainer.best = dict(state.get("best", trainer.best))
    trainer.elapsed = float(state.get("elapsed", 0.0))
    trainer.cpu_elapsed = float(state.get("cpu_elapsed", 0.0))
    trainer.time_to_prune = state.get("time_to_prune")
    if main and trainer.rundir.exists(RunDir.METRICS):
        kept = [row for row in trainer.rundir.metrics() if row.get("epoch", -1) < trainer.start_epoch]
        trainer.rundir.write_text(RunDir.METRICS, "".join(json.dumps(row) + "\n" for row in kept))
    return trainer.start_epoch
