"""FFT convolution vs its definition (the direct sum), precision policy, and argument checks."""

import warnings

import pytest
import torch
from conftest import rel_err

from zoo.functional.fftconv import conv_matrix, fft_size, fftconv, fftconv_padded, fftconv_reference, next_fast_len

LENGTHS = [1, 2, 7, 64, 100, 257]


def loop_conv(u: torch.Tensor, k: torch.Tensor, causal: bool) -> torch.Tensor:
    """The module docstring's sums, written out position by position (fp64)."""
    u, k = u.double(), k.double()
    L = u.shape[-1]
    y = torch.zeros_like(u)
    for i in range(L):
        for j in range(L):
            if j <= i:
                y[..., i] += (k if causal else k[0])[:, i - j] * u[..., j]
            elif not causal:
                y[..., i] += k[1][:, j - i - 1] * u[..., j]
    return y


def kernels(H: int, L: int, causal: bool, dtype=torch.float32) -> torch.Tensor:
    return torch.randn((H, L) if causal else (2, H, L), dtype=dtype)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("L", [1, 2, 5, 13])
def test_reference_is_the_documented_sum(causal, L):
    u = torch.randn(2, 3, L, dtype=torch.float64)
    k = kernels(3, L, causal, torch.float64)
    assert rel_err(fftconv_reference(u, k, causal), loop_conv(u, k, causal)) < 1e-12


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("L", LENGTHS)
def test_fft_matches_direct_sum_fp32(causal, L):
    u = torch.randn(3, 4, L)
    k = kernels(4, L, causal)
    y = fftconv(u, k, causal=causal)
    assert y.dtype == torch.float32 and y.shape == u.shape
    assert rel_err(y, fftconv_reference(u.double(), k.double(), causal)) < 1e-5


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_fft_matches_direct_sum_fp64_and_gradients(causal):
    L = 50
    u = torch.randn(2, 3, L, dtype=torch.float64, requires_grad=True)
    k = kernels(3, L, causal, torch.float64).requires_grad_()
    dy = torch.randn(2, 3, L, dtype=torch.float64)
    y = fftconv(u, k, causal=causal)
    assert y.dtype == torch.float64  # float64 inputs are computed in float64
    y_ref = fftconv_reference(u, k, causal)
    assert rel_err(y, y_ref) < 1e-12
    g = torch.autograd.grad(y, (u, k), dy)
    g_ref = torch.autograd.grad(y_ref, (u, k), dy)
    for a, b in zip(g, g_ref):
        assert rel_err(a, b) < 1e-12


def test_causal_output_ignores_the_future():
    """Up to FFT round-off, which scales with the largest value in the whole sequence."""
    L, t = 64, 20
    u = torch.randn(2, 3, L)
    k = kernels(3, L, True)
    u2 = u.clone()
    u2[..., t + 1 :] = 100 * torch.randn_like(u2[..., t + 1 :])
    y, y2 = fftconv(u, k), fftconv(u2, k)
    assert (y2[..., : t + 1] - y[..., : t + 1]).abs().max() < 1e-6 * y2.abs().max()
    assert rel_err(y2[..., t + 1 :], y[..., t + 1 :]) > 1e-1


