"""Atomic file writes: the one helper every writer of the zoo uses (cache, checkpoints, logs, results).

A file is written under a temporary name in the same folder, flushed to disk and renamed over
the target, so a reader (or a crash) only ever sees the old file or the new one, never half of it.
An ``OSError`` raised by a write (a full disk: ``ENOSPC``) propagates as itself, also when the
writer (``torch.save``) would hide it behind a ``RuntimeError``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "atomic_write_text", "atomic_torch_save"]


class _Recording:
    """A file that remembers the OSError of a failed write (torch's writer re-raises it as a bare RuntimeError)."""

    def __init__(self, f) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str):
        return getattr(self._f, name)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], *, mode: str = "wb") -> Path:
    """Write ``path`` atomically: ``write(f)`` fills an open temporary file beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            rec = _Recording(f)
            try:
                write(rec)
                f.flush()
            except Exception as exc:
                if rec.error is not None and rec.error is not exc:
                    raise rec.error from exc  # the cause (ENOSPC ...), not the writer's wrapper
                raise
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``path.write_text(text)``, atomically."""
    return atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
