"""Atomic writes: a run never loses what it had already written.

Every file is written to a temporary file in the same directory, flushed and fsync'ed, then
renamed over the target (rename is atomic on POSIX). If the disk fills up or the process dies
mid-write, the previous version of the file is still intact.
"""
from __future__ import annotations

import os
import re
import tempfile

import torch


def _atomic(path: str, write) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj, path: str) -> None:
    _atomic(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(path: str, text: str) -> None:
    _atomic(path, lambda fh: fh.write(text.encode("utf-8")))


class CheckpointManager:
    """``ckpt-epoch0007.pt`` files in one directory; the newest ``keep`` are kept."""

    pattern = re.compile(r"^ckpt-epoch(\d+)\.pt$")

    def __init__(self, directory: str, keep: int = 2, create: bool = True):
        self.directory, self.keep = directory, keep
        if create:     # False on the processes of a multi-process run that do not write (rank > 0)
            os.makedirs(directory, exist_ok=True)

    def path(self, epoch: int) -> str:
        return os.path.join(self.directory, f"ckpt-epoch{epoch:04d}.pt")

    def list(self) -> list[tuple[int, str]]:
        found = []
        if not os.path.isdir(self.directory):
            return found
        for name in os.listdir(self.directory):
            m = self.pattern.match(name)
            if m:
                found.append((int(m.group(1)), os.path.join(self.directory, name)))
        return sorted(found)

    def save(self, epoch: int, state: dict) -> str:
        path = self.path(epoch)
        atomic_torch_save(state, path)        # the new one is complete before old ones go
        for _, old in self.list()[:-self.keep]:
            os.remove(old)
        return path

    def latest(self):
        found = self.list()
        return found[-1][1] if found else None
