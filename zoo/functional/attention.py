"""The attention family as one functional operator, its reference, and the backend dispatcher.

Zimerman & Wolf, ICML 2024, "Viewing Transformers Through the Lens of Long Convolutions Layers"
define LaS attention per head ``c`` as::

    LaS_c(Q, K, V) = AP( softmax( ELD_c * (Q K^T / sqrt(d)) ) ) V,   ELD_c[i, j] = exp(-alpha_c |i - j|)

:func:`attention` computes this and its special cases (vanilla: no decay, no pooling; local:
decay only; smooth: pooling only; LaS-chunk: all of it inside fixed chunks) through the fastest
backend that can run the call. :func:`attention_reference` materialises every matrix and IS the
semantics; every backend is tested against it.

Semantics, precisely (``i`` = query position, ``j``/``t`` = key positions, tensor indices):

* **Keys outside the sequence** of query ``i`` are the padded keys (``key_padding_mask`` True)
  and, with ``chunk=C``, the keys of other chunks (chunk of position p = p // C).
* **Decay** multiplies the scaled logits: ``S'[i, j] = exp(-alpha_h |i - j|) * S[i, j]``.
* **Causal**: keys ``j > i`` are masked inside the softmax. Keys outside the sequence are masked
  too. A row with no allowed key (e.g. causal with left padding) has all weights 0.
* **Pooling** (window ``P``, stride 1, shape-preserving) averages each ROW of the softmax output
  over keys, after the softmax::

      AP(A)[i, j] = [j inside] * (1 / n_j) * sum_{t in W(j)} A[i, t]

  with ``W(j) = [j - (P-1)//2, j + P - 1 - (P-1)//2]`` (centred), or ``W(j) = [j, j + P - 1]``
  when causal (the only window that cannot leak future values: it equals a trailing box filter
  of V, see below). ``n_j = P`` when ``count_include_pad`` (zeros beyond the ends count), else
  the number of keys of ``W(j)`` inside the sequence (``n_j = 0`` gives weight 0). So padded
  keys behave exactly like positions past the end of the sequence: a padded batch equals the
  unpadded shorter one on its valid positions.
* **Output** rows of padded queries are 0.

The identity behind every fast path: pooling is linear, ``AP(A) V = A (P V)`` with
``(P V)[t] = sum_{j : t in W(j)} [j inside] V[j] / n_j`` (a box filter of the weighted values),
so pooling is applied to V before any fused kernel; chunking is a reshape of the sequence into
``(B * L/C, C)`` blocks (the last block padded and masked).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AttentionCall",
    "attention",
    "attention_reference",
    "pool_values",
    "pool_window",
    "select_backend",
]


# --------------------------------------------------------------------------- call description


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

    def describe(self) -> str:
        feats = [f for f, on in (("decay", self.has_decay), ("causal", self.causal), ("padding", self.has_padding)) if on]
        return (
            f"B={self.batch} H={self.heads} L={self.length} d={self.head_dim} {self.dtype} on "
            f"{self.device.type}{' with ' + '+'.join(feats) if feats else ''}"
            f"{' (grad)' if self.requires_grad else ''}"
        )


# --------------------------------------------------------------------------- validation


def _validate_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
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
    if q.shape != k.shape or k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"attention: q, k, v must agree in (B, H, L) and q, k in d: got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype}); cast them to one dtype")
    if not (q.device == k.device == v.device):
        raise ValueError(f"attention: q, k, v are on different devices ({q.device}, {k.device}, {v.device})")


def _validate_options(
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
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
            raise TypeError("attention: key_padding_mask must be a bool tensor of shape (B, L), True = padding")
        if tuple(key_padding_mask.shape) != (B, L):
            raise ValueError(
                f"attention: key_padding_mask must have shape (B, L) = ({B}, {L}), got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.device != q.device:
            raise ValueError(f"attention: key_padding_mask is on {key_padding_mask.device}, q on {q.device}")


# --------------------------------------------------------------------------- pooling


def pool_window(pool: int, causal: bool) -> tuple[int, int]:
    """``(left, right)`` extent of the key window ``W(j) = [j - left, j + right]``."""
    if causal:
        return 0, pool - 1
    left = (pool - 1) // 2
    return left, pool - 1 - left


def _box_sum(x: Tensor, before: int, after: int) -> Tensor:
    """``y[..., t, :] = sum_{s = t - before}^{t + after} x[..., s, :]`` with zeros outside (dim -2)."""
    L = x.shape[-2]
    xp = F.pad(x, (0, 0, before, after))  # (..., L + before + after, D)
    out = xp[..., 0:L, :].clone()
    for s in range(1, before + after + 1):
        out += xp[..., s : s + L, :]
    return out


def pool_values(
    v: Tensor, pool: int, *, causal: bool, inside: Tensor | None, count_include_pad: bool
) -> Tensor:
    """``P V`` such that ``AP(A) V == A (P V)`` for every row-stochastic-or-not ``A``.

    Args:
        v: ``(B, H, L, d)`` values.
        pool: window ``P``.
        causal: use the causal window ``W(j) = [j, j + P - 1]``.
        inside: ``(B, L)`` bool, True for keys inside the sequence, or None (all inside).
        count_include_pad: divide by ``P`` (True) or by the number of inside keys in ``W(j)``.

    Returns:
        ``(B, H, L, d)`` pooled values, computed in fp32 (fp64 for fp64) and cast back to ``v.dtype``.
    """
    if pool == 1:
        return v if inside is None else v.masked_fill(~inside[:, None, :, None], 0.0)
    left, right = pool_window(pool, causal)
    ct = torch.float64 if v.dtype == torch.float64 else torch.float32
    vf = v.to(ct)
    if inside is None:
        if count_include_pad:
            w = None
        else:  # n_j = keys of W(j) within [0, L)
            ones = torch.ones(1, 1, v.shape[-2], 1, device=v.device, dtype=ct)
            w = 1.0 / _box_sum(ones, left, right)  # (1, 1, L, 1)
    else:
        ins = inside[:, None, :, None].to(ct)  # (B, 1, L, 1)
        if count_include_pad:
            w = ins
        else:
            n = _box_sum(ins, left, right)  # (B, 1, L, 1): inside keys in W(j)
            w = torch.where(n > 0, ins / n.clamp_min(1.0), torch.zeros_like(n))
    if w is not None:
        vf = vf * w
    # (P V)[t] sums j with t in W(j), i.e. j in [t - right, t + left]
    out = _box_sum(vf, right, left)  # (B, H, L, d)
    if count_include_pad:
        out = out / pool
    return out.to(v.dtype)


# --------------------------------------------------------------------------- reference


def attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    decay: Tensor | None = None,
    pool: int = 1,
    chunk: int | None = None,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    count_include_pad: bool = True,
    scale: float | None = None,
) -> Tensor:
    """The definition: every matrix materialised, computed in fp32 (fp64 for fp64 inputs).

    Equivalent PyTorch code (no padding, no chunks)::

        S = (q @ k.transpose(-1, -2)) * d ** -0.5                     # (B, H, L, L)
        S = S * torch.exp(-alpha[:, None, None] * (i - j).abs())      # decay, (H, L, L)
        A = S.masked_fill(j > i, -inf).softmax(-1)                    # causal
        A = avg_pool_rows(A, P)                                       # AP over keys, after softmax
        out = A @ v

    Costs O(B H L^2) memory: a definition and a test oracle, not a kernel.
    """
    _validate_qkv(q, k, v)
    _validate_options(q, decay, pool, chunk, key_padding_mask)
    B, H, L, d = q.shape
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = d**-0.5 if scale is None else scale
    pos = torch.arange(L, device=q.device)
    i, j = pos[:, None], pos[None, :]  # (L, 1), (1, L)

    s = torch.einsum("bhid,bhjd->bhij", q.to(ct), k.to(ct)) * scale  # (B, H, L, L)
    if decay is not None:
        s = s * torch.exp(-decay.to(ct)[:, None, None] * (i - j).abs().to(ct))  # (H, L, L)

    inside = torch.ones(B, 1, L, L, dtype=torch.bool, device=q.device)  # (B, 1, Lq, Lk)
    if key_padding_mask is not None:
        inside = inside & ~key_padding_mask[:, None, None, :]
    if chunk is not None:
        inside = inside & ((i // chunk) == (j // chunk))
    allowed = inside & (j <= i) if causal else inside
    s = s.masked_fill(~allowed, float("-inf"))
    a = torch.softmax(s, dim=-1).nan_to_num(0.0)  # rows with no allowed key -> 0

    if pool > 1:
        left, right = pool_window(pool, causal)
        member = ((pos[None, :] >= pos[:, None] - left) & (pos[None, :] <= pos[:, None] + right)).to(ct)  # (Lj, Lt): t in W(j)
        summed = torch.einsum("bhit,jt->bhij", a, member)  # (B, H, Lq, Lj)
        if count_include_pad:
            n = torch.full((1, 1, 1, L), float(pool), dtype=ct, device=q.device)
        else:
            n = torch.einsum("bxit,jt->bxij", inside.to(ct), member)  # (B, 1, Lq, Lj)
        a = torch.where(inside & (n > 0), summed / n.clamp_min(1.0), torch.zeros((), dtype=ct, device=q.device))

    out = a @ v.to(ct)  # (B, H, L, d)
    if key_padding_mask is not None:
        out = out.masked_fill(key_padding_mask[:, None, :, None], 0.0)
    return out.to(q.dtype)


# --------------------------------------------------------------------------- dispatcher


def make_call(
    shape: tuple[int, int, int, int],
    dtype: torch.dtype,
    device: torch.device,
    *,
    decay: Tensor | None,
    chunk: int | None,
    causal: bool,
    padded: bool,
    requires_grad: bool,
) -> AttentionCall:
    """The kernel-level call that :func:`attention` hands to a backend (after chunking)."""
    B, H, L, d = shape
    Lc = chunk if chunk is not None and chunk < L else L
    nb = math.ceil(L / Lc)
    return AttentionCall(
        device=torch.device(device),
        dtype=dtype,
        batch=B * nb,
        heads=H,
        length=Lc,
        head_dim=d,
        has_decay=decay is not None,
        causal=causal,
        has_padding=padded or nb * Lc != L,
        requires_grad=requires_grad,
    )


def select_backend(call: AttentionCall, backend: str = "auto"):
    """The backend that runs ``call``: the named one, or the first able one in priority order."""
    from zoo.functional.backends import select

    return select(call, backend)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    decay: Tensor | None = None,
    pool: int = 1,
    chunk: int | None = None,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    count_include_pad: bool = True,
    scale: float | None = None,
    backend: str = "auto",
) -> Tensor:
    """Multi-head (LaS) attention through the fastest backend that can run the call.

    Args:
        q, k, v: ``(B, H, L, d)``.
        decay: ``(H,)`` per-head alphas (>= 0) of the multiplicative decay, or None.
        pool: row average-pooling window over keys (1 = none).
        chunk: attend only within consecutive chunks of this many positions (None = global).
        causal: position i attends to keys j <= i only.
        key_padding_mask: ``(B, L)`` bool, True = padding.
        count_include_pad: pooling divides by the window size (True) or by inside keys.
        scale: logit scale, default ``d ** -0.5``.
        backend: ``"auto"`` or one of ``zoo.functional.backends.names()``.

    Returns:
        ``(B, H, L, d)`` in the dtype of ``q``. Semantics: :func:`attention_reference`.

    Every backend but a forced ``"reference"`` runs after the exact identities: chunks become
    batch entries and pooling is applied to V, so the kernel only sees plain (decayed) softmax
    attention. When ``auto`` falls back to the reference kernel (e.g. decay with gradients on
    CPU, where FlexAttention has no backward), it too runs per chunk after the identities;
    ``backend="reference"`` materialises the whole definition instead.

    Raises:
        BackendUnavailable: a forced backend cannot run the call (every reason listed).
    """
    _validate_qkv(q, k, v)
    _validate_options(q, decay, pool, chunk, key_padding_mask)
    B, H, L, d = q.shape
    scale = d**-0.5 if scale is None else scale
    call = make_call(
        q.shape, q.dtype, q.device, decay=decay, chunk=chunk, causal=causal, padded=key_padding_mask is not None,
        requires_grad=torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)),
    )
    chunked = call.length < L
    Lc, nb = call.length, call.batch // B
    if backend == "reference":  # forced: the definition itself, every matrix materialised
        return attention_reference(
            q, k, v, decay=decay, pool=pool, chunk=chunk, causal=causal,
            key_padding_mask=key_padding_mask, count_include_pad=count_include_pad, scale=scale,
        )

    pad_mask = key_padding_mask
    if chunked:
        q, k, v, pad_mask = _to_chunks(q, k, v, pad_mask, Lc)  # (B * nb, H, Lc, d)
    inside = None if pad_mask is None else ~pad_mask  # (B', L')
    v = pool_values(v, pool, causal=causal, inside=inside, count_include_pad=count_include_pad)
    out = _run_first_able(call, backend, q, k, v, decay=decay if call.has_decay else None, causal=causal,
                          key_padding_mask=pad_mask, scale=scale)
    if pad_mask is not None:
        out = torch.where(_row_ok(pad_mask, causal)[:, None, :, None], out, torch.zeros((), dtype=out.dtype, device=out.device))
    if chunked:
        out = out.reshape(B, nb, H, Lc, d).transpose(1, 2).reshape(B, H, nb * Lc, d)[:, :, :L]  # (B, H, L, d)
    return out


def _run_first_able(call: AttentionCall, backend: str, q: Tensor, k: Tensor, v: Tensor, **kw) -> Tensor:
    """Run the chosen backend; under ``auto``, a kernel that still refuses (NotImplementedError,
    i.e. a limit its declaration missed) is reported once and the next able backend runs."""
    from zoo.functional import backends

    if backend != "auto":
        return backends.select(call, backend).run(q, k, v, **kw)
    for impl in backends.candidates(call):
        try:
            return impl.run(q, k, v, **kw)
        except NotImplementedError as exc:
            if impl.name == "reference":
                raise
            backends.warn_refusal(impl, call, exc)
    raise AssertionError("unreachable: the reference backend runs every call")  # pragma: no cover


def _to_chunks(q: Tensor, k: Tensor, v: Tensor, pad_mask: Tensor | None, C: int):
    B, H, L, d = q.shape
    nb = math.ceil(L / C)
    extra = nb * C - L
    if extra:  # the last chunk is short: pad it with masked keys
        q, k, v = (F.pad(t, (0, 0, 0, extra)) for t in (q, k, v))
        if pad_mask is None:
            pad_mask = torch.zeros(B, L, dtype=torch.bool, device=q.device)
        pad_mask = F.pad(pad_mask, (0, extra), value=True)

    def split(t: Tensor) -> Tensor:
        return t.reshape(B, H, nb, C, t.shape[-1]).transpose(1, 2).reshape(B * nb, H, C, t.shape[-1])

    return split(q), split(k), split(v), None if pad_mask is None else pad_mask.reshape(B * nb, C)


def _row_ok(pad_mask: Tensor, causal: bool) -> Tensor:
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
