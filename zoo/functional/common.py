"""What the attention dispatcher and its backends share: the call description, input checks,
the dense mask for kernels that take one, and the shape buckets of compiled kernels.

It sits below both :mod:`zoo.functional.attention` (the dispatcher) and
:mod:`zoo.functional.backends` (the kernels), so neither imports the other's internals.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor

from zoo.base import validate_padding_mask

__all__ = ["AttentionCall", "Packing", "allowed_mask", "bucket_length", "capturing", "derived_from_mask",
           "exception_line", "graph_safe", "graph_safe_active", "packing", "row_ok", "validate_options", "validate_qkv"]


@dataclass(frozen=True)
class AttentionCall:
    """What a backend needs to know to say whether it can run a call (after pooling/chunking)."""

    device: torch.device
    dtype: torch.dtype
    batch: int
    heads: int
    length: int
    head_dim: int
    has_decay: bool
    causal: bool
    has_padding: bool
    requires_grad: bool
    graph_safe: bool = False  # inside graph_safe(): the call is being captured into a CUDA graph

    def describe(self) -> str:
        feats = [f for f, on in (("decay", self.has_decay), ("causal", self.causal), ("padding", self.has_padding),
                                 ("graph-safe", self.graph_safe)) if on]
        return (
            f"B={self.batch} H={self.heads} L={self.length} d={self.head_dim} {self.dtype} on "
            f"{self.device.type}{' with ' + '+'.join(feats) if feats else ''}"
            f"{' (grad)' if self.requires_grad else ''}"
        )


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


def bucket_length(L: int, min_step: int = 128) -> int:
    """The padded length of ``L``'s shape bucket: ``L`` rounded up to a multiple of a quarter of its
    power of two (so within 25% of ``L``), and of ``min_step``. A bounded set of shapes means a bounded
    number of compilations: FlexAttention pads to these buckets (``min_step`` 128, its block size),
    the trainer pads batches to them (``min_step`` 16), and from L = 512 up the two coincide."""
    step = max(min_step, 1 << max(L.bit_length() - 3, 0))  # 2^floor(log2 L) / 4
    return -(-L // step) * step


def validate_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"attention: {name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"attention: {name} must have shape (B, H, L, d), got {tuple(t.shape)}; "
                "layers pass (B, L, H, d) transposed with .transpose(1, 2)"
            )
        if not t.is_floating_point():
            raise TypeError(f"attention: {name} must be floating point, got {t.dtype}")
    if q.shape[2] == 0:
        raise ValueError(f"attention: q has length L=0 (shape {tuple(q.shape)}); a sequence needs at least one position")
    if q.shape != k.shape or k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"attention: q, k, v must agree in (B, H, L) and q, k in d: got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype}); cast them to one dtype")
    if not (q.device == k.device == v.device):
        raise ValueError(f"attention: q, k, v are on different devices ({q.device}, {k.device}, {v.device})")


def validate_options(
    q: Tensor, decay: Tensor | None, pool: int, chunk: int | None, key_padding_mask: Tensor | None
) -> None:
    B, H, L, _ = q.shape
    if decay is not None:
        if not isinstance(decay, Tensor) or decay.shape != (H,):
            raise ValueError(
                f"attention: decay must be a tensor of per-head alphas with shape (H,) = ({H},), got "
                f"{tuple(decay.shape) if isinstance(decay, Tensor) else type(decay).__name__}"
            )
        if decay.device != q.device:
            raise ValueError(f"attention: decay is on {decay.device}, q on {q.device}")
        if decay.device.type == "cpu" and bool((decay < 0).any()):  # no device sync on GPU
            raise ValueError("attention: decay alphas must be >= 0 (0 = a global head)")
    if not isinstance(pool, int) or pool < 1:
        raise ValueError(f"attention: pool must be an int >= 1 (1 = no pooling), got {pool!r}")
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"attention: chunk must be None or an int >= 1, got {chunk!r}")
    validate_padding_mask(key_padding_mask, (B, L), q.device, "attention")


def row_ok(pad_mask: Tensor, causal: bool) -> Tensor:
    """``(B, L)`` True where the query is not padding and has at least one allowed key."""
    valid = ~pad_mask
    has_key = valid.cumsum(-1) > 0 if causal else valid.any(-1, keepdim=True).expand_as(valid)
    return valid & has_key


def allowed_mask(pad_mask: Tensor | None, causal: bool, L: int, device: torch.device) -> Tensor | None:
    """Dense ``(B or 1, 1, L, L)`` bool mask for kernels that take one; rows with no allowed key
    are opened completely (their output is zeroed by the caller) so no kernel sees an all-masked
    row and produces NaN."""
    if pad_mask is None and not causal:
        return None
    pos = torch.arange(L, device=device)
    allowed = torch.ones(1, 1, L, L, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed & (pos[None, :] <= pos[:, None])
    if pad_mask is not None:
        allowed = allowed & ~pad_mask[:, None, None, :]
    empty = ~allowed.any(-1, keepdim=True)
    return allowed | empty


# --------------------------------------------------------------------------- padding-free layouts

_DERIVED: dict = {}


def exception_line(exc: BaseException) -> str:
    """``"Type: first line of the message"``: why a kernel, a compilation or a capture could not run."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def capturing(device: torch.device) -> bool:
    """Is the current stream of ``device`` being captured into a CUDA graph right now?"""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


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


@dataclass(frozen=True)
class Packing:
    """The valid tokens of a padded batch, concatenated: ``index`` into the flattened ``(B * L)``
    positions (row-major, so each sequence's tokens stay in order) and each non-empty sequence's
    length (host ints, for varlen kernels)."""

    index: Tensor          # (T,) int64, positions of the valid tokens in B * L
    seqlens: tuple         # lengths of the non-empty rows, sum = T
    batch: int
    length: int

    def pack(self, x: Tensor) -> Tensor:
        """``(B, L, ...)`` -> ``(1, T, ...)``: the valid tokens only."""
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.index).unsqueeze(0)

    def unpack(self, y: Tensor) -> Tensor:
        """``(1, T, ...)`` -> ``(B, L, ...)`` with zeros at the padded positions."""
        out = y.new_zeros(self.batch * self.length, *y.shape[2:])
        return out.index_copy(0, self.index, y[0]).reshape(self.batch, self.length, *y.shape[2:])


def packing(key_padding_mask: Tensor) -> Packing:
    """The :class:`Packing` of a ``(B, L)`` padding mask (True = padding), once per mask tensor."""
    def build() -> Packing:
        valid = ~key_padding_mask  # (B, L)
        lengths = valid.sum(-1).tolist()  # the one host sync
        index = valid.reshape(-1).nonzero().squeeze(1)
        B, L = key_padding_mask.shape
        return Packing(index=index, seqlens=tuple(n for n in lengths if n > 0), batch=B, length=L)

    return derived_from_mask(key_padding_mask, ("packing", key_padding_mask.device), build)
