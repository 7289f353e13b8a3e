"""A tiny timm-style model registry.

Model files register a factory with ``@register_model("name")``; callers build
models by name with ``create_model("name", num_classes=..., in_channels=...)``.
Keeping the mapping in one dict lets the CLI and configs refer to models by a
string without importing each model module by hand.

Every factory takes ``num_classes`` and ``in_channels`` (input image channels,
e.g. 1 for Fashion-MNIST, 3 for CIFAR/ImageNet) plus model-specific keyword
arguments. Every model sets ``model.classifier_name`` to the dotted name of its
final ``nn.Linear`` so pruning code can exclude it from channel pruning (its
output size is the number of classes and must not change); use
``get_classifier(model)`` to fetch that module.
"""

from typing import Callable, Dict, List

import torch.nn as nn

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
_INPUT_SIZES: Dict[str, int] = {}


def register_model(name: str, input_size: int = 32):
    """Decorator that adds a model factory to the registry under ``name``.

    ``input_size`` is the square image side the architecture is designed for
    (32 for CIFAR-style networks, 224 for ImageNet-style ones); it is what
    ``default_input_size`` reports and what FLOPs budgets are measured at.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model '{name}' is already registered")
        _MODELS[name] = fn
        _INPUT_SIZES[name] = input_size
        return fn

    return decorator


def _check_name(name: str) -> None:
    if name not in _MODELS:
        raise ValueError(f"unknown model '{name}'; choose one of: {', '.join(list_models())}")


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build the registered model ``name``; extra kwargs go to its factory."""
    _check_name(name)
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


def list_models() -> List[str]:
    """Sorted names of all registered models."""
    return sorted(_MODELS)


def default_input_size(name: str) -> int:
    """Square input side the model is designed for (32 CIFAR-style, 224 ImageNet-style)."""
    _check_name(name)
    return _INPUT_SIZES[name]


def get_classifier(model: nn.Module) -> nn.Module:
    """Return the final classifier layer named by ``model.classifier_name``."""
    return model.get_submodule(model.classifier_name)
