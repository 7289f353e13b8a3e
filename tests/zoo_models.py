"""Hand-written stand-ins for well-known architectures (CI cannot import torchvision or timm),
at small widths and 32x32 inputs: the zoo of tests/test_zoo.py and benchmarks/zoo.py. Each
reproduces the structure that matters for pruning (concat, split, shuffle, window attention,
stored widths, LayerNorm, ...), not the published widths."""
import torch
import torch.nn as nn
import torch.nn.functional as F


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


class BasicBlock(nn.Module):
    """torchvision ResNet BasicBlock: ONE nn.ReLU module called twice, optional 1x1 downsample."""

    def __init__(self, i, o, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o)
        self.conv2, self.bn2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o)) \
            if stride != 1 or i != o else None

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + idt)


class ResNet18(nn.Module):
    """torchvision ResNet-18 layout (stem, max-pool, stages of BasicBlocks, adaptive avg-pool) at
    small widths; activation and pooling MODULES, so the counter counts them."""

    def __init__(self, w=(8, 16, 32), n=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0])
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(w[0], w[0]), BasicBlock(w[0], w[0]))
        self.layer2 = nn.Sequential(BasicBlock(w[0], w[1], 2), BasicBlock(w[1], w[1]))
        self.layer3 = nn.Sequential(BasicBlock(w[1], w[2], 2), BasicBlock(w[2], w[2]))
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(w[2], n)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(self.layer3(self.layer2(self.layer1(x)))), 1))


class Fire(nn.Module):
    def __init__(self, i, s, e):
        super().__init__()
        self.squeeze, self.e1, self.e3 = nn.Conv2d(i, s, 1), nn.Conv2d(s, e, 1), nn.Conv2d(s, e, 3, padding=1)
        self.r0, self.r1, self.r3 = nn.ReLU(inplace=True), nn.ReLU(inplace=True), nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.r0(self.squeeze(x))
        return torch.cat([self.r1(self.e1(x)), self.r3(self.e3(x))], 1)


class SqueezeNet(nn.Module):
    """torchvision SqueezeNet 1.1: Fire modules (squeeze, concat of 1x1 and 3x3 expands), max-pools,
    a 1x1 conv classifier and adaptive average pooling (every element-wise op a module)."""

    def __init__(self, n=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      Fire(16, 8, 16), Fire(32, 8, 16), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      Fire(32, 12, 24))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(48, n, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class InvertedResidual(nn.Module):
    def __init__(self, i, o, stride, expand):
        super().__init__()
        h = i * expand
        self.use_res = stride == 1 and i == o
        self.conv = nn.Sequential(nn.Conv2d(i, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True),
                                  nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h),
                                  nn.ReLU6(inplace=True), nn.Conv2d(h, o, 1, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2TV(nn.Module):
    """torchvision MobileNetV2 / MnasNet layout: ReLU6 modules, inverted residuals, dropout + linear."""

    def __init__(self, n=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True),
                                      InvertedResidual(16, 8, 1, 1), InvertedResidual(8, 12, 2, 6),
                                      InvertedResidual(12, 12, 1, 6), InvertedResidual(12, 16, 2, 6),
                                      nn.Conv2d(16, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(inplace=True))
        self.pool, self.classifier = nn.AdaptiveAvgPool2d(1), nn.Sequential(nn.Dropout(0.2), nn.Linear(64, n))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class AlexNet(nn.Module):
    """torchvision AlexNet layout: conv features, adaptive avg-pool to 2x2, flatten into Linear
    (each conv channel owns 4 input columns of the first classifier layer)."""

    def __init__(self, n=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 5, 2, 2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(24, 16, 3, padding=1), nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(16 * 4, 32), nn.ReLU(inplace=True), nn.Linear(32, n))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class EncoderBlock(nn.Module):
    def __init__(self, heads, hidden, mlp, norm=True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden) if norm else nn.Identity()
        self.ln_2 = nn.LayerNorm(hidden) if norm else nn.Identity()
        self.self_attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp), nn.GELU(), nn.Linear(mlp, hidden))

    def forward(self, inp):
        x = self.ln_1(inp)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = x + inp
        return x + self.mlp(self.ln_2(x))


class TorchvisionViT(nn.Module):
    """torchvision VisionTransformer: _process_input reshapes to the STORED self.hidden_dim, a class
    token and position embedding as bare parameters, nn.MultiheadAttention encoder blocks."""

    def __init__(self, image=32, patch=8, layers=2, heads=2, hidden=32, mlp=64, n=10, norm=True):
        super().__init__()
        self.patch_size, self.hidden_dim = patch, hidden
        self.conv_proj = nn.Conv2d(3, hidden, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.pos_embedding = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, hidden) * 0.02)
        self.layers = nn.Sequential(*[EncoderBlock(heads, hidden, mlp, norm) for _ in range(layers)])
        self.ln = nn.LayerNorm(hidden) if norm else nn.Identity()
        self.heads = nn.Sequential(nn.Linear(hidden, n))

    def _process_input(self, x):
        n, _, h, w = x.shape
        x = self.conv_proj(x).reshape(n, self.hidden_dim, (h // self.patch_size) * (w // self.patch_size))
        return x.permute(0, 2, 1)

    def forward(self, x):
        x = self._process_input(x)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.heads(self.ln(self.layers(x + self.pos_embedding))[:, 0])


class TorchvisionViTNoNorm(TorchvisionViT):
    """The same without LayerNorms: the stored width is the only difficulty, so pruned == masked."""

    def __init__(self):
        super().__init__(norm=False)


def window_partition(x, ws):
    b, h, w, c = x.shape
    return x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def window_reverse(x, ws, h, w):
    c = x.shape[-1]
    b = x.shape[0] // ((h // ws) * (w // ws))
    return x.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class WindowAttention(nn.Module):
    """timm-style window attention: qkv / proj Linear modules, num_heads, a relative position bias
    with one slice per head; per-head width read from the tensor (-1), not stored."""

    def __init__(self, dim, heads, ws):
        super().__init__()
        self.num_heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.rel_bias = nn.Parameter(torch.randn(heads, ws * ws, ws * ws) * 0.02)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        a = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + self.rel_bias
        return self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1))


