"""MAD's recall tasks: in-context recall, noisy in-context recall, fuzzy in-context recall.

Poli et al., "Mechanistic Design and Scaling of Hybrid Architectures", ICML 2024 (MAD;
athms/mad-lab ``mad/data/instances.py``). Our own implementation of those definitions.

Vocabulary (``V`` = ``vocab_size``, ``nv`` = ``noise_vocab_size``, ``mq`` = ``multi_query``):

* in-context / noisy recall: ``ns = (V if mq else V - 1) - nv`` ordinary tokens; keys ``[0, ns//2)``,
  values ``[ns//2, ns)``, noise ``[ns, ns + nv)``; copy prefix ``V - 1`` (single-query only).
* fuzzy recall: ``ns = (V - 1 if mq else V - 2) - nv``; keys/values are motifs (ordered tuples of
  distinct tokens) of 1..k_motif_size / 1..v_motif_size tokens; pad token ``V - 1`` (mq) or ``V - 2``.

A sequence is a stream of key-value pairs (a key keeps its value within the example), each pair
replaced by noise with probability ``frac_noise``, then a final probe: ``[copy prefix,] key, value``
of a key already shown. Targets (``-100`` = ignored): the probe's value; with ``multi_query`` also
every value whose key was shown before. MAD returns ``inputs = seq[:-1]`` and, for the TRAIN split,
``labels = seq[1:]`` (plain next-token prediction over the whole sequence, noise included), for the
TEST split ``labels = targets[1:]`` (only the recall positions). The same is done here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from zoo.data.generators.synthetic import IGNORE
from zoo.fields import config_field

__all__ = ["FuzzyRecallConfig", "RecallConfig", "generate_fuzzy_recall", "generate_recall", "recall_vocab"]


def _finish(seq: np.ndarray, targets: np.ndarray, split: str):
    """MAD's shift: ``inputs = seq[:, :-1]``; labels = ``seq[:, 1:]`` (train) or ``targets[:, 1:]``."""
    return seq[:, :-1], (seq[:, 1:] if split == "train" else targets[:, 1:]).copy()


def _nonneg(task: str, **kv) -> None:
    for k, v in kv.items():
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{task}: {k}={v!r} must be a non-negative integer")


def _check_noise(task: str, frac_noise: float, noise_vocab_size: int) -> None:
    if not 0 <= frac_noise < 1:
        raise ValueError(f"{task}: frac_noise={frac_noise} must be in [0, 1)")
    if frac_noise > 0 and noise_vocab_size <= 0:
        raise ValueError(f"{task}: frac_noise={frac_noise} needs noise_vocab_size > 0")


@dataclass
class RecallConfig:
    """MAD in-context recall (noisy recall: the same with ``frac_noise`` > 0 and a noise vocabulary)."""

    vocab_size: int = config_field(16, "vocabulary V (noise tokens included)")
    seq_len: int = config_field(128, "sequence length before MAD's shift (even); inputs are L-1 (mq) or L long")
    multi_query: bool = config_field(True, "label every repeated key's value (MAD baseline: true)")
    noise_vocab_size: int = config_field(0, "noise tokens, taken from the top of the ordinary vocabulary")
    frac_noise: float = config_field(0.0, "probability that a key-value slot is noise instead")
    num_train_examples: int = config_field(12_800, "training examples (MAD: 12,800)")
    num_test_examples: int = config_field(1_280, "test examples (MAD: 1,280); val = test")
    seed: int = config_field(0, "data seed: train and test come from disjoint seeds derived from it")

    def validate(self) -> None:
        _nonneg("recall", noise_vocab_size=self.noise_vocab_size)
        _check_noise("recall", self.frac_noise, self.noise_vocab_size)
        if self.seq_len < 4 or self.seq_len % 2:
            raise ValueError(f"recall: seq_len={self.seq_len} must be even and >= 4 (key-value pairs of 2 tokens)")
        keys, values, _ = recall_vocab(self)
        if keys.size < 1 or values.size < 1:
            raise ValueError(f"recall: vocab_size={self.vocab_size} leaves no key or value tokens after "
                             f"{self.noise_vocab_size} noise tokens: raise vocab_size (>= noise_vocab_size + 3)")

    def output_len(self) -> int:
        return self.seq_len - 1 if self.multi_query else self.seq_len


