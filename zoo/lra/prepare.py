"""``prepare(task, root)``: find the task's files, build (or reuse) the cache, hand back datasets.

    from zoo.lra import prepare
    data = prepare("listops", "~/lra")                    # first run reads the TSVs; later runs: seconds
    train = data.dataset("train")                          # LRADataset over memory-mapped arrays
    data.manifest                                          # every protocol choice, as recorded with the cache
    prepare("text", "~/data", options=["max_len=1000"])    # LRA's public text config

The manifest (``manifest.json`` beside the arrays) records: the task, its protocol fields (lengths,
split rule, seeds, val-from-train or val = test), the encoding (vocabulary, pad id, truncation),
a fingerprint of the source files (names, sizes, mtimes), where each split came from, and what
the build found (sizes, skipped rows/images, length and label statistics).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.lra.cache import FORMAT_VERSION, build_entry, cache_key, check_entry
from zoo.lra.common import DataWarning, RowReporter, TaskNotFoundError, default_cache_dir, log, validate_task
from zoo.lra.config import make_config, split_fields
from zoo.lra.dataset import LRADataset
from zoo.lra.locate import DEFAULT_MAX_DEPTH, locate
from zoo.lra.sources import BUILDERS, FINGERPRINTS
from zoo.lra.tokenizers import BYTE_VOCAB_SIZE, GRAY_WEIGHTS, LISTOPS_VOCAB, PAD_ID

__all__ = ["PreparedTask", "encoding_of", "prepare"]

_N_CLASSES = {"listops": 10, "text": 2, "retrieval": 2, "image": 10, "pathfinder": 2, "pathx": 2}
VAL_IS_TEST_WARNING = (
    "!!! text: val_from='test' -> the validation split IS the test split (LRA's original protocol). Model "
    "selection and early stopping on it leak the test set; report it as such. The default holds out "
    "10% of train (val_from='train').")


def encoding_of(task: str, cfg) -> dict:
    """The documented encoding of ``task`` (goes into the manifest and keys the cache)."""
    if task == "listops":
        return {"kind": "listops tokens", "vocab": list(LISTOPS_VOCAB), "pad_id": PAD_ID,
                "rule": "delete '(' and ')', split on whitespace; ']' is the close token; no BOS/EOS",
                "padded_to": cfg.max_len, "dtype": "uint8"}
    if task == "text":
        return {"kind": "utf-8 bytes", "id": "byte + 1", "pad_id": PAD_ID, "vocab_size": BYTE_VOCAB_SIZE,
                "rule": "raw file bytes, truncated to max_len, padded with 0; no BOS/EOS", "padded_to": cfg.max_len,
                "dtype": "uint16"}
    if task == "retrieval":
        return {"kind": "utf-8 bytes", "id": "byte + 1", "pad_id": PAD_ID, "vocab_size": BYTE_VOCAB_SIZE,
                "rule": "per document: bytes of the first max_chars characters, truncated/padded to max_len",
                "padded_to": cfg.max_len, "dtype": "uint16"}
    if task == "image":
        return {"kind": "grayscale pixels", "weights": list(GRAY_WEIGHTS), "rounding": "nearest, clipped to 0..255",
                "order": "row-major 32x32", "length": 1024, "stored": "uint8", "pad": None}
    return {"kind": "grayscale pixels", "source": "8-bit PNG (converted to L if not)", "order": f"row-major "
            f"{cfg.resolution}x{cfg.resolution}", "length": cfg.resolution ** 2, "stored": "uint8", "pad": None,
            "unreadable_png": "skipped and counted"}


@dataclass
class PreparedTask:
    """A built cache entry: ``path``, ``manifest`` (with the ``view`` fields of this load), ``config``."""

    task: str
    path: Path
    manifest: dict
    config: object

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["result"]["splits"])

    def dataset(self, split: str) -> LRADataset:
        return LRADataset(self.path, split, manifest=self.manifest)

    def datasets(self) -> dict[str, LRADataset]:
        return {s: self.dataset(s) for s in self.splits}


def _resolve_source(task: str, cfg, root, max_depth: int) -> Path | None:
    """The task folder, or ``None`` for IMDB from HF ``datasets``."""
    if task == "text" and cfg.source == "hf":
        if importlib.util.find_spec("datasets") is None:
            raise TaskNotFoundError("text: source='hf' needs the `datasets` package (pip install datasets)")
        return None
    if root is None:
        raise TaskNotFoundError(f"{task}: no data root given (pass root=... / --root ROOT)")
    kw = {}
    if task in ("pathfinder", "pathx"):
        kw["contour_length"] = cfg.contour_length
    if task == "listops":
        kw["listops_prefix"] = cfg.file_prefix
    try:
        return locate(task, root, max_depth=max_depth, **kw)
    except TaskNotFoundError:
        if task == "text" and cfg.source == "auto" and importlib.util.find_spec("datasets") is not None:
            log.warning("no aclImdb folder under %s: using HF datasets 'imdb'", root)
            return None
        raise


def prepare(task: str, root=None, *, options=None, cache_dir=None, strict: bool = False, progress: bool = True,
            rebuild: bool = False, verify: bool = False, max_depth: int = DEFAULT_MAX_DEPTH) -> PreparedTask:
    """Locate ``task`` under ``root``, build or reuse its cache entry, and return it.

    Args:
        task: one of ``zoo.lra.TASKS`` (``listops``, ``text``, ``retrieval``, ``image``, ``pathfinder``, ``pathx``).
        root: folder searched for the task's files (see ``zoo.lra.locate``).
        options: the task config (``zoo.lra.config``): a dataclass, a dict, or ``["key=value", ...]``.
        cache_dir: where entries live (default ``zoo.lra.common.default_cache_dir()``).
        strict: raise on the first malformed row instead of skipping and counting it.
        rebuild: ignore a valid entry and build again.
        verify: check the full SHA-256 of every cached file (slower) instead of sampled hashes.
    """
    task = validate_task(task)
    cfg = make_config(task, options)
    build_fields, view = split_fields(cfg)
    if task == "text" and cfg.val_from == "test":
        warnings.warn(VAL_IS_TEST_WARNING, DataWarning, stacklevel=2)
        log.warning(VAL_IS_TEST_WARNING)
    src = _resolve_source(task, cfg, root, max_depth)
    build = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "protocol": build_fields,
        "encoding": encoding_of(task, cfg),
        "source": FINGERPRINTS[task](cfg, src),
    }
    key = cache_key(build)
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    entry = cache_dir / f"{task}-{key}"
    ok, reason = (False, "rebuild requested") if rebuild else check_entry(entry, key, full=verify)
    if not ok:
        if entry.exists() and not rebuild:
            warnings.warn(f"cache entry {entry} is unusable ({reason}): rebuilding it", DataWarning, stacklevel=2)
        log.info("building %s cache at %s (%s)", task, entry, reason)

        def _build(tmp: Path) -> dict:
            t0 = time.perf_counter()
            rep = RowReporter(strict=strict)
            caught = []
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", DataWarning)
                    try:
                        info = BUILDERS[task](cfg, src, tmp, rep, progress)
                    finally:
                        rep.finish()
            finally:
                for w in caught:  # re-emit (also when the build failed), and keep them for the manifest
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            splits = {}
            for split in ("train", "val", "test"):
                file_split = info.get("split_files", {}).get(split, split)
                labels = np.load(tmp / f"{file_split}.labels.npy")
                if task == "retrieval":
                    lengths = np.concatenate([np.load(tmp / f"{file_split}.lengths1.npy"),
                                              np.load(tmp / f"{file_split}.lengths2.npy")])
                else:
                    lengths = np.load(tmp / f"{file_split}.lengths.npy")
                stats = _stats(lengths, labels, _N_CLASSES[task])
                stats.update(info.get("splits", {}).get(split, {}))
                if file_split != split:
                    stats["same_as"] = file_split
                splits[split] = stats
            result = {k: v for k, v in info.items() if k != "splits"}
            result.update(splits=splits, skipped_rows=rep.summary(),
                          warnings=[str(w.message) for w in caught],
                          build_seconds=round(time.perf_counter() - t0, 2))
            result.setdefault("split_files", {})
            return {
                "task": task,
                "build": build,
                "source_dir": str(src) if src is not None else "HF datasets: imdb",
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "zoo_version": _zoo_version(),
                "result": result,
            }

        entry = build_entry(cache_dir, entry.name, key, _build)
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["view"] = view
    return PreparedTask(task=task, path=entry, manifest=manifest, config=cfg)


def _stats(lengths: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    return {
        "n": int(labels.size),
        "length_min": int(lengths.min()),
        "length_mean": round(float(lengths.mean()), 2),
        "length_median": float(np.median(lengths)),
        "length_max": int(lengths.max()),
        "label_counts": np.bincount(labels, minlength=n_classes).tolist(),
    }


def _zoo_version() -> str:
    try:
        import zoo

        return getattr(zoo, "__version__", "?")
    except Exception:  # pragma: no cover
        return "?"
