"""Multi-query associative recall (MQAR), as defined by zoology's ``multiquery_ar``.

Arora, Eyuboglu et al., "Zoology: Measuring and Improving Recall in Efficient Language Models",
ICLR 2024. One example of length ``L`` (``ctx = 2 * num_kv_pairs * num_passes``)::

    inputs:  k1 v1 k2 v2 ... (repeated num_passes times) | query section of L - ctx tokens
    labels:  -100 everywhere except at each query position q = ctx + 2 * gap_j: labels[q] = v_j

* keys: ``num_kv_pairs`` distinct tokens from ``[1, V // 2)``; values: ``num_kv_pairs`` distinct
  tokens from ``[V // 2, V)`` (both without replacement within an example, as zoology draws them);
* the query of key ``j`` sits at ``ctx + 2 * gap_j``; the gaps are drawn without replacement from
  ``{0, .., space - 1}``, ``space = (L - ctx) // 2``, with ``p(i) ∝ a * (i + 1) ** (a - 1)``
  (``a = power_a``), in the order of the keys (successive sampling, as ``np.random.choice`` does);
* the label of a query is the queried key's value, placed at the query's own position: zoology
  builds a sequence of ``L + 1`` tokens with the value one step after the query and returns
  ``inputs = seq[:-1]``, ``labels = labels[1:]`` (next-token alignment), which is what is built here;
* ``random_non_queries``: every other position of the query section (zeros in zoology's
  construction) is replaced by a token uniform in ``[0, V)``.

Sampling without replacement with weights ``p`` in draw order is the Gumbel-top-k of ``log p``
(Plackett-Luce), and distinct uniform keys are the top-k of uniform scores: both vectorised here,
equal in distribution to zoology's per-row ``np.random.choice`` (not the same random stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data.generators.synthetic import IGNORE
from zoo.fields import config_field

__all__ = ["MQARConfig", "gap_probabilities", "generate_mqar"]

_CHUNK = 2048  # examples per vectorised block (bounds the (chunk, V/2) score matrix)


@dataclass
class MQARConfig:
    """MQAR (zoology's ``multiquery_ar``): ``num_kv_pairs`` key-value pairs, then queries."""

    vocab_size: int = config_field(8192, "vocabulary V: keys from [1, V/2), values from [V/2, V); must be > seq_len")
    seq_len: int = config_field(64, "sequence length L (even)")
    num_kv_pairs: int = config_field(4, "key-value pairs per example (2*kv*(passes+1) <= L)")
    power_a: float = config_field(0.01, "query gap distribution p(i) ∝ a*i^(a-1) (1.0 = uniform)")
    random_non_queries: bool = config_field(True, "fill non-query positions with random tokens from [0, V)")
    num_passes: int = config_field(1, "times the key-value pairs are repeated (zoology's JRT option)")
    num_train_examples: int = config_field(100_000, "training examples (zoology: 100k)")
    num_test_examples: int = config_field(3_000, "test examples (zoology: 3k); val = test")
    seed: int = config_field(0, "data seed: train and test come from disjoint seeds derived from it")

    def validate(self) -> None:
        _validate_mqar(self)

    def output_len(self) -> int:
        return self.seq_len


def _validate_mqar(c: MQARConfig) -> None:
    for k in ("vocab_size", "seq_len", "num_kv_pairs", "num_passes", "num_train_examples", "num_test_examples"):
        if not isinstance(getattr(c, k), int) or getattr(c, k) <= 0:
            raise ValueError(f"mqar: {k}={getattr(c, k)!r} must be a positive integer")
    if c.seq_len % 2:
        raise ValueError(f"mqar: seq_len={c.seq_len} must be even (key-value pairs and queries take 2 tokens): "
                         f"use seq_len={c.seq_len + 1}")
    if c.vocab_size <= c.seq_len:
        raise ValueError(f"mqar: vocab_size={c.vocab_size} must be > seq_len={c.seq_len} (zoology asserts it): "
                         f"raise vocab_size or lower seq_len")
    need = 2 * c.num_kv_pairs * (c.num_passes + 1)
    if need > c.seq_len:
        raise ValueError(f"mqar: {c.num_kv_pairs} key-value pairs x {c.num_passes} pass(es) need seq_len >= {need} "
                         f"(2*kv*passes context + 2*kv for the queries), got {c.seq_len}: lower num_kv_pairs "
                         f"or raise seq_len")
    if c.vocab_size // 2 - 1 < c.num_kv_pairs:
        raise ValueError(f"mqar: vocab_size={c.vocab_size} has only {c.vocab_size // 2 - 1} keys in [1, V/2) for "
                         f"{c.num_kv_pairs} distinct keys: raise vocab_size")
    if not c.power_a > 0:
        raise ValueError(f"mqar: power_a={c.power_a} must be > 0 (0.01 as in zoology; 1.0 = uniform gaps)")


def gap_probabilities(cfg: MQARConfig) -> np.ndarray:
    """``(space,)`` the probability of gap ``i`` (the first query's gap follows it exactly)."""
    space = (cfg.seq_len - 2 * cfg.num_kv_pairs * cfg.num_passes) // 2
    i = np.arange(1, space + 1, dtype=np.float64)
    p = cfg.power_a * i ** (cfg.power_a - 1)
    return p / p.sum()


def _distinct(rng: np.random.Generator, n: int, lo: int, hi: int, k: int) -> np.ndarray:
    """``(n, k)`` rows of ``k`` distinct integers uniform in ``[lo, hi)``, in uniformly random order.

    Rows of independent uniform draws, redrawn while they repeat a token (given no repeat, a row is
    uniform over ordered distinct k-tuples); when repeats are likely, the top-k of uniform scores.
    """
    m = hi - lo
    if np.prod(1 - np.arange(k) / m) > 0.25:
        out = rng.integers(lo, hi, size=(n, k))
        while True:
            srt = np.sort(out, axis=1)
            bad = np.nonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))[0]
            if bad.size == 0:
                return out
            out[bad] = rng.integers(lo, hi, size=(bad.size, k))
    scores = rng.random((n, hi - lo))  # (n, hi - lo)
    top = np.argpartition(scores, k - 1, axis=1)[:, :k]  # (n, k) the k smallest scores, unordered
    order = np.argsort(np.take_along_axis(scores, top, axis=1), axis=1)
    return lo + np.take_along_axis(top, order, axis=1)


