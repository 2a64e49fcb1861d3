"""Sweep axes of a comparison and the best-learning-rate pick of its report.

A comparison's ``sweep: {optim.lr: [1e-4, 1e-3], model.d_model: [64, 128]}`` (any experiment key,
task fields included) multiplies the grid: every layer and seed runs once per combination of the
listed values, each an ordinary resumable run folder named after its values
(``las-lr1e-3-d_model64-seed0``). The report then follows the protocol of zoology (Arora et al.,
ICLR 2024, "Zoology: Measuring and Improving Recall in Efficient Language Models") and MAD (Poli et
al., ICML 2024): for each layer and each setting of the other axes it keeps the learning rate with
the best validation accuracy, and says which it kept.

Values that must move together are one *coupled* axis: the key names several experiment keys in
brackets, after an optional common prefix, and each value lists one value per key::

    sweep:
      "task.options.[seq_len,num_kv_pairs]": [[64, 4], [128, 8]]    # (L, kv) pairs, not their product
      "[task.options.seq_len,train.batch_size]": [[64, 512], [256, 256]]

A setting then holds each key on its own (``{task.options.seq_len: 64, task.options.num_kv_pairs:
4}``), so run names, the table's columns and the best-lr pick treat them like any other axis.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any, Iterable

__all__ = ["LR_KEY", "axis_keys", "check_sweep", "combinations", "pick_best_lr", "setting_dotlist", "setting_name"]

LR_KEY = "optim.lr"
_RESERVED = ("train.seed", "train.run_name", "train.epochs", "train.max_steps", "optim.schedule_steps", "layer",
             "layer.name", "task")
_COUPLED = re.compile(r"^((?:[^\[\]]+\.)?)\[([^\[\]]*)\]$")  # "prefix.[a,b]" or "[x.a,y.b]"


def axis_keys(key: str) -> tuple[str, ...]:
    """The experiment keys an axis sets: ``"optim.lr"`` -> one; ``"task.options.[seq_len,num_kv_pairs]"`` ->
    ``("task.options.seq_len", "task.options.num_kv_pairs")`` (a coupled axis)."""
    m = _COUPLED.match(key)
    if m is None:
        return (key,)
    return tuple(m.group(1) + part.strip() for part in m.group(2).split(","))


def _check_coupled_keys(key: str, keys: tuple[str, ...]) -> None:
    if len(keys) < 2 or any(not k or k.endswith(".") for k in keys) or len(set(keys)) != len(keys):
        raise ValueError(f"sweep.{key}: a coupled axis names two or more distinct keys in brackets, e.g. "
                         f"task.options.[seq_len,num_kv_pairs]")


def _check_coupled_values(key: str, keys: tuple[str, ...], values: list) -> None:
    example = f"{key}: [[{', '.join('a' for _ in keys)}], [{', '.join('b' for _ in keys)}]]"
    for v in values:
        if not isinstance(v, (list, tuple)) or len(v) != len(keys):
            raise ValueError(f"sweep.{key}: each value lists one value per key ({len(keys)}), e.g. {example}; "
                             f"got {v!r}")


def check_sweep(sweep: dict) -> None:
    """One-line ``ValueError`` for an axis the grid cannot take (the values are checked by loading them)."""
    if not isinstance(sweep, dict):
        raise ValueError(f"sweep: a mapping of experiment keys to value lists, e.g. {{optim.lr: [1e-4, 1e-3]}}, "
                         f"got {sweep!r}")
    seen: set[str] = set()
    for key, values in sweep.items():
        keys = axis_keys(key)
        coupled = _COUPLED.match(key) is not None
        if coupled:
            _check_coupled_keys(key, keys)
        for k in keys:
            if k in _RESERVED:
                raise ValueError(f"sweep: {k!r} cannot be swept (the grid sets it: use layers, seeds or budget)")
            if k in seen:
                raise ValueError(f"sweep: {k!r} is set by two axes (list it in one)")
            seen.add(k)
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"sweep.{key}: give a non-empty list of values, e.g. {key}: [a, b], got {values!r}")
        if coupled:
            _check_coupled_values(key, keys, values)
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ValueError(f"sweep.{key}: {list(values)} repeats a value")


def combinations(sweep: dict) -> list[dict]:
    """Every setting of the sweep axes, in the order the file lists them (``[{}]`` without a sweep); a coupled
    axis contributes its keys together, one value each."""
    axes = list(sweep)
    out = []
    for vals in itertools.product(*(sweep[a] for a in axes)):
        setting: dict = {}
        for axis, v in zip(axes, vals):
            keys = axis_keys(axis)
            setting.update(zip(keys, v) if _COUPLED.match(axis) else {axis: v})
        out.append(setting)
    return out


def _value(v: Any) -> str:
    if isinstance(v, float) and v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        mant, exp = f"{v:.2e}".split("e")
        return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"  # 0.00032 -> 3.2e-4
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":")).replace(" ", "")
    return str(v)


def setting_name(setting: dict) -> str:
    """A readable run-name part: ``{optim.lr: 1e-3, model.d_model: 64}`` -> ``lr1e-3-d_model64``; a swept
    ``*.name`` shows its value alone (``{task.name: mqar}`` -> ``mqar``)."""
    return "-".join(_value(v) if k.endswith(".name") else f"{k.rsplit('.', 1)[-1]}{_value(v)}"
                    for k, v in setting.items())


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
