"""MobileNetV2 (Sandler et al., 2018) for ImageNet and CIFAR.

Inverted residual block: 1x1 expansion conv (skipped when the expansion factor
is 1), 3x3 depthwise conv (groups = channels), 1x1 linear projection, each
followed by BatchNorm; ReLU6 after the first two only. The residual add is used
when stride is 1 and input and output widths match. The depthwise conv ties its
input and output channels together, which torch-pruning handles as one group.

``mobilenetv2`` is the ImageNet layout (224x224 input, stride-2 stem, ~300M
MACs). ``mobilenetv2_cifar`` is the common CIFAR adaptation for 32x32 input:
the stem and the first stride-2 stage (24 channels) use stride 1, so the
network downsamples 8x instead of 32x and ends on a 4x4 map. Both have width
1.0 by default, a 1x1 conv to 1280 channels, global average pooling, optional
dropout (``dropout`` kwarg) and ``model.classifier``, a single Linear
(``model.classifier_name == "classifier"``; dropout is a separate module so the
classifier is the Linear itself).
"""

import torch
import torch.nn as nn

from .init import init_weights
from .registry import register_model

# expansion t, output channels c, repeats n, stride of the first block s
IMAGENET_CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
CIFAR_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of 8 without dropping more than 10%."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    layers = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_residual = stride == 1 and in_ch == out_ch
        layers = []
        if expand_ratio != 1:
            layers.append(conv_bn(in_ch, hidden, 1))
        layers.append(conv_bn(hidden, hidden, 3, stride, groups=hidden))  # depthwise
        layers.append(conv_bn(hidden, out_ch, 1, act=False))  # linear bottleneck
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    classifier_name = "classifier"

    def __init__(self, cfg: list, stem_stride: int, num_classes: int = 10, in_channels: int = 3,
                 width_mult: float = 1.0, last_channels: int = 1280, dropout: float = 0.0):
        super().__init__()
        channels = _make_divisible(32 * width_mult)
        # like the paper, the last conv is never made narrower than 1280
        last = _make_divisible(last_channels * max(1.0, width_mult))
        features = [conv_bn(in_channels, channels, 3, stem_stride)]
        for t, c, n, s in cfg:
            out_ch = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(channels, out_ch, s if i == 0 else 1, t))
                channels = out_ch
        features.append(conv_bn(channels, last, 1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last, num_classes)

        init_weights(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


@register_model("mobilenetv2", input_size=224)
def mobilenetv2(num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                dropout: float = 0.2) -> MobileNetV2:
    return MobileNetV2(IMAGENET_CFG, 2, num_classes, in_channels, width_mult, dropout=dropout)


@register_model("mobilenetv2_cifar")
def mobilenetv2_cifar(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0,
                      dropout: float = 0.0) -> MobileNetV2:
    return MobileNetV2(CIFAR_CFG, 1, num_classes, in_channels, width_mult, dropout=dropout)
