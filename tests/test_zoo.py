"""Hand-built equivalents of common torchvision/timm blocks through the engine (issue 5 zoo,
first part): each is pruned to 50% FLOPs; the target is hit, costs equal the physical count,
the pruned model runs forward and trains, and (channel-wise layers) pruned == masked output."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from ocspruner import OCSPruner
from ocspruner.dependency import _CONV, _NORM
from ocspruner.surgery import prune_to


class DenseNetBlock(nn.Module):
    """DenseNet: every layer's output is concatenated to its input (a consumer of a concat holds
    channels of several groups in one dimension)."""

    def __init__(self, k=8):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.l1 = nn.Sequential(nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, k, 3, padding=1))
        self.l2 = nn.Sequential(nn.BatchNorm2d(16 + k), nn.ReLU(), nn.Conv2d(16 + k, k, 3, padding=1))
        self.trans = nn.Sequential(nn.BatchNorm2d(16 + 2 * k), nn.ReLU(), nn.Conv2d(16 + 2 * k, 16, 1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.bn0(self.stem(x))
        x = torch.cat([x, self.l1(x)], 1)
        x = torch.cat([x, self.l2(x)], 1)
        return self.fc(F.adaptive_avg_pool2d(self.trans(x), 1).flatten(1))


class SqueezeExcite(nn.Module):
    """MobileNetV3/EfficientNet-style squeeze-excitation gate multiplying the feature map."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.se1, self.se2 = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
        self.c2, self.fc = nn.Conv2d(32, 32, 3, padding=1), nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.c1(x)))
        w = torch.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(x, 1)))))
        return self.fc(F.adaptive_avg_pool2d(self.c2(x * w), 1).flatten(1))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt: depthwise 7x7, LayerNorm in channels-last layout, Linear MLP, residual."""

    def __init__(self, d=32):
        super().__init__()
        self.stem = nn.Conv2d(3, d, 4, stride=4)
        self.dw, self.ln = nn.Conv2d(d, d, 7, padding=3, groups=d), nn.LayerNorm(d)
        self.pw1, self.pw2, self.fc = nn.Linear(d, 4 * d), nn.Linear(4 * d, d), nn.Linear(d, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.pw2(F.gelu(self.pw1(self.ln(self.dw(x).permute(0, 2, 3, 1))))).permute(0, 3, 1, 2)
        return self.fc((x + y).mean((2, 3)))


class GroupNormNet(nn.Module):
    """GroupNorm(4, 32) after each conv: a kept width must stay a multiple of num_groups."""

    def __init__(self):
        super().__init__()
        self.c1, self.gn1 = nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(4, 32)
        self.c2, self.gn2 = nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(4, 32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.gn2(self.c2(F.relu(self.gn1(self.c1(x))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# channelwise: zeroing a channel equals removing it (no norm across channels); slack: how far
# above the target one legal step can land (GroupNorm removes 4 of 32 channels at a time)
@pytest.mark.parametrize("ctor,channelwise,slack", [(DenseNetBlock, True, 0.02), (SqueezeExcite, True, 0.02),
                                                    (ConvNeXtBlock, False, 0.02), (GroupNormNet, False, 0.05)])
def test_block_pruned_to_half_flops(ctor, channelwise, slack):
    model = ctor().eval()
    ex = torch.randn(1, 3, 32, 32)
    pruner = OCSPruner(model, ex, target=0.5, max_prune_fraction=0.9)
    part = pruner.partition()
    assert 0.5 <= part.reduction <= 0.5 + slack
    for g in pruner.space.groups:
        kept = int(part.keep[g.offset:g.offset + g.size].sum())
        assert kept == g.size or kept % g.step == 0
    if ctor is GroupNormNet:
        assert {g.step for g in pruner.space.groups} == {4}
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    masked = pruner.masked_model(part.keep).eval().double()
    per_layer = pruner.cost_model.per_layer(part.keep)
    params = float(pruner.cost_model.evaluate(part.keep, "params"))
    prune_to(model, pruner.space, part.keep)
    with torch.no_grad():
        diff = (masked(x) - model.double()(x)).abs().max().item()
    model.float()
    if channelwise:
        assert diff <= 1e-5
    _, counted_params, lf, _ = tp.utils.count_ops_and_params(model, ex, layer_wise=True)
    names = {m: n for n, m in model.named_modules()}
    for m, v in lf.items():
        if isinstance(m, _CONV + (nn.Linear,) + _NORM) and v is not None:
            assert per_layer[names[m]] == pytest.approx(v), names[m]
    assert params == counted_params
    model.train()
    loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(0, 10, (4,)))
    loss.backward()
    assert torch.isfinite(loss)


def test_attention_heads_pruned_as_units_and_num_heads_updated():
    from ocspruner.models import create_model

    model = create_model("vit_tiny_cifar", dim=48, depth=2, num_heads=3).eval()
    ex = torch.randn(1, 3, 32, 32)
    pruner = OCSPruner(model, ex, target=0.5, max_prune_fraction=0.9,
                       criterion=lambda params, space: torch.arange(space.num_channels, dtype=torch.float64))
    heads = [g for g in pruner.space.groups if g.key.endswith(":heads")]
    assert [g.key for g in heads] == ["blocks.0.attn:heads", "blocks.1.attn:heads"]
    keep = torch.ones(pruner.space.num_channels, dtype=torch.bool)
    keep[heads[0].offset + 1] = False                    # drop head 1 of block 0
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    masked = pruner.masked_model(keep).eval().double()
    flops = pruner.cost_model.per_layer(keep)
    prune_to(model, pruner.space, keep)
    attn = model.blocks[0].attn
    assert attn.num_heads == 2 and attn.qkv.out_features == 3 * 32 and attn.proj.in_features == 32
    assert model.blocks[1].attn.num_heads == 3
    with torch.no_grad():
        assert (masked(x) - model.double()(x)).abs().max() <= 1e-6
    model.float()
    _, _, lf, _ = tp.utils.count_ops_and_params(model, ex, layer_wise=True)
    assert flops["blocks.0.attn.qkv"] == pytest.approx(lf[attn.qkv])


def test_vit_pruned_by_ocspruner_end_to_end(tmp_path):
    """Issue 5: a small ViT through the whole one-cycle loop (heads, MLP and embedding groups)."""
    from ocspruner.config import load_config
    from ocspruner.trainer import Trainer

    cfg = load_config(None, updates={
        "model": "vit_tiny_cifar", "model_options": {"dim": 48, "depth": 2, "num_heads": 3},
        "data.name": "synthetic", "data.image_size": 32, "data.batch_size": 32,
        "data.options": {"num_samples": 64, "num_test": 32, "num_classes": 4}, "progress": False, "threads": 1,
        "optim.name": "adamw", "optim.lr": 1e-3, "optim.weight_decay": 0.05, "epochs": 6,
        "pruning.window": 2, "pruning.offset": 1, "pruning.tau": 1.0, "pruning.epsilon": 0.02,
        "pruning.lambda0": 0.5, "pruning.delta": 0.5, "pruning.target": 0.5,
        "out_dir": str(tmp_path), "name": "vit"})
    trainer = Trainer(cfg)
    assert any(g.key.endswith(":heads") for g in trainer.method.engine.space.groups)
    s = trainer.fit()
    assert s["pruned"] and s["final_flops"] <= 0.5 * s["dense_flops"] * (1 + 1e-9)
    import ocspruner
    rebuilt = ocspruner.load(f"{s['run_dir']}/final_model.pt")
    x = torch.randn(2, 3, 32, 32)
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), trainer.model(x), atol=1e-6)
