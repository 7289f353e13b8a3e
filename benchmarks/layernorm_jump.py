"""Issue 15, item 5: the accuracy jump at t* on LayerNorm'd widths.

LayerNorm computes its mean and variance over the channels present: a zeroed channel counts, a
removed one does not, so the masked model (pruning set zeroed) and the physically pruned one
differ. This measures, in a small one-cycle run on Fashion-MNIST, at t*:
  A: accuracy of the model just before the prune (pruning set shrunk by sparsity learning),
  B: accuracy of the masked model (pruning set zeroed),
  C: accuracy of the pruned model right after the prune,
and the accuracy after the remaining epochs. B - C is the LayerNorm effect alone; A - C is
the whole jump at t*. A is measured as the model runs (with the engine's default
``layernorm_kept_stats=True`` its LayerNorms normalise over the kept channels of M_t during
sparsity learning, see ``ocspruner/layernorm.py``); ``--kept-stats`` runs both settings.

    python3 benchmarks/layernorm_jump.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ocspruner import OCSPruner  # noqa: E402
from ocspruner.data.sources import build_fashion_mnist  # noqa: E402
from ocspruner.models import create_model  # noqa: E402


class ConvNeXtBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dw, self.norm = nn.Conv2d(d, d, 7, padding=3, groups=d), nn.LayerNorm(d)
        self.pw1, self.act, self.pw2 = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)

    def forward(self, x):
        y = self.pw2(self.act(self.pw1(self.norm(self.dw(x).permute(0, 2, 3, 1))))).permute(0, 3, 1, 2)
        return x + y


class TinyConvNeXt(nn.Module):
    """ConvNeXt layout at CPU scale: patchify stem + LayerNorm, two stages of two blocks, a
    LayerNorm'd downsampling conv, global pooling, LayerNorm, classifier."""

    def __init__(self, n=10, dims=(24, 48)):
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(1, dims[0], 2, 2), nn.LayerNorm(dims[0])
        self.stage1 = nn.Sequential(ConvNeXtBlock(dims[0]), ConvNeXtBlock(dims[0]))
        self.down_norm, self.down = nn.LayerNorm(dims[0]), nn.Conv2d(dims[0], dims[1], 2, 2)
        self.stage2 = nn.Sequential(ConvNeXtBlock(dims[1]), ConvNeXtBlock(dims[1]))
        self.norm, self.head = nn.LayerNorm(dims[1]), nn.Linear(dims[1], n)

    def forward(self, x):
        x = self.stem_norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.stage1(x)
        x = self.down(self.down_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        x = self.stage2(x)
        return self.head(self.norm(x.mean((2, 3))))


def models():
    return {
        "vit": (lambda: create_model("vit_tiny_cifar", num_classes=10, in_channels=1, img_size=16,
                                     patch_size=4, dim=48, depth=2, num_heads=3), 16),
        "convnext": (TinyConvNeXt, 16),
    }


def data(size, n_train, n_test, seed):
    src = build_fashion_mnist(None, size)
    g = torch.Generator().manual_seed(seed)
    tr = torch.randperm(len(src.train), generator=g)[:n_train]
    te = torch.arange(n_test)

    def grab(ds, idx):
        xs, ys = zip(*(ds[int(i)] for i in idx))
        x = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in xs])
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.max() > 2:
            x = x / 255.0
        return (x - x.mean()) / x.std(), torch.as_tensor(ys)
    return grab(src.train, tr), grab(src.test, te)


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    correct = sum(int((model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum()) for i in range(0, len(x), 500))
    model.train()
    return 100.0 * correct / len(x)


def run(name, seed, kept_stats, args):
    torch.manual_seed(seed)
    ctor, size = models()[name]
    (xtr, ytr), (xte, yte) = data(size, args.train, args.test, seed)
    model = ctor()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    # --force-ln: the MLP hidden widths (and heads) are ignored, so the budget has to come from
    # the LayerNorm'd residual widths (at 50% the partition otherwise leaves them alone)
    ignored = [m for n, m in model.named_modules() if args.force_ln and
               (n.endswith(("mlp.fc1", "pw1")) or n.endswith("attn"))]
    ignored += [m.qkv for m in ignored if hasattr(m, "qkv")]
    pruner = OCSPruner(model, xtr[:1], target=args.target, sl_start_epoch=args.sl_start - 1,
                       prune_epoch=args.t_star, lambda0=args.lam, delta=args.lam, max_prune_fraction=0.9,
                       ignored_layers=ignored, layernorm_kept_stats=kept_stats)
    out = {"model": name, "seed": seed, "kept_stats": kept_stats, "force_ln": args.force_ln, "curve": []}
    for epoch in range(args.epochs):
        if epoch == args.t_star:
            keep = pruner.partition().keep
            out["A_before"] = accuracy(model, xte, yte)
            out["B_masked"] = accuracy(pruner.masked_model(keep), xte, yte)
            from ocspruner.surgery import removed_positions
            gone = removed_positions(pruner.space, keep)
            lns = {n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
            out["ln_channels_removed"] = [int(len(v)) for (p, d), v in gone.items()
                                          if p.rsplit(".", 1)[0] in lns and p.endswith("weight")]
        rep = pruner.epoch_start(epoch, opt)
        if rep.pruned:
            out["C_pruned"] = accuracy(model, xte, yte)
            out["reduction"] = rep.reduction
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), args.batch):
            idx = perm[i:i + args.batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            pruner.after_backward()
            opt.step()
            pruner.after_step(opt)
        out["curve"].append(accuracy(model, xte, yte))
    out["final"] = out["curve"][-1]
    out["ln_effect"] = out["B_masked"] - out["C_pruned"]
    out["jump"] = out["A_before"] - out["C_pruned"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=["vit", "convnext"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--sl-start", type=int, default=3)
    ap.add_argument("--t-star", type=int, default=7)
    ap.add_argument("--lam", type=float, default=0.02)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--force-ln", action="store_true", help="ignore MLP hidden widths and heads")
    ap.add_argument("--kept-stats", action="store_true", help="also run with kept-channel LayerNorm statistics")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "layernorm_jump.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = []
    t0 = time.time()
    for name in args.models:
        for seed in args.seeds:
            for ks in ([False, True] if args.kept_stats else [False]):
                r = run(name, seed, ks, args)
                runs.append(r)
                print(f"{name:8s} seed {seed} kept_stats={ks!s:5s}: before {r['A_before']:.1f}  masked {r['B_masked']:.1f}  "
                      f"pruned {r['C_pruned']:.1f}  (LN effect {r['ln_effect']:+.1f}, jump {r['jump']:+.1f})  "
                      f"final {r['final']:.1f}  [{r['reduction']:.1%} FLOPs removed; LN channels removed "
                      f"{r['ln_channels_removed']}]", flush=True)
    summary = {}
    for name in args.models:
        for ks in ([False, True] if args.kept_stats else [False]):
            sel = [r for r in runs if r["model"] == name and r["kept_stats"] == ks]
            summary[f"{name}{'+kept_stats' if ks else ''}"] = {
                k: sum(r[k] for r in sel) / len(sel) for k in ("A_before", "B_masked", "C_pruned", "ln_effect", "jump", "final")}
    result = {"args": vars(args), "runs": runs, "summary": summary, "seconds": round(time.time() - t0, 1)}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for k, v in summary.items():
        print(k, {a: round(b, 2) for a, b in v.items()})


if __name__ == "__main__":
    main()
