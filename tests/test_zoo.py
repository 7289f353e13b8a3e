"""The issue-5 zoo: our models plus hand-built equivalents of common torchvision/timm blocks
(CI cannot import torchvision). Each is pruned to 50% FLOPs, and for each: the target is hit, the
analytic FLOPs equal torch-pruning's count of the physically pruned model layer by layer, the
params are exact, the pruned model runs forward and trains, and - where zeroing a channel is the
same as removing it (no normalisation across channels) - the pruned output equals the masked one."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from ocspruner import OCSPruner
from ocspruner.dependency import _CONV, _CONV_T, _NORM, ChannelSpace, UnsupportedModelError
from ocspruner.models import create_model
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


class MHATransformer(nn.Module):
    """Conv patch embedding + nn.MultiheadAttention + MLP with residuals (torchvision ViT's
    encoder block without its LayerNorms, so masked == pruned can be checked exactly)."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.stem = nn.Conv2d(3, d, 4, stride=4)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.fc1, self.fc2, self.head = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), nn.Linear(d, 10)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean(1))


class ResNeXtBlock(nn.Module):
    """torchvision ResNeXt bottleneck: 1x1, grouped 3x3 (cardinality 4), 1x1, identity residual."""

    def __init__(self, width=32, cardinality=4):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.c1, self.b1 = nn.Conv2d(32, width, 1, bias=False), nn.BatchNorm2d(width)
        self.c2 = nn.Conv2d(width, width, 3, padding=1, groups=cardinality, bias=False)
        self.b2 = nn.BatchNorm2d(width)
        self.c3, self.b3 = nn.Conv2d(width, 32, 1, bias=False), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(x + self.b3(self.c3(y))), 1).flatten(1))


class ShuffleV2Block(nn.Module):
    """torchvision ShuffleNetV2 unit: channel split by torch.chunk, one half passes straight
    through, the other goes 1x1 -> depthwise 3x3 -> 1x1, then concatenation. (The channel
    shuffle that follows in torchvision interleaves the halves through a reshape, which
    torch-pruning cannot map; a stacked shuffle is mapped by DepGraph, torchvision's
    view/transpose/view by ocspruner: see ShuffleNetV2.)"""

    def __init__(self, c=32, shuffle=False):
        super().__init__()
        h, self.shuffle = c // 2, shuffle
        self.stem, self.bn0 = nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c)
        self.pw1, self.bn1 = nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h)
        self.dw, self.bn2 = nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h)
        self.pw2, self.bn3 = nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h)
        self.out, self.fc = nn.Conv2d(c, 24, 1), nn.Linear(24, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        a, b = x.chunk(2, dim=1)
        b = F.relu(self.bn3(self.pw2(self.bn2(self.dw(F.relu(self.bn1(self.pw1(b))))))))
        x = torch.cat([a, b], 1)
        if self.shuffle:                                   # channel shuffle (groups = 2)
            x = torch.stack([a, b], 2).flatten(1, 2)
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.out(x)), 1).flatten(1))


def channel_shuffle(x, groups):
    """torchvision's channel shuffle: view -> transpose -> view."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


def _cbr(i, o, k=1, s=1, g=1, relu=True):
    layers = [nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o)]
    return layers + ([nn.ReLU(inplace=True)] if relu else [])


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 InvertedResidual: stride 2 concatenates two branches, stride 1
    chunks the input and passes one half through; both end in channel_shuffle(out, 2)."""

    def __init__(self, i, o, stride):
        super().__init__()
        h, self.stride = o // 2, stride
        self.b1 = nn.Sequential(*_cbr(i, i, 3, stride, i, False), *_cbr(i, h)) if stride > 1 else nn.Sequential()
        self.b2 = nn.Sequential(*_cbr(i if stride > 1 else h, h), *_cbr(h, h, 3, stride, h, False), *_cbr(h, h))

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            return channel_shuffle(torch.cat((a, self.b2(b)), 1), 2)
        return channel_shuffle(torch.cat((self.b1(x), self.b2(x)), 1), 2)


