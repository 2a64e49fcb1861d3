"""``zoo.data.synthetic(name, split, seed, **fields)``: a synthetic task's arrays, no trainer, no cache.

    from zoo.data import synthetic
    x, y = synthetic("mqar", "train", seed=0, seq_len=128, num_kv_pairs=8, num_train_examples=1000)
    x.shape, y.shape        # (1000, 128) int64 each; y is -100 where a position is not scored

The arrays are exactly those ``prepare(name, options={..., "seed": seed})`` caches (same config, same
seed, same split). The tasks: ``synthetic_tasks()`` (MQAR, Arora et al. ICLR 2024; MAD's six, Poli
et al. ICML 2024); their fields: ``zoo.data.get_task(name).config_class`` (see docs/synthetic.md).
"""

from __future__ import annotations

import numpy as np

from zoo.data.tasks import get_task, task_names

__all__ = ["synthetic", "synthetic_tasks"]


def synthetic_tasks() -> list[str]:
    """Names of the tasks generated in memory from their config (per-position labels)."""
    return [t for t in task_names() if get_task(t).arrays is not None]


def _validate_name(name: str):
    try:
        spec = get_task(name)
    except ValueError:
        raise ValueError(f"unknown synthetic task {name!r}; choose one of {', '.join(synthetic_tasks())}") from None
    if spec.arrays is None:
        raise ValueError(f"{spec.name!r} is an LRA task read from files (use zoo.data.prepare); synthetic tasks: "
                         f"{', '.join(synthetic_tasks())}")
    return spec


def synthetic(name: str, split: str = "train", seed: int = 0, **fields) -> tuple[np.ndarray, np.ndarray]:
    """The ``(inputs, labels)`` of a synthetic task: ``(N, L)`` int64 arrays, labels ``-100`` where ignored.

    Args:
        name: ``mqar`` or a MAD task (``synthetic_tasks()``; ``-``/``_`` and case do not matter).
        split: ``train``, ``test`` or ``val`` (= ``test``); train and test use disjoint seeds.
        seed: the data seed; the same (fields, seed, split) always gives the same arrays.
        **fields: the task's config fields (``vocab_size``, ``seq_len``, ...); unknown ones raise,
            naming the valid keys.

    Raises:
        ValueError: one line naming the bad name, field or setting and how to fix it.
    """
    spec = _validate_name(name)
    if "seed" in fields:
        raise ValueError("synthetic: pass the seed as seed=..., not as a field")
    cfg = spec.make_config({**fields, "seed": seed})
    return spec.arrays(cfg, split)
