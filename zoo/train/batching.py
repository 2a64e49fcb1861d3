"""Batches at hardware speed: length-aware, a bounded set of shapes, the data on the device.

* :func:`epoch_batches` is a pure function of ``(seed, epoch)`` (so a resumed run sees the same
  batches). With ``bucketed=True`` the shuffled examples are cut into pools of ``pool`` batches,
  each pool sorted by length and cut into batches, and the batch order shuffled again: a batch
  holds examples of similar length, so little compute goes to padding.
* :class:`BatchSource` gathers a batch of rows (from device-resident tensors when the split fits,
  else from the memory-mapped arrays), trims it to the shape bucket of its longest example
  (:func:`zoo.functional.call.bucket_length`, capped at the task's length) and fills it to the
  full batch size with zero-weight rows, so a model sees at most a dozen shapes per task and a
  compiled kernel compiles a bounded number of times.

A :class:`Batch` carries the inputs, their padding masks (True = padding), the labels (``(B,)``,
or ``(B, L)`` per position for token tasks: cut or filled with ``-100`` to the batch's length), the
row weights (1 real, 0 filler), the number of scored labels of the real rows (the rows, or the
labelled positions of a token task: the training step's mean is over them) and the token counts
(real and padded) for throughput reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from zoo.functional.call import bucket_length

__all__ = ["Batch", "BatchSource", "epoch_batches", "eval_batches"]

IGNORE = -100  # a per-position label that is not scored
POOL_BATCHES = 64
ON_DEVICE_LIMIT = 4 << 30  # bytes of a split held on the device under data.on_device=auto


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, *, bucketed: bool = True,
                  pool: int = POOL_BATCHES) -> list[list[int]]:
    """The batches (lists of example indices) of one epoch; a pure function of ``(seed, epoch)``."""
    n = len(lengths)
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(n)
    if not bucketed:
        return [perm[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    batches = []
    size = pool * batch_size
    for start in range(0, n, size):
        chunk = perm[start:start + size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]  # (pool * B,) by length
        batches += [chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Deterministic evaluation batches: examples sorted by length (least padding), then cut."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


@dataclass
class Batch:
    inputs: list[torch.Tensor]            # each (B, L_i): token ids (int64) or float pixels
    masks: list[torch.Tensor | None]      # each (B, L_i) bool, True = padding; None without padding
    labels: torch.Tensor                  # (B,) int64, or (B, L) per position (-100 = not scored)
    weights: torch.Tensor                 # (B,) float32: 1 for real rows, 0 for filler rows
    n_rows: int                           # real rows
    n_scored: int                         # scored labels of the real rows (rows; labelled positions per position)
    real_tokens: int                      # tokens before padding, over the real rows and inputs
    padded_tokens: int                    # tokens the model computes on (B * sum L_i)


class BatchSource:
    """Makes :class:`Batch` es of a dataset with the ``ArrayDataset`` interface on ``device``.

    Args:
        ds: a dataset with ``arrays``, ``labels``, ``lengths``, ``convert()``,
            ``padding_mask()``, ``has_padding`` and ``max_len``.
        device: where batches are made.
        on_device: ``"auto"`` (hold the split on ``device`` when it is CUDA and under 4 GiB),
            ``"true"`` or ``"false"``.
        buckets: trim padded token batches to shape buckets (else to the longest example).
    """

    def __init__(self, ds, device: torch.device, *, on_device: str = "auto", buckets: bool = True) -> None:
        self.ds = ds
        self.device = device
        self.buckets = buckets
        self.lengths = np.asarray(ds.lengths).reshape(len(ds), -1)  # (N, n_inputs)
        self.longest = self.lengths.max(axis=1)  # (N,) what each example needs a batch padded to
        self.host_labels = np.asarray(ds.labels)  # (N,) or (N, L): counts scored labels without a device sync
        self.per_position = self.host_labels.ndim == 2
        size = sum(int(a.nbytes) for a in ds.arrays)
        keep = on_device == "true" or (on_device == "auto" and device.type == "cuda" and size <= ON_DEVICE_LIMIT)
        self.on_device = keep
        if keep:  # one copy of the stored rows on the device (ListOps: 192 MB as uint8)
            self.arrays = [_to_tensor(np.asarray(a)).to(device) for a in ds.arrays]
            self.labels = torch.as_tensor(np.asarray(ds.labels), dtype=torch.long).to(device)
        else:
            self.arrays = list(ds.arrays)
            self.labels = None

    def length_of(self, rows: np.ndarray) -> int:
        """The padded length of a batch whose longest example has ``rows`` tokens."""
        if not self.ds.has_padding:
            return self.ds.max_len
        return min(bucket_length(int(rows), min_step=16), self.ds.max_len) if self.buckets else int(rows)

    def shapes(self) -> list[int]:
        """Every padded length a batch of this dataset can have (to compile them ahead)."""
        if not self.ds.has_padding:
            return [self.ds.max_len]
        lo, hi = int(self.lengths.min()), int(self.lengths.max())
        return sorted({self.length_of(n) for n in range(max(lo, 1), hi + 1)})

    def probe(self, batch_size: int, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """``(inputs, masks)`` of a synthetic batch of one shape, with one padded key (the padded code
        path) for token tasks: for compiling a shape ahead and for measuring a step's memory."""
        rows = torch.ones(batch_size, length, dtype=torch.uint8, device=self.device)
        if self.ds.has_padding:
            rows[:, -1] = 0
        x = self.ds.convert(rows)
        n = 2 if self.ds.is_pair else 1
        return [x] * n, [self.ds.padding_mask(x)] * n

    def batch(self, indices: list[int], batch_size: int) -> Batch:
        """The batch of ``indices``, filled to ``batch_size`` rows with zero-weight copies of its first row."""
        n = len(indices)
        idx = np.asarray(indices + [indices[0]] * (batch_size - n), dtype=np.int64)  # (B,)
        lengths = self.lengths[idx[:n]]  # (n, n_inputs)
        idx_dev = self._to_device(torch.from_numpy(idx)) if self.on_device else None
        inputs, masks = [], []
        for j, arr in enumerate(self.arrays):
            L = self.length_of(lengths[:, j].max())
            if self.on_device:
                rows = arr.index_select(0, idx_dev)[:, :L]
            else:
                rows = self._to_device(_to_tensor(np.ascontiguousarray(arr[idx, :L])))
            x = self.ds.convert(rows)  # (B, L)
            inputs.append(x)
            masks.append(self.ds.padding_mask(x))
        if self.labels is not None:
            labels = self.labels.index_select(0, idx_dev)
        else:
            labels = self._to_device(torch.as_tensor(self.host_labels[idx], dtype=torch.long))
        n_scored = n
        if self.per_position:
            labels = _fit_length(labels, inputs[0].shape[1])  # (B, L)
            n_scored = int((self.host_labels[idx[:n], : inputs[0].shape[1]] != IGNORE).sum())
        weights = (torch.arange(batch_size, device=self.device) < n).float()  # made there: no copy
        return Batch(inputs=inputs, masks=masks, labels=labels, weights=weights,
                     n_rows=n, n_scored=n_scored, real_tokens=int(lengths.sum()),
                     padded_tokens=batch_size * sum(int(x.shape[1]) for x in inputs))

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """Host rows to the device without a sync: a copy from pageable memory would first wait for
        the GPU to drain (CUDA's rule), so CUDA copies go through (cached) pinned memory."""
        if self.device.type != "cuda":
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)


def _fit_length(labels: torch.Tensor, length: int) -> torch.Tensor:
    """Per-position labels ``(B, L_stored)`` cut or filled with ``-100`` to the batch's length ``(B, length)``."""
    if labels.shape[1] >= length:
        return labels[:, :length]
    return torch.nn.functional.pad(labels, (0, length - labels.shape[1]), value=IGNORE)


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    """numpy rows -> a tensor torch can index (uint16 has too few kernels: stored ids fit in int32)."""
    if a.dtype == np.uint16:
        a = a.astype(np.int32)
    return torch.from_numpy(np.ascontiguousarray(a))