def test_backward_kernel_starts_at_lag_one():
    """An impulse at j: forward kernel at i >= j (lag 0 included), backward kernel at i < j from k[1][0]."""
    L, j = 9, 4
    u = torch.zeros(1, 1, L, dtype=torch.float64)
    u[..., j] = 1.0
    k = torch.stack([torch.arange(1.0, L + 1), -torch.arange(1.0, L + 1)]).double()[:, None, :]  # (2, 1, L)
    y = fftconv(u, k, causal=False)[0, 0]
    expected = [-(j - i) for i in range(j)] + [i - j + 1 for i in range(j, L)]
    assert torch.allclose(y, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_conv_matrix_is_toeplitz():
    k = kernels(2, 6, False, torch.float64)
    T = conv_matrix(k, causal=False)
    for i in range(6):
        for j in range(6):
            want = k[0, :, i - j] if j <= i else k[1, :, j - i - 1]
            assert torch.equal(T[:, i, j], want)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_bf16_input_is_computed_in_fp32(causal):
    L = 300
    u = torch.randn(2, 4, L).bfloat16()
    k = kernels(4, L, causal)
    y = fftconv(u, k, causal=causal)
    assert y.dtype == torch.bfloat16
    # the same fp32 computation, rounded once at the end: identical bits
    assert torch.equal(y, fftconv(u.float(), k, causal=causal).bfloat16())
    assert rel_err(y, fftconv_reference(u.double(), k.double(), causal)) < 1e-2
    # a bf16 kernel too
    k16 = k.bfloat16()
    assert torch.equal(fftconv(u, k16, causal=causal), fftconv(u.float(), k16.float(), causal=causal).bfloat16())


def test_ffts_run_in_fp32_under_autocast_and_for_bf16(monkeypatch):
    seen = []
    for name in ("rfft", "irfft"):
        original = getattr(torch.fft, name)

        def spy(x, *args, _original=original, **kwargs):
            seen.append(x.dtype)
            return _original(x, *args, **kwargs)

        monkeypatch.setattr(torch.fft, name, spy)
    u, k = torch.randn(2, 3, 40), torch.randn(3, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fftconv(u, k)
    assert y.dtype == torch.float32
    assert torch.equal(y, fftconv(u, k))  # autocast changes nothing
    fftconv(u.bfloat16(), k.bfloat16(), causal=True)
    assert seen and set(seen) <= {torch.float32, torch.complex64}, seen


def test_next_fast_len():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 400):
        m = next_fast_len(n)
        assert m >= n and m % 2 == 0 and smooth(m)
        assert not any(smooth(c) for c in range(max(n, 2), m) if c % 2 == 0), (n, m)
    assert next_fast_len(2 * 65536) == 2 * 65536


def test_bad_arguments_raise_clearly():
    u = torch.randn(2, 3, 10)
    with pytest.raises(ValueError, match=r"\(B, H, L\)"):
        fftconv(torch.randn(3, 10), torch.randn(3, 10))
    with pytest.raises(ValueError, match=r"\(2, H, L\)"):
        fftconv(u, torch.randn(3, 10), causal=False)
    with pytest.raises(ValueError, match=r"\(3, 10\)"):
        fftconv(u, torch.randn(3, 9))
    with pytest.raises(TypeError, match="floating point"):
        fftconv(u.long(), torch.randn(3, 10))
    with pytest.raises(ValueError, match=r"\(3, 10\)"):
        fftconv_reference(u, torch.randn(4, 10))


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_cuda_matches_reference(causal):
    L = 1000
    u = torch.randn(2, 8, L, device="cuda")
    k = kernels(8, L, causal).cuda()
    ref = fftconv_reference(u.double(), k.double(), causal)
    assert rel_err(fftconv(u, k, causal=causal), ref) < 1e-5
    y16 = fftconv(u.bfloat16(), k, causal=causal)
    assert y16.dtype == torch.bfloat16 and rel_err(y16, ref) < 1e-2


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("L", [1, 6, 13])
def test_written_out_backward_passes_gradcheck(causal, L):
    """The convolution's hand-written adjoint (du and dk by cross-correlation) against finite
    differences, for each input alone and both together."""
    torch.manual_seed(L)
    u = torch.randn(2, 3, L, dtype=torch.float64)
    k = kernels(3, L, causal, torch.float64)
    for grads in ((True, True), (True, False), (False, True)):
        args = (u.clone().requires_grad_(grads[0]), k.clone().requires_grad_(grads[1]))
        assert torch.autograd.gradcheck(lambda a, b: fftconv(a, b, causal=causal), args)


def block_inputs(dtype, padded=True):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 37, 8, generator=g).to(dtype)
    mask = (torch.arange(37)[None, :] >= torch.tensor([37, 20, 5])[:, None]) if padded else None
    return x, mask


@pytest.mark.slow  # compiles with inductor's C++ backend; on CUDA the GPU suite runs them inside the layers
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_compiled_conv_pieces_are_the_eager_ones(dtype):
    """The fused input layout, skip + activation, output GLU and kernel-gradient reduction that the
    S4 block runs on CUDA are the eager functions compiled: same values and gradients (CPU compiler)."""
    from zoo.functional import fftconv as fc
    from zoo.layers import _common as blk

    x, mask = block_inputs(dtype)
    x.requires_grad_()
    u_eager = blk.conv_input(x, mask, torch.float32, 80)
    u_comp = blk._conv_input.compiled(x, mask, torch.float32, 80)
    assert u_comp.shape == (3, 8, 80) and u_comp.is_contiguous() and torch.equal(u_comp, u_eager)
    assert torch.equal(u_eager[..., :37], x.detach().float().masked_fill(mask[..., None], 0).transpose(1, 2))
    assert not u_eager[..., 37:].any()
    y = torch.randn(3, 8, 80)
    D = torch.randn(8, requires_grad=True)
    outs = [f(y, u, D, "gelu", dtype, 37) for f, u in ((blk.conv_output, u_eager), (blk._conv_output.compiled, u_comp))]
    assert outs[1].shape == (3, 37, 8) and outs[1].is_contiguous() and outs[1].dtype == dtype
    assert rel_err(outs[1], outs[0]) < (1e-6 if dtype == torch.float32 else 1e-2)
    dy = torch.randn(3, 37, 8).to(dtype)
    g = [torch.autograd.grad(o, (x, D), dy) for o in outs]
    for a, b in zip(g[1], g[0]):
        assert rel_err(a, b) < (1e-5 if dtype == torch.float32 else 1e-2)
    z = torch.randn(3, 37, 16).to(dtype).requires_grad_()
    outs = [f(z, mask, torch.float32) for f in (blk.glu_output, blk._glu_output.compiled)]
    assert rel_err(outs[1], outs[0]) < (1e-6 if dtype == torch.float32 else 1e-2) and outs[1].dtype == torch.float32
    g = [torch.autograd.grad(o, z, dy.float())[0] for o in outs]
    assert rel_err(g[1], g[0]) < (1e-6 if dtype == torch.float32 else 1e-2)
    gf, uf = torch.randn(4, 8, 20, dtype=torch.cfloat), torch.randn(4, 8, 20, dtype=torch.cfloat)
    got = torch.view_as_complex(fc._compiled_cross_spectrum.compiled(torch.view_as_real(gf), torch.view_as_real(uf)))
    assert rel_err(torch.view_as_real(got), torch.view_as_real((gf * uf.conj()).sum(0))) < 1e-6


