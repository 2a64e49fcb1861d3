"""Capture state and per-mask caches: whether attention calls are being captured into a CUDA
graph (:func:`graph_safe`), and values derived once per padding-mask tensor
(:func:`derived_from_mask`) so a layout that needs a host sync syncs once per forward.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["capturing", "derived_from_mask", "graph_safe", "graph_safe_active"]


_GRAPH_SAFE = threading.local()


@contextlib.contextmanager
def graph_safe() -> Iterator[None]:
    """Inside: attention calls will be captured into a CUDA graph, so backends that need host data
    (a device sync: the sequence lengths of a padded batch) decline them and the dispatcher picks
    one that does not (FlexAttention builds its block mask with tensor ops only). The trainer runs
    its captured steps, and their warm-up, inside; :func:`zoo.functional.attention.make_call`
    records it in :attr:`AttentionCall.graph_safe`."""
    depth = getattr(_GRAPH_SAFE, "depth", 0)
    _GRAPH_SAFE.depth = depth + 1
    try:
        yield
    finally:
        _GRAPH_SAFE.depth = depth


def graph_safe_active() -> bool:
    return getattr(_GRAPH_SAFE, "depth", 0) > 0


def capturing(device: torch.device) -> bool:
    """Is the current stream of ``device`` being captured into a CUDA graph right now?"""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


_DERIVED: dict = {}


def derived_from_mask(mask: Tensor, key: tuple, build: Callable[[], object]):
    """``build()``, computed once per padding-mask tensor (and ``key``) and reused while that mask is
    alive and unmodified: every layer of a forward pass sees the same mask object, so a layout that
    needs a host sync (the sequence lengths) syncs once per forward, not once per layer.

    During a CUDA-graph capture, values built outside it are not reused (the graph must record
    their computation, so a replay with new mask contents recomputes them), and values built inside
    are kept apart (their memory holds nothing until the graph is replayed)."""
    key = (*key, capturing(mask.device))
    entry = _DERIVED.get(key)
    if entry is not None and entry[0]() is mask and entry[1] == mask._version:
        return entry[2]
    value = build()
    _DERIVED[key] = (weakref.ref(mask), mask._version, value)
    return value
