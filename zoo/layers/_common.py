"""Pieces the layer files share: activations and the S4 convolution block."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from zoo.base import SequenceMixer, zero_padded
from zoo.functional.fftconv import fftconv, fftconv_reference

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity}


class ConvBlock(SequenceMixer):
    """The S4 block around a per-channel long convolution (S4D, long_conv):

        y = GLU(Linear(dropout(act(k * u + D u))))

    The config needs ``d_model``, ``causal``, ``activation`` and ``dropout``. Subclasses provide ``kernel(L)`` (a method or a submodule; ``(K, H, L)`` float32, K = 1 causal or 2 bidirectional) and
    ``reference_kernel(L)`` (the same kernel by its definition).
    """

    def __init__(self, config) -> None:
        super().__init__(config)
        H = config.d_model
        self.D = nn.Parameter(torch.randn(H))  # (H,) skip connection
        self.activation = ACTIVATIONS[config.activation]()
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(H, 2 * H)  # followed by GLU

    # ``kernel`` is not declared here: a subclass may provide it as a method or as a submodule.

    def reference_kernel(self, L: int) -> Tensor:
        return self.kernel(L)

    def kernel_name(self, x: Tensor, key_padding_mask: Tensor | None = None, requires_grad: bool = True) -> str:
        return "fftconv"  # zoo.functional.fftconv: real FFTs of a fast length, fp32 inside

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return self._block(x, key_padding_mask, self.kernel, fftconv)

    def reference_forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """The reference kernel and the direct-sum convolution (O(L^2)): the definition."""
        return self._block(x, key_padding_mask, self.reference_kernel, fftconv_reference)

    def _block(self, x: Tensor, key_padding_mask: Tensor | None, kernel: Callable, conv: Callable) -> Tensor:
        self._validate_input(x, key_padding_mask)
        causal = self.config.causal
        k = kernel(x.shape[1])  # (K, H, L)
        u = zero_padded(x, key_padding_mask).transpose(1, 2)  # (B, H, L)
        y = conv(u, k[0] if causal else k, causal=causal)  # (B, H, L), fp32 inside
        y = y + u * self.D.to(u.dtype)[:, None]  # (B, H, L)
        y = self.drop(self.activation(y)).transpose(1, 2)  # (B, L, H)
        out = self._mix(y).to(x.dtype)  # (B, L, D)
        return zero_padded(out, key_padding_mask)

    def _mix(self, y: Tensor) -> Tensor:
        """Output linear + GLU, in the module's dtype unless autocast decides otherwise."""
        return nn.functional.glu(self.out(y.to(self.out.weight.dtype)), dim=-1)  # (B, L, D)
