"""Explicit long convolutions: the regularised long-conv layer and a gated (Hyena-style) variant.

``long_conv``: Fu, Epstein, Nguyen, Thomas, Zhang, Dao, Rudra & Re 2023, "Simple
Hardware-Efficient Long Convolutions for Sequence Modeling". The S4 block with the SSM kernel
replaced by a free kernel of ``max_len`` taps per channel, regularised by

* smoothing: average pooling of the kernel along its length (window ``smooth_window``, stride 1,
  zeros beyond the ends counted), then
* squash: soft-thresholding ``sign(k) * relu(|k| - squash_lambda)``, then
* kernel dropout (training only).

The whole ``max_len`` kernel is regularised, then truncated to the input length ``L``, so an
output never depends on ``L`` (a padded batch equals the unpadded shorter sequences).

``hyena``: Poli et al. 2023, "Hyena Hierarchy: Towards Larger Convolutional Language Models",
order 2: ``x1, x2, v = shortconv(in_proj(x))``, ``y = x2 * (k * (x1 * v) + D (x1 * v))``,
``out_proj(y)``. Our variant uses the explicit regularised kernel above instead of Hyena's
implicit (MLP) filter; Fu et al. 2023 report the two on par.

The convolutions are :func:`zoo.functional.fftconv.fftconv` (float32 FFTs); ``causal=False``
uses a forward and a backward kernel (the backward one starts at lag 1, see that module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from registry import register
from zoo.base import MixerConfig, SequenceMixer, config_field, zero_padded
from zoo.functional.fftconv import fftconv, fftconv_reference
from zoo.layers._common import ACTIVATIONS, ConvBlock

# --------------------------------------------------------------------------- configs


@dataclass
class LongConvConfig(MixerConfig):
    """Long convolution: an explicit, regularised kernel per channel (Fu et al. 2023)."""

    max_len: int = config_field(1024, "kernel taps = the longest sequence the layer accepts")
    causal: bool = config_field(True, "True: causal kernel; False: bidirectional (forward + backward kernels)")
    squash_lambda: float = config_field(1e-3, "soft-threshold of the kernel, sign(k) relu(|k| - lambda) (0 = off)")
    smooth_window: int = config_field(3, "odd average-pooling window along the kernel's length (1 = off)")
    kernel_dropout: float = config_field(0.0, "dropout on kernel entries (training only)")
    kernel_lr: float = config_field(1e-3, "learning rate of the kernel (weight decay 0), returned by param_groups()")
    activation: str = config_field("gelu", "activation after the convolution: " + " | ".join(ACTIVATIONS))
    dropout: float = config_field(0.0, "dropout after the activation")

    def __post_init__(self) -> None:
        super().__post_init__()
        _validate_kernel_fields(self)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")
        _validate_prob("dropout", self.dropout)


@dataclass
class HyenaConfig(MixerConfig):
    """Hyena (order 2) with an explicit regularised long kernel (Poli et al. 2023; Fu et al. 2023)."""

    max_len: int = config_field(1024, "kernel taps = the longest sequence the layer accepts")
    causal: bool = config_field(True, "True: causal short and long convolutions; False: bidirectional")
    short_filter: int = config_field(3, "taps of the depthwise short convolution on the three projected streams")
    squash_lambda: float = config_field(1e-3, "soft-threshold of the long kernel, sign(k) relu(|k| - lambda) (0 = off)")
    smooth_window: int = config_field(3, "odd average-pooling window along the long kernel's length (1 = off)")
    kernel_dropout: float = config_field(0.0, "dropout on long-kernel entries (training only)")
    kernel_lr: float = config_field(
        1e-3, "learning rate of the long kernel (weight decay 0), returned by param_groups()"
    )
    dropout: float = config_field(0.0, "dropout before the output projection")

    def __post_init__(self) -> None:
        super().__post_init__()
        _validate_kernel_fields(self)
        if self.short_filter < 1:
            raise ValueError(f"short_filter must be >= 1 taps, got {self.short_filter}")
        _validate_prob("dropout", self.dropout)


def _validate_prob(name: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}")


def _validate_kernel_fields(cfg: LongConvConfig | HyenaConfig) -> None:
    if cfg.max_len < 1:
        raise ValueError(f"max_len must be >= 1 (the kernel length), got {cfg.max_len}")
    if cfg.squash_lambda < 0:
        raise ValueError(f"squash_lambda must be >= 0 (0 switches squashing off), got {cfg.squash_lambda}")
    if cfg.smooth_window < 1 or cfg.smooth_window % 2 == 0:
        raise ValueError(
            f"smooth_window must be an odd int >= 1 (1 switches smoothing off), got {cfg.smooth_window}"
        )
    _validate_prob("kernel_dropout", cfg.kernel_dropout)
    if not cfg.kernel_lr >= 0:
        raise ValueError(f"kernel_lr must be >= 0, got {cfg.kernel_lr}")


# --------------------------------------------------------------------------- the kernel


def regularize_kernel(k: Tensor, squash_lambda: float, smooth_window: int) -> Tensor:
    """Smooth then squash a kernel ``(..., L)`` along its last axis (Fu et al. 2023).

    Equivalent PyTorch code::

        k = F.avg_pool1d(k, smooth_window, stride=1, padding=smooth_window // 2)   # zeros counted
        k = torch.sign(k) * torch.relu(k.abs() - squash_lambda)
    """
    if smooth_window > 1:
        shape = k.shape
        k = F.avg_pool1d(k.reshape(-1, 1, shape[-1]), smooth_window, stride=1, padding=smooth_window // 2)
        k = k.reshape(shape)  # (..., L)
    if squash_lambda > 0:
        k = torch.sign(k) * F.relu(k.abs() - squash_lambda)
    return k


class LongConvKernel(nn.Module):
    """``n_kernels`` explicit kernels of ``max_len`` taps per channel, regularised on every call.

    Initialised ``N(0, 1/max_len)`` so that a unit-variance input gives a unit-variance output.
    """

    def __init__(
        self,
        channels: int,
        max_len: int,
        n_kernels: int,
        squash_lambda: float,
        smooth_window: int,
        kernel_dropout: float,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_kernels, channels, max_len) / math.sqrt(max_len))  # (K, H, max_len)
        self.squash_lambda = squash_lambda
        self.smooth_window = smooth_window
        self.drop = nn.Dropout(kernel_dropout)

    def forward(self, L: int) -> Tensor:
        """The regularised kernel truncated to ``L`` taps: ``(K, H, L)`` float32 (float64 for a float64 module)."""
        w = self.weight if self.weight.dtype == torch.float64 else self.weight.float()
        k = regularize_kernel(w, self.squash_lambda, self.smooth_window)  # (K, H, max_len)
        return self.drop(k)[..., :L]  # (K, H, L)

    def extra_repr(self) -> str:
        K, H, max_len = self.weight.shape
        return (
            f"kernels={K}, channels={H}, max_len={max_len}, squash_lambda={self.squash_lambda}, "
            f"smooth_window={self.smooth_window}"
        )


def _kernel_param_groups(module: nn.Module, kernel: LongConvKernel, lr: float) -> list[dict[str, Any]]:
    rest = [p for p in module.parameters() if p is not kernel.weight]
    return [{"params": rest}, {"params": [kernel.weight], "lr": lr, "weight_decay": 0.0}]


# --------------------------------------------------------------------------- long_conv


@register("long_conv", LongConvConfig)
class LongConv(ConvBlock):
    """The S4 block with an explicit kernel: ``GLU(Linear(act(k * u + D u)))`` (Fu et al. 2023)."""

    supports_causal = True
    supports_padding_mask = True
    complexity = "L log L"
    needs_max_len = True
    config_class = LongConvConfig

    def __init__(self, config: LongConvConfig) -> None:
        super().__init__(config)
        H = config.d_model
        self.kernel = LongConvKernel(
            H, config.max_len, 1 if config.causal else 2, config.squash_lambda, config.smooth_window,
            config.kernel_dropout,
        )

    def param_groups(self) -> list[dict[str, Any]]:
        """The kernel: ``lr=config.kernel_lr``, ``weight_decay=0``; the rest: the defaults."""
        return _kernel_param_groups(self, self.kernel, self.config.kernel_lr)

    def extra_repr(self) -> str:
        c = self.config
        return f"d_model={c.d_model}, max_len={c.max_len}, causal={c.causal}"


# --------------------------------------------------------------------------- hyena


@register("hyena", HyenaConfig)
class Hyena(SequenceMixer):
    """Hyena operator of order 2 with an explicit long kernel (Poli et al. 2023).

    ``x1, x2, v = shortconv(in_proj(x))``; ``y = x2 * (k * (x1 v) + D x1 v)``; ``out_proj(y)``.
    The short depthwise convolution is causal (left zero padding) when ``causal=True``.
    Padded positions are zeroed after the input projection and before the long convolution.
    """

    supports_causal = True
    supports_padding_mask = True
    complexity = "L log L"
    needs_max_len = True
    config_class = HyenaConfig

    def __init__(self, config: HyenaConfig) -> None:
        super().__init__(config)
        D = config.d_model
        self.in_proj = nn.Linear(D, 3 * D)
        self.short = nn.Conv1d(3 * D, 3 * D, config.short_filter, groups=3 * D)
        self.kernel = LongConvKernel(
            D, config.max_len, 1 if config.causal else 2, config.squash_lambda, config.smooth_window,
            config.kernel_dropout,
        )
        self.D = nn.Parameter(torch.randn(D))  # (D,)
        self.drop = nn.Dropout(config.dropout)
        self.out_proj = nn.Linear(D, D)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return self._forward(x, key_padding_mask, fftconv)

    def reference_forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """The same operator with the direct-sum convolution (O(L^2)): the definition."""
        return self._forward(x, key_padding_mask, fftconv_reference)

    def _forward(self, x: Tensor, key_padding_mask: Tensor | None, conv) -> Tensor:
        self._validate_input(x, key_padding_mask)
        cfg = self.config
        L = x.shape[1]
        z = self.in_proj(x.to(self.in_proj.weight.dtype))  # (B, L, 3D)
        z = zero_padded(z, key_padding_mask).transpose(1, 2)  # (B, 3D, L)
        t = cfg.short_filter - 1
        left = t if cfg.causal else t // 2
        z = self.short(F.pad(z, (left, t - left)))  # (B, 3D, L)
        x1, x2, v = z.chunk(3, dim=1)  # 3 x (B, D, L)
        v = x1 * v  # (B, D, L)
        if key_padding_mask is not None:
            v = v.masked_fill(key_padding_mask[:, None, :], 0.0)
        k = self.kernel(L)  # (K, D, L)
        y = conv(v, k[0] if cfg.causal else k, causal=cfg.causal) + v * self.D.to(v.dtype)[:, None]  # (B, D, L)
        y = (x2 * y).transpose(1, 2)  # (B, L, D)
        out = self.out_proj(self.drop(y)).to(x.dtype)  # (B, L, D)
        return zero_padded(out, key_padding_mask)

    def param_groups(self) -> list[dict[str, Any]]:
        """The long kernel: ``lr=config.kernel_lr``, ``weight_decay=0``; the rest: the defaults."""
        return _kernel_param_groups(self, self.kernel, self.config.kernel_lr)

    def extra_repr(self) -> str:
        c = self.config
        return f"d_model={c.d_model}, max_len={c.max_len}, causal={c.causal}, short_filter={c.short_filter}"