class ShuffleNetV2(nn.Module):
    """torchvision's ShuffleNetV2 layout at small widths: stem, max-pool, two stages, conv5."""

    def __init__(self, widths=(8, 32, 64), repeats=(2, 2), n=10):
        super().__init__()
        self.stem, self.pool = nn.Sequential(*_cbr(3, widths[0], 3, 2)), nn.MaxPool2d(3, 2, 1)
        self.s2 = nn.Sequential(ShuffleUnit(widths[0], widths[1], 2), *[ShuffleUnit(widths[1], widths[1], 1)
                                                                         for _ in range(repeats[0] - 1)])
        self.s3 = nn.Sequential(ShuffleUnit(widths[1], widths[2], 2), *[ShuffleUnit(widths[2], widths[2], 1)
                                                                         for _ in range(repeats[1] - 1)])
        self.conv5, self.fc = nn.Sequential(*_cbr(widths[2], 64)), nn.Linear(64, n)

    def forward(self, x):
        return self.fc(self.conv5(self.s3(self.s2(self.pool(self.stem(x))))).mean((2, 3)))


class InceptionBlock(nn.Module):
    """GoogLeNet/Inception: parallel 1x1, 3x3 and pooled branches concatenated."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 24, 3, padding=1), nn.BatchNorm2d(24)
        self.b1 = nn.Conv2d(24, 16, 1)
        self.b2 = nn.Sequential(nn.Conv2d(24, 12, 1), nn.ReLU(), nn.Conv2d(12, 16, 3, padding=1))
        self.b3 = nn.Conv2d(24, 8, 1)
        self.fc = nn.Linear(40, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = torch.cat([self.b1(x), self.b2(x), self.b3(F.max_pool2d(x, 3, 1, 1))], 1)
        return self.fc(F.adaptive_avg_pool2d(F.relu(y), 1).flatten(1))


class MBConvSE(nn.Module):
    """EfficientNet MBConv: expand 1x1, depthwise 3x3, squeeze-excitation, project, residual."""

    def __init__(self, c=16, expand=4):
        super().__init__()
        e = c * expand
        self.stem, self.bn0 = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.exp, self.bn1 = nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e)
        self.dw, self.bn2 = nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e)
        self.se1, self.se2 = nn.Conv2d(e, 8, 1), nn.Conv2d(8, e, 1)
        self.proj, self.bn3 = nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = F.silu(self.bn0(self.stem(x)))
        y = F.silu(self.bn2(self.dw(F.silu(self.bn1(self.exp(x))))))
        y = y * torch.sigmoid(self.se2(F.silu(self.se1(y.mean((2, 3), keepdim=True)))))
        return self.fc(F.adaptive_avg_pool2d(x + self.bn3(self.proj(y)), 1).flatten(1))


class TinyUNet(nn.Module):
    """U-Net: strided down path, transposed-conv up path, skip concatenation, per-image head."""

    def __init__(self):
        super().__init__()
        self.enc1, self.enc2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec = nn.Conv2d(32, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        s = F.relu(self.enc1(x))
        y = F.relu(self.up(F.relu(self.enc2(s))))
        y = F.relu(self.dec(torch.cat([s, y], 1)))
        return self.fc(y.mean((2, 3)))


def _ours(name, **options):
    def build():
        return create_model(name, num_classes=10, **options)
    build.__name__ = name
    return build


# (constructor, channelwise, slack): channelwise = zeroing a channel equals removing it (no
# normalisation across channels: LayerNorm and GroupNorm mix them); slack = how far above the
# target one legal step can land (GroupNorm and grouped/head-aligned units remove several channels
# at a time). Every entry is pruned to 50% FLOPs.
ZOO = [
    (_ours("resnet20"), True, 0.02),
    (_ours("vgg16", width_mult=0.25), True, 0.02),
    (_ours("mobilenetv2_cifar", width_mult=0.25), True, 0.02),
    (_ours("vit_tiny_cifar", dim=48, depth=2, num_heads=3), False, 0.05),
    (DenseNetBlock, True, 0.02),
    (SqueezeExcite, True, 0.02),
    (ConvNeXtBlock, False, 0.02),
    (GroupNormNet, False, 0.05),
    (MHATransformer, True, 0.02),
    (ResNeXtBlock, True, 0.05),
    (ShuffleV2Block, True, 0.02),
    (InceptionBlock, True, 0.02),
    (MBConvSE, True, 0.02),
    (TinyUNet, True, 0.02),
]


@pytest.mark.parametrize("ctor,channelwise,slack", ZOO, ids=[c.__name__ for c, _, _ in ZOO])
def test_zoo_pruned_to_half_flops(ctor, channelwise, slack):
    torch.manual_seed(0)
    model = ctor().eval()
    ex = torch.randn(1, 3, 32, 32)
    pruner = OCSPruner(model, ex, target=0.5, max_prune_fraction=0.9)
    part = pruner.partition()
    assert 0.5 <= part.reduction <= 0.5 + slack
    for g in pruner.space.groups:
        kept = int(part.keep[g.offset:g.offset + g.size].sum())
        assert kept == g.size or kept % g.step == 0
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    masked = pruner.masked_model(part.keep).eval().double()
    per_layer = pruner.cost_model.per_layer(part.keep)
    flops = float(pruner.cost_model.evaluate(part.keep))
    params = float(pruner.cost_model.evaluate(part.keep, "params"))
    prune_to(model, pruner.space, part.keep)
    with torch.no_grad():
        diff = (masked(x) - model.double()(x)).abs().max().item()
    model.float()
    if channelwise:
        assert diff <= 1e-6
    _, counted_params, lf, _ = tp.utils.count_ops_and_params(model, ex, layer_wise=True)
    names = {m: n for n, m in model.named_modules()}
    for m, v in lf.items():
        if isinstance(m, _CONV + _CONV_T + (nn.Linear, nn.MultiheadAttention) + _NORM) and v is not None:
            assert per_layer[names[m]] == pytest.approx(v), names[m]
    assert params == counted_params
    # (the totals differ by design: the counter also adds activations and pooling, which we skip)
    assert flops == pytest.approx(sum(per_layer.values()))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(0, 10, (4,)))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_multihead_attention_head_dims_pruned_evenly():
    """nn.MultiheadAttention: every head loses the same positions (its head split is a reshape),
    head_dim shrinks, num_heads stays, and the q rows are rescaled for the new 1/sqrt(head_dim)."""
    model = MHATransformer(d=32, heads=4).eval()
    space = ChannelSpace(model, torch.randn(1, 3, 32, 32))
    stream = next(g for g in space.groups if g.blocks > 1)
    assert (stream.size, stream.blocks) == (8, 4)
    keep = torch.ones(space.num_channels, dtype=torch.bool)
    keep[stream.offset + torch.tensor([1, 6])] = False      # units 1 and 6: positions {1, 6} of every head
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    from ocspruner.surgery import masked_copy
    masked = masked_copy(model, space, keep).double()
    w_q = model.attn.in_proj_weight[:32].detach().clone()
    prune_to(model, space, keep)
    attn = model.attn
    assert (attn.embed_dim, attn.num_heads, attn.head_dim) == (24, 4, 6)
    kept_rows = torch.tensor([h * 8 + d for h in range(4) for d in range(8) if d not in (1, 6)])
    cols = kept_rows
    expected_q = w_q[kept_rows][:, cols] * (6 / 8) ** 0.5
    assert torch.allclose(attn.in_proj_weight[:24], expected_q)
    with torch.no_grad():
        assert (masked(x) - model.double()(x)).abs().max() <= 1e-9


def test_grouped_conv_and_chunk_lose_aligned_positions():
    """A grouped conv's input group and a chunked tensor lose the same position in every block."""
    model = ResNeXtBlock(width=32, cardinality=4).eval()
    space = ChannelSpace(model, torch.randn(1, 3, 32, 32))
    g = space.by_key["c1"]
    assert (g.size, g.blocks) == (8, 4)
    w = next(s for s in g.slices if s.name == "c2.weight" and s.dim == 1)
    assert w.positions.tolist() == list(range(8)) and w.channels.tolist() == list(range(8))
    c1 = next(s for s in g.slices if s.name == "c1.weight")
    assert c1.channels.tolist() == [p % 8 for p in range(32)]
    shuffle = ChannelSpace(ShuffleV2Block(c=32).eval(), torch.randn(1, 3, 32, 32))
    assert (shuffle.by_key["stem"].size, shuffle.by_key["stem"].blocks) == (16, 2)


