"""The synthetic token tasks in the task registry: zoology's MQAR and MAD's six tasks.

Each is a config dataclass and a pure generator ``(cfg, n, rng, split) -> (inputs, labels)``
(``zoo/data/generators/synthetic/``), registered here with ``kind="token"`` (a label per position,
``-100`` where ignored) and ``causal=True`` (their reference models are causal language models).
There are no files: ``prepare(name)`` writes the generated arrays into the cache like any task, and
``zoo.data.synthetic(name, split, seed, **fields)`` hands them back without the cache.

Seeds (zoology's scheme): from the config's ``seed``, a train seed is drawn in ``[0, 2**31)`` and a
test seed in ``[2**31, 2**32)``, so a test set never shares its random stream with a train set;
``val`` is the test set (zoology and MAD have no third split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from zoo.data.cache import SplitWriter
from zoo.data.generators.synthetic import IGNORE
from zoo.data.generators.synthetic.mad_memory import (
    CompressionConfig,
    MemorizationConfig,
    SelectiveCopyConfig,
    generate_compression,
    generate_memorization,
    generate_selective_copy,
)
from zoo.data.generators.synthetic.mad_recall import (
    FuzzyRecallConfig,
    RecallConfig,
    generate_fuzzy_recall,
    generate_recall,
)
from zoo.data.generators.synthetic.mqar import MQARConfig, generate_mqar
from zoo.data.tasks.registry import TaskSpec, register_task

__all__ = ["GENERATOR_VERSION", "split_seed", "synthetic_arrays"]

GENERATOR_VERSION = 1  # bump when a generator's output changes (keys the cache)
SPLITS = ("train", "val", "test")


def split_seed(seed: int, split: str) -> int:
    """The generator seed of ``split``: train in ``[0, 2**31)``, test (= val) in ``[2**31, 2**32)``."""
    r = np.random.default_rng(seed)
    train, test = int(r.integers(0, 2**31)), int(r.integers(2**31, 2**32))
    return train if split == "train" else test


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{name}: split={split!r}; choose one of {', '.join(SPLITS)} (val is the test set)")


def synthetic_arrays(generate: Callable) -> Callable:
    """``(cfg, split) -> (inputs, labels)`` over ``generate(cfg, n, rng, split)``, seeded per split."""

    def arrays(cfg, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        _check_split(type(cfg).__name__, split)
        n = cfg.num_train_examples if split == "train" else cfg.num_test_examples
        rng = np.random.default_rng(split_seed(cfg.seed, split))
        inputs, labels = generate(cfg, n, rng, "train" if split == "train" else "test")
        return inputs.astype(np.int64, copy=False), labels.astype(np.int64, copy=False)

    return arrays


def _vocab(cfg) -> int:
    return int(cfg.vocab_size)


def _token_dtype(vocab: int):
    return np.uint8 if vocab <= 256 else np.int16 if vocab <= 2**15 else np.int32


def _build(arrays: Callable):
    def build(cfg, src, out: Path, rep, progress: bool) -> dict:
        info = {}
        for split in ("train", "test"):
            x, y = arrays(cfg, split)  # (N, L), (N, L)
            w = SplitWriter(out, split, {"inputs": (_token_dtype(_vocab(cfg)), (x.shape[1],)),
                                         "labels": (np.int32, (x.shape[1],)), "lengths": (np.int32, ())})
            w.append(inputs=x, labels=y, lengths=np.full(len(x), x.shape[1], dtype=np.int32))
            w.close()
            info[split] = {"labelled_positions": int((y != IGNORE).sum()), "seed": split_seed(cfg.seed, split)}
        return {"splits": info, "split_files": {"val": "test"},
                "split_sources": {"train": "generated (train seed)", "val": "= test",
                                  "test": "generated (test seed)"}}

    return build


def _encoding(cfg) -> dict:
    return {"kind": "synthetic tokens", "vocab_size": _vocab(cfg), "n_classes": _vocab(cfg), "ignore_index": IGNORE,
            "labels": "per position, -100 where ignored", "generator_version": GENERATOR_VERSION}


def _describe(ds, i: int) -> list[str]:
    x = np.asarray(ds.arrays[0][i]).astype(np.int64)
    y = np.asarray(ds.labels[i]).astype(np.int64)
    at = np.nonzero(y != IGNORE)[0]
    shown = " ".join(f"{p}:{y[p]}" for p in at[:24]) + (" ..." if at.size > 24 else "")
    return [f"#{i} tokens: {' '.join(map(str, x.tolist()))}",
            f"#{i} {at.size} labelled (position:label): {shown}"]


def _register(name: str, summary: str, config_class: type, generate: Callable, reference: str,
              defaults: dict | None = None, aliases: tuple[str, ...] = ()) -> None:
    arrays = synthetic_arrays(generate)
    register_task(TaskSpec(
        name=name,
        summary=summary,
        config_class=config_class,
        n_classes=0,  # per config: the vocabulary (the manifest's encoding records it)
        build=_build(arrays),
        fingerprint=lambda cfg, src: {"generator": f"zoo.data.generators.synthetic v{GENERATOR_VERSION}",
                                      "reference": reference},
        encoding=_encoding,
        length=lambda cfg: cfg.output_len(),
        is_task_dir=lambda cfg, d, entries: False,
        patterns=lambda cfg: [],
        how_to_get="nothing to get: generated from its config (zoo.data.synthetic or zoo data prepare)",
        aliases=aliases,
        defaults=dict(defaults or {}),
        describe_example=_describe,
        resolve_source=lambda cfg, find: None,
        kind="token",
        causal=True,
        arrays=arrays,
        padding=False,
    ))


_ZOOLOGY = "HazyResearch/zoology zoology/data/multiquery_ar.py (Arora et al., ICLR 2024)"
_MAD = "athms/mad-lab mad/data/instances.py (Poli et al., ICML 2024)"

_register("mqar", "multi-query associative recall (zoology), a label per query", MQARConfig, generate_mqar,
          _ZOOLOGY, aliases=("multiquery_ar",))
_register("in_context_recall", "MAD in-context recall (multi-query)", RecallConfig, generate_recall, _MAD)
_register("noisy_in_context_recall", "MAD noisy in-context recall (noise tokens between pairs)", RecallConfig,
          generate_recall, _MAD, defaults={"vocab_size": 32, "noise_vocab_size": 16, "frac_noise": 0.2})
_register("fuzzy_in_context_recall", "MAD fuzzy in-context recall (multi-token keys and values)",
          FuzzyRecallConfig, generate_fuzzy_recall, _MAD)
_register("selective_copying", "MAD selective copying (copy the tokens among blanks)", SelectiveCopyConfig,
          generate_selective_copy, _MAD)
_register("compression", "MAD compression (reconstruct the sequence; encoder-decoder)", CompressionConfig,
          generate_compression, _MAD)
_register("memorization", "MAD memorization (a fixed key -> value map)", MemorizationConfig,
          generate_memorization, _MAD)
