"""One run directory, owned by one object: its name, its lock, its files.

A run directory belongs to one run. :class:`RunDir` is the only code that knows how one is laid
out; the trainer, ``compare``, ``export``, ``bench`` and ``report`` go through it.

* **Names.** A default name is ``<stem>-<YYYYmmdd-HHMMSS>``, created with an exclusive ``mkdir``;
  a name already taken (two runs started in the same second) gets ``-2``, ``-3``, ...
* **Lock.** A writer holds an exclusive ``flock`` on ``RUN_DIR/.lock`` while it writes; the file
  names the holder (PID, host, start time). A second writer is refused with one line naming the
  holder. The kernel releases the lock when the process ends, also after ``kill -9``, so a lock
  is never stale. Nested use in one process (the trainer calls export and report) shares it.
* **Never overwrite.** A new run refuses a directory that holds a finished run, or an
  interrupted one (which it points at ``--resume``), unless ``overwrite`` is given; then the old
  run's files are removed first (only the files a run writes).
* **Atomic writes with the user's umask.** Every file is written to a temporary file in the same
  directory, fsync'ed and renamed over the target, so a full disk or a kill mid-write leaves the
  previous version intact; the file gets the mode ``open()`` would give it (``mkstemp`` alone
  gives 0600). Temporaries a killed writer left behind are removed when the next writer locks.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import time
from typing import Callable, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no advisory lock (one writer is then the user's job)
    fcntl = None

TMP_PREFIX = ".tmp-"


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (busy, finished, missing files)."""


class RunDirBusy(RunDirError):
    """Another process is writing this run directory."""


# -- atomic writes ------------------------------------------------------------------------------
def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str, write: Callable) -> None:
    """Write ``path`` through ``write(fh)`` atomically (temporary file, fsync, rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            try:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            except RuntimeError as exc:   # torch.save reports a failed write (full disk) as RuntimeError
                raise _as_oserror(exc, path, directory) from None
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _as_oserror(exc: RuntimeError, path: str, directory: str) -> BaseException:
    """The OSError behind torch's RuntimeError of a failed write (or ``exc`` if it is another error)."""
    cause = exc.__cause__ or exc.__context__
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if cause is None and not any(w in first for w in ("write", "PytorchStreamWriter", "inline_container")):
        return exc
    if cause is not None:
        return OSError(cause.errno, cause.strerror or str(cause), path)
    full = shutil.disk_usage(directory).free < (1 << 20)
    return OSError(errno.ENOSPC if full else errno.EIO,
                   "No space left on device" if full else f"write failed: {first[:120]}", path)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_torch_save(obj, path: str) -> None:
    import torch

    atomic_write(path, lambda fh: torch.save(obj, fh))


# -- locks held by this process, shared by nested users (trainer -> export/report) ------------------
_HELD: dict = {}   # realpath -> [file object, count]


