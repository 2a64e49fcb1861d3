"""S4D: diagonal state-space kernels, their initialisers, the recurrence, and the naive reference.

Gu, Gupta, Goel & Re 2022, "On the Parameterization and Initialization of Diagonal State Space
Models" (S4D). Per channel ``h`` a diagonal complex SSM with ``N/2`` conjugate pairs
(only one of each pair is stored; the ``2 Re(...)`` below adds its conjugate)::

    x'(t) = A x(t) + B u(t),   y(t) = 2 Re(C x(t)) + D u(t),   A = diag(lambda),  B = 1

    lambda_n = -exp(log_A_real[h, n]) + i A_imag[h, n]           (Re lambda < 0: stable)
    dt       = exp(log_dt[h])

Discretised with step ``dt`` (``z_n`` the discrete state multiplier, ``C~ = C * B_bar``):

    ZOH:       z_n = exp(dt lambda_n)                    C~_n = C_n (exp(dt lambda_n) - 1) / lambda_n
    bilinear:  z_n = (1 + dt lambda_n / 2) / (1 - dt lambda_n / 2)
                                                         C~_n = C_n dt / (1 - dt lambda_n / 2)

the convolution kernel is (the definition, :func:`s4d_kernel_reference`)::

    K[h, l] = 2 Re( sum_n C~[h, n] z[h, n]^l ),   l = 0 .. L-1

and the recurrence ``x_l = z * x_{l-1} + u_l``, ``y_l = 2 Re(sum_n C~_n x_l[n])`` computes the
same causal convolution step by step (:func:`s4d_step`).

:func:`s4d_kernel` is the fast path: it splits ``l = m c + j`` into chunks of ``c ~ sqrt(L)``
positions and uses ``z^l = z^(m c) z^j``, so the Vandermonde product becomes one batched complex
GEMM of two ``O(H N/2 sqrt(L))`` factors; neither the forward nor the tensors saved for the
backward ever hold the ``(H, N/2, L)`` complex tensor. Everything is computed
in complex64 (complex128 for float64 parameters) whatever the parameter dtype, autocast off.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from zoo.functional.fftconv import compute_dtype

__all__ = [
    "DISCRETIZATIONS",
    "INITS",
    "default_chunk_size",
    "discretize",
    "init_A",
    "log_dt_init",
    "s4d_inv_init",
    "s4d_kernel",
    "s4d_kernel_reference",
    "s4d_lin_init",
    "s4d_step",
    "vandermonde",
    "validate_discretization",
    "validate_dt_range",
    "validate_init",
    "validate_state_size",
    "vandermonde_reference",
]

DISCRETIZATIONS = ("zoh", "bilinear")
INITS = ("lin", "inv")


# --------------------------------------------------------------------------- validation


def validate_state_size(d_state: int) -> None:
    if not isinstance(d_state, int) or d_state < 2 or d_state % 2:
        raise ValueError(
            f"d_state must be an even int >= 2 (the state is N/2 complex conjugate pairs), got "
            f"{d_state!r}; use e.g. d_state=64"
        )


def validate_dt_range(dt_min: float, dt_max: float) -> None:
    if not (dt_min > 0 and dt_max > 0):
        raise ValueError(
            f"dt_min and dt_max must be positive (log dt is drawn from [log dt_min, log dt_max]), "
            f"got dt_min={dt_min}, dt_max={dt_max}; the usual range is dt_min=1e-3, dt_max=1e-1"
        )
    if dt_min > dt_max:
        raise ValueError(f"need dt_min <= dt_max, got dt_min={dt_min} > dt_max={dt_max}; swap them")


def validate_discretization(discretization: str) -> None:
    if discretization not in DISCRETIZATIONS:
        raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {discretization!r}")


def validate_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS} (S4D-Lin, S4D-Inv), got {init!r}")


def _validate_params(log_dt: Tensor, log_A_real: Tensor, A_imag: Tensor, C: Tensor) -> None:
    if log_dt.dim() != 1:
        raise ValueError(f"log_dt must have shape (H,), got {tuple(log_dt.shape)}")
    H = log_dt.shape[0]
    if log_A_real.dim() != 2 or log_A_real.shape[0] != H or A_imag.shape != log_A_real.shape:
        raise ValueError(
            f"log_A_real and A_imag must both have shape (H, N/2) with H={H}, got "
            f"{tuple(log_A_real.shape)} and {tuple(A_imag.shape)}"
        )
    N2 = log_A_real.shape[1]
    if C.is_complex():
        ok = C.dim() >= 2 and tuple(C.shape[-2:]) == (H, N2)
    else:
        ok = C.dim() >= 3 and tuple(C.shape[-3:]) == (H, N2, 2)
    if not ok:
        raise ValueError(
            f"C must have shape (..., H, N/2, 2) (complex as a real view, torch.view_as_real) or "
            f"(..., H, N/2) complex with H={H}, N/2={N2}; got {tuple(C.shape)} {C.dtype}"
        )


# --------------------------------------------------------------------------- initialisers


def s4d_lin_init(H: int, d_state: int) -> tuple[Tensor, Tensor]:
    """S4D-Lin: ``lambda_n = -1/2 + i pi n``, n = 0 .. N/2-1. Returns ``(log_A_real, A_imag)``, each (H, N/2)."""
    validate_state_size(d_state)
    n = torch.arange(d_state // 2, dtype=torch.float32)  # (N/2,)
    log_A_real = torch.full((H, d_state // 2), math.log(0.5))  # (H, N/2)
    A_imag = (math.pi * n).expand(H, -1).clone()  # (H, N/2)
    return log_A_real, A_imag


def s4d_inv_init(H: int, d_state: int) -> tuple[Tensor, Tensor]:
    """S4D-Inv: ``lambda_n = -1/2 + i (N/pi) (N/(2n+1) - 1)``. Returns ``(log_A_real, A_imag)``, each (H, N/2)."""
    validate_state_size(d_state)
    N = d_state
    n = torch.arange(N // 2, dtype=torch.float32)  # (N/2,)
    log_A_real = torch.full((H, N // 2), math.log(0.5))  # (H, N/2)
    A_imag = ((N / math.pi) * (N / (2 * n + 1) - 1)).expand(H, -1).clone()  # (H, N/2)
    return log_A_real, A_imag


def init_A(init: str, H: int, d_state: int) -> tuple[Tensor, Tensor]:
    """``(log_A_real, A_imag)`` for ``init`` in ``("lin", "inv")``."""
    validate_init(init)
    return s4d_lin_init(H, d_state) if init == "lin" else s4d_inv_init(H, d_state)


def log_dt_init(H: int, dt_min: float, dt_max: float, generator: torch.Generator | None = None) -> Tensor:
    """``(H,)`` log step sizes drawn uniformly from ``[log dt_min, log dt_max]``."""
    validate_dt_range(dt_min, dt_max)
    r = torch.rand(H, generator=generator)  # (H,)
    return math.log(dt_min) + r * (math.log(dt_max) - math.log(dt_min))


# --------------------------------------------------------------------------- discretisation


def discretize(
    log_dt: Tensor, log_A_real: Tensor, A_imag: Tensor, C: Tensor, discretization: str = "zoh"
) -> tuple[Tensor, Tensor]:
    """``(log_z, C~)``: log of the discrete state multiplier ``(H, N/2)`` and ``C~ = C B_bar`` ``(..., H, N/2)``.

    Both complex (complex64, or complex128 for float64 parameters). ``z = exp(log_z)``; see the
    module docstring for the formulas.
    """
    _validate_params(log_dt, log_A_real, A_imag, C)
    validate_discretization(discretization)
    wide = C.dtype == torch.complex128 or compute_dtype(log_dt, log_A_real, A_imag, C) == torch.float64
    real, cplx = (torch.float64, torch.complex128) if wide else (torch.float32, torch.complex64)
    with torch.autocast(device_type=log_dt.device.type, enabled=False):
        if C.is_complex():
            Ct = C.to(cplx)  # (..., H, N/2)
        else:
            Ct = torch.view_as_complex(C.to(real).contiguous())  # (..., H, N/2)
        dt = torch.exp(log_dt.to(real))[:, None]  # (H, 1)
        A = torch.complex(-torch.exp(log_A_real.to(real)), A_imag.to(real))  # (H, N/2)
        dtA = dt * A  # (H, N/2)
        if discretization == "zoh":
            log_z = dtA
            C_tilde = Ct * torch.expm1(dtA) / A  # (..., H, N/2); expm1: no cancellation at small dt
        else:
            log_z = torch.log((1.0 + dtA / 2) / (1.0 - dtA / 2))
            C_tilde = Ct * dt / (1.0 - dtA / 2)  # (..., H, N/2)
    return log_z, C_tilde


# --------------------------------------------------------------------------- Vandermonde product


def default_chunk_size(L: int) -> int:
    """The power of two nearest above ``sqrt(L)``: balances the two factors of :func:`vandermonde`."""
    return 1 << math.ceil(math.log2(math.sqrt(L))) if L > 1 else 1


def vandermonde(C_tilde: Tensor, log_z: Tensor, L: int, *, chunk_size: int | None = None) -> Tensor:
    """``K[..., h, l] = 2 Re(sum_n C~[..., h, n] exp(log_z[h, n] l))`` without the (H, N/2, L) tensor.

    Writes ``l = m c + j`` (chunk ``m`` of ``c = chunk_size`` positions, offset ``j``), so that
    ``z^l = z^(m c) z^j``: the chunk starts fold into the coefficients and one factor serves every
    chunk::

        P[h, n, j]   = exp(log_z[h, n] j)                  (H, N/2, c)      j < c
        Q[h, n, m]   = exp(log_z[h, n] m c)                (H, N/2, M)      M = ceil(L / c)
        K[h, m, j]   = 2 Re( sum_n (C~[h, n] Q[h, n, m]) P[h, n, j] )     one batched complex GEMM

    Both exponents are evaluated directly (no accumulated powers), so the result matches the
    materialised Vandermonde to rounding. Extra memory, forward and for backward, is
    ``O(H N/2 (c + M))`` (``O(H N/2 sqrt(L))`` at the default ``c``) plus the ``(H, L)`` output,
    and plain autograd differentiates it.

    Args:
        C_tilde: ``(..., H, N/2)`` complex.
        log_z: ``(H, N/2)`` complex.
        L: kernel length.
        chunk_size: ``c``; default :func:`default_chunk_size`.

    Returns:
        ``(..., H, L)`` real kernel.

    Equivalent PyTorch code (:func:`vandermonde_reference`, the definition)::

        V = torch.exp(log_z[..., None] * torch.arange(L))        # (H, N/2, L)
        K = 2 * torch.einsum("...hn,hnl->...hl", C_tilde, V).real
    """
    if not isinstance(L, int) or L < 1:
        raise ValueError(f"kernel length L must be an int >= 1, got {L!r}")
    c = chunk_size if chunk_size is not None else default_chunk_size(L)
    if not isinstance(c, int) or c < 1:
        raise ValueError(f"chunk_size must be None or an int >= 1, got {chunk_size!r}")
    c = min(c, L)
    M = -(-L // c)
    real = log_z.real.dtype
    log_z = log_z.to(C_tilde.dtype)
    P = torch.exp(log_z[..., None] * torch.arange(c, device=log_z.device, dtype=real))  # (H, N/2, c)
    Q = torch.exp(log_z[..., None] * (torch.arange(M, device=log_z.device, dtype=real) * c))  # (H, N/2, M)
    CQ = C_tilde[..., None] * Q  # (..., H, N/2, M)
    K = torch.einsum("...hnm,hnc->...hmc", CQ, P)  # (..., H, M, c)
    return 2 * K.flatten(-2)[..., :L].real  # (..., H, L)


def vandermonde_reference(C_tilde: Tensor, log_z: Tensor, L: int) -> Tensor:
    """The definition of :func:`vandermonde`: materialises the ``(H, N/2, L)`` Vandermonde matrix."""
    pos = torch.arange(L, device=log_z.device, dtype=log_z.real.dtype)  # (L,)
    V = torch.exp(log_z[..., None] * pos)  # (H, N/2, L)
    return 2 * torch.einsum("...hn,hnl->...hl", C_tilde, V).real  # (..., H, L)


# --------------------------------------------------------------------------- kernels


def s4d_kernel(
    log_dt: Tensor,
    log_A_real: Tensor,
    A_imag: Tensor,
    C: Tensor,
    L: int,
    *,
    discretization: str = "zoh",
    chunk_size: int | None = None,
) -> Tensor:
    """The S4D convolution kernel ``K[..., h, l] = 2 Re(sum_n C~_n z_n^l)``, chunked over ``l``.

    Args:
        log_dt: ``(H,)`` log step sizes.
        log_A_real: ``(H, N/2)``; ``Re lambda = -exp(log_A_real)``.
        A_imag: ``(H, N/2)``; ``Im lambda``.
        C: ``(..., H, N/2, 2)`` real view of the complex output matrix (or ``(..., H, N/2)``
            complex); leading dims give several kernels sharing A and dt (e.g. 2 directions).
        L: kernel length.
        discretization: ``"zoh"`` or ``"bilinear"``.
        chunk_size: positions per chunk (default about ``sqrt(L)``, see :func:`vandermonde`).

    Returns:
        ``(..., H, L)`` kernel in float32 (float64 for float64 parameters).

    Equivalent PyTorch code (:func:`s4d_kernel_reference`)::

        log_z, C_tilde = discretize(log_dt, log_A_real, A_imag, C, discretization)
        V = torch.exp(log_z[..., None] * torch.arange(L))            # (H, N/2, L)
        K = 2 * torch.einsum("...hn,hnl->...hl", C_tilde, V).real
    """
    log_z, C_tilde = discretize(log_dt, log_A_real, A_imag, C, discretization)
    with torch.autocast(device_type=log_dt.device.type, enabled=False):
        return vandermonde(C_tilde, log_z, L, chunk_size=chunk_size)


def s4d_kernel_reference(
    log_dt: Tensor, log_A_real: Tensor, A_imag: Tensor, C: Tensor, L: int, *, discretization: str = "zoh"
) -> Tensor:
    """The definition of :func:`s4d_kernel`: the ``(H, N/2, L)`` Vandermonde matrix materialised."""
    log_z, C_tilde = discretize(log_dt, log_A_real, A_imag, C, discretization)
    with torch.autocast(device_type=log_dt.device.type, enabled=False):
        return vandermonde_reference(C_tilde, log_z, L)


# --------------------------------------------------------------------------- recurrence


def s4d_step(u_t: Tensor, state: Tensor, z: Tensor, C_tilde: Tensor) -> tuple[Tensor, Tensor]:
    """One recurrent step: ``x = z * x + u_t``, ``y_t = 2 Re(sum_n C~_n x_n)``.

    Args:
        u_t: ``(B, H)`` input at one position (real).
        state: ``(B, H, N/2)`` complex state (zeros at the start, see the S4D layer's
            ``default_state``).
        z: ``(H, N/2)`` complex discrete multiplier ``exp(log_z)``.
        C_tilde: ``(H, N/2)`` complex.

    Returns:
        ``(y_t, state)``: ``(B, H)`` real output in the state's real dtype, and the new state.
        Over a sequence the outputs equal the causal convolution with :func:`s4d_kernel`.
    """
    state = z * state + u_t.to(state.dtype)[..., None]  # (B, H, N/2)
    y_t = 2 * torch.einsum("hn,bhn->bh", C_tilde, state).real  # (B, H)
    return y_t, state
