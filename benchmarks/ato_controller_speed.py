"""How many controller updates ATO needs to reach a FLOPs budget from its dense start (issue 13).

ATO's controller starts at logits +3 (every channel kept) and is trained by Adam (lr 1e-3) every
``controller_every`` iterations. This script trains the controller of ResNet-20 (Fashion-MNIST
input) on the FLOPs term ALONE (gamma * R_FLOPs, two-sided, no cross-entropy: the fastest the
controller can move) and records the FLOPs reduction of its deterministic mask after N updates.
It tells how many updates a run must give the controller; the cross-entropy term only slows it.

    python benchmarks/ato_controller_speed.py     # ~1 min on one thread

Writes benchmarks/results/ato_controller_speed.json.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from ocspruner.ato import Controller, flops_regularizer  # noqa: E402
from ocspruner.cost import CostModel  # noqa: E402
from ocspruner.dependency import ChannelSpace  # noqa: E402
from ocspruner.models import create_model  # noqa: E402

CHECKPOINTS = (10, 25, 50, 100, 200, 400, 600)


def main() -> None:
    torch.set_num_threads(1)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    space = ChannelSpace(model, torch.randn(1, 1, 32, 32))
    cost = CostModel(space)
    out = {"model": "resnet20", "target": 0.5, "gamma": 4.0, "runs": []}
    t0, c0 = time.time(), time.process_time()
    for lr in (1e-3, 3e-3, 1e-2):
        torch.manual_seed(0)
        ctrl = Controller([g.size for g in space.groups])
        opt = torch.optim.Adam(ctrl.parameters(), lr=lr)
        curve = {}
        for step in range(1, max(CHECKPOINTS) + 1):
            mask = ctrl(sample=True)
            loss = 4.0 * flops_regularizer(cost.evaluate(mask.double()), cost.dense["flops"], 0.5)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step in CHECKPOINTS:
                curve[step] = 1 - float(cost.evaluate(ctrl.hard_mask(), "flops")) / cost.dense["flops"]
        out["runs"].append({"controller_lr": lr, "flops_removed_after_updates": curve})
        print(f"lr {lr:g}: " + ", ".join(f"{k}: {v:.3f}" for k, v in curve.items()), flush=True)
    out["cpu_time_s"], out["wall_time_s"] = time.process_time() - c0, time.time() - t0
    os.makedirs("benchmarks/results", exist_ok=True)
    with open("benchmarks/results/ato_controller_speed.json", "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