class RunDir:
    """A run directory. ``RunDir(path)`` only names it; :meth:`new`, :meth:`for_resume` and
    :meth:`finished` open it for a purpose and check it; :meth:`writing` locks it."""

    CONFIG = "config.yaml"
    METRICS = "metrics.jsonl"
    SUMMARY = "summary.json"
    FINAL_MODEL = "final_model.pt"
    BEST = "best.pt"
    ARCHITECTURE = "architecture.json"
    CHANNELS = "channels.json"
    CHECKPOINTS = "checkpoints"
    PLOTS = "plots"
    TB = "tb"
    REPORT = "report.md"
    BENCH = "bench.json"
    EXPORT = "export"
    LOCK = ".lock"
    # everything a run writes: what --overwrite removes, and what makes a directory "hold a run"
    RUN_FILES = (CONFIG, METRICS, SUMMARY, FINAL_MODEL, BEST, ARCHITECTURE, CHANNELS, CHECKPOINTS, PLOTS, TB,
                 REPORT, BENCH, EXPORT)

    def __init__(self, path: str):
        self.path = str(path)
        self._locked = False

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    # -- what it holds ----------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        return os.path.exists(self.file(*parts))

    def is_finished(self) -> bool:
        return self.exists(self.SUMMARY) and self.exists(self.FINAL_MODEL)

    def checkpoints(self):
        from .checkpoint import CheckpointManager
        return CheckpointManager(self.file(self.CHECKPOINTS), create=False).list()

    def holds_run(self) -> bool:
        return any(self.exists(n) for n in self.RUN_FILES if n != self.CHECKPOINTS) or bool(self.checkpoints())

    def resume_command(self) -> str:
        import shlex
        return f"python3 -m ocspruner train --resume {shlex.quote(self.path)}"

    def relpath(self, path: str) -> str:
        """``path`` relative to this directory (how report.md and export.json refer to files)."""
        return os.path.relpath(os.path.abspath(path), os.path.abspath(self.path))

    # -- opening it for a purpose -------------------------------------------------------------
    @classmethod
    def new(cls, out_dir: str, name: Optional[str] = None, stem: str = "run", overwrite: bool = False) -> "RunDir":
        """A directory for a new run, locked. Without ``name``: a unique ``stem-<time>[-k]``.
        With ``name``: refused when it holds a finished run, unless ``overwrite``. (An interrupted
        run may still be resumed through it; a fresh start calls :meth:`check_fresh` before writing.)"""
        os.makedirs(out_dir, exist_ok=True)
        if name is None:
            base = os.path.join(out_dir, f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
            for k in range(1, 10_000):
                path = base if k == 1 else f"{base}-{k}"
                try:
                    os.mkdir(path)
                    break
                except FileExistsError:
                    continue
            rd = cls(path)
            rd.lock()
            return rd
        rd = cls(os.path.join(out_dir, name))
        os.makedirs(rd.path, exist_ok=True)
        rd.lock()
        try:
            if not overwrite and rd.is_finished():
                rd.check_fresh(False, flag="--overwrite")
        except RunDirError:
            rd.unlock()
            raise
        return rd

    @classmethod
    def for_resume(cls, path: str) -> "RunDir":
        """An interrupted run's directory, locked."""
        rd = cls(path)
        if not rd.exists(cls.CONFIG):
            raise RunDirError(f"{path!r} is not a run directory (no {cls.CONFIG}); give the directory of the run to resume")
        rd.lock()
        return rd

    @classmethod
    def finished(cls, path: str) -> "RunDir":
        """A finished run's directory, to read (export, bench, report); :meth:`writing` locks it."""
        rd = cls(path)
        if not os.path.isdir(rd.path):
            raise RunDirError(f"{path!r} has no {cls.FINAL_MODEL} (the directory does not exist); give the "
                              f"directory of a finished run")
        if not rd.exists(cls.FINAL_MODEL):
            hint = f"; it was interrupted: finish it with {rd.resume_command()}" if rd.checkpoints() else ""
            raise RunDirError(f"{path!r} has no {cls.FINAL_MODEL}; give the directory of a finished run{hint}")
        return rd

    def check_fresh(self, overwrite: bool, flag: str = "overwrite=True") -> None:
        """Before a new run writes here: refuse a directory holding a run, or empty it."""
        if not self.holds_run():
            return
        if overwrite:
            self.clear()
            return
        if self.is_finished():
            raise RunDirError(f"{self.path!r} holds a finished run; choose another --name, or pass {flag} to replace it")
        if self.checkpoints():
            raise RunDirError(f"{self.path!r} holds an interrupted run; continue it with {self.resume_command()}, "
                              f"or pass {flag} to start it again")
        raise RunDirError(f"{self.path!r} holds files of another run; choose another --name, or pass {flag} "
                          f"to replace them")

    def clear(self) -> None:
        """Remove the files a run writes (nothing else in the directory is touched)."""
        for name in self.RUN_FILES:
            p = self.file(name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)

    # -- the lock -----------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the exclusive writer lock (shared with this process's other users of it)."""
        if self._locked:
            return
        key = os.path.realpath(self.path)
        if key in _HELD:
            _HELD[key][1] += 1
            self._locked = True
            return
        os.makedirs(self.path, exist_ok=True)
        fh = open(self.file(self.LOCK), "a+")
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = _describe_holder(fh.read())
                fh.close()
                raise RunDirBusy(f"run directory {self.path!r} is in use by {holder}; wait for that run to end, "
                                 f"or choose another --name") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        fh.flush()
        _HELD[key] = [fh, 1]
        self._locked = True
        self.remove_temporaries()

    def unlock(self) -> None:
        if not self._locked:
            return
        self._locked = False
        key = os.path.realpath(self.path)
        entry = _HELD.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _HELD[key]
            entry[0].close()   # closing the file releases the flock

    def writing(self):
        """``with rd.writing(): ...``: hold the lock for a block (export, bench, report)."""
        rd = self

        class _Ctx:
            def __enter__(self):
                already = rd._locked
                rd.lock()
                self.release = not already
                return rd

            def __exit__(self, *exc):
                if self.release:
                    rd.unlock()
                return False
        return _Ctx()

    def remove_temporaries(self) -> list:
        """Delete ``.tmp-*`` files a killed writer left behind (only call while holding the lock)."""
        removed = []
        for dirpath, _, files in os.walk(self.path):
            for f in files:
                if f.startswith(TMP_PREFIX):
                    os.remove(os.path.join(dirpath, f))
                    removed.append(os.path.join(dirpath, f))
        return removed

    # -- writing its files ----------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> str:
        path = self.file(name)
        atomic_write_text(path, text)
        return path

    def write_json(self, name: str, obj) -> str:
        return self.write_text(name, json.dumps(obj, indent=1))

    def save_torch(self, name: str, obj) -> str:
        path = self.file(name)
        atomic_torch_save(obj, path)
        return path

    def append_line(self, name: str, line: str) -> None:
        with open(self.file(name), "a") as fh:
            fh.write(line.rstrip("\n") + "\n")

    def metrics(self) -> list:
        """The rows of metrics.jsonl; a blank or half-written line (a killed run) is skipped."""
        rows = []
        try:
            with open(self.file(self.METRICS), encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                        rows.append(row)
        except FileNotFoundError:
            pass
        return rows

    def read_json(self, name: str) -> Optional[dict]:
        try:
            with open(self.file(name), encoding="utf-8") as fh:
                obj = json.load(fh)
            return obj if isinstance(obj, dict) else None
        except (OSError, ValueError):
            return None


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"PID {info['pid']} on host {info['host']} (since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


__all__ = ["RunDir", "RunDirError", "RunDirBusy", "atomic_write", "atomic_write_text", "atomic_torch_save"]
