"""Far-field shortcut for decayed (LaS) softmax attention: exact near band + collapsed far field.

Status: EXPERIMENTAL, not wired into any layer. It is accurate (measured 4.7e-6 relative error
at delta=1e-3, fp32, L=4K on the H200) but not yet faster: 0.34-0.57x the speed of exact
FlexAttention LaS there (docs/kernels.md, "Far-field shortcut"). Call it explicitly.

The exact operator (per head ``h``, after the caller's pooling/chunking identities) is::

    o_i = softmax_j( exp(-alpha_h |i - j|) * S[i, j] + masks ) v,     S = q k^T * scale

If ``M_h >= max |S|`` then every decayed logit ``x`` with ``|i - j| > W_h`` has
``|x| <= M_h exp(-alpha_h (W_h + 1)) < delta`` for ``W_h = ceil(ln(M_h / delta) / alpha_h)``.
Replacing those ``exp(x)`` by ``exp(0) = 1`` collapses the far field to a count and a sum::

    o_i = lam_i * o_near_i + (1 - lam_i) * mean_{j far, allowed}(v_j)
    lam_i = sigmoid(LSE_near_i - ln n_far_i)            (lam_i = 1 when n_far_i = 0)

"far" = ``|i - j| > W_h`` and allowed (``j <= i`` when causal, key not padded). Every approximate
weight is within a factor ``exp(+-2 delta)`` of the exact one, hence
``|o - o_exact| <= (exp(2 delta) - 1) * max|v|`` (:func:`farfield_error_bound`). Heads with
``alpha = 0`` (or ``W_h >= L``) have no far field and are exact.

``M_h = |scale| * max_{b,i} ||q_i|| * max_{b,j} ||k_j||`` (over non-padded positions), one band per
head; W is computed on the device (no host sync).

Implementations:

* :func:`farfield_reference` - materialised matrices, plain torch, differentiable: the definition.
* :func:`farfield_attention` - near field through compiled FlexAttention with a per-head band
  block mask (cost O(L W d) instead of O(L^2 d)); far field by subtraction-free fp32 prefix and
  suffix sums (``sum_{j < t}`` and ``sum_{j >= t}``, never ``total - prefix``) of v and of the
  valid-key counts.

  - CUDA: ``return_aux=AuxRequest(lse=True)`` (``return_lse`` on older torch), combined as above;
    differentiable through FlexAttention's backward (including its LSE).
  - CPU: compiled FlexAttention on CPU rejects ``return_lse`` (torch 2.14: "torch.compile on CPU
    only supports inference and `return_lse` is not supported yet"), so the CPU kernel uses a
    *sink*: one extra key whose logit is ``ln n_far_i`` (a per-query ``score_mod``) and whose
    value is the unit vector of an extra value channel. The softmax then produces ``lam * o_near``
    in the first ``d`` channels and ``1 - lam`` in the extra one, with no LSE at all. Forward
    only (FlexAttention has no CPU backward): with gradients on CPU, :func:`farfield_reference`
    runs instead (O(L^2) memory, like the exact operator's CPU fallback).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["farfield_attention", "farfield_reference", "farfield_band", "farfield_error_bound"]


# --------------------------------------------------------------------------- shared pieces


def farfield_error_bound(delta: float, v) -> float:
    """``(exp(2 delta) - 1) * max|v|``: the bound on ``max |o_farfield - o_exact|`` (per element).

    ``v`` is the value tensor the kernel sees (after pooling) or a number ``max|v|``.
    """
    vmax = float(v.detach().abs().max()) if isinstance(v, Tensor) else abs(float(v))
    return math.expm1(2.0 * float(delta)) * vmax


def _check(q: Tensor, k: Tensor, v: Tensor, decay: Tensor, delta: float, key_padding_mask: Tensor | None) -> None:
    from zoo.functional.call import validate_options, validate_qkv

    validate_qkv(q, k, v)
    if decay is None:
        raise ValueError("farfield: decay (per-head alphas, shape (H,)) is required; without decay use attention()")
    validate_options(q, decay, 1, None, key_padding_mask)
    if isinstance(delta, Tensor) or not isinstance(delta, (int, float)) or isinstance(delta, bool):
        raise TypeError(f"farfield: delta must be a positive float, got {type(delta).__name__}")
    if not (delta > 0 and math.isfinite(delta)):
        raise ValueError(f"farfield: delta must be a finite float > 0, got {delta!r}")


def farfield_band(
    q: Tensor, k: Tensor, decay: Tensor, delta: float, scale: float, valid: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Per-head band half-width ``W`` ((H,) int64, in [0, L]) and logit bound ``M`` ((H,) fp64).

    ``M_h = |scale| * max ||q_i|| * max ||k_j||`` (norms in fp32, times 1 + 1e-5) over non-padded positions
    (``valid`` (B, L) bool, True = real token, or None). ``W_h = ceil(ln(M_h / delta) / alpha_h)`` clamped to [0, L];
    ``W_h = L`` (no far field) when ``alpha_h = 0``. Computed on the device, no host sync.
    """
    L = q.shape[-2]
    with torch.no_grad():
        # fp32 accumulation (no fp64 copy of q, k), then a 1e-5 relative margin over its rounding
        nt = torch.float64 if q.dtype == torch.float64 else torch.float32
        qn = torch.linalg.vector_norm(q.detach(), dim=-1, dtype=nt).double() * (1 + 1e-5)  # (B, H, L)
        kn = torch.linalg.vector_norm(k.detach(), dim=-1, dtype=nt).double() * (1 + 1e-5)
        if valid is not None:
            qn = qn.masked_fill(~valid[:, None, :], 0.0)
            kn = kn.masked_fill(~valid[:, None, :], 0.0)
        M = abs(scale) * qn.amax(dim=(0, 2)) * kn.amax(dim=(0, 2))  # (H,)
        alpha = decay.detach().double()
        ratio = torch.log(M / delta)  # -inf when M = 0
        w = torch.where(alpha > 0, ratio / alpha.clamp_min(1e-300), torch.full_like(alpha, float(L)))
        w = torch.nan_to_num(w, nan=float(L), posinf=float(L), neginf=0.0)
        W = torch.ceil(w).clamp(0, L).to(torch.int64)
    return W, M