def _gaps(rng: np.random.Generator, n: int, p: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)`` gaps drawn without replacement with weights ``p``, in draw order (Gumbel-top-k)."""
    g = np.log(p)[None, :] + rng.gumbel(size=(n, p.size))  # (n, space)
    top = np.argpartition(-g, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(g, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def _block(cfg: MQARConfig, n: int, rng: np.random.Generator, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    V, L, k = cfg.vocab_size, cfg.seq_len, cfg.num_kv_pairs
    ctx = 2 * k * cfg.num_passes
    keys = _distinct(rng, n, 1, V // 2, k)  # (n, k)
    values = _distinct(rng, n, V // 2, V, k)  # (n, k)
    inputs = np.zeros((n, L), dtype=np.int64)
    kv = np.empty((n, 2 * k), dtype=np.int64)
    kv[:, 0::2], kv[:, 1::2] = keys, values
    inputs[:, :ctx] = np.tile(kv, (1, cfg.num_passes))
    q = ctx + 2 * _gaps(rng, n, p, k)  # (n, k) query positions
    np.put_along_axis(inputs, q, keys, axis=1)
    labels = np.full((n, L), IGNORE, dtype=np.int64)
    np.put_along_axis(labels, q, values, axis=1)
    if cfg.random_non_queries:
        fill = rng.integers(0, V, size=(n, L))
        zero = inputs == 0  # keys are >= 1 and values >= V/2: only the non-query slots are 0
        inputs[zero] = fill[zero]
    return inputs, labels


def generate_mqar(cfg: MQARConfig, n: int, rng: np.random.Generator, split: str = "train"):
    """``n`` MQAR examples: ``(inputs, labels)``, each ``(n, L)`` int64 (the same rule for every split)."""
    p = gap_probabilities(cfg)
    parts = [_block(cfg, min(_CHUNK, n - s), rng, p) for s in range(0, n, _CHUNK)]
    if not parts:
        return np.zeros((0, cfg.seq_len), np.int64), np.zeros((0, cfg.seq_len), np.int64)
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
