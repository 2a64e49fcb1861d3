"""Datasets over arrays: a cache entry's memory-mapped splits, or any arrays in the same form.

``LRADataset[i]`` is ``(tokens, label)`` or, for a pair task (retrieval), ``(tokens1, tokens2, label)``:

* token tasks (listops, text, retrieval): ``tokens`` is an ``int64`` tensor ``(max_len,)``,
  padded with ``PAD_ID = 0``; ``padding_mask(tokens)`` is ``tokens == 0``, **True = padding**
  (the ``key_padding_mask`` convention of ``zoo.SequenceMixer``);
* pixel tasks (image, pathfinder, pathx): ``int64`` tokens 0..255 or ``float32`` values,
  per the ``pixels`` field (``tokens``/``unit``/``signed``/``standard``), length ``H*W``,
  no padding (``padding_mask`` returns ``None``).

Everything a trainer needs is on the dataset: ``arrays`` (the stored rows, one array per input),
``labels``, ``lengths`` (``(N,)``, or ``(N, 2)`` for pairs), ``n_classes``, ``vocab_size``,
``has_padding`` and :meth:`ArrayDataset.convert` (stored rows -> model inputs, on any device).
Token tasks (``kind == "token"``: MQAR, MAD) have ``labels`` of shape ``(N, L)`` with ``-100`` where
a position is not scored, ``n_classes`` = the vocabulary, no padding (0 is an ordinary token), and
``causal`` says whether each prediction may only see the past.
:class:`ArrayDataset` takes such arrays directly (tests, custom data).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.tasks import get_task
from zoo.data.tokenizers import PAD_ID, pixel_values

__all__ = ["ArrayDataset", "LRADataset", "collate", "padding_mask"]


def padding_mask(tokens: torch.Tensor) -> torch.Tensor:
    """``(..., L)`` token ids -> ``(..., L)`` bool, True where ``tokens == PAD_ID`` (padding)."""
    return tokens.eq(PAD_ID)


class ArrayDataset(Dataset):
    """Examples held as arrays: ``arrays`` (one ``(N, L)`` array per input), ``labels`` ``(N,)`` (or
    ``(N, L)`` per position for token tasks, ``-100`` = ignored), ``lengths`` (tokens before padding:
    ``(N,)``, or ``(N, n_inputs)``).

    Args:
        vocab_size: token inputs (padded with ``PAD_ID``); ``None`` for float pixel inputs (no padding).
        pixels: how pixel rows become inputs (``tokens`` keeps them as 256 tokens, no padding).
        padding: token inputs are padded with ``PAD_ID`` (``False``: 0 is an ordinary token).
        kind: ``"classify"``, ``"pair"`` or ``"token"`` (the task's declared kind; picks the head).
        causal: predictions may only see the past (the task's declared ``causal``).
    """

    def __init__(self, arrays: Sequence, labels, lengths, *, n_classes: int, vocab_size: int | None,
                 pixels: str | None = None, pixel_stats: tuple[float, float] = (0.0, 1.0), name: str = "arrays",
                 padding: bool = True, kind: str | None = None, causal: bool = False):
        self.task = name
        self.split = name
        self._arrays = tuple(arrays)
        self.labels = np.asarray(labels)
        self.lengths = np.asarray(lengths)
        self.n_classes = int(n_classes)
        self.pixels = pixels
        self._mean, self._std = float(pixel_stats[0]), float(pixel_stats[1]) or 1.0
        self.has_padding = pixels is None and padding
        self.vocab_size = vocab_size if pixels in (None, "tokens") else None
        self.is_pair = len(self._arrays) == 2
        self.kind = kind or ("token" if self.labels.ndim == 2 else "pair" if self.is_pair else "classify")
        self.is_token = self.kind == "token"
        self.causal = bool(causal)
        self.max_len = int(self._arrays[0].shape[1])
        _validate_labels(self)

    @property
    def arrays(self) -> tuple:
        return self._arrays

    def convert(self, rows: torch.Tensor) -> torch.Tensor:
        """Stored rows (``uint8``/``int16``/... on any device) -> the model's input tensor."""
        if self.pixels in (None, "tokens"):  # token ids (padded or not)
            return rows.long()
        return pixel_values(rows, self.pixels, self._mean, self._std)

    def padding_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """True = padding; ``None`` for pixel tasks (no padding)."""
        return padding_mask(tokens) if self.has_padding else None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} examples")
        rows = [self.convert(torch.from_numpy(np.array(a[i]))) for a in self.arrays]
        if self.labels.ndim == 2:  # a label per position
            return (*rows, torch.from_numpy(np.array(self.labels[i], dtype=np.int64)))
        return (*rows, int(self.labels[i]))

    def collate_fn(self, trim: bool = True):
        """A ``DataLoader`` ``collate_fn`` for this dataset (see :func:`collate`)."""
        return functools.partial(collate, trim=trim, has_padding=self.has_padding)

    def __repr__(self) -> str:
        extra = "" if self.has_padding else f", pixels={self.pixels!r}"
        return (f"{type(self).__name__}(task={self.task!r}, split={self.split!r}, n={len(self)}, "
                f"max_len={self.max_len}{extra})")


def _validate_labels(ds: ArrayDataset) -> None:
    want = 2 if ds.kind == "token" else 1
    if ds.labels.ndim != want:
        raise ValueError(f"{ds.task}: kind={ds.kind!r} needs labels of {want} dimension(s) "
                         f"({'(N, L), -100 where ignored' if want == 2 else '(N,)'}), got shape {ds.labels.shape}")
    if want == 2 and ds.labels.shape[1] != ds.max_len:
        raise ValueError(f"{ds.task}: per-position labels {ds.labels.shape} must match the inputs' length {ds.max_len}")


class LRADataset(ArrayDataset):
    """One split of one prepared task (a cache entry), its arrays memory-mapped."""

    def __init__(self, entry: str | Path, split: str, *, pixels: str | None = None, manifest: dict | None = None):
        self.entry = Path(entry)
        self.manifest = manifest if manifest is not None else json.loads((self.entry / "manifest.json").read_text())
        self.spec = get_task(self.manifest["task"])
        result = self.manifest["result"]
        if split not in result["splits"]:
            raise ValueError(f"{self.spec.name} has splits {sorted(result['splits'])}, not {split!r}")
        self._file_split = result.get("split_files", {}).get(split, split)
        pix = (pixels or self.manifest.get("view", {}).get("pixels", "tokens")) if self.spec.is_pixels else None
        labels = np.load(self._path("labels"))
        lengths = [np.load(self._path(n.replace("inputs", "lengths"))) for n in self.spec.inputs]
        enc = self.manifest["build"].get("encoding", {})  # per-config vocabulary of the token tasks
        super().__init__([np.load(self._path(n), mmap_mode="r") for n in self.spec.inputs], labels,
                         lengths[0] if len(lengths) == 1 else np.stack(lengths, axis=1),
                         n_classes=enc.get("n_classes", self.spec.n_classes),
                         vocab_size=enc.get("vocab_size", self.spec.vocab_size) or 256, pixels=pix,
                         pixel_stats=(result.get("pixel_mean", 0.0), result.get("pixel_std", 1.0)), name=self.spec.name,
                         padding=self.spec.padding, kind=self.spec.kind, causal=self.spec.causal)
        self.split = split

    def _path(self, name: str) -> Path:
        return self.entry / f"{self._file_split}.{name}.npy"

    @property
    def arrays(self) -> tuple:
        if self._arrays is None:  # opened lazily (and again in each DataLoader worker)
            self._arrays = tuple(np.load(self._path(n), mmap_mode="r") for n in self.spec.inputs)
        return self._arrays

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = None  # never pickle the memory maps (that would copy the data)
        state["spec"] = self.spec.name  # specs hold functions; workers look them up again
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.spec = get_task(state["spec"])


def collate(batch, *, trim: bool = True, has_padding: bool = True):
    """Stack items of a dataset into ``(tokens, labels)`` / ``(tokens1, tokens2, labels)``.

    With ``trim`` (and ``has_padding``: token tasks only, since a pixel 0 is not padding), the
    trailing columns that are padding in every row are dropped. Use ``dataset.collate_fn()``.
    """
    cols = list(zip(*batch))
    if isinstance(cols[-1][0], torch.Tensor):  # per-position labels (token tasks), (B, L)
        labels = torch.stack(cols[-1])
    else:
        labels = torch.tensor(cols[-1], dtype=torch.long)
    seqs = [torch.stack(c) for c in cols[:-1]]  # each (B, L)
    if trim and has_padding:
        seqs = [_trim(s) for s in seqs]
    return (*seqs, labels)


def _trim(s: torch.Tensor) -> torch.Tensor:
    used = s.ne(PAD_ID).any(dim=0).nonzero()
    keep = int(used.max()) + 1 if used.numel() else 1
    return s[:, :keep]
