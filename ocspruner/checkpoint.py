"""Training checkpoints: ``checkpoints/ckpt-epoch0007.pt``, the newest N kept.

Written atomically through :mod:`ocspruner.rundir` (a full disk or a kill mid-write leaves the
previous checkpoints intact). ``atomic_write_text``/``atomic_torch_save`` are re-exported here for
the scripts and benchmarks that import them from this module.
"""
from __future__ import annotations

import os
import re

from .rundir import atomic_torch_save, atomic_write_text  # noqa: F401  (re-exported)


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

    def read_newest(self) -> tuple:
        """``(path, state)`` of the newest checkpoint that reads. One that does not (truncated by a
        kill or a full disk) is skipped for the next older one, with a warning on stderr."""
        import sys

        from .io import CheckpointError, read_checkpoint

        paths = [p for _, p in reversed(self.list())]
        again = "start the run again (with --overwrite to reuse its name)"
        if not paths:
            raise CheckpointError(f"no checkpoint to resume in {self.directory}; {again}")
        for i, path in enumerate(paths):
            try:
                return path, read_checkpoint(path)
            except CheckpointError as exc:
                if i + 1 == len(paths):
                    raise CheckpointError(f"no readable checkpoint in {self.directory} ({exc}); {again}") from None
                print(f"warning: {exc}; resuming from the older {os.path.basename(paths[i + 1])}", file=sys.stderr)
