"""Attention backends, declared not branched: a priority list and a dispatcher.

Priority (``backend="auto"`` takes the first whose ``not_supported_reasons`` is empty):

1. ``xformers``: memory-efficient attention, wherever it can express the call (no decay).
2. ``sdpa``: PyTorch's fused kernels, for what xformers cannot run (CPU, broken xformers).
3. ``flex``: compiled FlexAttention, for the multiplicative LaS decay.
4. ``reference``: the materialised definition, always available.
"""

from __future__ import annotations

import warnings

import torch

from zoo.functional.backends.base import Backend, BackendUnavailable
from zoo.functional.backends.flex import FlexBackend
from zoo.functional.backends.reference import ReferenceBackend
from zoo.functional.backends.sdpa import SDPABackend
from zoo.functional.backends.xformers import XFormersBackend
from zoo.functional.call import AttentionCall

PRIORITY: tuple[Backend, ...] = (XFormersBackend(), SDPABackend(), FlexBackend(), ReferenceBackend())
_BY_NAME = {b.name: b for b in PRIORITY}

__all__ = ["PRIORITY", "Backend", "BackendUnavailable", "candidates", "get", "names", "report", "select",
           "warn_refusal"]


def names() -> list[str]:
    return [b.name for b in PRIORITY]


def get(name: str) -> Backend:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown attention backend {name!r}; choose 'auto' or one of {names()}") from None


def select(call, backend: str = "auto") -> Backend:
    """The backend that runs ``call``; a forced one that cannot raises with every reason."""
    if backend != "auto":
        impl = get(backend)
        reasons = impl.not_supported_reasons(call)
        if reasons:
            raise BackendUnavailable(
                f"attention backend {backend!r} cannot run {call.describe()}:\n  - "
                + "\n  - ".join(reasons)
                + "\nUse backend='auto' to pick one that can (`zoo info` lists them)."
            )
        return impl
    return next(candidates(call))


def candidates(call):
    """Every backend able to run ``call``, in priority order (the reference always is)."""
    yielded = False
    for impl in PRIORITY:
        if not impl.not_supported_reasons(call):
            yielded = True
            yield impl
    if not yielded:  # pragma: no cover - the reference runs everything
        raise BackendUnavailable(f"no attention backend can run {call.describe()}")


_refusals_warned: set[tuple[str, str]] = set()


def warn_refusal(impl: Backend, call, exc: Exception) -> None:
    """A declared-able backend refused at run time: say so once per (backend, call kind)."""
    key = (impl.name, call.describe())
    if key not in _refusals_warned:
        _refusals_warned.add(key)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(
            f"zoo: attention backend {impl.name!r} refused {call.describe()} ({type(exc).__name__}: {first}); "
            "falling back to the next backend. Please report this: the backend's declared limits missed it.",
            RuntimeWarning,
            stacklevel=3,
        )


def report(device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> list[dict]:
    """Per backend and feature set: can it run here, and if not, why (for `zoo info`)."""
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    rows = []
    for impl in PRIORITY:
        for label, decay, grad in (("attention", False, True), ("decay (LaS)", True, True),
                                   ("decay, inference", True, False)):
            call = AttentionCall(device, dtype, 1, 8, 1024, 64, decay, False, False, grad)
            reasons = impl.not_supported_reasons(call)
            rows.append({"backend": impl.name, "workload": label, "ok": not reasons, "why_not": "; ".join(reasons)})
    return rows
