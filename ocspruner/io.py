"""Loading weights and finished models, with one-line errors for bad files.

* :func:`load_weights` puts a checkpoint's weights into a model: a plain state_dict, one of our
  training checkpoints (``{"model": ...}``) or a final model (``{"state_dict": ...}``). Used for
  the pre-trained start (paper Table 5).
* :func:`load` rebuilds the pruned model of a finished run from ``final_model.pt`` alone: the
  architecture description names the model and the kept channels of every group, so the prune is
  replayed on a fresh model and the tensors are loaded with ``weights_only=True`` (no pickled
  code runs). It needs the model registry and torch-pruning, not the training code: no Trainer,
  data or method object is imported. ``ocspruner export`` writes TorchScript and ONNX files that
  need neither.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn as nn


class CheckpointError(ValueError):
    """A missing, corrupt or foreign checkpoint."""


def read_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist; give the path of a .pt file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path!r} cannot be read ({first[:120]}); is it a torch .pt file "
                              f"saved with tensors only?") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(obj).__name__}, not a state_dict")
    return obj


def extract_state_dict(obj: dict) -> dict:
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            return obj[key]
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise CheckpointError("the checkpoint holds no state_dict (expected tensors, or a 'model'/'state_dict' entry)")


def load_weights(model: nn.Module, path: str) -> None:
    """Load a checkpoint's weights into ``model`` (same architecture), strictly. A pruned model
    (a pruned run's final_model.pt, or a checkpoint after t*) is refused: it has fewer channels."""
    obj = read_checkpoint(path)
    sd = extract_state_dict(obj)
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}   # saved from DDP
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if wrong and all(len(sd[k].shape) == len(own[k].shape) and
                     all(a <= b for a, b in zip(sd[k].shape, own[k].shape)) for k in wrong):
        raise CheckpointError(f"checkpoint {path!r} holds a pruned model ({wrong[0]} has shape "
                              f"{tuple(sd[wrong[0]].shape)}, the unpruned model {tuple(own[wrong[0]].shape)}); "
                              f"--init-from needs an unpruned model's weights: a dense run's final_model.pt or a "
                              f"checkpoint from before t*")
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:2]}" if missing else "") + (f" unexpected {unexpected[:2]}" if unexpected else "") \
            + (f" shape mismatch {wrong[:2]}" if wrong else "")
        raise CheckpointError(f"checkpoint {path!r} does not match this model ({detail.strip()}); "
                              f"was it saved from the same model and number of classes?")
    model.load_state_dict(sd)


def check_device(device) -> torch.device:
    """``device`` as a torch.device, or a one-line ValueError (unknown name, CUDA missing)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available to this torch "
                         f"({torch.__version__}); use device='cpu'")
    return dev


def load(path: str, device: str = "cpu") -> nn.Module:
    """Rebuild the final (pruned) model of a run from its ``final_model.pt``.

    The model expects input normalised as in training: ``architecture["mean"]``/``["std"]`` of the
    same file (see :func:`input_normalisation`)."""
    dev = check_device(device)   # before any work
    obj = read_checkpoint(path)
    arch = obj.get("architecture")
    if not isinstance(arch, dict) or "model" not in arch:
        raise CheckpointError(f"{path!r} has no architecture description; pass a run's final_model.pt")
    damaged = f"{path!r} is damaged or was edited"
    fix = "use the run's checkpoints or best.pt, or train it again"
    try:
        model = _rebuild(arch)
    except CheckpointError as exc:
        raise CheckpointError(f"{path!r}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{damaged}: its architecture description is invalid ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:100] if str(exc) else ''}); {fix}") from None
    sd = extract_state_dict(obj)
    own = model.state_dict()
    missing, unexpected = [k for k in own if k not in sd], [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what} {keys[:2]}" for what, keys in
                           (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if keys)
        raise CheckpointError(f"{damaged}: its tensors do not match its architecture ({detail}); {fix}")
    model.load_state_dict(sd)
    return model.to(dev).eval()


def _rebuild(arch: dict) -> nn.Module:
    """A fresh registry model with the recorded prune replayed (no weights loaded)."""
    from .dependency import ChannelSpace
    from .models import create_model
    from .surgery import prune_to

    model = create_model(arch["model"], num_classes=arch["num_classes"], in_channels=arch["in_channels"],
                         **arch.get("model_options", {}))
    pruning: Optional[dict] = arch.get("pruning")
    if pruning and any(len(kept) < size for (key, size), kept in
                       ((g, pruning["kept"][g[0]]) for g in pruning["groups"])):
        size = arch["image_size"]
        with torch.enable_grad():   # DepGraph traces with autograd; load() is often called under no_grad
            space = ChannelSpace(model, torch.randn(1, arch["in_channels"], size, size))
            if [[g.key, g.size] for g in space.groups] != [list(g) for g in pruning["groups"]]:
                raise CheckpointError("the model's channel groups differ from the saved ones "
                                      "(different ocspruner or torch-pruning version?)")
            prune_to(model, space, space.keep_mask({k: frozenset(v) for k, v in pruning["kept"].items()}))
    return model


def input_normalisation(path: str) -> tuple:
    """``(mean, std)`` per input channel that the model of ``final_model.pt`` was trained with:
    feed it ``(image_in_0_1 - mean) / std`` (None, None when the file does not record them)."""
    arch = read_checkpoint(path).get("architecture") or {}
    return arch.get("mean"), arch.get("std")
