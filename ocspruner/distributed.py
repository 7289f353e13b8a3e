"""Multi-process training (``torchrun``, DistributedDataParallel): the one module that talks to
``torch.distributed``.

The core never imports it. The engine and the methods only receive a plain callable
``sync(tensor) -> tensor`` (:func:`decision_sync`) that returns rank 0's copy of a decision
tensor (the keep mask M_t, ATO's mask), so every rank prunes to the same sub-network, and a
single process needs nothing at all.

Every helper here is a no-op (returns its input) when no process group is running, so the
trainer calls them unconditionally and one code path serves 1 to N processes.

Process layout follows ``torchrun``'s environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``. On GPUs each process uses ``cuda:LOCAL_RANK`` with NCCL; on CPU
the backend is gloo.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

_OWNED = False   # True when init_from_env created the process group (cleanup then destroys it)


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Optional[torch.device] = None   # set when distributed (cuda:LOCAL_RANK or cpu)
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: Optional[int] = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            from .config import ConfigError
            raise ConfigError(f"WORLD_SIZE is set but {name} is not; launch with torchrun "
                              f"(e.g. torchrun --nproc_per_node=2 -m ocspruner train ...)")
        return default
    try:
        return int(raw)
    except ValueError:
        from .config import ConfigError
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer; launch with torchrun") from None


def init_from_env(device: str = "auto") -> DistEnv:
    """Join the process group torchrun describes in the environment, or return a one-process
    :class:`DistEnv` when ``WORLD_SIZE`` is unset or 1 (a plain run, bit-identical to one
    started without torchrun). Reuses a process group the caller already initialised.

    ``device``: ``auto``/``cuda``/``cuda:N`` use ``cuda:LOCAL_RANK`` (one GPU per process) when
    CUDA is available; ``cpu`` (or no CUDA with ``auto``) trains on CPU with gloo.
    """
    global _OWNED
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        if world <= 1:
            return DistEnv()
        local = _env_int("LOCAL_RANK", rank)
        backend = dist.get_backend()
        dev = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
        return DistEnv(rank, world, local, dev, backend)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistEnv()
    if not dist.is_available():
        from .config import ConfigError
        raise ConfigError("this torch build has no torch.distributed; run a single process (no torchrun)")
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if device.startswith("cuda") and not torch.cuda.is_available():
        from .config import ConfigError
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use device=cpu")
    if use_cuda:
        if local >= torch.cuda.device_count():
            from .config import ConfigError
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are visible; "
                              f"lower --nproc_per_node")
        dev, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(dev)   # NCCL collectives and *_object helpers use the current device
    else:
        dev, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world)
    _OWNED = True
    return DistEnv(rank, world, local, dev, backend)


def cleanup() -> None:
    """Destroy the process group if :func:`init_from_env` created it."""
    global _OWNED
    if _OWNED and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED = False


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s value of ``tensor`` (a new tensor, same dtype and device as the input).
    Bool tensors travel as uint8 (not every backend reduces/broadcasts bool)."""
    if not active():
        return tensor
    buf = tensor.detach().to(_comm_device(), torch.uint8 if tensor.dtype == torch.bool else tensor.dtype,
                             copy=True).contiguous()      # never overwrite the caller's tensor
    dist.broadcast(buf, src)
    return buf.to(tensor.device, tensor.dtype)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s copy of a picklable object (a path, a flag)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """Every rank's ``obj``, in rank order."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum over ranks (float64, so counts up to 2**53 stay exact)."""
    if not active():
        return [float(v) for v in values]
    buf = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(buf, dist.ReduceOp.SUM)
    return buf.cpu().tolist()


def all_true(flag: bool) -> bool:
    """True only if ``flag`` is True on every rank (e.g. 'my loss is finite')."""
    if not active():
        return bool(flag)
    buf = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(buf, dist.ReduceOp.MIN)
    return bool(buf.item())


@torch.no_grad()
def broadcast_module_(module: nn.Module, src: int = 0, buffers_only: bool = False) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank, in place."""
    if not active():
        return
    tensors = [] if buffers_only else [p.data for p in module.parameters()]
    tensors += [b for b in module.buffers()]
    dev = _comm_device()
    for t in tensors:
        if t.device == dev and t.is_contiguous():
            dist.broadcast(t, src)          # in place, no copy
        else:
            t.copy_(broadcast(t, src))


def decision_sync() -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The callable the engine and the methods use for their decisions (rank 0's keep mask), or
    None in a single process."""
    return broadcast if active() else None


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """A fresh DistributedDataParallel over ``model``. Its constructor broadcasts rank 0's
    parameters and buffers, and builds the gradient buckets for the CURRENT parameters: after a
    physical prune (new, smaller nn.Parameters) the old wrapper is stale and must be replaced."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # buffers (BatchNorm statistics) are broadcast from rank 0 before every forward (the default)
    return DDP(model, device_ids=ids, output_device=ids[0] if ids else None)


class ShardSampler(torch.utils.data.Sampler):
    """Indices rank, rank + N, rank + 2N, ... of a dataset: every example exactly once over all
    ranks (DistributedSampler pads with repeats, which would bias evaluation counts)."""

    def __init__(self, n: int, rank: int, world: int):
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))
