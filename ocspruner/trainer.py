"""The one training loop. Every method (dense, OCSPruner, and the baselines) runs through it and
differs only by its strategy object (``methods.py``).

A run directory holds: config.yaml (resolved), metrics.jsonl (one line per epoch), tb/ (TensorBoard
events), checkpoints/ (atomic, last N kept), best.pt, final_model.pt + architecture.json,
channels.json, summary.json and plots/. Its name, lock and files belong to ``rundir.RunDir``: a
new run never writes into a directory holding another run (unless ``overwrite``), and a second
process is refused while this one writes.

Multi-process training: ``torchrun --nproc_per_node=N -m ocspruner train ...`` runs the same
loop in N processes (CPU: gloo; GPU: NCCL, one GPU per process at ``cuda:LOCAL_RANK``; see
``distributed.py``). With WORLD_SIZE unset or 1 nothing changes. With N > 1:

* the model trains through DistributedDataParallel; every physical prune (new, smaller
  parameters) replaces the wrapper by a fresh one over the pruned module, so DDP's gradient
  buckets match the new parameters; the optimizer's state is remapped in place on every rank;
* the sub-network is decided once: rank 0's keep mask M_t (ATO: its mask) is broadcast, so all
  ranks compute the same J, t_sl-start and t* and prune to the same channels; the method's
  after_backward terms act on DDP's already averaged gradients and identical weights, so they
  stay identical across ranks; BatchNorm buffers are re-broadcast from rank 0 after each epoch;
* ``data.batch_size`` is per process (global batch N x batch_size); the training set is split by
  a seeded DistributedSampler (set_epoch each epoch; it pads with up to N-1 repeated examples,
  which the train metrics include); validation and test are split into exact, disjoint shards
  and their counts summed, so val/test metrics are exact;
* only rank 0 writes files (run directory, checkpoints, metrics, TensorBoard, plots) and picks
  the run directory name; resume needs the run directory visible to every process (each loads
  the checkpoint) and is exact with the same number of processes (per-rank RNG states are saved).
"""
from __future__ import annotations

import json
import math
import random
import time
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from . import distributed
from .checkpoint import CheckpointManager
from .clock import cpu_cost
from .config import ConfigError, RunConfig
from .methods import Method, create_method
from .recipe import build_optimizer, set_lr
from .resume import RngStreams, checkpoint_state as build_checkpoint, restore as restore_checkpoint
from .rundir import RunDir, RunDirError
from .tblog import TensorBoardLog


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use device=cpu")
    return torch.device(name)


def claim_run_dir(cfg: RunConfig, run_dir: Optional[str], data_name: str, overwrite: bool, is_main: bool) -> RunDir:
    """The run directory, locked. Rank 0 names and locks it (a time stamp could differ between
    processes) and alone writes; a refusal reaches every process (none may wait for the others
    in vain). ``run_dir``: an existing directory to write; by default a new one under
    ``cfg.out_dir`` (``RunDir.new``)."""
    picked = error = rundir = None
    if is_main:
        try:
            if run_dir is not None:
                rundir = RunDir(run_dir)
                rundir.lock()
            else:
                rundir = RunDir.new(cfg.out_dir, cfg.name, stem=f"{cfg.model}-{data_name}-{cfg.method}",
                                    overwrite=overwrite)
            picked = rundir.path
        except RunDirError as exc:
            error = exc
    picked, error = distributed.broadcast_object((picked, error))
    if error is not None:
        raise error
    return rundir if is_main else RunDir(picked)


