"""The block's work around the mixer as two plain functions, fused by inductor on CUDA.

A pre-norm block (:class:`zoo.models.block.Block`) is, around its mixer, a chain of memory-bound
passes: the norm (and its cast to the autocast dtype), the residual add, stochastic depth, the
second norm, the MLP's bias, GELU and dropout, the second residual add and the zeroing of padded
positions. Eagerly each is a kernel of its own (and a LayerNorm weight gradient that reduces over
all ``B x L`` rows in one slow kernel); at LRA sizes they cost more GPU time than the attention
(``docs/results/training/profile.md``). Here they are two functions:

    norm_in(x)                        = norm1(x) in the autocast dtype             (one kernel)
    mlp_residual(x, mixed)            = y + DropPath(fc2(Dropout(GELU(fc1(norm2(y)))))),
                                        y = x + DropPath(mixed), padded rows zeroed (two GEMMs + fused epilogues)
                                        (``gated``: SwiGLU, ``SiLU(a) * b`` with ``[a, b] = fc1(.)``)
    residual(x, mixed)                = x + DropPath(mixed), padded rows zeroed   (blocks without an MLP)

each written once in plain PyTorch and run as it is on the CPU, and compiled by inductor with
symbolic sizes on CUDA (:class:`zoo.functional.compiled.CudaCompiled`: one compilation serves every
shape bucket, so the per-shape CUDA graphs of the trainer capture the fused kernels and nothing
compiles during the steps). Parameters stay the block's module parameters and are passed in.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.base import zero_padded
from zoo.functional.compiled import CudaCompiled

__all__ = ["FusedOps", "autocast_dtype", "embed_out", "fused_ops", "mlp_residual", "norm", "norm_in", "norm_out",
           "norm_pool", "pool", "residual"]


def autocast_dtype(x: Tensor) -> torch.dtype:
    """The dtype the mixer's matrix products run in: autocast's, when it is on for ``x``'s device."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


