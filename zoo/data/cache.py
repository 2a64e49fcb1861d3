"""The processed-data cache: memory-mapped ``.npy`` arrays per split, keyed by the protocol.

Layout of one entry (``<cache_dir>/<task>-<key>/``, ``key`` = first 16 hex digits of the SHA-256
of the manifest's ``build`` section, i.e. the protocol choices that change the arrays plus a
fingerprint of the source files)::

    manifest.json                 the protocol, the source, what the build found (sizes, skips, stats)
    train.inputs.npy ...          (N, L) token ids / uint8 pixels   (retrieval: inputs1, inputs2)
    train.labels.npy              (N,) int64
    train.lengths.npy             (N,) int32, tokens before padding (retrieval: lengths1, lengths2)
    COMPLETE.json                 written last: every file's size, SHA-256 and sampled hash

An entry is built in ``<cache_dir>/.tmp-*`` and renamed into place only when complete, so a
crash never leaves a half-written entry under the real name. On load, ``COMPLETE.json`` must exist,
name the same key, and every file must have its recorded size, its ``.npy`` header must parse
with the recorded shape, and its sampled hash (64 blocks of 64 KiB spread over the file, or the
whole file when it is under 4 MiB) must match; anything else is reported and the entry rebuilt.
``verify=True`` (``zoo data prepare --verify``) checks the full SHA-256 instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from zoo._io import atomic_write_text
from zoo.data.errors import DataWarning

__all__ = ["NpyAppender", "SplitWriter", "build_entry", "cache_key", "check_entry", "file_digests"]

FORMAT_VERSION = 1
_HEADER_BYTES = 128  # fixed .npy prefix so the row count can be rewritten in place
_SAMPLE_BLOCKS, _BLOCK = 64, 1 << 16


def cache_key(build: dict) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of ``build``."""
    blob = json.dumps(build, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class NpyAppender:
    """Write a ``.npy`` file batch by batch without knowing the number of rows ahead.

    The header is written with a fixed size and rewritten with the final shape on ``close``.
    """

    def __init__(self, path: str | os.PathLike, dtype, row_shape: tuple[int, ...] = ()):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.n = 0
        self._f = open(self.path, "wb")
        self._f.write(self._header(10**15))

    def _header(self, n: int) -> bytes:
        d = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (n,) + self.row_shape}
        text = repr(d).encode("latin1")
        pad = _HEADER_BYTES - 10 - len(text) - 1
        if pad < 0:
            raise ValueError(f"shape {d['shape']} does not fit a {_HEADER_BYTES}-byte .npy header")
        body = text + b" " * pad + b"\n"
        return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body

    def append(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        self._f.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.n += rows.shape[0]

    def close(self) -> int:
        if not self._f.closed:
            self._f.seek(0)
            self._f.write(self._header(self.n))
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        return self.n


class SplitWriter:
    """Appenders for the arrays of one split: ``fields = {name: (dtype, row_shape)}``."""

    def __init__(self, folder: Path, split: str, fields: dict[str, tuple]):
        self.split = split
        self.files = {name: NpyAppender(folder / f"{split}.{name}.npy", dt, shape)
                      for name, (dt, shape) in fields.items()}

    def append(self, **arrays: np.ndarray) -> None:
        if set(arrays) != set(self.files):
            raise ValueError(f"append needs exactly {sorted(self.files)}, got {sorted(arrays)}")
        sizes = {len(a) for a in arrays.values()}
        if len(sizes) != 1:
            raise ValueError(f"arrays of different lengths: { {k: len(v) for k, v in arrays.items()} }")
        for name, a in arrays.items():
            self.files[name].append(a)

    def close(self) -> int:
        counts = {w.close() for w in self.files.values()}
        return counts.pop()


def _sampled_hash(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= _SAMPLE_BLOCKS * _BLOCK:
            h.update(f.read())
        else:
            step = (size - _BLOCK) // (_SAMPLE_BLOCKS - 1)
            for i in range(_SAMPLE_BLOCKS):
                f.seek(i * step)
                h.update(f.read(_BLOCK))
    return h.hexdigest()


def _full_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def file_digests(path: Path) -> dict:
    size = path.stat().st_size
    d = {"size": size, "sha256": _full_hash(path), "sampled": _sampled_hash(path, size)}
    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
        d["shape"] = list(arr.shape)
        d["dtype"] = arr.dtype.str
        del arr
    return d


def check_entry(entry: Path, key: str, *, full: bool = False) -> tuple[bool, str]:
    """Is ``entry`` a complete, uncorrupted cache entry for ``key``? ``(ok, reason)``."""
    if not entry.is_dir():
        return False, "not built yet"
    marker = entry / "COMPLETE.json"
    if not marker.is_file():
        return False, "no COMPLETE.json marker (a partial or interrupted build)"
    try:
        done = json.loads(marker.read_text())
        manifest = json.loads((entry / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        return False, f"unreadable marker or manifest ({exc})"
    if done.get("key") != key or manifest.get("key") != key:
        return False, f"key mismatch (marker {done.get('key')}, manifest {manifest.get('key')}, wanted {key})"
    for name, rec in done.get("files", {}).items():
        p = entry / name
        if not p.is_file():
            return False, f"{name} is missing"
        size = p.stat().st_size
        if size != rec["size"]:
            return False, f"{name} has {size} bytes, {rec['size']} recorded"
        if p.suffix == ".npy":
            try:
                arr = np.load(p, mmap_mode="r")
                shape, dtype = list(arr.shape), arr.dtype.str
                del arr
            except (OSError, ValueError) as exc:
                return False, f"{name} does not load ({exc})"
            if shape != rec.get("shape") or dtype != rec.get("dtype"):
                return False, f"{name} is {dtype}{shape}, {rec.get('dtype')}{rec.get('shape')} recorded"
        if full:
            if _full_hash(p) != rec["sha256"]:
                return False, f"{name}: SHA-256 differs from the recorded one (corrupt)"
        elif _sampled_hash(p, size) != rec["sampled"]:
            return False, f"{name}: sampled hash differs from the recorded one (corrupt)"
    if "manifest.json" not in done.get("files", {}):
        return False, "marker does not cover manifest.json"
    return True, "ok"


def build_entry(cache_dir: Path, name: str, key: str, build: Callable[[Path], dict]) -> Path:
    """Build ``cache_dir/name`` atomically: ``build(tmp_dir)`` writes the arrays and returns the
    manifest (a dict); then ``manifest.json`` and ``COMPLETE.json`` are written and the folder is
    renamed into place (replacing a stale entry of the same name)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=cache_dir))
    try:
        manifest = build(tmp)
        manifest["key"] = key
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
        files = {p.name: file_digests(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        done = {"format_version": FORMAT_VERSION, "key": key, "files": files}
        atomic_write_text(tmp / "COMPLETE.json", json.dumps(done, indent=2) + "\n")
        if final.exists():
            trash = cache_dir / f".trash-{name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # another process finished the same entry first: keep theirs if it is sound
            ok, _ = check_entry(final, key)
            if not ok:
                raise
            warnings.warn(f"{final} was built concurrently by another process; using that one", DataWarning)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
