"""What an attention call is and whether it is well formed: the call description the backends
judge, the input checks, the dense mask for kernels that take one, and the shape buckets of
compiled kernels.

It sits below both :mod:`zoo.functional.attention` (the dispatcher) and
:mod:`zoo.functional.backends` (the kernels), so neither imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from zoo.base import validate_padding_mask

__all__ = ["AttentionCall", "allowed_mask", "bucket_length", "exception_line", "row_ok", "validate_options",
           "validate_qkv", "zero_padded_heads"]


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


def exception_line(exc: BaseException) -> str:
    """``"Type: first line of the message"``: why a kernel, a compilation or a capture could not run."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


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
        raise ValueError(
            f"attention: q has length L=0 (shape {tuple(q.shape)}); a sequence needs at least one position"
        )
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


def zero_padded_heads(t: Tensor, key_padding_mask: Tensor | None) -> Tensor:
    """``(B, H, L, d)`` with the padded positions (``(B, L)`` mask, True = padding) set to zero, so
    a NaN or inf stored there cannot reach a valid output through a zero attention weight
    (``0 * nan = nan``): padded keys then behave exactly like positions past the end."""
    if key_padding_mask is None:
        return t
    return torch.where(key_padding_mask[:, None, :, None], 0.0, t)  # (one kernel each way, unlike masked_fill)
