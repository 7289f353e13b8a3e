"""Issue 16, "find out why": in the full Fashion-MNIST study a pruned epoch of ``ocspruner-s0``
(paper partition) cost 0.79x a dense epoch of process CPU, while the training step of the same
two trained models, timed side by side by ``benchmarks/knapsack_cap.py``, cost 0.705x. The
knapsack's model showed no such gap (0.53x and 0.53x). Where do the missing 9 points come from?

    python benchmarks/epoch_gap.py --pause PID [PID ...]   # ~5 min of one core; needs fashion_full's runs

Two things differ between the bench and the study, and each is measured here on its own, the
three trained models (``dense-s0``, ``ocspruner-s0``, ``ocspruner_knapsack-s0``) timed side by
side, one thread, thread CPU clock, interleaved rounds, median of per-round ratios:

- **what a step is**: the bench times forward + backward on a fixed random batch; the trainer
  also loads and augments a real batch, takes the cross-entropy and its ``.item()``, zeroes the
  gradients and takes an SGD step (the recipe's momentum and weight decay). Settings ``bench``
  and ``loop``.
- **what runs beside it**: the study trains two runs at a time, one per core, while the bench ran
  on an otherwise idle core. A step is timed alone and beside a co-runner: this script started
  again as a second process that trains the dense model (a ``loop`` step) on the other core
  without pause. Settings ``... alone`` and ``... beside a dense run``.
- **the trainer itself** (setting ``trainer ...``): each run resumed from its last checkpoint (a
  copy; the model pruned in this process by the same surgery as in the study), ``train_epoch`` on
  the first batches of an epoch, then the epoch's BN recalibration and validation, run by run,
  round by round: everything a study epoch times but the per-epoch method work.

The timings need a quiet machine: ``--pause`` stops the given processes (the study's workers)
while it measures (benchmarks/_pause.py). Writes
``benchmarks/results/epoch_gap.json`` with a top-level ``summary``.
"""
from __future__ import annotations

import argparse
import json
import os
import itertools
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from _pause import add_pause_argument, paused  # noqa: E402
from ocspruner.checkpoint import atomic_write_text  # noqa: E402

WORK = os.path.join(ROOT, "benchmarks", "work", "fashion_full", "runs")
OUT = os.path.join(ROOT, "benchmarks", "results", "epoch_gap.json")
RECIPE = "fashion_mnist_resnet20"
RUNS = {"dense": "dense-s0", "ocspruner (ranking)": "ocspruner-s0", "ocspruner_knapsack": "ocspruner_knapsack-s0"}
SETTINGS = ("bench alone", "loop alone", "bench beside a dense run", "loop beside a dense run")
TRAINER_BATCHES = 40      # batches of train_epoch per timed round of the trainer setting


def forever(loader):
    """The loader's batches, epoch after epoch (a fresh shuffled pass each time)."""
    while True:
        yield from loader


def loop_step(model, loader, optim_cfg):
    """One step as ``Trainer.train_epoch`` takes it (no method hooks: none act after the prune)."""
    from ocspruner.recipe import build_optimizer

    optim_cfg = type(optim_cfg)(**{**vars(optim_cfg), "lr": 1e-3})   # timing only: keep the weights finite
    optimizer = build_optimizer(model.parameters(), optim_cfg)
    batches = forever(loader)
    model.train()

    def step():
        x, y = next(batches)
        out = model(x)
        loss = F.cross_entropy(out, y)
        loss.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        (out.argmax(1) == y).sum().item()
    return step


def recipe_loader(seed: int = 0):
    from ocspruner.config import load_config
    from ocspruner.data import build_datasets, build_loaders

    cfg = load_config(RECIPE)
    d = cfg.data
    bundle = build_datasets(d.name, d.root, val_fraction=d.val_fraction, seed=seed, subset=d.subset,
                            image_size=d.image_size, augment=d.augment, **d.options)
    train, _, _ = build_loaders(bundle, d.batch_size, workers=0, seed=seed)
    return cfg, train


def load_models(work: str) -> dict:
    from ocspruner.io import load

    missing = [k for k in RUNS.values() if not os.path.exists(os.path.join(work, k, "final_model.pt"))]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not finished in {work}; run benchmarks/fashion_full.py first")
    return {name: load(os.path.join(work, key, "final_model.pt")) for name, key in RUNS.items()}


def co_runner(work: str) -> None:
    """The second process: trains the dense model step after step until it is killed."""
    torch.set_num_threads(1)
    cfg, train = recipe_loader(seed=1)
    step = loop_step(load_models(work)["dense"], train, cfg.optim)
    print("running", flush=True)
    while True:
        step()


def time_setting(models: dict, kind: str, loader, optim_cfg, warmup: int, repeats: int) -> dict:
    from ocspruner.latency import time_calls, time_interleaved

    if kind == "bench":      # the latency bench's training step, on one real batch
        return time_interleaved(models, next(iter(loader))[0], warmup, repeats, "thread_cpu", "train")
    calls = {name: loop_step(m, loader, optim_cfg) for name, m in models.items()}
    return time_calls(calls, warmup, repeats, "thread_cpu")