@pytest.mark.gpu
@pytest.mark.parametrize("layer", ["s4d", "long_conv"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_cuda_conv_block_is_the_reference(layer, causal):
    """The S4 block on CUDA (compiled input / output passes, written-out backward) against its
    reference forward (direct-sum convolution) in float32 and under bf16 autocast, padded."""
    import registry

    torch.manual_seed(0)
    m = registry.build(layer, d_model=64, causal=causal, **({"max_len": 600} if layer == "long_conv" else {})).cuda()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 513, 64, generator=g).cuda().requires_grad_()
    mask = (torch.arange(513)[None, :] >= torch.tensor([513, 400, 77, 1])[:, None]).cuda()
    dy = torch.randn(4, 513, 64, generator=g).cuda()
    for amp, tol in ((False, 1e-4), (True, 2e-2)):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            got, ref = m(x, mask), m.reference_forward(x, mask)
        assert rel_err(got, ref) < tol
        params = [x, *m.parameters()]
        for a, b in zip(torch.autograd.grad(got.float(), params, dy), torch.autograd.grad(ref.float(), params, dy)):
            assert rel_err(a, b) < tol


def test_a_compiler_that_fails_is_reported_once_and_the_function_runs_eagerly():
    from zoo.functional.compiled import CudaCompiled

    def double(t):
        return 2 * t

    def broken(t):
        raise RuntimeError("no compiler here\nsecond line")

    f = CudaCompiled(double, "doubling", devices={"cpu"})
    f.compiled = broken  # what torch.compile would have returned
    t = torch.arange(3.0)
    with pytest.warns(RuntimeWarning, match=r"compiled doubling failed \(RuntimeError: no compiler here\); running it"):
        assert torch.equal(f(t), 2 * t)
    assert f.failed == "RuntimeError: no compiler here"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(f(t), 2 * t)  # eagerly from now on, silently
    g = CudaCompiled(double, "doubling")
    assert torch.equal(g(t), 2 * t) and "compiled" not in vars(g)  # CPU tensors never compile by default


def test_uncompiled_runs_the_plain_function():
    """Inside ``uncompiled()`` (the unfused benchmark) a CudaCompiled function runs its plain
    function even on a device it compiles for; outside, the compiled one again."""
    from zoo.functional.compiled import CudaCompiled, uncompiled

    calls = []

    def compiled(t):
        calls.append("compiled")
        return 2 * t

    f = CudaCompiled(lambda t: 2 * t, "doubling", devices={"cpu"})
    f.compiled = compiled  # what torch.compile would have returned
    t = torch.arange(3.0)
    with uncompiled():
        with uncompiled():
            assert torch.equal(f(t), 2 * t)
        assert torch.equal(f(t), 2 * t)
    assert calls == []
    assert torch.equal(f(t), 2 * t) and calls == ["compiled"]


def test_padded_entry_point_checks_its_length():
    u, k = torch.randn(2, 3, 10), torch.randn(3, 10)
    with pytest.raises(ValueError, match=r"fft_size\(L\) = 20"):
        fftconv_padded(u, k)
    y = fftconv_padded(torch.nn.functional.pad(u, (0, fft_size(10) - 10)), k)
    assert y.shape == (2, 3, fft_size(10)) and rel_err(y[..., :10], fftconv(u, k)) < 1e-6


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_empty_batch_gives_an_empty_output(causal):
    """MKL's FFT refuses a batch of zero rows: the convolution returns an empty output instead."""
    k = torch.randn(16, 40) if causal else torch.randn(2, 16, 40)
    y = fftconv(torch.randn(0, 16, 40), k, causal=causal)
    assert y.shape == (0, 16, 40) and y.dtype == torch.float32
