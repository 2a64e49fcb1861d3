"""Long convolutions by FFT (causal and bidirectional), and the direct sum that defines them.

Used by the S4D layer (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal
State Space Models") and the long-convolution layers (Fu et al. 2023, "Simple Hardware-Efficient
Long Convolutions for Sequence Modeling"; Poli et al. 2023, "Hyena Hierarchy").

Definition (``u: (B, H, L)``, ``i``, ``j`` positions, each channel ``h`` on its own):

* **causal** (``k: (H, L)``)::

      y[b, h, i] = sum_{j <= i} k[h, i - j] * u[b, h, j]

* **bidirectional** (``k: (2, H, L)``: ``k[0]`` forward kernel, ``k[1]`` backward kernel)::

      y[b, h, i] = sum_{j <= i} k[0, h, i - j] * u[b, h, j]
                 + sum_{j >  i} k[1, h, j - i - 1] * u[b, h, j]

  The backward kernel starts at lag 1 (``k[1, h, 0]`` weighs the NEXT position), so lag 0 is
  counted once, by the forward kernel, and ``k[1, h, L-1]`` is never used. This is the
  bidirectional kernel of the S4 code base (forward kernel, then the flipped backward kernel,
  in one circular kernel of length 2L).

:func:`fftconv_reference` computes these sums directly (O(L^2) memory) and IS the semantics;
:func:`fftconv` is tested against it.

Precision: both compute in ``float32`` whatever the input dtype (``float64`` for ``float64``
inputs), with autocast switched off inside, and return the input's dtype. cuFFT only runs half
precision on power-of-two sizes and loses accuracy at long L, so low-precision inputs are upcast.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.functional.compiled import CudaCompiled

__all__ = ["compute_dtype", "fft_size", "fftconv", "fftconv_padded", "fftconv_reference", "next_fast_len"]


@functools.lru_cache(maxsize=256)
def next_fast_len(n: int) -> int:
    """The smallest EVEN size ``>= n`` of the form ``2 * 2^a 3^b 5^c`` (fast for every FFT library)."""
    if n < 1:
        raise ValueError(f"next_fast_len: n must be >= 1, got {n}")
    half = (n + 1) // 2
    best = 1 << max(half - 1, 0).bit_length()  # a power of two >= half
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < half:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return 2 * best


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32, or float64 when any input is float64: the dtype every conv/kernel computes in."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# --------------------------------------------------------------------------- validation


def _validate_conv_args(u: Tensor, k: Tensor, causal: bool, who: str) -> None:
    if not isinstance(u, Tensor) or not isinstance(k, Tensor):
        raise TypeError(f"{who}: u and k must be tensors, got {type(u).__name__} and {type(k).__name__}")
    if u.dim() != 3:
        raise ValueError(
            f"{who}: u must have shape (B, H, L), got {tuple(u.shape)}; a layer's (B, L, D) input "
            "is passed as x.transpose(1, 2)"
        )
    if not u.is_floating_point() or not k.is_floating_point():
        raise TypeError(f"{who}: u and k must be floating point, got {u.dtype} and {k.dtype}")
    _, H, L = u.shape
    want = (H, L) if causal else (2, H, L)
    if tuple(k.shape) != want:
        hint = (
            "causal=True takes one kernel per channel (H, L)"
            if causal
            else "causal=False takes (2, H, L): forward kernel k[0] and backward kernel k[1]"
        )
        raise ValueError(
            f"{who}: k must have shape {want} for u of shape {tuple(u.shape)}, got {tuple(k.shape)}; {hint}"
        )
    if u.device != k.device:
        raise ValueError(f"{who}: u is on {u.device}, k on {k.device}; move them to one device")


# --------------------------------------------------------------------------- fast path


def fftconv(u: Tensor, k: Tensor, *, causal: bool = True) -> Tensor:
    """Per-channel long convolution of ``u`` with ``k`` by FFT (see the module docstring).

    Args:
        u: ``(B, H, L)`` input.
        k: ``(H, L)`` kernels (``causal=True``), or ``(2, H, L)`` forward and backward kernels
            (``causal=False``, bidirectional).
        causal: output ``i`` depends on inputs ``j <= i`` only.

    Returns:
        ``(B, H, L)`` output in ``u.dtype``. The FFTs run in float32 (float64 for float64
        inputs), zero-padded to ``next_fast_len(2 L)``: O(B H L log L).

    Equivalent PyTorch code (the definition, see :func:`fftconv_reference`)::

        i = torch.arange(L)[:, None]; j = torch.arange(L)[None, :]
        T = torch.where(j <= i, k[:, (i - j).clamp(min=0)], 0.0)              # (H, L, L) causal
        if not causal:
            T = torch.where(j <= i, k[0][:, (i - j).clamp(min=0)],
                            k[1][:, (j - i - 1).clamp(min=0)])                # (H, L, L)
        y = torch.einsum("hij,bhj->bhi", T, u)
    """
    _validate_conv_args(u, k, causal, "fftconv")
    L = u.shape[-1]
    n = fft_size(L)
    with torch.autocast(device_type=u.device.type, enabled=False):
        u_pad = F.pad(u.to(compute_dtype(u, k)), (0, n - L))  # (B, H, n)
        y = fftconv_padded(u_pad, k, causal=causal)[..., :L]  # (B, H, L)
    return y.to(u.dtype)


def fft_size(L: int) -> int:
    """The FFT length of a length-``L`` convolution: ``next_fast_len(2 L)`` (no circular wrap-around)."""
    return next_fast_len(2 * L)


def fftconv_padded(u: Tensor, k: Tensor, *, causal: bool = True) -> Tensor:
    """:func:`fftconv` on an input already zero padded to the FFT length, for callers that fuse
    the padding (and the slicing of the result) into their own passes (the S4 block).

    Args:
        u: ``(B, H, n)``, ``n = fft_size(L)``, zero at positions ``>= L``; float32 or float64.
        k: ``(H, L)`` or ``(2, H, L)`` kernels as for :func:`fftconv`.

    Returns:
        ``(B, H, n)`` in the compute dtype (:func:`compute_dtype`): positions ``< L`` are
        ``fftconv(u[..., :L], k, causal)``, the rest is the circular tail (to be sliced off).
    """
    L = k.shape[-1]
    n = fft_size(L)
    if u.dim() != 3 or u.shape[-1] != n:
        raise ValueError(f"fftconv_padded: u must have shape (B, H, fft_size(L) = {n}) for kernels of {L} taps, "
                         f"got {tuple(u.shape)}")
    dtype = compute_dtype(u, k)
    with torch.autocast(device_type=u.device.type, enabled=False):
        kf = k.to(dtype)
        if causal:
            k_circ = kf  # (H, L), zero padded to n by rfft
        else:
            # one circular kernel: lags 0..L-1 forward, lags -1..-(L-1) at n-1..n-L+1 backward
            back = kf[1, :, : L - 1].flip(-1)  # (H, L-1): back[..., m] = k1[L-2-m]
            k_circ = torch.cat([kf[0], kf.new_zeros(kf.shape[1], n - 2 * L + 1), back], dim=-1)  # (H, n)
        if u.shape[0] == 0:  # an empty batch: an empty output (MKL's FFT refuses zero rows)
            return u.to(dtype, copy=True)  # (0, H, n)
        return _CircularConv.apply(u.to(dtype), k_circ)  # (B, H, n)


class _CircularConv(torch.autograd.Function):
    """The circular convolution ``y = irfft(rfft(u) * rfft(k_circ, n), n)`` of length
    ``n = u.shape[-1]``, with its adjoint written out.

    The map is real and linear, so its gradients are circular cross-correlations:
    ``du = irfft(rfft(dy) * conj(K), n)`` and ``dk = irfft(sum_b rfft(dy) * conj(U), n)[..., :taps]``,
    three real FFTs of the batch, where autograd through ``rfft`` / ``irfft`` runs a full-length
    complex FFT, zero-filled copies and conjugations of the batch's spectra. Tested against the
    direct sum (float64) and by gradcheck.
    """

    @staticmethod
    def forward(ctx, u: Tensor, k_circ: Tensor) -> Tensor:
        n = u.shape[-1]
        u_f = torch.fft.rfft(u)  # (B, H, n/2+1)
        k_f = torch.fft.rfft(k_circ, n=n)  # (H, n/2+1)
        ctx.save_for_backward(u_f, k_f)
        ctx.taps = k_circ.shape[-1]
        return torch.fft.irfft(u_f * k_f, n=n)  # (B, H, n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: Tensor):
        u_f, k_f = ctx.saved_tensors
        n = dy.shape[-1]
        g_f = torch.fft.rfft(dy)  # (B, H, n/2+1)
        du = dk = None
        if ctx.needs_input_grad[0]:
            du = torch.fft.irfft(g_f * k_f.conj(), n=n)  # (B, H, n)
        if ctx.needs_input_grad[1]:
            dk = torch.fft.irfft(_cross_spectrum(g_f, u_f), n=n)[..., : ctx.taps]  # (H, taps)
        return du, dk


def _cross_spectrum_real(g: Tensor, u: Tensor) -> Tensor:
    """``sum_b g conj(u)`` on real views ``(B, H, m, 2)`` -> ``(H, m, 2)`` (one fused reduction on CUDA)."""
    re = (g[..., 0] * u[..., 0] + g[..., 1] * u[..., 1]).sum(0)
    im = (g[..., 1] * u[..., 0] - g[..., 0] * u[..., 1]).sum(0)
    return torch.stack([re, im], dim=-1)


_compiled_cross_spectrum = CudaCompiled(_cross_spectrum_real, "FFT-convolution kernel gradient", dynamic=True)


def _cross_spectrum(g_f: Tensor, u_f: Tensor) -> Tensor:
    """``sum_b g_f[b] * conj(u_f[b])``: ``(B, H, m)`` complex spectra -> ``(H, m)``."""
    cross = _compiled_cross_spectrum(torch.view_as_real(g_f), torch.view_as_real(u_f))  # (H, m, 2)
    return torch.view_as_complex(cross.contiguous())


# --------------------------------------------------------------------------- reference


def conv_matrix(k: Tensor, causal: bool = True) -> Tensor:
    """The ``(H, L, L)`` Toeplitz matrix ``T`` with ``y[b, h] = T[h] @ u[b, h]`` (the definition)."""
    L = k.shape[-1]
    idx = torch.arange(L, device=k.device)
    i, j = idx[:, None], idx[None, :]
    fwd = k[0] if not causal else k
    T = torch.where(j <= i, fwd[:, (i - j).clamp(min=0)], fwd.new_zeros(()))  # (H, L, L)
    if not causal:
        T = T + torch.where(j > i, k[1][:, (j - i - 1).clamp(min=0)], fwd.new_zeros(()))
    return T


def fftconv_reference(u: Tensor, k: Tensor, causal: bool = True) -> Tensor:
    """The definition of :func:`fftconv`: the direct sum, with the Toeplitz matrix materialised.

    Computes in float32 (float64 for float64 inputs) and returns ``u.dtype``. O(H L^2) memory:
    a test oracle, not a kernel.
    """
    _validate_conv_args(u, k, causal, "fftconv_reference")
    dtype = compute_dtype(u, k)
    with torch.autocast(device_type=u.device.type, enabled=False):
        T = conv_matrix(k.to(dtype), causal)  # (H, L, L)
        y = torch.einsum("hij,bhj->bhi", T, u.to(dtype))  # (B, H, L)
    return y.to(u.dtype)
