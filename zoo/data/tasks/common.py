"""Helpers the task modules share: config checks, label parsing, fingerprints, progress bars.

Every builder has the signature ``build(cfg, src, out, rep, progress) -> dict`` and returns what
it found (split sizes, skipped rows, length statistics, where each split came from). Malformed
rows are reported through ``rep`` (file and line; skipped and counted, or raised under strict);
a split that comes out empty raises ``EmptySplitError``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from zoo.data.errors import EmptySplitError

__all__ = ["ROWS", "bar", "choice", "file_fp", "parse_label", "positive", "require_nonempty"]

ROWS = 1024  # rows buffered before an append


def bar(progress: bool, **kw):
    """A tqdm bar, off when ``progress`` is False or stderr is not a terminal (logs stay readable)."""
    from tqdm import tqdm

    return tqdm(disable=not progress or not sys.stderr.isatty(), **kw)


def positive(name: str, v) -> None:
    if not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name}={v!r}: must be a positive integer")


def choice(name: str, v, options) -> None:
    if v not in options:
        raise ValueError(f"{name}={v!r}: choose one of {', '.join(map(str, options))}")


def parse_label(field: str | bytes, n_classes: int) -> int:
    """``"3"``, ``"3.0"``, ``b"1.0"`` -> int; raises ``ValueError`` if not an integer class id."""
    if isinstance(field, bytes):
        field = field.decode("ascii", errors="replace")
    field = field.strip()
    try:
        v = float(field)
        ok = v == int(v) and 0 <= int(v) < n_classes
    except (ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"label {field[:20]!r} is not a class id in 0..{n_classes - 1}")
    return int(v)


def require_nonempty(task: str, split: str, n: int, where: str) -> None:
    if n == 0:
        raise EmptySplitError(f"{task}: the {split} split is empty after reading {where} "
                              "(every row missing or malformed?): refusing to return an empty split")


def file_fp(path: Path, base: Path) -> dict:
    """Name, size and modification time of a source file (part of the cache key)."""
    st = path.stat()
    return {"file": path.relative_to(base).as_posix(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
