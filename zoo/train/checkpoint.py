"""Checkpoints that lose nothing: atomic writes, the last two kept, corrupt files set aside.

``save`` writes ``checkpoint.pt`` atomically after moving the previous one to
``checkpoint.prev.pt``; ``load_latest`` returns the newest checkpoint that loads and moves an
unreadable one (truncated, empty, garbage) to ``<name>.corrupt`` with a one-line warning, so a
damaged file never costs more than the steps since the previous checkpoint. RNG states (torch,
CUDA, numpy, Python) travel with the checkpoint so that a resumed run draws the same dropout
masks and batches as an uninterrupted one.

Nothing runs from a loaded file: every checkpoint is read with ``torch.load(weights_only=True)``
and holds only tensors, numbers, strings and plain containers (the RNG states as tensors and
numbers). A file that pickles anything else (a function, a class) is refused in one line and left
where it is.
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo._io import atomic_torch_save

__all__ = ["BEST", "CHECKPOINT", "PREVIOUS", "CheckpointError", "UnsafeCheckpointError", "load_latest",
           "load_optimizer", "rng_state", "safe_load", "save", "set_rng_state"]

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
BEST = "best.pt"

_REQUIRED = ("model", "optimizer", "step", "config", "rng")


class CheckpointError(RuntimeError):
    """No usable checkpoint: every candidate is missing or unreadable (the message names them)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint pickles objects other than tensors and plain data: loading it could run code."""


def safe_load(path: Path, map_location=None):
    """``torch.load(path, weights_only=True)``; a file holding other pickled objects raises one line."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln or "GLOBAL " in ln]
        if not lines:  # damaged, not foreign
            raise
        what = lines[0].split("error: ")[-1]
        raise UnsafeCheckpointError(
            f"{path} holds more than tensors and plain data ({what[:160]}): refused to load it, since loading it "
            "could run code. Delete it (or the run folder), or choose another --out") from None


def save(state: dict, run_dir: Path) -> Path:
    """Write ``run_dir/checkpoint.pt`` atomically, keeping the previous one as ``checkpoint.prev.pt``.

    The new file is written completely first (``.checkpoint.next.pt``), then the two renames: a
    failed write (a full disk) leaves both checkpoints as they were."""
    path, staged = run_dir / CHECKPOINT, run_dir / ".checkpoint.next.pt"
    atomic_torch_save(state, staged)
    if path.exists():
        os.replace(path, run_dir / PREVIOUS)
    os.replace(staged, path)
    return path


def _read(path: Path, map_location) -> dict:
    ck = safe_load(path, map_location)
    if not isinstance(ck, dict) or any(k not in ck for k in _REQUIRED):
        raise ValueError(f"not a zoo checkpoint (keys: {sorted(ck) if isinstance(ck, dict) else type(ck).__name__})")
    return ck


def load_latest(run_dir: Path, map_location=None) -> tuple[dict, Path] | None:
    """``(checkpoint, path)`` of the newest readable checkpoint in ``run_dir``, or None if there is none.

    An unreadable candidate is renamed ``<name>.corrupt`` (never deleted) and reported in one line.

    Raises:
        CheckpointError: checkpoints exist but none can be read.
    """
    tried = []
    for name in (CHECKPOINT, PREVIOUS):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            return _read(path, map_location), path
        except UnsafeCheckpointError:
            raise  # not damaged, foreign: never moved, never loaded
        except Exception as exc:  # truncated, empty, garbage, wrong content: set aside, try the older one
            why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'unreadable'}"
            tried.append(f"{path} ({why})")
            os.replace(path, path.with_name(path.name + ".corrupt"))
            warnings.warn(f"{path} is unreadable ({why}); moved it to {path.name}.corrupt", RuntimeWarning,
                          stacklevel=2)
    if tried:
        raise CheckpointError(f"no usable checkpoint in {run_dir}: {'; '.join(tried)}. The files were moved to "
                              "*.corrupt; delete the run folder (or choose another --out) to start over")
    return None


def peek_step(path: Path) -> int | None:
    """The step recorded in a checkpoint file, or None if it cannot be read."""
    try:
        return int(_read(path, "cpu")["step"])
    except Exception:
        return None


def rng_state() -> dict[str, Any]:
    """Every random stream's state as tensors, numbers and lists (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    # RNG states are CPU ByteTensors; a checkpoint loaded with map_location="cuda" moved them.
    torch.set_rng_state(s["torch"].cpu())
    n, p = s["numpy"], s["python"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in s["cuda"]])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict, device: torch.device) -> None:
    """``optimizer.load_state_dict(state)``; a state saved by CUDA-graph steps (Adam's ``capturable``,
    which only runs on accelerators) resumed off CUDA gets the ordinary, equivalent update back."""
    optimizer.load_state_dict(state)
    if device.type != "cuda":
        for group in optimizer.param_groups:
            if group.get("capturable"):
                group["capturable"] = False

