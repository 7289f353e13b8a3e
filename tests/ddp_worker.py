"""One process of the multi-process test (tests/test_ddp.py), launched by torchrun.

Usage: torchrun --standalone --nproc_per_node=N tests/ddp_worker.py BASE_DIR

Phase A: a fresh OCSPruner run, in a working directory of its own per rank (``BASE/cwdR``) and a
RELATIVE out_dir, so a file written by rank R lands under cwdR: rank 1's directory must stay empty.
Phase B: the same run on a directory all ranks see, stopped at t* (after the prune) and resumed by new
Trainers on every rank; its final weights must equal phase A's.
Each rank saves what it ended with to ``BASE/rankR.pt`` for the test to compare.
"""
import os
import sys
import warnings

import torch

warnings.filterwarnings("ignore", message=".*Unwrapped parameters.*")

from ocspruner import distributed  # noqa: E402
from ocspruner.config import load_config  # noqa: E402
from ocspruner.trainer import Trainer  # noqa: E402

BASE = {"model": "tiny_convnet", "data.name": "synthetic", "data.image_size": 16, "data.batch_size": 16,
        "data.options": {"num_samples": 96, "num_test": 31, "num_classes": 4}, "progress": False, "threads": 1,
        "device": "cpu", "pruning.window": 2, "pruning.offset": 1, "pruning.tau": 1.0, "pruning.epsilon": 0.05,
        "pruning.lambda0": 0.5, "pruning.delta": 0.5, "epochs": 10, "seed": 3}


def main(base: str) -> None:
    rank = int(os.environ.get("RANK", "0"))
    cwd = os.path.join(base, f"cwd{rank}")
    os.makedirs(cwd, exist_ok=True)
    os.chdir(cwd)

    # phase A: a fresh run, relative out_dir
    trainer = Trainer(load_config(None, updates={**BASE, "out_dir": "runs", "name": "a"}))
    env = trainer.dist
    epoch0_order = list(trainer.train_loader.sampler)    # DistributedSampler order of epoch 0 (set_epoch(0))
    summary = trainer.fit()
    full_test = torch.utils.data.DataLoader(trainer.bundle.test, batch_size=7)   # unsharded: not reduced
    out = {"rank": env.rank, "world": env.world_size, "summary": summary,
           "state": {k: v.clone() for k, v in trainer.model.state_dict().items()},
           "history": torch.stack(trainer.method.engine.history),
           "epoch0_order": epoch0_order, "full_test_acc": trainer.evaluate(full_test)["acc"],
           "train_batches": len(trainer.train_loader)}

    # phase B: crash after the prune, resume on every rank from the shared run directory
    shared = {**BASE, "out_dir": os.path.join(base, "shared"), "name": "b"}
    Trainer(load_config(None, updates=shared)).fit(stop_after=summary["t_star"])   # the epoch it prunes
    again = Trainer(load_config(None, updates=shared))
    out["resumed_at"] = again.resume()
    out["resumed_summary"] = again.fit()
    out["resumed_state"] = {k: v.clone() for k, v in again.model.state_dict().items()}

    torch.save(out, os.path.join(base, f"rank{env.rank}.pt"))
    distributed.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
