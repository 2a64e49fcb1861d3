"""S4D: a diagonal state-space layer applied as a long FFT convolution.

Gu, Gupta, Goel & Re 2022, "On the Parameterization and Initialization of Diagonal State Space
Models". The block (no input projection, as in the S4 code base)::

    u = x^T                                   (B, H, L),  H = d_model channels, one SSM each
    y = K * u + D u                           K from zoo.functional.ssm.s4d_kernel, FFT conv
    y = dropout(activation(y))
    out = GLU(Linear(H -> 2H)(y))             (B, L, H)

``causal=True`` (the default) is a unidirectional SSM: output ``i`` depends on ``x[<= i]``, and
:meth:`S4D.step` runs the same layer as a recurrence. ``causal=False`` is the bidirectional
variant: a second kernel (its own C, shared A and dt) runs backwards in time, see
:mod:`zoo.functional.fftconv` for the exact definition (the backward kernel starts at lag 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from registry import register
from zoo.base import MixerConfig, config_field
from zoo.functional.ssm import (
    discretize,
    init_A,
    log_dt_init,
    s4d_kernel,
    s4d_kernel_reference,
    s4d_step,
    validate_discretization,
    validate_dt_range,
    validate_init,
    validate_state_size,
)
from zoo.layers._common import ACTIVATIONS, ConvBlock, glu_output


@dataclass
class S4DConfig(MixerConfig):
    """S4D: diagonal state-space model as a long FFT convolution (Gu et al. 2022)."""

    d_state: int = config_field(64, "state size N per channel (even: N/2 complex conjugate pairs)")
    init: str = config_field("lin", "A initialisation: lin (S4D-Lin, lambda_n = -1/2 + i pi n) | inv (S4D-Inv)")
    dt_min: float = config_field(1e-3, "smallest initial step size dt (log dt uniform in [log dt_min, log dt_max])")
    dt_max: float = config_field(1e-1, "largest initial step size dt")
    discretization: str = config_field("zoh", "zoh (zero-order hold) | bilinear")
    causal: bool = config_field(
        True, "True: unidirectional (causal) SSM; False: bidirectional (a second, backward kernel)"
    )
    activation: str = config_field("gelu", "activation after the SSM: " + " | ".join(ACTIVATIONS))
    dropout: float = config_field(0.0, "dropout after the activation")
    lr: float = config_field(1e-3, "learning rate of A and log dt (weight decay 0), returned by param_groups()")

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_state_size(self.d_state)
        validate_init(self.init)
        validate_dt_range(self.dt_min, self.dt_max)
        validate_discretization(self.discretization)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.lr >= 0.0:
            raise ValueError(f"lr (the SSM parameters' learning rate) must be >= 0, got {self.lr}")


@register("s4d", S4DConfig)
class S4D(ConvBlock):
    """S4D layer: per-channel diagonal SSM convolution, D skip, activation, GLU output mixing.

    Parameters (H = d_model, N = d_state): ``log_dt (H,)``, ``log_A_real (H, N/2)``,
    ``A_imag (H, N/2)`` (these three get ``config.lr`` and no weight decay through
    :meth:`param_groups`), ``C (K, H, N/2, 2)`` (complex as a real view, K = 1 causal or 2
    bidirectional), ``D (H,)``, and the output linear layer.

    Kernel generation and the FFT convolution always run in float32 (autocast off), also for
    bfloat16 inputs or a bfloat16 module; the output has the input's dtype.
    """

    supports_causal = True
    supports_padding_mask = True
    complexity = "L log L"
    needs_max_len = False
    config_class = S4DConfig

    def __init__(self, config: S4DConfig) -> None:
        super().__init__(config)
        H, N = config.d_model, config.d_state
        n_kernels = 1 if config.causal else 2
        log_A_real, A_imag = init_A(config.init, H, N)
        self.log_dt = nn.Parameter(log_dt_init(H, config.dt_min, config.dt_max))  # (H,)
        self.log_A_real = nn.Parameter(log_A_real)  # (H, N/2)
        self.A_imag = nn.Parameter(A_imag)  # (H, N/2)
        C = torch.randn(n_kernels, H, N // 2, dtype=torch.cfloat)  # (K, H, N/2) complex
        self.C = nn.Parameter(torch.view_as_real(C))  # (K, H, N/2, 2)

    def kernel(self, L: int) -> Tensor:
        """The SSM convolution kernels ``(K, H, L)`` in float32 (chunked generation)."""
        return s4d_kernel(self.log_dt, self.log_A_real, self.A_imag, self.C, L,
                          discretization=self.config.discretization)

    def reference_kernel(self, L: int) -> Tensor:
        """The same kernels from the materialised Vandermonde tensor (the definition)."""
        return s4d_kernel_reference(self.log_dt, self.log_A_real, self.A_imag, self.C, L,
                                    discretization=self.config.discretization)

    # ------------------------------------------------------------------ recurrent mode

    def default_state(self, batch: int) -> Tensor:
        """The zero state ``(batch, H, N/2)`` complex (complex128 for a float64 module)."""
        dtype = torch.complex128 if self.log_dt.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch, self.d_model, self.config.d_state // 2, dtype=dtype, device=self.log_dt.device)

    def step(self, u_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One position of the causal layer as a recurrence.

        Args:
            u_t: ``(B, D)`` input at the current position.
            state: ``(B, H, N/2)`` complex, from :meth:`default_state` or the previous step.

        Returns:
            ``(y_t, state)``: ``(B, D)`` output (dtype of ``u_t``) and the next state. Stepping
            through ``x[:, 0], x[:, 1], ...`` reproduces ``forward(x)`` (no padding mask).
        """
        if not self.config.causal:
            raise RuntimeError(
                "S4D.step: the bidirectional layer (causal=False) has no recurrent mode; build it with causal=True"
            )
        if u_t.dim() != 2 or u_t.shape[-1] != self.d_model:
            raise ValueError(f"S4D.step: u_t must have shape (B, D={self.d_model}), got {tuple(u_t.shape)}")
        expected = (u_t.shape[0], self.d_model, self.config.d_state // 2)
        if tuple(state.shape) != expected or not state.is_complex():
            raise ValueError(
                f"S4D.step: state must be complex of shape {expected}, got {tuple(state.shape)} {state.dtype}; "
                "start from layer.default_state(batch)"
            )
        log_z, C_tilde = discretize(self.log_dt, self.log_A_real, self.A_imag, self.C[0], self.config.discretization)
        y, state = s4d_step(u_t, state, torch.exp(log_z).to(state.dtype), C_tilde.to(state.dtype))  # (B, H)
        y = y.to(u_t.dtype) + u_t * self.D.to(u_t.dtype)  # (B, H)
        y = self.drop(ACTIVATIONS[self.config.activation](y))
        return glu_output(self.out(y.to(self._mix_dtype(y))), None, u_t.dtype), state  # (B, D)

    # ------------------------------------------------------------------ optimisation

    def param_groups(self) -> list[dict[str, Any]]:
        """A, log dt: ``lr=config.lr`` and ``weight_decay=0``; every other parameter: the defaults."""
        ssm = [self.log_dt, self.log_A_real, self.A_imag]
        ssm_ids = {id(p) for p in ssm}
        rest = [p for p in self.parameters() if id(p) not in ssm_ids]
        return [
            {"params": rest},
            {"params": ssm, "lr": self.config.lr, "weight_decay": 0.0},
        ]

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"d_model={c.d_model}, d_state={c.d_state}, init={c.init}, discretization={c.discretization}, "
            f"causal={c.causal}"
        )