def _combine(o_near: Tensor, lse: Tensor, n_far: Tensor, sum_far: Tensor, row_ok: Tensor) -> Tensor:
    """``lam o_near + (1 - lam) sum_far / n_far`` with ``lam = sigmoid(lse - ln n_far)``; NaN-free
    values and gradients for rows without far keys (lam = 1) or without near keys (padded rows)."""
    has_far = n_far > 0  # (B, H, L)
    logn = torch.log(n_far.clamp_min(1).to(lse.dtype))
    t = torch.where(row_ok, lse, torch.zeros((), dtype=lse.dtype, device=lse.device)) - logn
    lam = torch.where(has_far, torch.sigmoid(t), torch.ones((), dtype=t.dtype, device=t.device))
    one_minus = torch.where(has_far, torch.sigmoid(-t), torch.zeros((), dtype=t.dtype, device=t.device))
    mean_far = sum_far / n_far.clamp_min(1).to(sum_far.dtype)[..., None]
    o_near = torch.where(row_ok[..., None], o_near, torch.zeros((), dtype=o_near.dtype, device=o_near.device))
    return lam[..., None] * o_near + one_minus[..., None] * mean_far


def _far_sums(v: Tensor, valid: Tensor | None, W: Tensor, causal: bool, ct: torch.dtype) -> tuple[Tensor, Tensor]:
    """``n_far`` (B, H, L) and ``sum_far`` (B, H, L, d) by exclusive prefix / suffix sums (no subtraction).

    far keys of query i (head h): ``j <= i - W_h - 1`` and (non-causal) ``j >= i + W_h + 1``.
    """
    B, H, L, d = v.shape
    vf = v.to(ct)
    if valid is not None:
        vf = vf.masked_fill(~valid[:, None, :, None], 0.0)
        cnt = valid.to(torch.int64)[:, None, :].expand(B, H, L)  # (B, H, L)
    else:
        cnt = torch.ones(1, 1, L, dtype=torch.int64, device=v.device).expand(B, H, L)
    zero_v = vf.new_zeros(B, H, 1, d)
    zero_c = cnt.new_zeros(B, H, 1)
    pre_v = torch.cat([zero_v, vf.cumsum(2)], dim=2)  # (B, H, L+1, d): sum_{j < t}
    pre_c = torch.cat([zero_c, cnt.cumsum(2)], dim=2)  # (B, H, L+1)
    i = torch.arange(L, device=v.device)
    left = (i[None, :] - W[:, None]).clamp(0, L)  # (H, L): far-left keys are j < left
    idx = left[None, :, :].expand(B, H, L)
    n_far = pre_c.gather(2, idx)
    sum_far = pre_v.gather(2, idx[..., None].expand(B, H, L, d))
    if not causal:
        suf_v = torch.cat([vf.flip(2).cumsum(2).flip(2), zero_v], dim=2)  # sum_{j >= t}
        suf_c = torch.cat([cnt.flip(2).cumsum(2).flip(2), zero_c], dim=2)
        right = (i[None, :] + W[:, None] + 1).clamp(0, L)  # far-right keys are j >= right
        idx = right[None, :, :].expand(B, H, L)
        n_far = n_far + suf_c.gather(2, idx)
        sum_far = sum_far + suf_v.gather(2, idx[..., None].expand(B, H, L, d))
    return n_far, sum_far


