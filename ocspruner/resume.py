"""What a training checkpoint holds beyond weights, and whether a run may continue from it.

Two jobs of ``Trainer.resume`` that need no model: the random streams that make a resumed run
bit-exact (the global torch RNG, the training loader's shuffle generator, the augmentation
generator, CUDA's), and the check that the config a run resumes with is the one it ran with.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch

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