def recall_vocab(cfg: RecallConfig):
    """``(keys, values, noise)`` token arrays of the (noisy) in-context recall task."""
    ns = (cfg.vocab_size if cfg.multi_query else cfg.vocab_size - 1) - cfg.noise_vocab_size
    return np.arange(ns // 2), np.arange(ns // 2, ns), np.arange(ns, ns + cfg.noise_vocab_size)


def generate_recall(cfg: RecallConfig, n: int, rng: np.random.Generator, split: str = "train"):
    """``n`` (noisy) in-context recall examples, vectorised over examples."""
    keys, values, noise = recall_vocab(cfg)
    S = cfg.seq_len // 2 - 1  # key-value slots before the probe
    rows = np.arange(n)[:, None]
    # one slot is never noise, so every example shows at least one pair (MAD's intent; see docs)
    keep = rng.integers(0, S, size=(n, 1))
    is_noise = (rng.random((n, S)) < cfg.frac_noise) & (np.arange(S)[None, :] != keep)  # (n, S)
    k = keys[rng.integers(0, keys.size, size=(n, S))]  # (n, S)
    table = values[rng.integers(0, values.size, size=(n, keys.size))]  # (n, n_keys): a key's value
    v = table[rows, k]
    if noise.size:
        nz = noise[rng.integers(0, noise.size, size=(n, S, 2))]
        k, v = np.where(is_noise, nz[..., 0], k), np.where(is_noise, nz[..., 1], v)
    first = np.full((n, keys.size), S)  # first slot of each key
    r, s = np.nonzero(~is_noise)
    np.minimum.at(first, (r, k[r, s]), s)
    repeat = ~is_noise & (np.arange(S)[None, :] > np.take_along_axis(first, np.where(is_noise, 0, k), axis=1))
    shown = first < S  # (n, n_keys)
    probe = np.argmax(np.where(shown, rng.random((n, keys.size)), -1.0), axis=1)  # uniform among shown keys
    kp, vp = keys[probe], table[np.arange(n), probe]
    body = np.stack([k, v], axis=2).reshape(n, 2 * S)
    tb = np.full((n, S, 2), IGNORE, dtype=np.int64)
    if cfg.multi_query:
        tb[..., 1] = np.where(repeat, v, IGNORE)
    head = [] if cfg.multi_query else [np.full((n, 1), cfg.vocab_size - 1)]
    seq = np.concatenate([body, *head, kp[:, None], vp[:, None]], axis=1).astype(np.int64)
    tgt = np.concatenate([tb.reshape(n, 2 * S), *[np.full((n, 1), IGNORE)] * len(head),
                          np.full((n, 1), IGNORE), vp[:, None]], axis=1).astype(np.int64)
    return _finish(seq, tgt, split)


@dataclass
class FuzzyRecallConfig:
    """MAD fuzzy in-context recall: keys and values are motifs of several tokens."""

    vocab_size: int = config_field(16, "vocabulary V (special and noise tokens included)")
    seq_len: int = config_field(128, "sequence length L; inputs are L long (left-padded with the pad token)")
    k_motif_size: int = config_field(3, "longest key motif (test keys are always this long)")
    v_motif_size: int = config_field(3, "longest value motif")
    multi_query: bool = config_field(True, "label every repeated key's value (MAD baseline: true)")
    noise_vocab_size: int = config_field(0, "noise tokens, taken from the top of the ordinary vocabulary")
    frac_noise: float = config_field(0.0, "probability that a key-value slot is noise instead")
    num_train_examples: int = config_field(12_800, "training examples (MAD: 12,800)")
    num_test_examples: int = config_field(1_280, "test examples (MAD: 1,280); val = test")
    seed: int = config_field(0, "data seed: train and test come from disjoint seeds derived from it")

    def validate(self) -> None:
        _nonneg("fuzzy_recall", noise_vocab_size=self.noise_vocab_size)
        _check_noise("fuzzy_recall", self.frac_noise, self.noise_vocab_size)
        if self.k_motif_size < 1 or self.v_motif_size < 1:
            raise ValueError("fuzzy_recall: k_motif_size and v_motif_size must be >= 1")
        keys, values, _ = fuzzy_vocab(self)
        if keys.size < self.k_motif_size or values.size < self.v_motif_size:
            raise ValueError(f"fuzzy_recall: {keys.size} key / {values.size} value tokens cannot form motifs of "
                             f"{self.k_motif_size} / {self.v_motif_size} distinct tokens: raise vocab_size")
        if self.seq_len <= 2 * (self.k_motif_size + self.v_motif_size) + 1:
            raise ValueError(f"fuzzy_recall: seq_len={self.seq_len} must be > 2*(k_motif_size+v_motif_size)+1 "
                             f"= {2 * (self.k_motif_size + self.v_motif_size) + 1}: raise seq_len")

    def output_len(self) -> int:
        return self.seq_len


def fuzzy_vocab(cfg: FuzzyRecallConfig):
    """``(keys, values, noise)`` token arrays of the fuzzy recall task."""
    ns = (cfg.vocab_size - 1 if cfg.multi_query else cfg.vocab_size - 2) - cfg.noise_vocab_size
    return np.arange(ns // 2), np.arange(ns // 2, ns), np.arange(ns, ns + cfg.noise_vocab_size)


def _fuzzy_one(cfg: FuzzyRecallConfig, r: random.Random, train: bool, vocab):
    keys, values, noise = (v.tolist() for v in vocab)
    km, vm = cfg.k_motif_size, cfg.v_motif_size

    def k_size():
        return r.randint(1, km) if train else km

    def motif(tokens, size):  # a uniform ordered tuple of distinct tokens (one of MAD's permutations)
        return tuple(r.sample(tokens, size))

    kps, vps = k_size(), r.randint(1, vm)
    k_probe, v_probe = motif(keys, kps), motif(values, vps)
    probe_at = r.randrange(cfg.seq_len - 2 * (kps + vps))
    seq, tgt, kv, shown, added = [], [], {}, set(), False
    while len(seq) < cfg.seq_len - (kps + vps) - (km + vm):
        ks, vs = k_size(), r.randint(1, vm)
        if len(seq) >= probe_at and not added:  # the probe pair, unlabelled, once in the stream
            seq += [*k_probe, *v_probe]
            tgt += [IGNORE] * (kps + vps)
            kv[k_probe], added = v_probe, True
            shown.add(k_probe)
            continue
        if cfg.frac_noise > 0 and r.random() < cfg.frac_noise:
            seq += r.choices(noise, k=ks + vs)
            tgt += [IGNORE] * (ks + vs)
            continue
        k = motif(keys, ks)
        if k == k_probe:
            v, added = v_probe, True
        else:
            if k not in kv:  # a new key draws its value; a repeated key keeps it
                kv[k] = motif(values, vs)
            v = kv[k]
        seq += [*k, *v]
        tgt += [IGNORE] * ks + (list(v) if cfg.multi_query and k in shown else [IGNORE] * len(v))
        shown.add(k)
    head = [] if cfg.multi_query else [cfg.vocab_size - 1]
    seq += [*head, *k_probe, *v_probe]
    tgt += [IGNORE] * (len(head) + kps) + list(v_probe)
    pad = cfg.seq_len + 1 - len(seq)  # left padding to L + 1 (the shift takes one)
    pad_token = cfg.vocab_size - 1 if cfg.multi_query else cfg.vocab_size - 2
    return [pad_token] * pad + seq, [IGNORE] * pad + tgt


def generate_fuzzy_recall(cfg: FuzzyRecallConfig, n: int, rng: np.random.Generator, split: str = "train"):
    """``n`` fuzzy recall examples (a loop over examples: motifs make the layout variable)."""
    vocab = fuzzy_vocab(cfg)
    # a scalar-fast stdlib generator per example, seeded from ``rng`` (the loop draws ~10^2 scalars each)
    seeds = rng.integers(0, 2**63, size=n)
    pairs = [_fuzzy_one(cfg, random.Random(int(s)), split == "train", vocab) for s in seeds]
    seq = np.array([s for s, _ in pairs], dtype=np.int64).reshape(n, cfg.seq_len + 1)
    tgt = np.array([t for _, t in pairs], dtype=np.int64).reshape(n, cfg.seq_len + 1)
    return _finish(seq, tgt, split)
