"""MAD's selective copying, compression and memorization tasks.

Poli et al., "Mechanistic Design and Scaling of Hybrid Architectures", ICML 2024 (MAD;
athms/mad-lab ``mad/data/instances.py``). Our own implementation of those definitions; none of
these three is shifted (inputs and labels are aligned as MAD returns them).

* selective copying: ``num_tokens_to_copy`` tokens from ``[0, V-2)`` with ``L - 2n - 1`` blank
  tokens (``V-2``) inserted at random (each blank independently before one of the n tokens, so the
  last token to copy always ends the stream), then the copy token ``V-1`` and ``n`` blanks; the
  labels are the copied tokens, in order, at those last ``n`` positions.
* compression: ``L-1`` tokens uniform in ``[0, V-1-nv)`` (each replaced by a noise token with
  probability ``frac_noise``), then the compression token ``V-1``; the target IS the sequence
  (MAD returns ``(inputs, inputs)``): an encoder squeezes it into the last position's state and a
  decoder reconstructs every token (see docs/synthetic.md for what the model side needs).
* memorization: a FIXED key -> value map (a bijection between random permutations of the keys
  ``[0, m//2)`` and values ``[m//2, m)``, ``m = V-1-nv``, from ``kv_map_seed``: the same for every
  example and both splits); an example is ``L/2`` slots ``key, insert`` (insert token ``V-1``)
  labelled ``-100, value``, each slot noise (2 noise tokens, unlabelled) with prob. ``frac_noise``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from zoo.data.generators.synthetic import IGNORE
from zoo.fields import config_field

__all__ = ["CompressionConfig", "MemorizationConfig", "SelectiveCopyConfig", "generate_compression",
           "generate_memorization", "generate_selective_copy", "memorization_map"]

_SEED_HELP = "data seed: train and test come from disjoint seeds derived from it"


def _check_noise(task: str, frac_noise: float, noise_vocab_size: int, top: float = 1.0) -> None:
    if not isinstance(noise_vocab_size, int) or noise_vocab_size < 0:
        raise ValueError(f"{task}: noise_vocab_size={noise_vocab_size!r} must be a non-negative integer")
    if not 0 <= frac_noise <= top:
        raise ValueError(f"{task}: frac_noise={frac_noise} must be in [0, {top})")
    if frac_noise > 0 and noise_vocab_size <= 0:
        raise ValueError(f"{task}: frac_noise={frac_noise} needs noise_vocab_size > 0")


@dataclass
class SelectiveCopyConfig:
    """MAD selective copying: copy the non-blank tokens, in order, after the copy token."""

    vocab_size: int = config_field(16, "vocabulary V: tokens [0, V-2), blank V-2, copy V-1")
    seq_len: int = config_field(256, "sequence length L (> 2*num_tokens_to_copy + 1)")
    num_tokens_to_copy: int = config_field(16, "tokens to copy n")
    num_train_examples: int = config_field(12_800, "training examples (MAD: 12,800)")
    num_test_examples: int = config_field(1_280, "test examples (MAD: 1,280); val = test")
    seed: int = config_field(0, _SEED_HELP)

    def validate(self) -> None:
        if self.vocab_size < 3:
            raise ValueError(f"selective_copying: vocab_size={self.vocab_size} must be >= 3 (blank and copy tokens)")
        if self.num_tokens_to_copy < 1 or self.seq_len <= 2 * self.num_tokens_to_copy + 1:
            raise ValueError(f"selective_copying: seq_len={self.seq_len} must be > 2*num_tokens_to_copy+1 = "
                             f"{2 * self.num_tokens_to_copy + 1} (and num_tokens_to_copy >= 1)")

    def output_len(self) -> int:
        return self.seq_len


def generate_selective_copy(cfg: SelectiveCopyConfig, n: int, rng: np.random.Generator, split: str = "train"):
    V, L, c = cfg.vocab_size, cfg.seq_len, cfg.num_tokens_to_copy
    blanks = L - 2 * c - 1
    to_copy = rng.integers(0, V - 2, size=(n, c))  # (n, c)
    before = rng.integers(0, c, size=(n, blanks))  # each blank goes before token `before`
    counts = np.zeros((n, c), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), blanks), before.ravel()), 1)
    pos = np.arange(c)[None, :] + np.cumsum(counts, axis=1)  # (n, c) where each token lands
    inputs = np.full((n, L), V - 2, dtype=np.int64)
    np.put_along_axis(inputs, pos, to_copy, axis=1)
    inputs[:, c + blanks] = V - 1
    labels = np.full((n, L), IGNORE, dtype=np.int64)
    labels[:, c + blanks + 1:] = to_copy
    return inputs, labels


@dataclass
class CompressionConfig:
    """MAD compression: reconstruct the whole sequence from its compressed (last-position) state."""

    needs_model: ClassVar[str] = "MAD's encoder-decoder (mad/model/auto_encoder.py)"  # zoo.train refuses the task

    vocab_size: int = config_field(16, "vocabulary V: tokens [0, V-1-noise), noise above, compression token V-1")
    seq_len: int = config_field(32, "sequence length L (the last token is the compression token)")
    noise_vocab_size: int = config_field(0, "noise tokens")
    frac_noise: float = config_field(0.0, "probability that a token is replaced by noise")
    num_train_examples: int = config_field(12_800, "training examples (MAD: 12,800)")
    num_test_examples: int = config_field(1_280, "test examples (MAD: 1,280); val = test")
    seed: int = config_field(0, _SEED_HELP)

    def validate(self) -> None:
        _check_noise("compression", self.frac_noise, self.noise_vocab_size)
        if self.vocab_size - 1 - self.noise_vocab_size < 1 or self.seq_len < 2:
            raise ValueError("compression: need vocab_size > noise_vocab_size + 1 and seq_len >= 2")

    def output_len(self) -> int:
        return self.seq_len


def generate_compression(cfg: CompressionConfig, n: int, rng: np.random.Generator, split: str = "train"):
    ns = cfg.vocab_size - 1 - cfg.noise_vocab_size
    body = rng.integers(0, ns, size=(n, cfg.seq_len - 1))  # (n, L-1)
    if cfg.frac_noise > 0:
        noisy = rng.random(body.shape) < cfg.frac_noise
        body = np.where(noisy, rng.integers(ns, ns + cfg.noise_vocab_size, size=body.shape), body)
    inputs = np.concatenate([body, np.full((n, 1), cfg.vocab_size - 1)], axis=1).astype(np.int64)
    return inputs, inputs.copy()


@dataclass
class MemorizationConfig:
    """MAD memorization: a fixed key -> value map, the same in every example and split."""

    vocab_size: int = config_field(256, "vocabulary V: keys [0, m/2), values [m/2, m), m = V-1-noise; insert V-1")
    seq_len: int = config_field(32, "sequence length L (even): L/2 key-insert slots")
    noise_vocab_size: int = config_field(0, "noise tokens")
    frac_noise: float = config_field(0.0, "probability that a slot is noise instead")
    kv_map_seed: int = config_field(12345, "seed of the fixed key -> value map (MAD: its config seed, 12345)")
    num_train_examples: int = config_field(256, "training examples (MAD: 256)")
    num_test_examples: int = config_field(1_280, "test examples (MAD: 1,280); val = test")
    seed: int = config_field(0, _SEED_HELP)

    def validate(self) -> None:
        _check_noise("memorization", self.frac_noise, self.noise_vocab_size)
        if self.vocab_size - 1 - self.noise_vocab_size < 2:
            raise ValueError(f"memorization: vocab_size={self.vocab_size} leaves no keys and values: raise it")
        if self.seq_len < 2 or self.seq_len % 2:
            raise ValueError(f"memorization: seq_len={self.seq_len} must be even and >= 2 (key, insert slots)")

    def output_len(self) -> int:
        return self.seq_len


def memorization_map(cfg: MemorizationConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, values)``: the fixed map, ``values[i]`` the value of ``keys[i]`` (from ``kv_map_seed`` only)."""
    m = cfg.vocab_size - 1 - cfg.noise_vocab_size
    r = np.random.default_rng(cfg.kv_map_seed)
    keys, values = r.permutation(np.arange(m // 2)), r.permutation(np.arange(m // 2, m))
    c = min(keys.size, values.size)
    return keys[:c], values[:c]


def generate_memorization(cfg: MemorizationConfig, n: int, rng: np.random.Generator, split: str = "train"):
    keys, values = memorization_map(cfg)
    S, ns = cfg.seq_len // 2, cfg.vocab_size - 1 - cfg.noise_vocab_size
    pick = rng.integers(0, keys.size, size=(n, S))  # (n, S)
    keep = rng.integers(0, S, size=(n, 1))  # one slot is never noise (as in MAD)
    noisy = (rng.random((n, S)) < cfg.frac_noise) & (np.arange(S)[None, :] != keep)
    a = np.where(noisy, 0, keys[pick])
    b = np.where(noisy, 0, cfg.vocab_size - 1)
    lab = np.where(noisy, IGNORE, values[pick])
    if cfg.noise_vocab_size:
        nz = rng.integers(ns, ns + cfg.noise_vocab_size, size=(n, S, 2))
        a, b = np.where(noisy, nz[..., 0], a), np.where(noisy, nz[..., 1], b)
    inputs = np.stack([a, b], axis=2).reshape(n, 2 * S).astype(np.int64)
    labels = np.stack([np.full((n, S), IGNORE), lab], axis=2).reshape(n, 2 * S).astype(np.int64)
    return inputs, labels
