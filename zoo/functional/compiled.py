"""``torch.compile`` where it pays: the same function fused by inductor for CUDA tensors.

The operators keep ONE definition each (a plain PyTorch function); on CUDA the elementwise work
around the big kernels (value pooling, the casts, masks, skips and activations around the FFT
convolution) is memory-bound, and inductor fuses a chain of such passes into one kernel. The
compiled call runs with dynamo's recompile limit raised and ``fail_on_recompile_limit_hit`` on,
so past the limit it raises instead of silently running something else; any failure to compile
is reported once (with its reason) and the function then runs eagerly, with the same values.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Callable, Iterator

import torch

from zoo.functional.call import exception_line

__all__ = ["RECOMPILE_LIMIT", "CudaCompiled", "dynamo_guard_options", "uncompiled"]

RECOMPILE_LIMIT = 64


@functools.lru_cache(maxsize=1)
def dynamo_guard_options() -> dict:
    """Raise the recompile limit and fail (not fall back silently) past it, where torch has the knobs."""
    import torch._dynamo.config as cfg

    wanted = {"recompile_limit": RECOMPILE_LIMIT, "cache_size_limit": RECOMPILE_LIMIT,
              "fail_on_recompile_limit_hit": True}
    opts = {k: v for k, v in wanted.items() if hasattr(cfg, k)}
    if "recompile_limit" in opts:
        opts.pop("cache_size_limit", None)
    return opts


_UNCOMPILED = [0]  # > 0 inside uncompiled(): every CudaCompiled runs its plain function


@contextlib.contextmanager
def uncompiled() -> Iterator[None]:
    """Inside, every :class:`CudaCompiled` function runs eagerly (the same values): what the fusion
    saves is measured by running the same step in and out of this (``benchmarks/train_speed.py --unfused``)."""
    _UNCOMPILED[0] += 1
    try:
        yield
    finally:
        _UNCOMPILED[0] -= 1


class CudaCompiled:
    """``fn`` compiled by inductor when its first tensor argument is on CUDA (or on one of
    ``devices``); ``fn`` itself on any other device, and everywhere after a compilation failed
    (warned once, with the reason).

    ``dynamic=True`` compiles with symbolic sizes (for pointwise chains: a handful of compilations
    for every shape bucket); ``dynamic=False`` compiles per shape (bounded by the shape buckets).
    """

    def __init__(self, fn: Callable, what: str, *, dynamic: bool = False, devices=frozenset({"cuda"})) -> None:
        self.fn, self.what, self.dynamic, self.devices = fn, what, dynamic, frozenset(devices)
        self.failed: str | None = None  # why the compiled function could not run here
        functools.update_wrapper(self, fn)

    @functools.cached_property
    def compiled(self) -> Callable:
        return torch.compile(self.fn, dynamic=self.dynamic)

    def __call__(self, *args, **kwargs):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if self.failed or _UNCOMPILED[0] or first is None or first.device.type not in self.devices:
            return self.fn(*args, **kwargs)
        try:
            with torch._dynamo.config.patch(**dynamo_guard_options()):
                return self.compiled(*args, **kwargs)
        except Exception as exc:  # a compiler that cannot: say so once, run eagerly from now on
            self.failed = exception_line(exc)
            warnings.warn(f"zoo: the compiled {self.what} failed ({self.failed}); running it eagerly",
                          RuntimeWarning, stacklevel=2)
            return self.fn(*args, **kwargs)