def test_channel_shuffle_halves_lose_the_same_positions():
    """torchvision's channel_shuffle (view -> transpose -> view): the two concatenated halves of a
    stride-2 unit lose the same positions (their shuffle stays the same permutation), and the
    pruned network computes what the masked one does."""
    model = ShuffleNetV2().eval()
    ex = torch.randn(1, 3, 32, 32)
    space = ChannelSpace(model, ex)
    g = next(g for g in space.groups if any(s.name == "s3.0.b1.2.weight" and s.dim == 0 for s in g.slices))
    b1 = next(s for s in g.slices if s.name == "s3.0.b1.2.weight" and s.dim == 0)
    b2 = next(s for s in g.slices if s.name == "s3.0.b2.5.weight" and s.dim == 0)
    assert torch.equal(b1.positions, b2.positions) and torch.equal(b1.channels, b2.channels)
    keep = torch.ones(space.num_channels, dtype=torch.bool)
    keep[g.offset + 1] = False
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    from ocspruner.surgery import masked_copy
    masked = masked_copy(model, space, keep).double()
    prune_to(model, space, keep)
    gone = int((b1.channels == 1).sum())   # the positions of unit 1 (several: the shuffles join them)
    assert model.s3[0].b1[2].out_channels == model.s3[0].b2[5].out_channels == 32 - gone > 0
    with torch.no_grad():
        assert (masked(x) - model.double()(x)).abs().max() <= 1e-9


