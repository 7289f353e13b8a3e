"""TensorBoard events of a run: every finite numeric field of an epoch's metrics row, by epoch.

Optional: without tensorboard installed there is no writer, and metrics.jsonl still holds
everything (``Trainer`` writes both)."""
from __future__ import annotations

import math
from typing import Optional


class TensorBoardLog:
    def __init__(self, writer):
        self.writer = writer

    @classmethod
    def open(cls, directory: str) -> Optional["TensorBoardLog"]:
        """A log writing to ``directory``, or None when tensorboard cannot be imported."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:    # not installed (or broken): a run must not fail for its optional log
            return None
        return cls(SummaryWriter(directory))

    @staticmethod
    def scalars(row: dict) -> dict:
        """The fields of ``row`` TensorBoard can plot: finite ints and floats (not bools), without
        the epoch itself, which is the step."""
        return {k: v for k, v in row.items()
                if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}

    def log(self, row: dict) -> None:
        for key, value in self.scalars(row).items():
            self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
