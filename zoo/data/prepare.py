"""``prepare(task, root)``: find the task's files, build (or reuse) the cache, hand back datasets.

    from zoo.data import prepare
    data = prepare("listops", "~/lra")                    # first run reads the TSVs; later runs: seconds
    train = data.dataset("train")                          # LRADataset over memory-mapped arrays
    data.manifest                                          # every protocol choice, as recorded with the cache
    prepare("text", "~/data", options=["max_len=1000"])    # LRA's public text config
    prepare("listops", "data", generate={"n_train": 2000}) # generate (into the cache) if not found

The manifest (``manifest.json`` beside the arrays) records: the task, its protocol fields (lengths,
split rule, seeds, val-from-train or val = test), the encoding (vocabulary, pad id, truncation),
a fingerprint of the source files (names, sizes, mtimes), where each split came from, and what
the build found (sizes, skipped rows/images, length and label statistics).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from zoo.data.cache import FORMAT_VERSION, build_entry, cache_key, check_entry
from zoo.data.dataset import LRADataset
from zoo.data.errors import DataWarning, RowReporter, TaskNotFoundError, default_cache_dir, log
from zoo.data.locate import DEFAULT_MAX_DEPTH, locate
from zoo.data.tasks import TaskSpec, get_task

__all__ = ["PreparedTask", "prepare"]


@dataclass
class PreparedTask:
    """A built cache entry: ``path``, ``manifest`` (with the ``view`` fields of this load),
    ``config``, ``spec`` and ``source`` (where the files came from, in words)."""

    task: str
    path: Path
    manifest: dict
    config: object
    spec: TaskSpec
    source: str = ""

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["result"]["splits"])

    def dataset(self, split: str) -> LRADataset:
        return LRADataset(self.path, split, manifest=self.manifest)

    def datasets(self) -> dict[str, LRADataset]:
        return {s: self.dataset(s) for s in self.splits}


def _resolve_source(spec: TaskSpec, cfg, root, max_depth: int) -> Path | None:
    def find() -> Path:
        if root is None:
            raise TaskNotFoundError(f"{spec.name}: no data root given (pass root=... / --root ROOT)")
        return locate(spec.name, root, max_depth=max_depth, cfg=cfg)

    return spec.resolve_source(cfg, find) if spec.resolve_source else find()


def _generated_root(spec: TaskSpec, cfg, generate: Mapping, cache_dir: Path, progress: bool) -> Path:
    """Generate the task's files into the cache (once per generator config) and return the root."""
    gen_cfg = spec.generator_config(cfg, generate)
    fields = {"task": spec.name, **dataclasses.asdict(gen_cfg), **dataclasses.asdict(cfg)}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]
    gen_root = cache_dir / "generated" / f"{spec.name}-{key}"
    if not gen_root.exists():
        log.warning("no %s data found; generating a set at %s (%s)", spec.name, gen_root, dataclasses.asdict(gen_cfg))
        (cache_dir / "generated").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-{key}.tmp-", dir=cache_dir / "generated"))
        try:
            spec.generator.generate(tmp, gen_cfg, cfg, progress, False)
            try:
                os.replace(tmp, gen_root)
            except OSError:  # another process generated the same set first: use theirs
                if not gen_root.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return gen_root