def test_a_failure_inside_torch_pruning_is_one_line_naming_the_module(monkeypatch):
    """Whatever torch-pruning raises while tracing is reported as one UnsupportedModelError that
    names the node it was working on (here: a concat after 'b2')."""
    from torch_pruning.dependency import shape_infer

    def broken(graph, node_1, node_2):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(shape_infer, "infer_channels_between", broken)
    with pytest.raises(UnsupportedModelError, match=r"^torch-pruning failed while tracing the model at "
                                                    r"CatBackward0 after '.*' \(ZeroDivisionError"):
        ChannelSpace(InceptionBlock().eval(), torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("how", ["split_sizes", "slice"])
def test_hard_coded_split_is_refused_with_the_module_named(how):
    class HardSplit(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.a, self.b = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(16, 8, 1), nn.Conv2d(16, 8, 1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.stem(x)
            a, b = torch.split(x, [16, 16], 1) if how == "split_sizes" else (x[:, :16], x[:, 16:])
            return self.fc(torch.cat([self.a(a), self.b(b)], 1).mean((2, 3)))

    with pytest.raises(UnsupportedModelError, match="stem.*ignored_layers"):
        OCSPruner(HardSplit().eval(), torch.randn(1, 3, 32, 32), target=0.5)


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


@pytest.mark.parametrize("ctor", [MHATransformer, ResNeXtBlock])
def test_blocked_groups_through_the_training_loop(tmp_path, ctor):
    """Heads / grouped-conv units through the one-cycle loop: the prune at t* happens with
    optimizer state in flight and the final model is at the budget."""
    from ocspruner.config import load_config
    from ocspruner.trainer import Trainer

    cfg = load_config(None, updates={
        "data.name": "synthetic", "data.image_size": 32, "data.batch_size": 32,
        "data.options": {"num_samples": 64, "num_test": 32, "num_classes": 10}, "progress": False, "threads": 1,
        "epochs": 5, "pruning.window": 2, "pruning.offset": 1, "pruning.tau": 1.0, "pruning.epsilon": 0.02,
        "pruning.target": 0.5, "out_dir": str(tmp_path), "name": "blocked"})
    trainer = Trainer(cfg, model=ctor())
    s = trainer.fit()
    assert s["pruned"] and s["final_flops"] <= 0.5 * s["dense_flops"] * (1 + 1e-9)
    if ctor is MHATransformer:
        attn = trainer.model.attn
        assert attn.embed_dim == attn.num_heads * attn.head_dim < 32
