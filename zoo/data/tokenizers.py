"""Tokenisers with fixed, documented vocabularies (never built from the data).

Padding convention for every token task: id ``PAD_ID = 0`` is padding and nothing else, so a
padding mask is ``tokens == 0`` with **True = padding** (see ``zoo.data.dataset.padding_mask``).
Pixel tasks (image, pathfinder, pathx) have no padding: every sequence is full length, and a
pixel value 0 is a real token.

ListOps (vocabulary size 16)::

    0 <pad>   1..10 the digits "0".."9"   11 "[MAX"   12 "[MED"   13 "[MIN"   14 "[SM"   15 "]"

i.e. pad, then the 15 token types in sorted (byte) order. Text is tokenised by deleting ``(``
and ``)`` and splitting on whitespace; ``]`` is the close token. (The LRA pipeline built its
vocabulary in set order, so ids differed between runs; here they are fixed.)

Bytes (text, retrieval; vocabulary size 257): id = byte value + 1, pad 0.

Pixels: CIFAR-10 is made grayscale with ITU-R 601 weights ``(0.2989, 0.5870, 0.1140)`` (those
of ``tf.image.rgb_to_grayscale``, which LRA used) and rounded to the nearest integer 0..255.
Pixels are tokens 0..255 or floats (``pixel_values``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BYTE_VOCAB_SIZE",
    "GRAY_WEIGHTS",
    "LISTOPS_VOCAB",
    "PAD_ID",
    "PIXEL_MODES",
    "ByteTokenizer",
    "ListOpsTokenizer",
    "first_chars_bytes",
    "grayscale",
    "pixel_values",
]

PAD_ID = 0
LISTOPS_VOCAB: tuple[str, ...] = ("<pad>",) + tuple(
    sorted([str(d) for d in range(10)] + ["[MAX", "[MED", "[MIN", "[SM", "]"]))
BYTE_VOCAB_SIZE = 257
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
PIXEL_MODES = ("tokens", "unit", "signed", "standard")


class ListOpsTokenizer:
    """``encode(text) -> uint8 ids`` with the fixed ListOps vocabulary (``LISTOPS_VOCAB``)."""

    vocab = LISTOPS_VOCAB
    vocab_size = len(LISTOPS_VOCAB)
    pad_id = PAD_ID
    _DROP = str.maketrans({"(": " ", ")": " "})

    def __init__(self):
        self.index = {tok: i for i, tok in enumerate(LISTOPS_VOCAB) if i != PAD_ID}

    def tokens(self, text: str) -> list[str]:
        return text.translate(self._DROP).split()

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text`` (no padding). Raises ``KeyError`` naming an unknown token."""
        toks = self.tokens(text)
        try:
            return np.fromiter(map(self.index.__getitem__, toks), dtype=np.uint8, count=len(toks))
        except KeyError as exc:
            vocab = " ".join(LISTOPS_VOCAB[1:])
            raise KeyError(f"unknown ListOps token {exc.args[0]!r} (vocabulary: {vocab})") from None

    def decode(self, ids) -> str:
        return " ".join(LISTOPS_VOCAB[int(i)] for i in np.asarray(ids).ravel() if int(i) != PAD_ID)


class ByteTokenizer:
    """UTF-8 bytes, id = byte + 1, pad 0 (vocabulary 257)."""

    vocab_size = BYTE_VOCAB_SIZE
    pad_id = PAD_ID

    @staticmethod
    def encode(data: bytes | str, max_len: int | None = None) -> np.ndarray:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if max_len is not None:
            data = data[:max_len]
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint16) + 1

    @staticmethod
    def decode(ids) -> str:
        ids = np.asarray(ids).ravel()
        ids = ids[ids != PAD_ID]
        return (ids - 1).astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def first_chars_bytes(data: bytes, n_chars: int) -> bytes:
    """The bytes of the first ``n_chars`` UTF-8 characters of ``data`` (a character starts at
    every byte that is not a continuation byte ``10xxxxxx``)."""
    head = np.frombuffer(data[: 4 * n_chars + 4], dtype=np.uint8)
    starts = np.flatnonzero((head & 0xC0) != 0x80)
    if starts.size <= n_chars:  # the whole (short) document, or invalid UTF-8: keep the head
        return data[: 4 * n_chars + 4]
    return data[: int(starts[n_chars])]


def grayscale(rgb: np.ndarray) -> np.ndarray:
    """``(N, 3072)`` CIFAR rows (R plane, G plane, B plane) or ``(N, 3, H, W)`` uint8 -> ``(N, H*W)`` uint8."""
    rgb = np.asarray(rgb)
    n = rgb.shape[0]
    planes = rgb.reshape(n, 3, -1).astype(np.float32)
    w = np.asarray(GRAY_WEIGHTS, dtype=np.float32)
    g = np.einsum("c,ncl->nl", w, planes)
    return np.clip(np.floor(g + 0.5), 0, 255).astype(np.uint8)


def pixel_values(x, mode: str, mean: float = 0.0, std: float = 1.0):
    """uint8 pixels (a torch tensor on any device, or a numpy array) -> the model's input tensor:
    ``tokens`` int64 0..255; ``unit`` float32 ``x/255`` (LRA's ``normalize``); ``signed`` float32 in
    [-1, 1]; ``standard`` float32 ``(x/255-mean)/std`` (mean, std of the training split, recorded in
    the manifest)."""
    import torch

    x = torch.as_tensor(x)
    if mode == "tokens":
        return x.long()
    f = x.float() / 255.0
    if mode == "unit":
        return f
    if mode == "signed":
        return f * 2.0 - 1.0
    if mode == "standard":
        return (f - mean) / std
    raise ValueError(f"pixels={mode!r}: choose one of {', '.join(PIXEL_MODES)}")
