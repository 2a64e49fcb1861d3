"""Errors, the cache location, and the bookkeeping of malformed rows shared by the LRA loaders."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

__all__ = [
    "DataWarning",
    "EmptySplitError",
    "MalformedRowError",
    "RowReporter",
    "TaskNotFoundError",
    "default_cache_dir",
]

log = logging.getLogger("zoo.data")

CACHE_ENV = "ZOO_DATA_CACHE"


class DataWarning(UserWarning):
    """Something in the data was skipped or a protocol choice deserves attention."""


class TaskNotFoundError(FileNotFoundError):
    """A task's folder was not found under the root; the message lists what was searched."""


class MalformedRowError(ValueError):
    """A row of a data file cannot be parsed (raised under ``strict``; otherwise skipped and counted)."""


class EmptySplitError(ValueError):
    """A split came out empty: never returned silently."""


def default_cache_dir() -> Path:
    """``$ZOO_DATA_CACHE`` if set, else ``$XDG_CACHE_HOME/zoo/lra`` (``~/.cache/zoo/lra``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zoo" / "lra"


class RowReporter:
    """Counts malformed rows per file; logs the first few with file and line; raises under strict.

    Usage: ``rep.bad(path, line_no, "why")`` for each bad row, ``rep.finish()`` once at the end
    (emits one ``DataWarning`` per file that had bad rows).
    """

    def __init__(self, strict: bool = False, max_logged: int = 10):
        self.strict = strict
        self.max_logged = max_logged
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def bad(self, path: str | os.PathLike, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        msg = f"{where}: {reason}"
        if self.strict:
            raise MalformedRowError(msg + " (strict mode: fix or remove the row, or run without --strict to skip it)")
        key = str(path)
        self.counts[key] = self.counts.get(key, 0) + 1
        ex = self.examples.setdefault(key, [])
        if len(ex) < self.max_logged:
            ex.append(msg)
            log.warning("skipped malformed row %s", msg)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def finish(self) -> None:
        for key, n in self.counts.items():
            shown = "; ".join(self.examples[key][:3])
            warnings.warn(f"skipped {n} malformed row(s) in {key} (first: {shown})", DataWarning, stacklevel=3)

    def summary(self) -> dict:
        return {"skipped_rows": self.total, "by_file": dict(self.counts),
                "first": {k: v[:3] for k, v in self.examples.items()}}