def _row_ok(valid: Tensor | None, B: int, L: int, device) -> Tensor:
    """(B, 1, L) True for queries that are real tokens (they always see at least the diagonal key)."""
    if valid is None:
        return torch.ones(B, 1, L, dtype=torch.bool, device=device)
    return valid[:, None, :]


# --------------------------------------------------------------------------- reference


def farfield_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    decay: Tensor,
    delta: float = 1e-3,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    return_stats: bool = False,
):
    """The far-field approximation with every matrix materialised (fp32, fp64 for fp64). Differentiable.

    Same arguments and result as :func:`farfield_attention`; O(B H L^2) memory (a test oracle).
    """
    _check(q, k, v, decay, delta, key_padding_mask)
    B, H, L, d = q.shape
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = d**-0.5 if scale is None else scale
    valid = None if key_padding_mask is None else ~key_padding_mask
    W, M = farfield_band(q, k, decay, delta, scale, valid)

    pos = torch.arange(L, device=q.device)
    dist = (pos[:, None] - pos[None, :]).abs()  # (L, L)
    s = torch.einsum("bhid,bhjd->bhij", q.to(ct), k.to(ct)) * scale
    s = s * torch.exp(-decay.to(ct)[:, None, None] * dist.to(ct))  # (B, H, L, L)
    allowed = torch.ones(1, 1, L, L, dtype=torch.bool, device=q.device)
    if valid is not None:
        allowed = allowed & valid[:, None, None, :]
    if causal:
        allowed = allowed & (pos[None, :] <= pos[:, None])
    band = dist[None, :, :] <= W[:, None, None]  # (H, L, L)
    near = allowed & band[None]
    far = allowed & ~band[None]

    row_ok = near.any(-1)  # (B, H, L)
    s_near = torch.where(near, s, torch.full((), float("-inf"), dtype=ct, device=q.device))
    s_near = torch.where(row_ok[..., None], s_near, torch.zeros((), dtype=ct, device=q.device))
    lse = torch.logsumexp(s_near, dim=-1)  # (B, H, L)
    p = torch.exp(s_near - lse[..., None]) * near  # (B, H, L, L)
    o_near = p @ v.to(ct)
    farf = far.to(ct)
    n_far = far.sum(-1)  # (B, H, L) int
    sum_far = farf @ v.to(ct)
    out = _combine(o_near, lse, n_far, sum_far, row_ok)
    if valid is not None:
        out = out.masked_fill(~valid[:, None, :, None], 0.0)
    out = out.to(q.dtype)
    if return_stats:
        return out, _stats(W, M, n_far, valid, causal, delta, L)
    return out