class SwinBlock(nn.Module):
    def __init__(self, dim, heads, ws, shift):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1, self.attn = nn.LayerNorm(dim), WindowAttention(dim, heads, ws)
        self.norm2, self.fc1, self.act, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)

    def forward(self, x):
        _, h, w, _ = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = window_reverse(self.attn(window_partition(y, self.ws)), self.ws, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class PatchMerging(nn.Module):
    """Swin patch merging: four strided spatial slices concatenated along the LAST (channel) dim."""

    def __init__(self, dim):
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class TinySwin(nn.Module):
    """Swin layout: patch embedding (conv + permute + LayerNorm), shifted-window blocks with
    relative position bias, patch merging, global average, LayerNorm, head."""

    def __init__(self, dim=16, ws=2, n=10):
        super().__init__()
        self.patch_embed, self.embed_norm = nn.Conv2d(3, dim, 4, 4), nn.LayerNorm(dim)
        self.stage1 = nn.Sequential(SwinBlock(dim, 2, ws, 0), SwinBlock(dim, 2, ws, ws // 2))
        self.merge = PatchMerging(dim)
        self.stage2 = nn.Sequential(SwinBlock(2 * dim, 4, ws, 0), SwinBlock(2 * dim, 4, ws, ws // 2))
        self.norm, self.head = nn.LayerNorm(2 * dim), nn.Linear(2 * dim, n)

    def forward(self, x):
        x = self.embed_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        x = self.stage2(self.merge(self.stage1(x)))
        return self.head(self.norm(x).mean((1, 2)))


class MaxViTBlock(nn.Module):
    """MaxViT: MBConv (expand, depthwise, squeeze-excitation, project, residual), then block
    attention (local windows) and grid attention (dilated global grid), each with an MLP."""

    def __init__(self, dim=16, heads=2, p=4):
        super().__init__()
        self.p = p
        self.mb = nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, 4 * dim, 1), nn.GELU(),
                                nn.Conv2d(4 * dim, 4 * dim, 3, padding=1, groups=4 * dim), nn.GELU())
        self.se1, self.se2, self.mb_out = nn.Conv2d(4 * dim, 4, 1), nn.Conv2d(4, 4 * dim, 1), nn.Conv2d(4 * dim, dim, 1)
        self.n1, self.block_attn = nn.LayerNorm(dim), WindowAttention(dim, heads, p)
        self.n2, self.grid_attn = nn.LayerNorm(dim), WindowAttention(dim, heads, p)
        self.n3, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def grid(self, x, attn):
        b, h, w, c = x.shape
        g = self.p
        y = x.view(b, g, h // g, g, w // g, c).permute(0, 2, 4, 1, 3, 5).reshape(-1, g * g, c)
        y = attn(y).view(b, h // g, w // g, g, g, c).permute(0, 3, 1, 4, 2, 5).reshape(b, h, w, c)
        return y

    def forward(self, x):
        y = self.mb(x)
        y = y * torch.sigmoid(self.se2(F.silu(self.se1(y.mean((2, 3), keepdim=True)))))
        x = (x + self.mb_out(y)).permute(0, 2, 3, 1)
        _, h, w, _ = x.shape
        x = x + window_reverse(self.block_attn(window_partition(self.n1(x), self.p)), self.p, h, w)
        x = x + self.grid(self.n2(x), self.grid_attn)
        return x + self.fc2(F.gelu(self.fc1(self.n3(x))))


class TinyMaxViT(nn.Module):
    def __init__(self, dim=16, n=10):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, dim, 3, 2, 1), nn.BatchNorm2d(dim)
        self.block = MaxViTBlock(dim)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, n)

    def forward(self, x):
        x = self.block(F.gelu(self.bn(self.stem(x))))
        return self.head(self.norm(x.mean((1, 2))))


class FunctionalWindowAttention(nn.Module):
    """torchvision Swin's style: the attention is a function of the Linear WEIGHTS
    (F.linear(x, self.qkv.weight)), the modules themselves are never called."""

    def __init__(self, dim, heads, ws):
        super().__init__()
        self.num_heads, self.ws = heads, ws
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, h, w, c = x.shape
        y = window_partition(x, self.ws)
        q, k, v = F.linear(y, self.qkv.weight, self.qkv.bias).reshape(
            y.shape[0], y.shape[1], 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        y = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(y.shape[0], y.shape[1], -1)
        return window_reverse(F.linear(y, self.proj.weight, self.proj.bias), self.ws, h, w)


class FunctionalSwin(nn.Module):
    def __init__(self, dim=16, n=10):
        super().__init__()
        self.patch_embed, self.norm1 = nn.Conv2d(3, dim, 4, 4), nn.LayerNorm(dim)
        self.attn1, self.attn2 = FunctionalWindowAttention(dim, 2, 2), FunctionalWindowAttention(dim, 2, 2)
        self.fc1, self.fc2, self.head = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim), nn.Linear(dim, n)

    def forward(self, x):
        x = self.norm1(self.patch_embed(x).permute(0, 2, 3, 1))
        x = x + self.attn1(x)
        x = x + self.attn2(x)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean((1, 2)))
