"""Find each LRA task's folder under a root the user gives.

The official ``lra_release.gz`` often unpacks as ``lra_release/lra_release/...`` and users put
IMDB / CIFAR-10 beside it, so nothing is hard-coded: the root and up to ``max_depth`` levels of
folders below it are searched (breadth-first, so the shallowest match wins) for a folder that
the task's spec recognises (``TaskSpec.is_task_dir``; ``TaskSpec.patterns`` says what it looks
for: ``zoo data locate ROOT`` prints it for every task).

Folders that hold many files and never a task (``imgs``, ``metadata``, ``pos``, ``neg``,
``unsup``) are not descended into.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Iterable, Mapping

from zoo.data.errors import TaskNotFoundError
from zoo.data.tasks import get_task, task_names

__all__ = ["DEFAULT_MAX_DEPTH", "locate", "locate_all"]

DEFAULT_MAX_DEPTH = 5
_PRUNE = {"imgs", "metadata", "pos", "neg", "unsup", "__pycache__", ".git"}


def _configs(tasks: Iterable[str], configs: Mapping | None) -> dict:
    """``{task: config}``: the given configs, else each task's defaults."""
    configs = dict(configs or {})
    return {t: configs.get(t) or get_task(t).default_config() for t in (get_task(t).name for t in tasks)}


def locate_all(root: str | os.PathLike, *, tasks: Iterable[str] | None = None, max_depth: int = DEFAULT_MAX_DEPTH,
               configs: Mapping | None = None) -> dict[str, list[Path]]:
    """Every folder under ``root`` (to ``max_depth`` levels) that holds a task, shallowest first.

    ``configs`` maps a task name to its config (the fields that name its files, e.g. ListOps'
    ``file_prefix`` or Pathfinder's ``contour_length``); tasks without one use their defaults.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TaskNotFoundError(f"data root {root} is not a folder")
    cfgs = _configs(tasks if tasks is not None else [t for t in task_names() if get_task(t).has_files], configs)
    found: dict[str, list[Path]] = {t: [] for t in cfgs}
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
        for t, cfg in cfgs.items():
            if get_task(t).is_task_dir(cfg, d, entries):
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


def locate(task: str, root: str | os.PathLike, *, max_depth: int = DEFAULT_MAX_DEPTH, cfg=None) -> Path:
    """The folder of ``task`` under ``root`` (the shallowest match).

    Raises:
        TaskNotFoundError: naming the root, the depth and the patterns searched, and how to get the data.
    """
    spec = get_task(task)
    cfg = cfg if cfg is not None else spec.default_config()
    hits = locate_all(root, tasks=[spec.name], max_depth=max_depth, configs={spec.name: cfg})[spec.name]
    if hits:
        return hits[0]
    pats = spec.patterns(cfg)
    root = Path(root).expanduser()
    raise TaskNotFoundError(
        f"{spec.name}: no task folder found under {root} (searched it and up to {max_depth} levels of "
        f"folders below, e.g. ROOT/lra_release/lra_release/..., for {' or '.join(repr(p) for p in pats)}). "
        f"To get the data: {spec.how_to_get.format(root=root)}.")