def _stats(W: Tensor, M: Tensor, n_far: Tensor, valid: Tensor | None, causal: bool, delta: float, L: int) -> dict:
    """Band widths, logit bounds, and the fraction of allowed (query, key) pairs that were far."""
    if valid is None:
        vq = torch.ones(1, 1, L, dtype=torch.float64, device=n_far.device)
        nv = torch.full((1, 1, 1), float(L), dtype=torch.float64, device=n_far.device)
        vk = vq
    else:
        vq = valid[:, None, :].double()
        vk = vq
        nv = vq.sum(-1, keepdim=True)
    if causal:
        allowed_per_q = vk.cumsum(-1) * vq  # keys j <= i that are valid
    else:
        allowed_per_q = nv * vq
    far = (n_far.double() * vq).sum(dim=(0, 2))  # (H,)
    tot = allowed_per_q.sum(dim=(0, 2)).expand_as(far)
    return {
        "delta": float(delta),
        "W": W.tolist(),
        "M": M.tolist(),
        "far_fraction": (far / tot.clamp_min(1)).tolist(),
    }


# --------------------------------------------------------------------------- fast path


def _band_mask_mod(valid: Tensor, W: Tensor, causal: Tensor, sink: int | None):
    def mask_mod(b, h, q_idx, kv_idx):
        near = valid[b, kv_idx] & ((q_idx - kv_idx).abs() <= W[h]) & ((kv_idx <= q_idx) | ~causal)
        if sink is None:
            return near
        return near | (kv_idx == sink)

    return mask_mod


def _sink_score_mod(alpha: Tensor, logn: Tensor, sink: int):
    # fp32 throughout, no cast to score.dtype (miscompiles for bf16 on the CPU inductor path).
    def score_mod(score, b, h, q_idx, kv_idx):
        dist = (q_idx - kv_idx).abs().to(torch.float32)
        return torch.where(kv_idx == sink, logn[b, h, q_idx], score * torch.exp(-alpha[h] * dist))

    return score_mod


def _flex_call(q, k, v, score_mod, mask_mod, B, H, Lb, scale, want_lse, compiled):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from zoo.functional.backends.flex import compiled_flex_attention
    from zoo.functional.compiled import dynamo_guard_options

    block_mask = create_block_mask(mask_mod, B, H, Lb, Lb, device=q.device, _compile=q.device.type == "cuda")
    fn = compiled_flex_attention() if compiled else flex_attention
    kw = dict(score_mod=score_mod, block_mask=block_mask, scale=scale)
    if want_lse:
        try:
            from torch.nn.attention.flex_attention import AuxRequest

            kw["return_aux"] = AuxRequest(lse=True)
            aux_style = True
        except ImportError:  # pragma: no cover - older torch
            kw["return_lse"] = True
            aux_style = False
    with torch._dynamo.config.patch(**dynamo_guard_options()):
        res = fn(q, k, v, **kw)
    if not want_lse:
        return res, None
    out, aux = res
    return out, (aux.lse if aux_style else aux)


