"""The one weight initialisation shared by the model zoo."""
from typing import Optional

import torch.nn as nn


def init_weights(model: nn.Module, linear_std: Optional[float] = None) -> None:
    """Kaiming-normal (fan_out, ReLU gain) convolutions, unit/zero BatchNorm. Linear layers get
    N(0, linear_std) weights and zero bias when ``linear_std`` is given (the VGG and MobileNetV2
    heads); otherwise PyTorch's default Linear init stays (the ResNets)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)
