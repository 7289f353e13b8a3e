"""CIFAR VGG-16 / VGG-19 with BatchNorm (Simonyan & Zisserman 2015, configs D and E).

Body: 13 (VGG-16) or 16 (VGG-19) conv3x3 + BN + ReLU layers in five stages of
64, 128, 256, 512, 512 channels, each stage ended by a 2x2 max-pool, so a 32x32
image reaches the head as a 512 x 1 x 1 map.

Head: the ImageNet VGG's three large fully connected layers are dropped, as in
the CIFAR pruning literature (network slimming, Liu et al. 2017; DepGraph, Fang
et al. 2023): global average pooling, flatten, and a single
``Linear(512, num_classes)``. At 32x32 the pool just reshapes the 1x1 map; the
adaptive pool also keeps the model usable at other input sizes. Nearly all MACs
are in the convs, so the pruning budget is dominated by them.

Input must be at least 32x32 (five halvings); pad or resize 28x28 images such
as Fashion-MNIST to 32x32. The final classifier is ``model.classifier``
(``model.classifier_name == "classifier"``).
"""

import torch
import torch.nn as nn

from .init import init_weights
from .registry import register_model

# numbers are conv output channels, "M" is a 2x2 max-pool
CONFIGS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    classifier_name = "classifier"

    def __init__(self, cfg: list, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0):
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult!r}")
        layers = []
        channels = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                # a narrower VGG (width_mult < 1) keeps the depth and stage layout: CPU-scale runs
                v = max(1, int(round(v * width_mult)))
                layers += [
                    nn.Conv2d(channels, v, 3, padding=1, bias=False),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

        init_weights(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("vgg16")
def vgg16(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> VGG:
    return VGG(CONFIGS["vgg16"], num_classes, in_channels, width_mult)


@register_model("vgg19")
def vgg19(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> VGG:
    return VGG(CONFIGS["vgg19"], num_classes, in_channels, width_mult)