def prepare(task: str, root=None, *, options=None, cache_dir=None, strict: bool = False, progress: bool = True,
            rebuild: bool = False, verify: bool = False, max_depth: int = DEFAULT_MAX_DEPTH,
            generate: Mapping | None = None) -> PreparedTask:
    """Locate ``task`` under ``root``, build or reuse its cache entry, and return it.

    Args:
        task: a registered task name or alias (``zoo.data.task_names()``).
        root: folder searched for the task's files (see ``zoo.data.locate``).
        options: the task config: a config instance, a dict, or ``["key=value", ...]``.
        cache_dir: where entries live (default ``zoo.data.default_cache_dir()``).
        strict: raise on the first malformed row instead of skipping and counting it.
        rebuild: ignore a valid entry and build again.
        verify: check the full SHA-256 of every cached file (slower) instead of sampled hashes.
        generate: if the files are not found and the task has a generator, generate a set with
            these generator fields into ``cache_dir/generated/`` and use it (``None``: never).
    """
    spec = get_task(task)
    cfg = spec.make_config(options)
    build_fields, view = spec.split_fields(cfg)
    if spec.check:
        spec.check(cfg)
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        src = _resolve_source(spec, cfg, root, max_depth)
        source = f"files under {root}" if src is not None else "a non-file source (see the manifest)"
        if spec.arrays is not None:
            source = "generated from the config (no files)"
    except TaskNotFoundError as exc:
        if generate is None or spec.generator is None:
            if spec.generator is not None:
                raise TaskNotFoundError(f"{exc} Or let the trainer generate a set: data.generate_if_missing=true "
                                        f"(fields in data.generate).") from None
            raise
        src = locate(spec.name, _generated_root(spec, cfg, generate, cache_dir, progress), cfg=cfg)
        source = f"GENERATED at {src} (not the official files)"
    build = {
        "format_version": FORMAT_VERSION,
        "task": spec.name,
        "protocol": build_fields,
        "encoding": spec.encoding(cfg),
        "source": spec.fingerprint(cfg, src),
    }
    key = cache_key(build)
    entry = cache_dir / f"{spec.name}-{key}"
    ok, reason = (False, "rebuild requested") if rebuild else check_entry(entry, key, full=verify)
    if not ok:
        if entry.exists() and not rebuild:
            warnings.warn(f"cache entry {entry} is unusable ({reason}): rebuilding it", DataWarning, stacklevel=2)
        log.info("building %s cache at %s (%s)", spec.name, entry, reason)
        entry = build_entry(cache_dir, entry.name, key,
                            lambda tmp: _build(spec, cfg, src, tmp, build, strict=strict, progress=progress))
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["view"] = view
    return PreparedTask(task=spec.name, path=entry, manifest=manifest, config=cfg, spec=spec, source=source)


def _build(spec: TaskSpec, cfg, src: Path | None, tmp: Path, build: dict, *, strict: bool, progress: bool) -> dict:
    """Run the task's builder into ``tmp`` and return the manifest (statistics of every split)."""
    t0 = time.perf_counter()
    rep = RowReporter(strict=strict)
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            try:
                info = spec.build(cfg, src, tmp, rep, progress)
            finally:
                rep.finish()
    finally:
        for w in caught:  # re-emit (also when the build failed), and keep them for the manifest
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    splits = {}
    for split in ("train", "val", "test"):
        file_split = info.get("split_files", {}).get(split, split)
        labels = np.load(tmp / f"{file_split}.labels.npy")
        lengths = np.concatenate([np.load(tmp / f"{file_split}.{name.replace('inputs', 'lengths')}.npy")
                                  for name in spec.inputs])
        stats = _stats(lengths, labels, spec.n_classes)
        stats.update(info.get("splits", {}).get(split, {}))
        if file_split != split:
            stats["same_as"] = file_split
        splits[split] = stats
    result = {k: v for k, v in info.items() if k != "splits"}
    result.update(splits=splits, skipped_rows=rep.summary(), warnings=[str(w.message) for w in caught],
                  build_seconds=round(time.perf_counter() - t0, 2))
    result.setdefault("split_files", {})
    return {
        "task": spec.name,
        "build": build,
        "source_dir": str(src) if src is not None else ("generated" if spec.arrays is not None else "HF datasets"),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "zoo_version": _zoo_version(),
        "result": result,
    }


def _stats(lengths: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    if labels.ndim == 2:  # a label per position (token tasks): how many are scored, not a histogram
        scored = (labels >= 0).sum(axis=1)
        counts = {"labelled_per_example": round(float(scored.mean()), 2)}
    else:
        counts = {"label_counts": np.bincount(labels, minlength=n_classes).tolist()}
    return {
        "n": int(labels.shape[0]),
        "length_min": int(lengths.min()),
        "length_mean": round(float(lengths.mean()), 2),
        "length_median": float(np.median(lengths)),
        "length_max": int(lengths.max()),
        **counts,
    }


def _zoo_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zoo-mixers")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "?"
