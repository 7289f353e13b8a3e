"""Why validation accuracy collapsed when sparsity learning started (issue 14), measured.

Trains the quick start (``cpu_default``: ResNet-20 on digits) with BatchNorm recalibration OFF
(``bn_recalibration=0``, the old behaviour) and, after every epoch, evaluates the same weights
twice on the validation split: with the running statistics (what the curve showed) and with
statistics re-estimated on 5 training batches (``bnstats.recalibrate`` on a copy). It also
records how far the running variance is from the re-estimated one (relative error, mean and max
over BN layers). Writes ``benchmarks/results/bn_lag.json`` and prints one line per epoch.

    python3 benchmarks/bn_lag.py            # about 4-6 min on 2 CPU cores
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ocspruner.bnstats import batchnorms, recalibrate  # noqa: E402
from ocspruner.config import load_config  # noqa: E402
from ocspruner.trainer import Trainer  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "results", "bn_lag.json")


def main() -> None:
    work = tempfile.mkdtemp(prefix="bn_lag-")
    cfg = load_config("cpu_default", updates={"out_dir": work, "name": "lag", "progress": False,
                                              "bn_recalibration": 0})
    trainer = Trainer(cfg)
    plain_evaluate, rows = trainer.evaluate, []

    def evaluate(loader, model=None):
        result = plain_evaluate(loader, model)
        if loader is trainer.val_loader and model is None:
            rng = trainer.rng.state()
            twin = copy.deepcopy(trainer.model)
            recalibrate(twin, (x for x, _ in itertools.islice(trainer.train_loader, 5)))
            trainer.rng.restore(rng)
            fresh = plain_evaluate(loader, twin)
            errs = [float(((a.running_var - b.running_var).abs() / (b.running_var + 1e-5)).mean())
                    for a, b in zip(batchnorms(trainer.model), batchnorms(twin))]
            rows.append({"epoch": len(rows), "val_acc_running_stats": result["acc"], "val_acc_recalibrated": fresh["acc"],
                         "var_rel_err_mean": sum(errs) / len(errs), "var_rel_err_max": max(errs)})
            print(json.dumps(rows[-1]), flush=True)
        return result

    trainer.evaluate = evaluate
    summary = trainer.fit()
    metrics = [json.loads(line) for line in open(os.path.join(summary["run_dir"], "metrics.jsonl"))]
    for row, m in zip(rows, metrics):
        row.update(stage=m["stage"], train_acc=m["train_acc"], lam=m["lambda"])
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump({"t_sl_start": summary["t_sl_start"], "t_star": summary["t_star"], "epochs": rows}, fh, indent=1)
    print(f"t_sl-start {summary['t_sl_start']}, t* {summary['t_star']}; wrote {OUT}")


if __name__ == "__main__":
    main()
