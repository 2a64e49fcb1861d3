"""Pieces the layer files share: activations and the S4 convolution block."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.base import SequenceMixer, zero_padded
from zoo.functional.compiled import CudaCompiled
from zoo.functional.fftconv import compute_dtype, fft_size, fftconv_padded, fftconv_reference


def _identity(t: Tensor) -> Tensor:
    return t


# By name, as functions: a compiled caller guards on the name, so every layer shares its compilations.
ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu, "tanh": torch.tanh, "identity": _identity}


class ConvBlock(SequenceMixer):
    """The S4 block around a per-channel long convolution (S4D, long_conv):

        y = GLU(Linear(dropout(act(k * u + D u))))

    The config needs ``d_model``, ``causal``, ``activation`` and ``dropout``. Subclasses provide ``kernel(L)``
    (a method or a submodule; ``(K, H, L)`` float32, K = 1 causal or 2 bidirectional) and
    ``reference_kernel(L)`` (the same kernel by its definition).
    """

    def __init__(self, config) -> None:
        super().__init__(config)
        H = config.d_model
        self.D = nn.Parameter(torch.randn(H))  # (H,) skip connection
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(H, 2 * H)  # followed by GLU

    # ``kernel`` is not declared here: a subclass may provide it as a method or as a submodule.

    def reference_kernel(self, L: int) -> Tensor:
        return self.kernel(L)

    def kernel_name(self, x: Tensor, key_padding_mask: Tensor | None = None, requires_grad: bool = True) -> str:
        return "fftconv"  # zoo.functional.fftconv: real FFTs of a fast length, fp32 inside

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return self._block(x, key_padding_mask, self.kernel, _FAST)

    def reference_forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """The reference kernel and the direct-sum convolution (O(L^2)), eagerly: the definition."""
        return self._block(x, key_padding_mask, self.reference_kernel, _REFERENCE)

    def _block(self, x: Tensor, key_padding_mask: Tensor | None, kernel: Callable, path: "_Path") -> Tensor:
        self._validate_input(x, key_padding_mask)
        L, causal = x.shape[1], self.config.causal
        k = kernel(L)  # (K, H, L) float32 (float64 for a float64 module)
        u = path.conv_input(x, key_padding_mask, compute_dtype(x, k), path.length(L))  # (B, H, n), zero past L
        y = path.conv(u, k[0] if causal else k, causal=causal)  # (B, H, n): the first L positions are k * u
        y = self.drop(path.conv_output(y, u, self.D, self.config.activation, self._mix_dtype(x), L))  # (B, L, H)
        return path.glu_output(self.out(y), key_padding_mask, x.dtype)  # (B, L, D)

    def _mix_dtype(self, x: Tensor) -> torch.dtype:
        """The dtype the output linear layer computes in: autocast's where it is on, else its weight's."""
        if torch.is_autocast_enabled(x.device.type) and self.out.weight.dtype != torch.float64:
            return torch.get_autocast_dtype(x.device.type)
        return self.out.weight.dtype


def conv_input(x: Tensor, key_padding_mask: Tensor | None, dtype: torch.dtype, n: int) -> Tensor:
    """``(B, L, H)`` -> the convolution's ``(B, H, n)`` input: padding zeroed, in ``dtype``, zero
    padded from ``L`` to ``n`` (the FFT length), contiguous."""
    u = zero_padded(x, key_padding_mask).transpose(1, 2)  # (B, H, L)
    return F.pad(u.to(dtype), (0, n - u.shape[-1])).contiguous()  # (B, H, n)


def conv_output(y: Tensor, u: Tensor, D: Tensor, activation: str, dtype: torch.dtype, L: int) -> Tensor:
    """``act(y + D u)`` on the first ``L`` positions, back to ``(B, L, H)``, contiguous, in ``dtype``
    (the output layer's); ``activation`` names one of :data:`ACTIVATIONS`."""
    y = ACTIVATIONS[activation](y[..., :L] + u[..., :L] * D.to(u.dtype)[:, None])  # (B, H, L)
    return y.transpose(1, 2).to(dtype, memory_format=torch.contiguous_format).contiguous()


def glu_output(z: Tensor, key_padding_mask: Tensor | None, dtype: torch.dtype) -> Tensor:
    """The GLU of the output layer's ``(B, L, 2H)``, in ``dtype``, padded positions zero."""
    return zero_padded(nn.functional.glu(z, dim=-1).to(dtype), key_padding_mask)


# On CUDA each is one fused kernel forward and backward. Eagerly they are a pass over the batch per
# step: a mask, a cast, a transposing copy and a zero padding in; a skip, an activation, a
# transposing copy and a cast out; a GLU, a cast and a mask after the output layer.
_conv_input = CudaCompiled(conv_input, "convolution input layout", dynamic=True)
_conv_output = CudaCompiled(conv_output, "convolution skip and activation", dynamic=True)
_glu_output = CudaCompiled(glu_output, "output GLU", dynamic=True)


class _Path(NamedTuple):
    """The pieces of one way through the block: the fast one, or the definition."""

    conv_input: Callable
    length: Callable[[int], int]  # the convolution's input length for a sequence of L
    conv: Callable
    conv_output: Callable
    glu_output: Callable


_FAST = _Path(_conv_input, fft_size, fftconv_padded, _conv_output, _glu_output)
_REFERENCE = _Path(conv_input, lambda L: L, fftconv_reference, conv_output, glu_output)  # unpadded
