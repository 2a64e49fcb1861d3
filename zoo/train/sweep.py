"""Sweep axes of a comparison and the best-learning-rate pick of its report.

A comparison's ``sweep: {optim.lr: [1e-4, 1e-3], model.d_model: [64, 128]}`` (any experiment key,
task fields included) multiplies the grid: every layer and seed runs once per combination of the
listed values, each an ordinary resumable run folder named after its values
(``las-lr1e-3-d_model64-seed0``). The report then follows the protocol of zoology (Arora et al.,
ICLR 2024, "Zoology: Measuring and Improving Recall in Efficient Language Models") and MAD (Poli et
al., ICML 2024): for each layer and each setting of the other axes it keeps the learning rate with
the best validation accuracy, and says which it kept.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Iterable

__all__ = ["LR_KEY", "check_sweep", "combinations", "pick_best_lr", "setting_dotlist", "setting_name"]

LR_KEY = "optim.lr"
_RESERVED = ("train.seed", "train.run_name", "train.epochs", "train.max_steps", "optim.schedule_steps", "layer",
             "layer.name", "task", "task.name")


def check_sweep(sweep: dict) -> None:
    """One-line ``ValueError`` for an axis the grid cannot take (the values are checked by loading them)."""
    if not isinstance(sweep, dict):
        raise ValueError(f"sweep: a mapping of experiment keys to value lists, e.g. {{optim.lr: [1e-4, 1e-3]}}, "
                         f"got {sweep!r}")
    for key, values in sweep.items():
        if key in _RESERVED:
            raise ValueError(f"sweep: {key!r} cannot be swept (the grid sets it: use layers, seeds or budget)")
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"sweep.{key}: give a non-empty list of values, e.g. {key}: [a, b], got {values!r}")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ValueError(f"sweep.{key}: {list(values)} repeats a value")


def combinations(sweep: dict) -> list[dict]:
    """Every setting of the sweep axes, in the order the file lists them (``[{}]`` without a sweep)."""
    keys = list(sweep)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(sweep[k] for k in keys))]


def _value(v: Any) -> str:
    if isinstance(v, float) and v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        mant, exp = f"{v:.2e}".split("e")
        return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"  # 0.00032 -> 3.2e-4
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":")).replace(" ", "")
    return str(v)


def setting_name(setting: dict) -> str:
    """A readable run-name part: ``{optim.lr: 1e-3, model.d_model: 64}`` -> ``lr1e-3-d_model64``."""
    return "-".join(f"{k.rsplit('.', 1)[-1]}{_value(v)}" for k, v in setting.items())


def setting_dotlist(setting: dict) -> list[str]:
    """The setting as experiment overrides (lists and mappings as JSON, which OmegaConf reads back)."""
    return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in setting.items()]


def pick_best_lr(rows: Iterable[dict]) -> list[dict]:
    """Per layer and setting of the other axes, the row whose learning rate has the best validation accuracy.

    Args:
        rows: report rows with ``layer``, ``setting`` (the sweep values) and ``best_val_acc_mean``.

    Returns:
        The picked rows, in first-seen order, each with ``picked_lr`` and ``lr_candidates``
        (``{lr: mean best validation accuracy}``); rows without a learning-rate axis pass through.
        A group with no validated run keeps its first row (``picked_lr`` None: nothing to pick from).
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        other = {k: v for k, v in row.get("setting", {}).items() if k != LR_KEY}
        groups.setdefault((row["layer"], json.dumps(other, sort_keys=True)), []).append(row)
    picked = []
    for cands in groups.values():
        if LR_KEY not in cands[0].get("setting", {}):
            picked.extend(cands)
            continue
        scored = [r for r in cands if r.get("best_val_acc_mean") is not None]
        best = max(scored, key=lambda r: r["best_val_acc_mean"]) if scored else cands[0]
        picked.append({**best, "picked_lr": best["setting"][LR_KEY] if scored else None,
                       "lr_candidates": {_value(r["setting"][LR_KEY]): r.get("best_val_acc_mean") for r in cands}})
    return picked
