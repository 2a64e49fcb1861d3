"""The semantics of the attention family, materialised: pooling windows and the reference operator.

Every matrix of the definition is built (``O(B H L^2)`` memory): this module is the definition
and the test oracle of :func:`zoo.functional.attention.attention`, whose docstring states the
semantics in words; :func:`pool_values` is the exact identity ``AP(A) V = A (P V)`` that lets every
fused kernel serve the pooled presets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.functional.call import validate_options, validate_qkv, zero_padded_heads

__all__ = ["attention_reference", "box_sum", "pool_values", "pool_window"]


def pool_window(pool: int, causal: bool) -> tuple[int, int]:
    """``(left, right)`` extent of the key window ``W(j) = [j - left, j + right]``."""
    if causal:
        return 0, pool - 1
    left = (pool - 1) // 2
    return left, pool - 1 - left


def box_sum(x: Tensor, before: int, after: int) -> Tensor:
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
            w = 1.0 / box_sum(ones, left, right)  # (1, 1, L, 1)
    else:
        ins = inside[:, None, :, None].to(ct)  # (B, 1, L, 1)
        if count_include_pad:
            w = ins
        else:
            n = box_sum(ins, left, right)  # (B, 1, L, 1): inside keys in W(j)
            w = torch.where(n > 0, ins / n.clamp_min(1.0), torch.zeros_like(n))
    if w is not None:
        vf = vf * w
    # (P V)[t] sums j with t in W(j), i.e. j in [t - right, t + left]
    out = box_sum(vf, right, left)  # (B, H, L, d)
    if count_include_pad:
        out = out / pool
    return out.to(v.dtype)


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
    validate_qkv(q, k, v)
    validate_options(q, decay, pool, chunk, key_padding_mask)
    q, k, v = (zero_padded_heads(t, key_padding_mask) for t in (q, k, v))  # padding holds nothing
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
        # (Lj, Lt): t in W(j)
        member = ((pos[None, :] >= pos[:, None] - left) & (pos[None, :] <= pos[:, None] + right)).to(ct)
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
