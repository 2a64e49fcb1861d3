"""Find each LRA task's folder under a root the user gives.

The official ``lra_release.gz`` often unpacks as ``lra_release/lra_release/...`` and users put
IMDB / CIFAR-10 beside it, so nothing is hard-coded: the root and up to ``max_depth`` levels of
folders below it are searched (breadth-first, so the shallowest match wins) for:

=========== ==========================================================================
task        what marks the folder
=========== ==========================================================================
listops     ``listops-1000/`` (any folder) holding ``basic_train.tsv``
text        ``aclImdb/`` holding ``train/pos``, ``train/neg``, ``test/pos``, ``test/neg``
retrieval   ``tsv_data/`` (any folder) holding ``new_aan_pairs.train.tsv``
image       ``cifar-10-batches-py/`` holding ``data_batch_1`` and ``test_batch``
pathfinder  ``pathfinder32/curv_contour_length_14/`` holding ``metadata/`` (contour length 6 is
            ``curv_baseline`` in the release, ``curv_contour_length_6`` from our generator)
pathx       ``pathfinder128/curv_contour_length_14/`` holding ``metadata/``
=========== ==========================================================================

Folders that hold many files and never a task (``imgs``, ``metadata``, ``pos``, ``neg``,
``unsup``) are not descended into.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from zoo.lra.common import TASKS, TaskNotFoundError, validate_task

__all__ = ["locate", "locate_all", "pathfinder_dir_names", "search_patterns"]

DEFAULT_MAX_DEPTH = 5
_PRUNE = {"imgs", "metadata", "pos", "neg", "unsup", "__pycache__", ".git"}


def pathfinder_dir_names(contour_length: int) -> list[str]:
    """Folder names of one Pathfinder difficulty, release name first."""
    if contour_length == 6:
        return ["curv_baseline", "curv_contour_length_6"]
    return [f"curv_contour_length_{contour_length}"]


def search_patterns(task: str, *, contour_length: int = 14, listops_prefix: str = "basic") -> list[str]:
    """The glob-style patterns (relative to any searched folder) that identify ``task``."""
    task = validate_task(task)
    if task == "listops":
        return [f"listops-1000/{listops_prefix}_train.tsv", f"*/{listops_prefix}_train.tsv"]
    if task == "text":
        return ["aclImdb/{train,test}/{pos,neg}/"]
    if task == "retrieval":
        return ["tsv_data/new_aan_pairs.train.tsv", "*/new_aan_pairs.train.tsv"]
    if task == "image":
        return ["cifar-10-batches-py/{data_batch_1,test_batch}"]
    res = 32 if task == "pathfinder" else 128
    return [f"pathfinder{res}/{name}/metadata/" for name in pathfinder_dir_names(contour_length)]


def _is_task_dir(task: str, d: Path, entries: set[str], *, contour_length: int, listops_prefix: str) -> bool:
    if task == "listops":
        return f"{listops_prefix}_train.tsv" in entries
    if task == "text":
        return all((d / s / c).is_dir() for s in ("train", "test") for c in ("pos", "neg"))
    if task == "retrieval":
        return "new_aan_pairs.train.tsv" in entries
    if task == "image":
        return "data_batch_1" in entries and "test_batch" in entries
    res = "pathfinder32" if task == "pathfinder" else "pathfinder128"
    return (d.parent.name == res and d.name in pathfinder_dir_names(contour_length) and "metadata" in entries
            and (d / "metadata").is_dir())


def locate_all(root: str | os.PathLike, *, tasks=TASKS, max_depth: int = DEFAULT_MAX_DEPTH, contour_length: int = 14,
               listops_prefix: str = "basic") -> dict[str, list[Path]]:
    """Every folder under ``root`` (to ``max_depth`` levels) that holds a task, shallowest first."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TaskNotFoundError(f"data root {root} is not a folder")
    tasks = [validate_task(t) for t in tasks]
    found: dict[str, list[Path]] = {t: [] for t in tasks}
    queue = deque([(root, 0)])
    while queue:
        d, depth = queue.popleft()
        try:
            with os.scandir(d) as it:
                listing = list(it)
        except OSError:
            continue
        entries = {e.name for e in listing}
        matched = False
        for t in tasks:
            if _is_task_dir(t, d, entries, contour_length=contour_length, listops_prefix=listops_prefix):
                found[t].append(d)
                matched = True
        if depth >= max_depth or matched:  # a task folder never holds another task
            continue
        for e in sorted(listing, key=lambda e: e.name):
            if e.name in _PRUNE or e.name.startswith("."):
                continue
            try:
                if not e.is_dir():
                    continue
            except OSError:
                continue
            queue.append((Path(e.path), depth + 1))
    return found


def locate(task: str, root: str | os.PathLike, *, max_depth: int = DEFAULT_MAX_DEPTH, contour_length: int = 14,
           listops_prefix: str = "basic") -> Path:
    """The folder of ``task`` under ``root`` (the shallowest match).

    Raises:
        TaskNotFoundError: naming the root, the depth and the patterns searched, and how to get the data.
    """
    task = validate_task(task)
    hits = locate_all(root, tasks=[task], max_depth=max_depth, contour_length=contour_length,
                      listops_prefix=listops_prefix)[task]
    if hits:
        return hits[0]
    pats = search_patterns(task, contour_length=contour_length, listops_prefix=listops_prefix)
    hint = {
        "listops": "download lra_release.gz (docs/data.md) or run `zoo data generate listops --out ROOT`",
        "text": "download and unpack aclImdb_v1.tar.gz (https://ai.stanford.edu/~amaas/data/sentiment/) under ROOT",
        "retrieval": "download lra_release.gz (docs/data.md); it holds tsv_data/new_aan_pairs.*.tsv",
        "image": "download and unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) under ROOT",
        "pathfinder": "download lra_release.gz (docs/data.md) or run `zoo data generate pathfinder --out ROOT`",
        "pathx": "download lra_release.gz (docs/data.md) or run "
                 "`zoo data generate pathfinder --resolution 128 --out ROOT`",
    }[task]
    raise TaskNotFoundError(
        f"{task}: no task folder found under {Path(root).expanduser()} (searched it and up to {max_depth} levels of "
        f"folders below, e.g. ROOT/lra_release/lra_release/..., for {' or '.join(repr(p) for p in pats)}). "
        f"To get the data: {hint}.")
