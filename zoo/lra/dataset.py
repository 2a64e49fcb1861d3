"""Torch datasets over a cache entry's memory-mapped arrays.

``LRADataset[i]`` is ``(tokens, label)`` or, for retrieval, ``(tokens1, tokens2, label)``:

* token tasks (listops, text, retrieval): ``tokens`` is an ``int64`` tensor ``(max_len,)``,
  padded with ``PAD_ID = 0``; ``padding_mask(tokens)`` is ``tokens == 0``, **True = padding**
  (the ``key_padding_mask`` convention of ``zoo.SequenceMixer``);
* pixel tasks (image, pathfinder, pathx): ``int64`` tokens 0..255 or ``float32`` values,
  per the ``pixels`` field (``tokens``/``unit``/``signed``/``standard``), length ``H*W``,
  no padding (``LRADataset.padding_mask`` returns ``None``).

``label`` is an ``int``; the default collate makes a ``LongTensor``. ``collate(batch, trim=True)``
also drops the all-padding tail columns of a batch.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.lra.tokenizers import BYTE_VOCAB_SIZE, LISTOPS_VOCAB, PAD_ID, pixel_values

__all__ = ["LRADataset", "collate", "padding_mask"]

_N_CLASSES = {"listops": 10, "text": 2, "retrieval": 2, "image": 10, "pathfinder": 2, "pathx": 2}
_PIXEL_TASKS = ("image", "pathfinder", "pathx")


def padding_mask(tokens: torch.Tensor) -> torch.Tensor:
    """``(..., L)`` token ids -> ``(..., L)`` bool, True where ``tokens == PAD_ID`` (padding)."""
    return tokens.eq(PAD_ID)


class LRADataset(Dataset):
    """One split of one prepared task (see the module docstring for what items look like).

    Attributes: ``task``, ``split``, ``n_classes``, ``max_len``, ``vocab_size`` (``None`` for float
    pixels), ``has_padding``, ``is_pair`` (retrieval), ``labels`` and ``lengths`` (numpy arrays;
    for retrieval ``lengths`` is ``(N, 2)``), ``manifest``.
    """

    def __init__(self, entry: str | Path, split: str, *, pixels: str | None = None, manifest: dict | None = None):
        self.entry = Path(entry)
        self.manifest = manifest if manifest is not None else json.loads((self.entry / "manifest.json").read_text())
        self.task = self.manifest["task"]
        result = self.manifest["result"]
        if split not in result["splits"]:
            raise ValueError(f"{self.task} has splits {sorted(result['splits'])}, not {split!r}")
        self.split = split
        self._file_split = result.get("split_files", {}).get(split, split)
        self.is_pair = self.task == "retrieval"
        self.n_classes = _N_CLASSES[self.task]
        self.has_padding = self.task not in _PIXEL_TASKS
        self.pixels = pixels or self.manifest.get("view", {}).get("pixels", "tokens")
        self._mean = float(result.get("pixel_mean", 0.0))
        self._std = float(result.get("pixel_std", 1.0)) or 1.0
        if self.task == "listops":
            self.vocab_size = len(LISTOPS_VOCAB)
        elif self.task in ("text", "retrieval"):
            self.vocab_size = BYTE_VOCAB_SIZE
        else:
            self.vocab_size = 256 if self.pixels == "tokens" else None
        self.labels = np.load(self._path("labels"))
        if self.is_pair:
            self.lengths = np.stack([np.load(self._path("lengths1")), np.load(self._path("lengths2"))], axis=1)
        else:
            self.lengths = np.load(self._path("lengths"))
        self._arrays = None
        self.max_len = int(self._inputs()[0].shape[1])

    def _path(self, name: str) -> Path:
        return self.entry / f"{self._file_split}.{name}.npy"

    def _inputs(self):
        if self._arrays is None:  # opened lazily (and again in each DataLoader worker)
            names = ("inputs1", "inputs2") if self.is_pair else ("inputs",)
            self._arrays = tuple(np.load(self._path(n), mmap_mode="r") for n in names)
        return self._arrays

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = None  # never pickle the memory maps (that would copy the data)
        return state

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _convert(self, row: np.ndarray) -> torch.Tensor:
        if self.has_padding:
            return torch.from_numpy(row.astype(np.int64))
        return torch.from_numpy(pixel_values(row, self.pixels, self._mean, self._std))

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} examples")
        arrays = self._inputs()
        label = int(self.labels[i])
        if self.is_pair:
            return self._convert(arrays[0][i]), self._convert(arrays[1][i]), label
        return self._convert(arrays[0][i]), label

    def collate_fn(self, trim: bool = True):
        """A ``DataLoader`` ``collate_fn`` for this dataset (see ``collate``)."""
        return functools.partial(collate, trim=trim, has_padding=self.has_padding)

    def padding_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """True = padding; ``None`` for pixel tasks (no padding)."""
        return padding_mask(tokens) if self.has_padding else None

    def __repr__(self) -> str:
        return (f"LRADataset(task={self.task!r}, split={self.split!r}, n={len(self)}, max_len={self.max_len}, "
                f"pixels={self.pixels!r})" if not self.has_padding else
                f"LRADataset(task={self.task!r}, split={self.split!r}, n={len(self)}, max_len={self.max_len})")


def collate(batch, *, trim: bool = True, has_padding: bool = True):
    """Stack items of an ``LRADataset`` into ``(tokens, labels)`` / ``(tokens1, tokens2, labels)``.

    With ``trim`` (and ``has_padding``: token tasks only, since a pixel 0 is not padding), the
    trailing columns that are padding in every row are dropped. Use ``dataset.collate_fn()``.
    """
    cols = list(zip(*batch))
    labels = torch.tensor(cols[-1], dtype=torch.long)
    seqs = [torch.stack(c) for c in cols[:-1]]  # each (B, L)
    if trim and has_padding:
        seqs = [_trim(s) for s in seqs]
    return (*seqs, labels)


def _trim(s: torch.Tensor) -> torch.Tensor:
    used = s.ne(PAD_ID).any(dim=0).nonzero()
    keep = int(used.max()) + 1 if used.numel() else 1
    return s[:, :keep]
