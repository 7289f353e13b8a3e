"""Two very small networks for fast tests of the pruning machinery.

``tiny_convnet`` packs the structures that make dependency-graph pruning hard
into a few thousand parameters: a residual add (channels coupled across the
skip), a stride-2 conv, a depthwise conv (input and output channels tied) and
a Linear after global pooling. It runs in milliseconds at 16x16 or 32x32.

``attention_block`` is the transformer counterpart: conv patch embedding
(kernel 4, stride 4, 32 channels), one pre-norm block with qkv-Linear attention
(4 heads) and an MLP with 64 hidden units, mean over tokens, and a Linear.

Both expose ``model.classifier`` (``model.classifier_name == "classifier"``).
"""

import torch
import torch.nn as nn

from .registry import register_model
from .vit import Block, init_transformer_weights


class TinyConvNet(nn.Module):
    classifier_name = "classifier"

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(8), nn.ReLU())
        self.res_conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.res_bn1 = nn.BatchNorm2d(8)
        self.res_conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.res_bn2 = nn.BatchNorm2d(8)
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
                                nn.BatchNorm2d(16), nn.ReLU())
        self.pw = nn.Conv2d(16, 16, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        out = self.relu(self.res_bn1(self.res_conv1(x)))
        x = self.relu(x + self.res_bn2(self.res_conv2(out)))
        x = self.pw(self.dw(self.down(x)))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


class AttentionNet(nn.Module):
    classifier_name = "classifier"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dim: int = 32,
                 num_heads: int = 4, mlp_hidden: int = 64):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, 4, stride=4)
        self.block = Block(dim, num_heads, mlp_hidden)
        self.classifier = nn.Linear(dim, num_classes)
        init_transformer_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        x = self.block(x)
        return self.classifier(x.mean(dim=1))


@register_model("tiny_convnet")
def tiny_convnet(num_classes: int = 10, in_channels: int = 3) -> TinyConvNet:
    return TinyConvNet(num_classes, in_channels)


@register_model("attention_block")
def attention_block(num_classes: int = 10, in_channels: int = 3, **kwargs) -> AttentionNet:
    """kwargs: dim=32, num_heads=4, mlp_hidden=64."""
    return AttentionNet(num_classes, in_channels, **kwargs)
