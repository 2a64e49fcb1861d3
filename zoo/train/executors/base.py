"""The executor registry and what every executor shares: ``register``, ``DiskError``, the one-line reasons."""

from __future__ import annotations

import errno
from typing import Callable, Dict

__all__ = ["AUTO", "EXECUTORS", "DiskError", "check_executor", "disk_error", "register", "resolve", "one_line"]

EXECUTORS: Dict[str, Callable] = {}
AUTO = "auto"
_DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
_DISK_TEXT = ("No space left on device", "Read-only file system", "Disk quota exceeded",
              "file write failed")  # the last: torch's checkpoint writer, which drops the errno


class DiskError(OSError):
    """A run could not write its folder (full disk, read-only file system): the grid stops, exit 2.

    ``failed``: ``{run name: one-line reason}`` of the run(s) that hit it, recorded by the grid.
    """

    def __init__(self, message: str, failed: dict | None = None) -> None:
        super().__init__(message)
        self.failed = dict(failed or {})


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator: declare ``fn`` as the executor ``name`` (``execution.executor=name``)."""
    def deco(fn: Callable) -> Callable:
        EXECUTORS[name] = fn
        return fn
    return deco


def check_executor(name: str) -> None:
    """Raise ``ValueError`` (one line naming the valid executors) for an unknown ``execution.executor``."""
    if name != AUTO and name not in EXECUTORS:
        valid = ", ".join([AUTO, *sorted(EXECUTORS)])
        raise ValueError(f"execution.executor: unknown executor {name!r}; valid: {valid}")


def resolve(name: str) -> str:
    """``auto`` -> ``processes`` with CUDA GPUs, ``local`` on the CPU; any other name as it is (checked)."""
    check_executor(name)
    if name != AUTO:
        return name
    import torch

    return "processes" if torch.cuda.is_available() else "local"


def one_line(exc: BaseException | str) -> str:
    """One line of why a run failed: an exception's type and first line, or a log's last line."""
    if isinstance(exc, BaseException):
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else "failed (no output)"


def disk_error(exc: BaseException | str) -> bool:
    """Whether an error (or one it was raised from) says the disk is full or read-only."""
    seen = set()
    while isinstance(exc, BaseException) and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskError) or (isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS):
            return True
        if any(t in str(exc) for t in _DISK_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return isinstance(exc, str) and any(t in exc for t in _DISK_TEXT)

