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
  unpadded shorter one on its valid positions, whatever the padded positions hold (NaN and inf
  included: q, k and v are zeroed there before any product).
* **An empty batch** (``B = 0``) gives an empty output.
* **Output** rows of padded queries are 0.

The identity behind every fast path: pooling is linear, ``AP(A) V = A (P V)`` with
``(P V)[t] = sum_{j : t in W(j)} [j inside] V[j] / n_j`` (a box filter of the weighted values),
so pooling is applied to V before any fused kernel; chunking is a reshape of the sequence into
``(B * L/C, C)`` blocks (the last block padded and masked).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.functional import backends
from zoo.functional.call import AttentionCall, row_ok, validate_options, validate_qkv, zero_padded_heads
from zoo.functional.capture import graph_safe_active
from zoo.functional.compiled import CudaCompiled
from zoo.functional.reference import attention_reference, pool_values, pool_window

__all__ = [
    "AttentionCall",
    "attention",
    "attention_reference",
    "make_call",
    "pool_values",
    "pool_window",
    "select_backend",
]


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
        graph_safe=graph_safe_active(),
    )


def select_backend(call: AttentionCall, backend: str = "auto"):
    """The backend that runs ``call``: the named one, or the first able one in priority order."""
    return backends.select(call, backend)


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
    validate_qkv(q, k, v)
    validate_options(q, decay, pool, chunk, key_padding_mask)
    B, H, L, d = q.shape
    if B == 0:  # an empty batch: an empty output (no kernel launches on zero rows)
        return q.new_zeros(B, H, L, v.shape[-1])
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
    if pad_mask is not None:
        k, v = _zero_padded_kv(k, v, pad_mask)  # NaN/inf stored at padding stay out
    if chunked:
        q, k, v, pad_mask = _to_chunks(q, k, v, pad_mask, Lc)  # (B * nb, H, Lc, d)
    inside = None if pad_mask is None else ~pad_mask  # (B', L')
    v = _pool_values(v, pool, causal=causal, inside=inside, count_include_pad=count_include_pad)
    out = _run_first_able(call, backend, q, k, v, decay=decay if call.has_decay else None, causal=causal,
                          key_padding_mask=pad_mask, scale=scale)
    if pad_mask is not None:
        zero = torch.zeros((), dtype=out.dtype, device=out.device)
        out = torch.where(row_ok(pad_mask, causal)[:, None, :, None], out, zero)
    if chunked:
        out = out.reshape(B, nb, H, Lc, d).transpose(1, 2).reshape(B, H, nb * Lc, d)[:, :, :L]  # (B, H, L, d)
    return out


def zero_padded_kv(k: Tensor, v: Tensor, key_padding_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``k`` and ``v`` with their padded positions zero (:func:`zero_padded_heads`), in one pass."""
    return zero_padded_heads(k, key_padding_mask), zero_padded_heads(v, key_padding_mask)


# On CUDA one fused kernel forward and one backward; eagerly each masked_fill is a copy and a fill,
# forward and backward: ~2 ms of a paper-settings ListOps step on the H200 (docs/results/training).
_zero_padded_kv = CudaCompiled(zero_padded_kv, "masking of padded keys and values", dynamic=True)


# pool_values on CUDA, compiled into one fused kernel per direction (eagerly it is seven passes over
# an fp32 copy of V: a tenth of a LaS training step at LRA sizes). The same code and dtypes, so the
# same values; shapes come in buckets, so it compiles a bounded number of times.
_compiled_pooling = CudaCompiled(pool_values, "value pooling", dynamic=False)


def _pool_values(v: Tensor, pool: int, **kw) -> Tensor:
    return pool_values(v, pool, **kw) if pool == 1 else _compiled_pooling(v, pool, **kw)


def _run_first_able(call: AttentionCall, backend: str, q: Tensor, k: Tensor, v: Tensor, **kw) -> Tensor:
    """Run the chosen backend; under ``auto``, a kernel that still refuses (NotImplementedError,
    i.e. a limit its declaration missed) is reported once and the next able backend runs."""
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