class Trainer:
    """One cycle: model + data + method + recipe -> run directory.

    ``model`` and ``bundle`` may be given from Python (a user's own nn.Module and datasets);
    otherwise they are built from the config's registries.
    """

    def __init__(self, cfg: RunConfig, model: Optional[nn.Module] = None, bundle=None,
                 method: Optional[Method] = None, run_dir: Optional[str] = None, overwrite: bool = False):
        """``run_dir``: an existing directory to write (to resume it, or a caller's own); by
        default ``cfg.out_dir/cfg.name`` (refused if it holds a run, unless ``overwrite``), or a
        new unique name. The directory is locked first, before any data is loaded."""
        from .data import build_datasets, build_loaders
        from .models import create_model

        self._setup_started = cpu_cost()
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.dist = distributed.init_from_env(cfg.device)      # one process unless under torchrun
        self.device = self.dist.device if self.dist.enabled else resolve_device(cfg.device)
        self.overwrite = overwrite
        self.rundir = claim_run_dir(cfg, run_dir, bundle.name if bundle is not None else cfg.data.name,
                                    overwrite, self.dist.is_main)
        self.run_dir = self.rundir.path
        d = cfg.data
        self.bundle = bundle or build_datasets(d.name, d.root, val_fraction=d.val_fraction, seed=cfg.seed,
                                               subset=d.subset, image_size=d.image_size, augment=d.augment,
                                               **d.options)
        sampler = None
        if self.dist.enabled:   # each process trains on its share of every epoch, in a seeded order
            sampler = torch.utils.data.DistributedSampler(self.bundle.train, self.dist.world_size, self.dist.rank,
                                                          shuffle=True, seed=cfg.seed)
        self.train_loader, self.val_loader, self.test_loader = build_loaders(
            self.bundle, d.batch_size, workers=d.workers, seed=cfg.seed, pin_memory=self.device.type == "cuda",
            sampler=sampler)
        self.rng = RngStreams.of(self.train_loader, self.bundle.train)   # what a checkpoint restores
        if self.dist.enabled:
            self._shard_for_ranks()
        if len(self.bundle.train) == 0:
            raise ConfigError("the training set is empty; check data.subset and the data directory")
        if d.batch_size > len(self.bundle.train):
            raise ConfigError(f"data.batch_size ({d.batch_size}) is larger than the training set "
                              f"({len(self.bundle.train)} examples); lower data.batch_size")
        if model is None:
            model = create_model(cfg.model, num_classes=self.bundle.num_classes,
                                 in_channels=self.bundle.in_channels, **cfg.model_options)
        if cfg.init_from:
            from .io import load_weights
            load_weights(model, cfg.init_from)   # pre-trained start (paper Table 5)
        self.model = model.to(self.device)
        distributed.broadcast_module_(self.model)   # every process starts from rank 0's weights
        size = self.bundle.image_size
        self.example_inputs = torch.randn(1, self.bundle.in_channels, size, size, device=self.device)
        self.method = method or create_method(cfg.method)
        self.method.setup(self.model, self.example_inputs, cfg)
        self.method.set_decision_sync(distributed.decision_sync())   # None in one process
        self.method.bind_data(self.bundle.train, d.batch_size, cfg.seed)
        self.total_epochs = self.method.total_epochs()   # a two-cycle pipeline trains longer
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" and self.device.type == "cuda" else None
        self.ckpt = CheckpointManager(self.rundir.file(RunDir.CHECKPOINTS), cfg.keep_checkpoints,
                                      create=self.dist.is_main)
        self._train_net, self._train_net_key = None, None   # the training forward's wrapper (DDP and/or torch.compile)
        self.compilations = 0
        self.start_epoch = 0
        self.best = {"val_acc": -1.0, "epoch": None}
        self.elapsed = 0.0          # training wall time of the epochs run so far (survives resume)
        self.cpu_elapsed = 0.0      # process CPU time of the same epochs (all threads; unlike wall time, not counting other processes)
        self.time_to_prune: Optional[float] = None
        self.setup_cpu = cpu_cost() - self._setup_started   # data, model, method set-up

    # -- multi-process ------------------------------------------------------------------------
    def _shard_for_ranks(self) -> None:
        """Validation/test in exact disjoint shards (no padding), and a different augmentation
        stream per process (rank 0 keeps the single-process one)."""
        def sharded(loader):
            return torch.utils.data.DataLoader(
                loader.dataset, batch_size=loader.batch_size, num_workers=loader.num_workers,
                pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn,
                sampler=distributed.ShardSampler(len(loader.dataset), self.dist.rank, self.dist.world_size))
        self.val_loader, self.test_loader = sharded(self.val_loader), sharded(self.test_loader)
        if self.dist.rank:
            self.rng.reseed(self.cfg.seed + 1_000_003 * self.dist.rank)

    def _net(self) -> nn.Module:
        """The module the training forward runs through: the model, or under torchrun a
        DistributedDataParallel over it. The wrapper is rebuilt whenever the parameters changed
        (a physical prune replaces them): the old one's gradient buckets and hooks belong to the
        removed parameters. All ranks prune at the same epoch, so all rebuild together."""
        if not self.dist.enabled and not self.cfg.compile:
            return self.model
        key = [(id(p), tuple(p.shape)) for p in self.model.parameters()]
        if self._train_net is None or key != self._train_net_key:
            self._train_net = None
            net = distributed.wrap(self.model, self.device) if self.dist.enabled else self.model
            if self.cfg.compile:   # compiled again after a prune: the graph was traced at the old widths
                net = torch.compile(net, backend=self.cfg.compile)
                self.compilations += 1
            self._train_net, self._train_net_key = net, key
        return self._train_net

    # -- one epoch --------------------------------------------------------------------------
    def _autocast(self):
        if self.cfg.amp is None:
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _to_device(self, x, y):
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def train_epoch(self, epoch: int, progress=None) -> dict:
        net = self._net()
        net.train()
        if hasattr(self.train_loader.sampler, "set_epoch"):
            self.train_loader.sampler.set_epoch(epoch)     # DistributedSampler: a new seeded order
        n_batches = len(self.train_loader)
        total = correct = 0
        loss_sum = 0.0
        for i, (x, y) in enumerate(self.train_loader):
            set_lr(self.optimizer, self.method.learning_rate(epoch + i / n_batches))
            x, y = self._to_device(x, y)
            with self._autocast():
                out = net(x)
                loss = F.cross_entropy(out, y, label_smoothing=self.cfg.label_smoothing)
            value = loss.item()
            if not distributed.all_true(math.isfinite(value)):   # every process stops at the same step
                where = value if not math.isfinite(value) else "non-finite in another process"
                raise TrainingDiverged(f"loss became {where} at epoch {epoch}, batch {i}")
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)      # the method's gradient terms see true grads
                self.method.after_backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.method.after_backward()
                self.optimizer.step()
            self.method.after_step(self.optimizer)
            loss_sum += value * len(y)
            correct += (out.argmax(1) == y).sum().item()
            total += len(y)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss_sum / total:.3f}", acc=f"{100 * correct / total:.1f}")
        if self.dist.enabled:
            # DDP broadcasts buffers at the START of a forward: after the last batch each rank's
            # BatchNorm statistics differ; rank 0's become everyone's (evaluation, checkpoints)
            distributed.broadcast_module_(self.model, buffers_only=True)
            loss_sum, correct, total = distributed.all_reduce_sum([loss_sum, correct, total])
        return {"train_loss": loss_sum / max(total, 1), "train_acc": 100.0 * correct / max(total, 1),
                "lr": self.optimizer.param_groups[0]["lr"]}

    def recalibrate_bn(self) -> bool:
        """Re-estimate BatchNorm statistics of the current weights on the first
        ``cfg.bn_recalibration`` training batches (see ``bnstats``), in place, before every
        validation: the curve, best.pt, checkpoints and final_model.pt hold the statistics that
        were evaluated. The RNG streams are restored after, so the training is unchanged."""
        import itertools

        from .bnstats import recalibrate

        if not self.cfg.bn_recalibration:
            return False
        rng = self.rng.state()
        try:
            def forward(model, batch):
                x, _ = self._to_device(*batch)
                with self._autocast():
                    model(x)
            used = recalibrate(self.model, itertools.islice(self.train_loader, self.cfg.bn_recalibration), forward)
        finally:
            self.rng.restore(rng)
        if used and self.dist.enabled:   # each process saw its own shard: rank 0's statistics become everyone's
            distributed.broadcast_module_(self.model, buffers_only=True)
        return bool(used)

    @torch.no_grad()
    def evaluate(self, loader, model: Optional[nn.Module] = None) -> dict:
        model = model or self.model
        was = model.training
        model.eval()
        total = correct = 0
        loss_sum = 0.0
        for x, y in loader:
            x, y = self._to_device(x, y)
            with self._autocast():
                out = model(x)
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            total += len(y)
        model.train(was)
        if isinstance(getattr(loader, "sampler", None), distributed.ShardSampler):   # exact shards: sum them
            loss_sum, correct, total = distributed.all_reduce_sum([loss_sum, correct, total])
        if total == 0:
            return {"loss": None, "acc": None}
        return {"loss": loss_sum / total, "acc": 100.0 * correct / total}

    # -- the cycle --------------------------------------------------------------------------
    def fit(self, stop_after: Optional[int] = None) -> Optional[dict]:
        """Run the cycle to the end and return the summary. ``stop_after=k`` stops after epoch k
        (checkpoint written, no summary): training continues later with :meth:`resume`."""
        from tqdm.auto import tqdm

        main = self.dist.is_main     # only rank 0 writes files and shows progress
        error = None
        if main:
            try:
                self.rundir.lock()       # held already, unless an earlier fit() of this object ended
                if self.start_epoch == 0:    # a fresh start: the directory holds no other run (or it is replaced)
                    self.rundir.check_fresh(self.overwrite)
            except RunDirError as exc:
                error = exc
        error = distributed.broadcast_object(error)
        if error is not None:
            raise error
        if main:
            self.rundir.write_text(RunDir.CONFIG, yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        try:
            return self._fit(stop_after)
        finally:
            if main:
                self.rundir.unlock()

    def _fit(self, stop_after: Optional[int]) -> Optional[dict]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        main = self.dist.is_main
        writer = TensorBoardLog.open(self.rundir.file(RunDir.TB)) if main else None
        show = cfg.progress and main
        total = self.total_epochs
        epochs_bar = tqdm(range(self.start_epoch, total), desc=f"{cfg.method}", disable=not show,
                          initial=self.start_epoch, total=total, unit="ep")
        for epoch in epochs_bar:
            t0, c0 = time.perf_counter(), cpu_cost()
            info = self.method.epoch_start(epoch, self.optimizer)
            if info.get("pruned"):
                self.time_to_prune = self.elapsed + (time.perf_counter() - t0)
                if cfg.channels_last:
                    self.model.to(memory_format=torch.channels_last)
            bar = tqdm(total=len(self.train_loader), desc=f"epoch {epoch}", leave=False, disable=not show, unit="it")
            try:
                train = self.train_epoch(epoch, bar)
            except TrainingDiverged as exc:
                last = self.ckpt.latest()
                keep = f"the last good checkpoint is {last} (resume with --resume {self.run_dir})" if last \
                    else "no checkpoint was written yet"
                raise TrainingDiverged(f"{exc}; {keep}; lower optim.lr or check the data") from None
            finally:
                bar.close()
            self.recalibrate_bn()
            val = self.evaluate(self.val_loader)
            epoch_time = time.perf_counter() - t0
            self.elapsed += epoch_time
            self.cpu_elapsed += cpu_cost() - c0
            row = {"epoch": epoch, "stage": info.get("stage"), **train, "val_loss": val["loss"], "val_acc": val["acc"],
                   "similarity": info.get("similarity"), "similarity_avg": info.get("similarity_avg"),
                   "lambda": info.get("lambda", 0.0), "flops": info.get("flops"), "params": info.get("params"),
                   "flops_reduction": info.get("flops_reduction"), "epoch_time": epoch_time,
                   "elapsed": self.elapsed, "events": info.get("events", []),
                   "group_norms": info.get("group_norms"), "cpu_elapsed": self.cpu_elapsed, **info.get("log", {})}
            if main:
                self.rundir.append_line(RunDir.METRICS, json.dumps(row))
            if writer is not None:
                writer.log(row)
            final_arch = info.get("stage") in ("pruned", "dense")
            if final_arch and val["acc"] is not None and val["acc"] > self.best["val_acc"]:
                self.best = {"val_acc": val["acc"], "epoch": epoch}    # val metrics are reduced: same on all ranks
                if main:
                    self.rundir.save_torch(RunDir.BEST, {"model": self.model.state_dict(), "epoch": epoch})
            if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == total:
                self._save_checkpoint(epoch)
            epochs_bar.set_postfix(stage=row["stage"], val=f"{val['acc'] if val['acc'] is not None else float('nan'):.1f}",
                                   J=f"{row['similarity_avg']:.4f}" if row["similarity_avg"] is not None else "-")
            for event in row["events"] if main else ():
                tqdm.write(f"[epoch {epoch}] {event}")
            if stop_after is not None and epoch >= stop_after:
                if (epoch + 1) % cfg.checkpoint_every != 0:
                    self._save_checkpoint(epoch)
                epochs_bar.close()
                if writer is not None:
                    writer.close()
                distributed.barrier()
                return None
        epochs_bar.close()
        if writer is not None:
            writer.close()
        self.method.on_train_end(self.optimizer)
        summary = self.finish()
        distributed.barrier()     # the other processes wait until rank 0 has written every file
        return summary

    def checkpoint_state(self, epoch: int) -> dict:
        """The checkpoint of this process (collective under torchrun: RNG states are gathered);
        what it holds: ``resume.checkpoint_state``."""
        return build_checkpoint(self, epoch)

    def _save_checkpoint(self, epoch: int) -> None:
        state = self.checkpoint_state(epoch)   # every rank takes part; rank 0 writes
        if self.dist.is_main:
            self.ckpt.save(epoch, state)

    def resume(self, checkpoint: Optional[str] = None) -> int:
        """Continue from the newest checkpoint of this run directory (or ``checkpoint``): model,
        optimizer, method state (sub-network history, lambda, stage; a past prune is replayed),
        RNG and data order. Returns the epoch training continues from. A newest checkpoint that
        cannot be read (truncated by a kill or a full disk) is skipped for the next older one
        (``resume.restore``)."""
        return restore_checkpoint(self, checkpoint)

    def finish(self) -> dict:
        """Test the final (and best-on-validation) model, save the model and the summary, plot
        (``finish.py``)."""
        from .finish import finish_run

        return finish_run(self)