def norm(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float) -> Tensor:
    """LayerNorm (``bias`` given) or RMSNorm (``bias`` None) over the last dim, computed in fp32."""
    xf = x.float()  # (B, L, D): the one fp32 view the statistics need (fused away when compiled)
    shape = (x.shape[-1],)
    if bias is None:
        return F.rms_norm(xf, shape, weight.float(), eps)  # (B, L, D) fp32
    return F.layer_norm(xf, shape, weight.float(), bias.float(), eps)  # (B, L, D) fp32


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth (Huang et al. 2016): whole rows dropped with probability ``p``, the rest scaled."""
    if p <= 0.0 or not training:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) < (1.0 - p)  # (B, 1, 1)
    return x * keep.to(x.dtype) / (1.0 - p)


def norm_in(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float, dtype: torch.dtype) -> Tensor:
    """``norm(x)`` cast to ``dtype`` (the mixer's input)."""
    with torch.autocast(x.device.type, enabled=False):
        return norm(x, weight, bias, eps).to(dtype)  # (B, L, D)


def mlp_residual(x: Tensor, mixed: Tensor, mask: Tensor | None, n_w: Tensor, n_b: Tensor | None, eps: float,
                 w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None, dropout: float, path: float,
                 training: bool, dtype: torch.dtype, gated: bool = False) -> Tensor:
    """``y = x + DropPath(mixed)``; ``y + DropPath(Dropout(fc2(Dropout(GELU(fc1(norm(y)))))))``, padded rows 0.

    The MLP is timm's ``Mlp`` (fc1, GELU, dropout, fc2, dropout), or with ``gated`` timm's
    ``GluMlp`` as SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer"; MAD's channel mixer):
    ``[a, b] = fc1(.)``, ``SiLU(a) * b``. Its products run in ``dtype`` (bf16 under autocast), the
    residual stream stays in ``x``'s dtype.
    """
    y = x + drop_path(mixed, path, training).to(x.dtype)  # (B, L, D)
    with torch.autocast(x.device.type, enabled=False):
        h = norm(y, n_w, n_b, eps).to(dtype)  # (B, L, D)
        h = F.linear(h, w1.to(dtype), None if b1 is None else b1.to(dtype))  # (B, L, H), gated: (B, L, 2H)
        if gated:
            a, b = h.chunk(2, dim=-1)  # (B, L, H) each
            h = F.dropout(F.silu(a) * b, dropout, training)  # (B, L, H)
        else:
            h = F.dropout(F.gelu(h), dropout, training)
        h = F.linear(h, w2.to(dtype), None if b2 is None else b2.to(dtype))  # (B, L, D)
        h = F.dropout(h, dropout, training)
        y = y + drop_path(h, path, training).to(y.dtype)  # (B, L, D)
    if mask is not None:
        y = y.masked_fill(mask.unsqueeze(-1), 0.0)  # padded positions stay exactly 0 between blocks
    return y


def residual(x: Tensor, mixed: Tensor, mask: Tensor | None, path: float, training: bool) -> Tensor:
    """``x + DropPath(mixed)``, padded rows 0: a block without an MLP (zoology's MQAR models)."""
    y = x + drop_path(mixed, path, training).to(x.dtype)  # (B, L, D)
    return y if mask is None else y.masked_fill(mask.unsqueeze(-1), 0.0)


def embed_out(h: Tensor, pos: Tensor | None, dropout: float, training: bool, mask: Tensor | None) -> Tensor:
    """The first block's input: ``Dropout(h + pos[:L])`` (``pos`` None: no positions), padded rows 0."""
    if pos is not None:
        h = h + pos[: h.shape[1]].to(h.dtype)  # (B, L, D)
    return zero_padded(F.dropout(h, dropout, training), mask)


def norm_out(h: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None, eps: float) -> Tensor:
    """The encoder's final norm (statistics in fp32, at least ``h``'s dtype out), padded rows 0."""
    with torch.autocast(h.device.type, enabled=False):
        y = norm(h, weight, bias, eps)  # (B, L, D) fp32
    return zero_padded(y.to(torch.promote_types(y.dtype, h.dtype)), mask)


def pool(h: Tensor, mask: Tensor | None, how: str) -> Tensor:
    """``(B, L, D)`` -> ``(B, D)``: the mean or max over the valid (non-padding) positions."""
    if how == "max":
        if mask is not None:
            h = h.masked_fill(mask.unsqueeze(-1), float("-inf"))
        return h.amax(dim=1)  # (B, D)
    if mask is None:
        return h.mean(dim=1)  # (B, D)
    valid = (~mask).unsqueeze(-1).to(h.dtype)  # (B, L, 1)
    return (h * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1.0)  # (B, D)


def norm_pool(h: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None, eps: float, how: str) -> Tensor:
    """:func:`norm_out` then :func:`pool`: the pooled encoder output ``(B, D)``."""
    return pool(norm_out(h, mask, weight, bias, eps), mask, how)


@dataclass(frozen=True)
class FusedOps:
    """The model's functions around the mixers, compiled for the tensors on ``devices`` (eager elsewhere)."""

    norm_in: Callable
    mlp_residual: Callable
    residual: Callable
    embed_out: Callable
    norm_out: Callable
    norm_pool: Callable


@functools.lru_cache(maxsize=None)
def fused_ops(devices: frozenset = frozenset({"cuda"})) -> FusedOps:
    """One shared set per device set (so every block reuses one compilation); ``{"cuda"}`` by default,
    tests pass ``{"cpu"}`` to compile on the CPU too."""
    fns = {"norm_in": (norm_in, "block norm"), "mlp_residual": (mlp_residual, "block residual + MLP"),
           "residual": (residual, "block residual"), "embed_out": (embed_out, "input embedding and positions"),
           "norm_out": (norm_out, "final norm"), "norm_pool": (norm_pool, "final norm and pooling")}
    return FusedOps(**{k: CudaCompiled(f, what, dynamic=True, devices=devices) for k, (f, what) in fns.items()})
