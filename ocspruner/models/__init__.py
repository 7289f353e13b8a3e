"""Model zoo: build any registered network by name with ``create_model``.

Importing the model modules below runs their ``@register_model`` decorators.
"""

from .registry import create_model, default_input_size, get_classifier, list_models, register_model
from .vit import attention_num_heads
from . import mobilenetv2, resnet_cifar, resnet_imagenet, tiny, vgg, vit  # noqa: F401  (registration)

__all__ = ["create_model", "list_models", "register_model", "default_input_size", "get_classifier",
           "attention_num_heads"]
