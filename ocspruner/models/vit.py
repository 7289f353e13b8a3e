"""A small Vision Transformer for 32x32 images (Dosovitskiy et al., 2021).

Patch embedding is a Conv2d with kernel = stride = patch size (4 by default,
giving 8x8 = 64 tokens at 32x32), followed by a learnable class token and
learnable position embedding (plain ``nn.Parameter``s; torch-pruning detects
them as "unwrapped parameters" and prunes their last, embedding dimension along
with the rest of the residual stream). Then ``depth`` pre-norm blocks
(x + Attn(LN(x)), x + MLP(LN(x))), a final LayerNorm and ``model.classifier``,
a Linear on the class token (``model.classifier_name == "classifier"``).

Attention uses the qkv-Linear layout: one ``nn.Linear(dim, 3 * dim)`` named
``qkv`` and an output ``proj``. Nothing in ``forward`` hard-codes the widths:
the per-head size is derived from the actual qkv output at run time
(``qkv.shape[-1] // (3 * num_heads)``), so the module still runs after a pruner
has removed head dimensions from ``qkv``/``proj`` or the embedding width. Only
``num_heads`` must be kept in sync if whole heads are pruned. For head-aware
pruning pass ``num_heads={m.qkv: m.num_heads for m in attention modules}`` to
torch-pruning's MetaPruner; otherwise it may remove q/k/v channels unevenly.

The softmax temperature ``scale`` is fixed at construction (1/sqrt of the
original head size) rather than recomputed from the pruned size: pruning drops
low-importance dimensions of q and k, and keeping the temperature unchanged
keeps the attention logits of the surviving dimensions as they were trained.
"""

import torch
import torch.nn as nn

from .registry import register_model


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads  # original size; forward uses the live size
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x)
        head_dim = qkv.shape[-1] // (3 * self.num_heads)
        qkv = qkv.reshape(B, N, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        # unbind (not qkv[0], qkv[1], ...) so torch-pruning can map q/k/v channels back to qkv
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, self.num_heads * head_dim)
        return self.proj(x)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


def init_transformer_weights(module: nn.Module) -> None:
    """Small truncated-normal weights for Linear/patch conv, as in ViT/DeiT."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VisionTransformer(nn.Module):
    classifier_name = "classifier"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, img_size: int = 32,
                 patch_size: int = 4, dim: int = 192, depth: int = 6, num_heads: int = 3,
                 mlp_ratio: float = 2.0):
        super().__init__()
        if img_size % patch_size != 0:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        num_patches = (img_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, num_heads, int(dim * mlp_ratio)) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

        init_transformer_weights(self)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.classifier(x[:, 0])


@register_model("vit_tiny_cifar")
def vit_tiny_cifar(num_classes: int = 10, in_channels: int = 3, **kwargs) -> VisionTransformer:
    """kwargs: img_size=32, patch_size=4, dim=192, depth=6, num_heads=3, mlp_ratio=2.0."""
    return VisionTransformer(num_classes, in_channels, **kwargs)


def attention_num_heads(model: nn.Module) -> dict:
    """``{attn.qkv: attn.num_heads}`` for every Attention module in ``model``.

    Pass this as ``num_heads=`` to torch-pruning's MetaPruner. Without it the
    pruner treats the 3*dim qkv outputs as independent channels and removes
    different numbers of q, k and v channels, after which the reshape to
    (B, N, 3, heads, head_dim) is impossible. With it, the same head dimensions
    are removed from q, k, v and every head. If whole heads are pruned
    (``prune_num_heads=True``), copy ``pruner.num_heads[attn.qkv]`` back into
    ``attn.num_heads`` after ``pruner.step()``.
    """
    return {m.qkv: m.num_heads for m in model.modules() if isinstance(m, Attention)}
