"""A run folder as one object: its paths, its lock, and whether the run in it is finished.

``OUT/<run name>/`` holds ``config.yaml``, ``checkpoint.pt`` / ``checkpoint.prev.pt``, ``best.pt``,
``summary.json``, ``metrics.jsonl``, ``curve.png``, ``tensorboard/`` and ``.lock``.
:class:`RunFolder` names them, holds the lock (:class:`RunLock`: an advisory ``fcntl`` lock on
``.lock``, released by the OS if the process dies, so two trainers never interleave checkpoints)
and answers :meth:`RunFolder.finished` and :meth:`RunFolder.summary`, the one definition of "this
run is done" that the trainer, ``zoo compare`` and its report share.

Writes go through :meth:`RunFolder.write`: a full disk or a folder that cannot be written
(``ENOSPC``, ``EROFS``, ``EACCES``, ``EDQUOT``; also when torch wraps them in a ``RuntimeError``)
becomes one :class:`RunWriteError` line naming the file, and the last complete checkpoint stays as
it was (every write is atomic).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable

from zoo.train.checkpoint import BEST, CHECKPOINT, PREVIOUS, CheckpointError

__all__ = ["RunFolder", "RunLock", "RunLockedError", "RunWriteError"]

_DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
                errno.EACCES: "it is not writable (permission denied)", errno.EPERM: "it is not writable",
                errno.EDQUOT: "the disk quota is exceeded"}


class RunLockedError(RuntimeError):
    """Another process holds the run folder."""


class RunWriteError(CheckpointError):
    """A file of the run folder could not be written (full disk, read-only or not writable)."""


class RunLock:
    """``with RunLock(run_dir): ...`` holds the folder's lock (non-blocking: raises if taken)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(f"run folder {self.path.parent} is in use by {holder}: wait for it to finish, or "
                                 "choose another --out / train.run_name") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def disk_error(exc: BaseException) -> int | None:
    """The errno of a full / read-only / not-writable disk behind ``exc`` or its causes, else None
    (``zoo._io.atomic_write`` re-raises the OSError that ``torch.save`` wraps in a RuntimeError)."""
    seen, hops = exc, 0
    while seen is not None and hops < 8:
        if isinstance(seen, OSError) and seen.errno in _DISK_ERRNOS:
            return seen.errno
        seen, hops = seen.__cause__ or seen.__context__, hops + 1
    return None


class RunFolder:
    """One run folder: ``RunFolder(path).finished()``, ``.summary()``, its paths and its lock."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self.config = self.path / "config.yaml"
        self.checkpoint = self.path / CHECKPOINT
        self.previous = self.path / PREVIOUS
        self.best = self.path / BEST
        self.summary_path = self.path / "summary.json"
        self.metrics = self.path / "metrics.jsonl"
        self.curve = self.path / "curve.png"
        self.lock = RunLock(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def has_checkpoint(self) -> bool:
        return self.checkpoint.exists() or self.previous.exists()

    def summary(self) -> dict | None:
        """The run's ``summary.json`` (None when there is none or it cannot be read)."""
        try:
            s = json.loads(self.summary_path.read_text())
        except (OSError, ValueError):
            return None
        return s if isinstance(s, dict) else None

    def finished(self) -> bool:
        """The run reached the end of its schedule and was tested (status ``complete``, a test accuracy)."""
        s = self.summary()
        return s is not None and s.get("status") == "complete" and s.get("test_acc") is not None

    def write(self, path: Path, write: Callable[[Path], object]):
        """``write(path)``; a full disk or an unwritable folder raises one :class:`RunWriteError` line."""
        try:
            return write(path)
        except (OSError, RuntimeError) as exc:
            code = disk_error(exc)
            if code is None:
                raise
            raise self.write_error(path, code) from None

    def write_error(self, path, code: int) -> RunWriteError:
        """The one line for a write to ``path`` that failed with errno ``code``."""
        return RunWriteError(f"cannot write {path}: {_DISK_ERRNOS[code]} ({errno.errorcode[code]}); free space or "
                             f"choose a writable --out. The last complete checkpoint in {self.path} is intact: "
                             "run the same command again to resume from it")
