"""Benchmark (issue 15): construction and partition time of every zoo model, and the budget as the
user's counter sees it.

    python3 benchmarks/zoo.py [--large] [--threads 2] [--repeats 5]
                              [--out benchmarks/results/zoo.json]

Models: the 24 stand-ins of tests/test_zoo.py at 32x32, and with ``--large`` a few at published
widths and ImageNet resolution: ResNet-50 (224), MobileNetV2 (224), ShuffleNetV2 1.0x stages 2-3
(224; torchvision's channel_shuffle raised ZeroDivisionError in torch-pruning at these widths),
Swin-T layout (depths 2-2-6-2, dim 96, window 7, 224), torchvision ViT-S/16 layout with a stored
hidden_dim (224). Per model:

* ``construct_s``: the full ``OCSPruner(model, x, target=0.5)`` constructor (DepGraph trace,
  group walk, cost model, the dry run that prunes one unit of every group);
* ``space_s``: ``ChannelSpace`` alone (trace + group walk);
* ``partition_s``: median of ``--repeats`` calls of ``pruner.partition()`` (Eq. 2 scores + the
  budget search) after one warm-up;
* ``reduction``: FLOPs removed by our count, and ``counted_reduction`` by
  ``torch_pruning.utils.count_ops_and_params`` on the physically pruned model;
  ``deviation_points`` = 100 x their difference.
The summary lists the slowest construction and the largest deviation; the goal is every model
under 30 s and every deviation under 0.1 point.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import torch_pruning as tp  # noqa: E402

import zoo_models as zm  # noqa: E402
from ocspruner import OCSPruner  # noqa: E402
from ocspruner.dependency import ChannelSpace  # noqa: E402
from ocspruner.models import create_model  # noqa: E402
from ocspruner.surgery import prune_to  # noqa: E402


class SwinT(nn.Module):
    """Swin-T layout from the zoo's blocks: depths 2-2-6-2, dims 96-768, window 7."""

    def __init__(self, dim=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), ws=7, n=1000):
        super().__init__()
        self.patch_embed, self.embed_norm = nn.Conv2d(3, dim, 4, 4), nn.LayerNorm(dim)
        layers = []
        for i, (d, h) in enumerate(zip(depths, heads)):
            layers += [zm.SwinBlock(dim, h, ws, 0 if j % 2 == 0 else ws // 2) for j in range(d)]
            if i < len(depths) - 1:
                layers.append(zm.PatchMerging(dim))
                dim *= 2
        self.layers = nn.Sequential(*layers)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, n)

    def forward(self, x):
        x = self.layers(self.embed_norm(self.patch_embed(x).permute(0, 2, 3, 1)))
        return self.head(self.norm(x).mean((1, 2)))


def small_models():
    from test_zoo import ZOO, ZOO_IDS
    return [(name, ctor, 32) for (ctor, _, _), name in zip(ZOO, ZOO_IDS)]


def large_models():
    return [
        ("resnet50@224", lambda: create_model("resnet50", num_classes=1000), 224),
        ("mobilenetv2@224", lambda: create_model("mobilenetv2", num_classes=1000), 224),
        ("shufflenetv2-1.0x@224", lambda: zm.ShuffleNetV2(widths=(24, 116, 232), repeats=(4, 8), n=1000), 224),
        ("swin-t-layout@224", SwinT, 224),
        ("vit-s16-stored-width@224", lambda: zm.TorchvisionViT(image=224, patch=16, layers=12, heads=6,
                                                              hidden=384, mlp=1536, n=1000), 224),
    ]


def measure(name, ctor, size, repeats):
    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size)
    row = {"model": name, "input": size}
    try:
        model = ctor().eval()
        t = time.perf_counter()
        ChannelSpace(model, x)
        row["space_s"] = time.perf_counter() - t
        t = time.perf_counter()
        pruner = OCSPruner(model, x, target=0.5, max_prune_fraction=0.9)
        row["construct_s"] = time.perf_counter() - t
        row["groups"] = len(pruner.space.groups)
        pruner.partition()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            part = pruner.partition()
            times.append(time.perf_counter() - t)
        row["partition_s"] = statistics.median(times)
        dense = tp.utils.count_ops_and_params(model, x)[0]
        prune_to(model, pruner.space, part.keep)
        counted = tp.utils.count_ops_and_params(model, x)[0]
        row.update(dense_flops=dense, reduction=part.reduction, counted_reduction=1 - counted / dense,
                   deviation_points=100 * (part.reduction - (1 - counted / dense)))
        with torch.no_grad():
            model(x)
    except Exception as exc:  # noqa: BLE001 - a failure is a result here
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "zoo.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import warnings
    warnings.filterwarnings("ignore")
    models = small_models() + (large_models() if args.large else [])
    rows = []
    for name, ctor, size in models:
        row = measure(name, ctor, size, args.repeats)
        rows.append(row)
        if "error" in row:
            print(f"{name:28s} ERROR {row['error']}", flush=True)
        else:
            print(f"{name:28s} {size:3d}px  construct {row['construct_s']:6.2f} s (space {row['space_s']:5.2f} s)  "
                  f"partition {1000 * row['partition_s']:7.1f} ms  groups {row['groups']:3d}  removed "
                  f"{row['reduction']:.2%} (counter {row['counted_reduction']:.2%}, {row['deviation_points']:+.3f} pt)",
                  flush=True)
    ok = [r for r in rows if "error" not in r]
    summary = {
        "models": len(rows), "errors": [r["model"] for r in rows if "error" in r],
        "slowest_construct": max(ok, key=lambda r: r["construct_s"])["model"] if ok else None,
        "max_construct_s": max((r["construct_s"] for r in ok), default=None),
        "all_construct_under_30s": all(r["construct_s"] < 30 for r in ok) and len(ok) == len(rows),
        "max_partition_s": max((r["partition_s"] for r in ok), default=None),
        "max_abs_deviation_points": max((abs(r["deviation_points"]) for r in ok), default=None),
        "threads": args.threads,
    }
    out = {"summary": summary, "rows": rows, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