class FirstBatches:
    """The first ``n`` batches of a loader, with its length kept (train_epoch's lr schedule reads it)."""

    def __init__(self, loader, n: int):
        self.loader, self.n, self.sampler = loader, n, loader.sampler

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def time_trainers(work: str, rounds: int, batches: int = TRAINER_BATCHES) -> dict:
    """The trainer itself, as the study ran it: every run resumed from its last checkpoint (in a
    copy: the study's directory is not touched), then ``train_epoch`` on the first ``batches``
    batches and the epoch's BN recalibration + validation, the runs interleaved round by round
    (the first round untimed). Returns per-step seconds of training and seconds of validation."""
    from ocspruner.config import load_config
    from ocspruner.latency import time_calls
    from ocspruner.trainer import Trainer

    trainers, tmp = {}, tempfile.mkdtemp(prefix="epoch_gap-")
    try:
        for name, key in RUNS.items():
            run = os.path.join(tmp, key)
            os.makedirs(run)
            for part in ("config.yaml", "metrics.jsonl", "checkpoints"):
                src = os.path.join(work, key, part)
                (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(run, part))
            tr = Trainer(load_config(os.path.join(run, "config.yaml")), run_dir=run)
            tr.resume()
            tr.train_loader = FirstBatches(tr.train_loader, batches)
            trainers[name] = tr
        torch.set_num_threads(1)
        samples = {name: {"train_step": [], "validation": []} for name in trainers}

        def epoch_of(name, tr):
            def call():
                t0 = time.thread_time()
                tr.train_epoch(tr.total_epochs - 1)
                t1 = time.thread_time()
                tr.recalibrate_bn()
                tr.evaluate(tr.val_loader)
                t2 = time.thread_time()
                samples[name]["train_step"].append((t1 - t0) / batches)
                samples[name]["validation"].append(t2 - t1)
            return call
        # the runs interleaved round by round; the warm-up call of each is not kept
        time_calls({name: epoch_of(name, tr) for name, tr in trainers.items()}, 1, rounds, "thread_cpu")
        return {name: {part: ts[1:] for part, ts in parts.items()} for name, parts in samples.items()}
    finally:
        for tr in trainers.values():
            tr.rundir.unlock()
        shutil.rmtree(tmp, ignore_errors=True)


def study_epoch_ratio(work: str, key: str) -> float:
    """A pruned epoch's CPU over a dense epoch's, as the study measured it (metrics.jsonl)."""
    from knapsack_cap import pruned_epoch_cost

    return pruned_epoch_cost(os.path.join(work, key), os.path.join(work, "dense-s0"))


def measure(work: str, warmup: int, repeats: int, trainer_rounds: int) -> dict:
    import copy
    import statistics

    torch.set_num_threads(1)
    cfg, train = recipe_loader(seed=0)
    trained = load_models(work)
    results = {}
    for setting in SETTINGS:
        kind, _, beside = setting.partition(" ")
        helper = None
        if "beside" in beside:
            helper = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--co-runner", "--work", work],
                                      stdout=subprocess.PIPE, text=True)
            if helper.stdout.readline().strip() != "running":
                raise SystemExit("the co-runner did not start; see its error above")
            time.sleep(5)    # let it reach its steady step
        try:
            models = {name: copy.deepcopy(m) for name, m in trained.items()}   # each setting from the same weights
            times = time_setting(models, kind, train, cfg.optim, warmup, repeats)
        finally:
            if helper is not None:
                helper.kill()
                helper.wait()
        dense = times["dense"]
        results[setting] = {
            "dense_step_ms": 1e3 * statistics.median(dense),
            "ratio_to_dense": {name: statistics.median(t / d for t, d in zip(times[name], dense))
                               for name in times if name != "dense"},
            "median_ms": {name: 1e3 * statistics.median(t) for name, t in times.items()}}
        print(f"{setting:26s} dense {results[setting]['dense_step_ms']:6.0f} ms  " +
              "  ".join(f"{n} {r:.3f}x" for n, r in results[setting]["ratio_to_dense"].items()), flush=True)
    times = time_trainers(work, trainer_rounds)
    for part in ("train_step", "validation"):
        dense = times["dense"][part]
        results[f"trainer {part} alone"] = {
            "dense_step_ms" if part == "train_step" else "dense_s":
                (1e3 if part == "train_step" else 1.0) * statistics.median(dense),
            "ratio_to_dense": {name: statistics.median(t / d for t, d in zip(times[name][part], dense))
                               for name in times if name != "dense"},
            "samples": {name: t[part] for name, t in times.items()}}
        print(f"trainer {part:11s} alone     " + "  ".join(
            f"{n} {r:.3f}x" for n, r in results[f"trainer {part} alone"]["ratio_to_dense"].items()), flush=True)
    return results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=WORK, help="fashion_full's runs/ directory")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--trainer-rounds", type=int, default=3)
    add_pause_argument(ap)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--co-runner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.co_runner:
        return co_runner(args.work)
    load_models(args.work)    # refuse before pausing anything
    with paused(args.pause):
        results = measure(args.work, args.warmup, args.repeats, args.trainer_rounds)
    study = {name: study_epoch_ratio(args.work, key) for name, key in RUNS.items() if name != "dense"}
    summary = {"clock": "thread_cpu", "threads": 1, "repeats": args.repeats,
               "study_pruned_epoch_ratio": study,
               **{f"{setting} | {name}": round(r, 3) for setting, res in results.items()
                  for name, r in res["ratio_to_dense"].items()},
               **{f"{setting} | dense_step_ms": round(res["dense_step_ms"], 1) for setting, res in results.items()
                  if "dense_step_ms" in res}}
    out = {"summary": summary, "settings": results, "command": "python benchmarks/epoch_gap.py --pause <study workers>"}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=1))
    print("study (metrics.jsonl): " + "  ".join(f"{n} {r:.3f}x" for n, r in study.items()))


if __name__ == "__main__":
    main()