def farfield_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    decay: Tensor,
    delta: float = 1e-3,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    return_stats: bool = False,
    _near: str = "auto",
    _compile: bool = True,
):
    """Decayed softmax attention with the far field collapsed (error <= ``farfield_error_bound``).

    Args:
        q, k, v: ``(B, H, L, d)`` (v already pooled by the caller, chunks already batch entries).
        decay: ``(H,)`` per-head alphas >= 0 (0 = exact full attention for that head).
        delta: bound on the magnitude of every collapsed (far) decayed logit; > 0.
        causal: keys ``j > i`` are masked.
        key_padding_mask: ``(B, L)`` bool, True = padding (masked keys; those query rows are 0).
        scale: logit scale, default ``d ** -0.5``.
        return_stats: also return a dict with per-head ``W``, ``M`` and ``far_fraction``.

    Returns:
        ``(B, H, L, d)`` in ``q.dtype`` (or ``(out, stats)``). Semantics: :func:`farfield_reference`.

    Private knobs (tests): ``_near`` = ``"lse"`` | ``"sink"`` | ``"reference"`` | ``"auto"``
    (CUDA: lse; CPU: sink without gradients, reference with); ``_compile=False`` runs FlexAttention
    eagerly (unfused, materialises scores; lets the CUDA ``lse`` code path run on CPU in tests).
    """
    _check(q, k, v, decay, delta, key_padding_mask)
    B, H, L, d = q.shape
    scale = d**-0.5 if scale is None else scale
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    near_impl = _near
    if near_impl == "auto":
        if q.dtype == torch.float64:  # FlexAttention kernels: fp16 / bf16 / fp32
            near_impl = "reference"
        elif q.device.type == "cuda":
            near_impl = "lse"
        else:
            near_impl = "reference" if needs_grad else "sink"
    if near_impl == "reference":
        return farfield_reference(q, k, v, decay=decay, delta=delta, causal=causal,
                                  key_padding_mask=key_padding_mask, scale=scale, return_stats=return_stats)
    if near_impl not in ("lse", "sink"):
        raise ValueError(f"farfield_attention: unknown _near={_near!r}")
    if near_impl == "sink" and needs_grad:
        raise NotImplementedError("farfield_attention: the sink near-field path is forward-only on CPU")

    from zoo.functional.backends.flex import decay_score_mod
    from zoo.functional.call import bucket_length

    valid = None if key_padding_mask is None else ~key_padding_mask
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32
    W, M = farfield_band(q, k, decay, delta, scale, valid)
    n_far, sum_far = _far_sums(v, valid, W, causal, ct)  # (B, H, L), (B, H, L, d)
    row_ok = _row_ok(valid, B, L, q.device)  # (B, 1, L)
    alpha = decay.detach().to(torch.float32)
    causal_t = torch.tensor(causal, device=q.device)

    if near_impl == "lse":
        Lb = bucket_length(L)
        vmask = torch.zeros(B, Lb, dtype=torch.bool, device=q.device)
        vmask[:, :L] = True if valid is None else valid
        qq, kk, vv = (F.pad(t, (0, 0, 0, Lb - L)) if Lb != L else t for t in (q, k, v))
        o_near, lse = _flex_call(qq, kk, vv, decay_score_mod(alpha), _band_mask_mod(vmask, W, causal_t, None),
                                 B, H, Lb, scale, True, _compile)
        o_near, lse = o_near[:, :, :L].to(ct), lse[:, :, :L].to(ct)
        out = _combine(o_near, lse, n_far, sum_far, row_ok.expand(B, H, L))
    else:  # sink: key index L carries logit ln n_far_i and value e_d (an extra channel)
        Lb = bucket_length(L + 1)
        vmask = torch.zeros(B, Lb, dtype=torch.bool, device=q.device)
        vmask[:, :L] = True if valid is None else valid
        qq, kk = (F.pad(t, (0, 0, 0, Lb - L)) for t in (q, k))
        vv = F.pad(v, (0, 1, 0, Lb - L))  # (B, H, Lb, d + 1)
        vv[:, :, L, d] = 1.0
        logn = torch.full((B, H, Lb), float("-inf"), dtype=torch.float32, device=q.device)
        logn[:, :, :L] = torch.where(n_far > 0, torch.log(n_far.clamp_min(1).float()), logn[:, :, :L])
        res, _ = _flex_call(qq, kk, vv, _sink_score_mod(alpha, logn, L), _band_mask_mod(vmask, W, causal_t, L),
                            B, H, Lb, scale, False, _compile)
        res = res[:, :, :L].to(ct)
        mean_far = sum_far / n_far.clamp_min(1).to(ct)[..., None]
        out = res[..., :d] + res[..., d:] * mean_far  # lam o_near + (1 - lam) mean_far
    out = torch.where(row_ok[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))
    out = out.to(q.dtype)
    if return_stats:
        return out, _stats(W, M, n_far, valid, causal, delta, L)
    return out
