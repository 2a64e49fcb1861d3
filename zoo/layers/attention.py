"""Multi-head attention over :func:`zoo.functional.attention.attention`, and its five presets.

``vanilla``, ``local``, ``smooth``, ``las`` and ``las_chunk`` are registry entries: the same
:class:`MultiHeadAttention` built from config dataclasses that differ only in their defaults
(Zimerman & Wolf, ICML 2024, "Viewing Transformers Through the Lens of Long Convolutions
Layers": LaS = Local and Smooth attention).

Decay schedule (``decay=True``): the first ``global_heads`` heads have alpha 0 (global); the other
heads get alphas log-spaced from ``alpha_min`` to ``alpha_max`` ("exponentially-uniform up to
B", our reading of the paper). Alphas are fixed, not learned, and always fp32.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from registry import register
from zoo.base import MixerConfig, SequenceMixer, config_field, zero_padded
from zoo.functional.attention import attention, make_call, select_backend
from zoo.functional.backends import names as backend_names


@dataclass
class AttentionConfig(MixerConfig):
    """Multi-head softmax attention with optional LaS decay, row pooling and chunking."""

    n_heads: int = config_field(8, "attention heads; d_model must be divisible by it")
    causal: bool = config_field(False, "attend to positions <= i only (the paper's LMs); LRA classifiers use False")
    decay: bool = config_field(False, "multiply logits by exp(-alpha_h |i-j|) before the softmax (ELD)")
    alpha_max: float = config_field(0.5, "largest decay rate (the paper's bound B in (0, 1))")
    alpha_min: float = config_field(0.01, "smallest non-zero decay rate of the log-spaced schedule")
    global_heads: int = config_field(1, "heads with alpha 0 (no decay)")
    pool_size: int = config_field(1, "row average-pooling window over keys after the softmax (1 = off)")
    count_include_pad: bool = config_field(True, "pooling divides by pool_size (True) or by keys inside the sequence")
    chunk_size: int = config_field(0, "attend only within chunks of this many positions (0 = global)")
    qkv_bias: bool = config_field(True, "bias in the q/k/v projection")
    dropout: float = config_field(0.0, "dropout on the output projection")
    backend: str = config_field("auto",
                                "attention kernel: auto | " + " | ".join(["xformers", "sdpa", "flex", "reference"]))

    def __post_init__(self) -> None:
        super().__post_init__()
        _validate_heads(self.d_model, self.n_heads)
        _validate_decay(self)
        if self.pool_size < 1:
            raise ValueError(f"pool_size must be >= 1 (1 = no pooling), got {self.pool_size}")
        if self.chunk_size < 0:
            raise ValueError(f"chunk_size must be >= 0 (0 = no chunking), got {self.chunk_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.backend not in ("auto", *backend_names()):
            raise ValueError(f"backend must be 'auto' or one of {backend_names()}, got {self.backend!r}")


def _validate_decay(cfg: AttentionConfig) -> None:
    """The decay fields lie in their documented ranges (checked with or without ``decay``, so a
    value that would be wrong once decay is switched on is named at once)."""
    if not 0 <= cfg.global_heads <= cfg.n_heads:
        raise ValueError(f"global_heads must be in [0, n_heads={cfg.n_heads}], got {cfg.global_heads}")
    if not 0 < cfg.alpha_max < 1:
        raise ValueError(f"alpha_max must lie in (0, 1) (the paper's bound B), got {cfg.alpha_max}; e.g. alpha_max=0.5")
    if not 0 < cfg.alpha_min <= cfg.alpha_max:
        raise ValueError(
            f"alpha_min must lie in (0, alpha_max={cfg.alpha_max}], got {cfg.alpha_min}; e.g. alpha_min=0.01"
        )


def _validate_heads(d_model: int, n_heads: int) -> None:
    if n_heads < 1 or d_model % n_heads:
        raise ValueError(
            f"d_model={d_model} is not divisible by n_heads={n_heads}; pick n_heads among "
            f"{[h for h in range(1, min(d_model, 64) + 1) if d_model % h == 0]}"
        )


@dataclass
class VanillaConfig(AttentionConfig):
    """Vanilla softmax attention (Vaswani et al. 2017)."""


@dataclass
class LocalConfig(AttentionConfig):
    """Local attention: exponentially decaying logits per head (LaS without pooling)."""

    decay: bool = config_field(True, "multiply logits by exp(-alpha_h |i-j|) before the softmax (ELD)")


@dataclass
class SmoothConfig(AttentionConfig):
    """Smoothed attention: rows of the attention matrix average-pooled (LaS without decay)."""

    pool_size: int = config_field(3, "row average-pooling window over keys after the softmax (1 = off)")


@dataclass
class LaSConfig(AttentionConfig):
    """LaS attention: decayed logits and smoothed rows (Zimerman & Wolf, ICML 2024)."""

    decay: bool = config_field(True, "multiply logits by exp(-alpha_h |i-j|) before the softmax (ELD)")
    pool_size: int = config_field(3, "row average-pooling window over keys after the softmax (1 = off)")


@dataclass
class LaSChunkConfig(LaSConfig):
    """LaS-chunk attention: LaS inside fixed chunks of the sequence, linear in L."""

    chunk_size: int = config_field(256, "attend only within chunks of this many positions (0 = global)")


def decay_schedule(n_heads: int, global_heads: int, alpha_min: float, alpha_max: float) -> list[float]:
    """Per-head alphas: ``global_heads`` zeros, then log-spaced from alpha_min to alpha_max."""
    n = n_heads - global_heads
    if n <= 0:
        return [0.0] * n_heads
    if n == 1:
        return [0.0] * global_heads + [float(alpha_max)]
    lo, hi = math.log(alpha_min), math.log(alpha_max)
    return [0.0] * global_heads + [math.exp(lo + (hi - lo) * r / (n - 1)) for r in range(n)]


@register("vanilla", VanillaConfig)
@register("local", LocalConfig)
@register("smooth", SmoothConfig)
@register("las", LaSConfig)
@register("las_chunk", LaSChunkConfig)
class MultiHeadAttention(SequenceMixer):
    """Projections around the attention core: ``x -> qkv -> attention -> out``.

    Complexity is quadratic in L; with ``chunk_size > 0`` (``las_chunk``) it is linear:
    :meth:`complexity_for` and the instance's :attr:`complexity` say so.
    """

    supports_causal = True
    supports_padding_mask = True
    complexity = "L^2"
    needs_positions = True  # softmax attention has no notion of order (a decay sees only distances |i - j|)
    config_class = AttentionConfig

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__(config)
        self.n_heads = config.n_heads
        self.head_dim = config.d_model // config.n_heads
        self.complexity = self.complexity_for(config)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.qkv_bias)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        schedule = (
            decay_schedule(config.n_heads, config.global_heads, config.alpha_min, config.alpha_max)
            if config.decay
            else None
        )
        # fixed, not learned; a buffer so it follows .to(device) and stays fp32 (see _apply)
        self.register_buffer("alphas", None if schedule is None else torch.tensor(schedule, dtype=torch.float32),
                             persistent=False)

    def _apply(self, fn, recurse=True):
        """``.to(dtype)`` / ``.half()`` must not round the decay rates: keep them fp32 on the new device."""
        alphas = self.alphas
        out = super()._apply(fn, recurse)
        if alphas is not None:
            self.alphas = alphas.to(device=self.qkv.weight.device, dtype=torch.float32)
        return out

    @classmethod
    def check_length(cls, config: AttentionConfig, max_len: int) -> None:
        """A chunk longer than the sequence makes every sequence one chunk (``las_chunk`` becomes
        ``las``): it still runs, so it is a one-line warning that names the key, not an error."""
        if config.chunk_size > max_len:
            warnings.warn(
                f"layer.chunk_size={config.chunk_size} is larger than the sequence length {max_len} "
                "(the task's max_len), "
                f"so every sequence is one chunk; set layer.chunk_size to at most {max_len} (0 = global attention)",
                UserWarning, stacklevel=3)

    @classmethod
    def complexity_for(cls, config: AttentionConfig) -> str:
        return "L" if config.chunk_size else "L^2"

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return self._forward(x, key_padding_mask, self.config.backend)

    def reference_forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return self._forward(x, key_padding_mask, "reference")

    def kernel_name(self, x: Tensor, key_padding_mask: Tensor | None = None, requires_grad: bool = True) -> str:
        B, L, _ = x.shape
        cfg = self.config
        call = make_call(
            (B, self.n_heads, L, self.head_dim), x.dtype, x.device, decay=self.alphas,
            chunk=cfg.chunk_size or None, causal=cfg.causal, padded=key_padding_mask is not None,
            requires_grad=requires_grad,
        )
        return select_backend(call, cfg.backend).name

    def _forward(self, x: Tensor, key_padding_mask: Tensor | None, backend: str) -> Tensor:
        self._validate_input(x, key_padding_mask)
        B, L, D = x.shape
        cfg = self.config
        # q, k, v stay strided views of the projection (FlexAttention reads them in place; measured on
        # the H200, copying them into (B, H, L, d) inside a compiled function with symbolic sizes cost
        # 5.8 ms a step more than the views, docs/results/training/step_floor)
        qkv = self.qkv(x).view(B, L, 3, self.n_heads, self.head_dim)  # (B, L, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, L, d)
        out = attention(
            q,
            k,
            v,
            decay=self.alphas,
            pool=cfg.pool_size,
            chunk=cfg.chunk_size or None,
            causal=cfg.causal,
            key_padding_mask=key_padding_mask,
            count_include_pad=cfg.count_include_pad,
            backend=backend,
        )  # (B, H, L, d)
        out = self.drop(self.proj(out.transpose(1, 2).reshape(B, L, D)))  # (B, L, D)
        return zero_padded(out, key_padding_mask)

    def extra_repr(self) -> str:
        c = self.config
        parts = [f"d_model={c.d_model}", f"n_heads={c.n_heads}", f"causal={c.causal}"]
        if self.alphas is not None:
            parts.append("alphas=[" + ", ".join(f"{a:.3g}" for a in self.alphas.tolist()) + "]")
        if c.pool_size > 1:
            parts.append(f"pool_size={c.pool_size}")
        if c.chunk_size:
            parts.append(f"chunk_size={c.chunk_size}")
        return ", ".join(parts)
