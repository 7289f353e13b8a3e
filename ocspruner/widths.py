"""Module attributes that store a width, kept in step with the pruned layers.

Many model definitions reshape with a width they stored at construction (torchvision's
VisionTransformer: ``x.reshape(n, self.hidden_dim, -1)``; timm: ``embed_dim``, ``num_features``,
``head_dim``). Pruning shrinks the layers but not the integers, and the forward pass breaks. Before
pruning, each registered attribute is tied to a *witness*: the first layer dimension at or below
its module that has the same value (a patch-embedding conv's outputs, a LayerNorm's width, a
bare parameter's last dimension, ...). After pruning the attribute takes the witness's new value.

``register_width_attribute(name)`` adds a name; ``head_dim`` is derived as the attention's inner
width divided by ``num_heads`` (both may have changed).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch.nn as nn

WIDTH_ATTRIBUTES = ["hidden_dim", "embed_dim", "num_features", "embed_dims", "dim", "d_model", "hidden_size"]


def register_width_attribute(name: str) -> None:
    """Keep ``module.<name>`` (an int) equal to the width it was equal to before pruning."""
    if name not in WIDTH_ATTRIBUTES:
        WIDTH_ATTRIBUTES.append(name)


def _dims(module) -> list[tuple[str, Callable[[], int]]]:
    """(label, current value) of every channel dimension a module holds itself."""
    out = []
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                           nn.ConvTranspose3d)):
        out += [("out", lambda m=module: m.out_channels), ("in", lambda m=module: m.in_channels)]
    elif isinstance(module, nn.Linear):
        out += [("out", lambda m=module: m.out_features), ("in", lambda m=module: m.in_features)]
    elif isinstance(module, nn.LayerNorm):
        out.append(("ln", lambda m=module: int(m.normalized_shape[-1])))
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        out.append(("bn", lambda m=module: m.num_features))
    elif isinstance(module, nn.MultiheadAttention):
        out.append(("mha", lambda m=module: m.embed_dim))
    if not type(module).__module__.startswith("torch.nn"):   # bare parameters (cls token, positions)
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() >= 1:
                out.append((pname, lambda m=module, n=pname: int(getattr(m, n).shape[-1])))
    return out


def _witness(module: nn.Module, value: int) -> Optional[Callable[[], int]]:
    for sub in module.modules():
        for _, get in _dims(sub):
            if get() == value:
                return get
    return None


def stored_widths(model: nn.Module) -> list[tuple[nn.Module, str, Callable[[], int]]]:
    """(module, attribute, witness) for every registered width attribute in ``model``; call
    BEFORE pruning."""
    found = []
    for m in model.modules():
        for attr in WIDTH_ATTRIBUTES:
            v = getattr(m, attr, None)
            if isinstance(v, int) and not isinstance(v, bool) and v > 1 and attr not in m._modules:
                get = _witness(m, v)
                if get is not None:
                    found.append((m, attr, get))
        if isinstance(getattr(m, "head_dim", None), int) and isinstance(getattr(m, "num_heads", None), int) \
                and not isinstance(m, nn.MultiheadAttention):
            proj = getattr(m, "proj", None)
            if isinstance(proj, nn.Linear) and proj.in_features == m.head_dim * m.num_heads:
                found.append((m, "head_dim", lambda m=m: m.proj.in_features // max(1, m.num_heads)))
    return found


def apply_widths(found) -> list[tuple[str, int, int]]:
    """Set every recorded attribute to its witness's current value; returns what changed."""
    changed = []
    for m, attr, get in found:
        new, old = int(get()), getattr(m, attr)
        if new != old:
            setattr(m, attr, new)
            changed.append((type(m).__name__, attr, old, new))
    return changed
