"""S4D: kernel vs a direct evaluation, chunking, recurrence vs convolution, precision, groups, errors."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import rel_err

from zoo.functional import ssm
from zoo.functional.fftconv import fftconv_reference
from zoo.layers.s4d import S4D, S4DConfig

ROOT = Path(__file__).resolve().parents[1]


def random_params(H=3, N=8, dtype=torch.float64, n_kernels=None, init="lin"):
    log_A_real, A_imag = ssm.init_A(init, H, N)
    log_A_real = log_A_real + 0.3 * torch.randn(H, N // 2)  # break the symmetry of the init
    log_dt = ssm.log_dt_init(H, 1e-3, 1e-1)
    shape = (H, N // 2) if n_kernels is None else (n_kernels, H, N // 2)
    C = torch.view_as_real(torch.randn(*shape, dtype=torch.complex128))
    return [t.to(dtype) for t in (log_dt, log_A_real, A_imag, C)]


def direct_kernel(log_dt, log_A_real, A_imag, C, L, discretization):
    """K[l] = 2 Re(sum_n C~_n z_n^l), written out from the formulas, powers by repeated products."""
    log_dt, log_A_real, A_imag, C = (t.double() for t in (log_dt, log_A_real, A_imag, C))
    dt = torch.exp(log_dt)[:, None]  # (H, 1)
    lam = -torch.exp(log_A_real) + 1j * A_imag  # (H, N/2)
    c = C[..., 0] + 1j * C[..., 1]  # (..., H, N/2)
    if discretization == "zoh":
        z = torch.exp(dt * lam)
        c_tilde = c * (z - 1) / lam
    else:
        z = (1 + dt * lam / 2) / (1 - dt * lam / 2)
        c_tilde = c * dt / (1 - dt * lam / 2)
    out, power = [], torch.ones_like(z)
    for _ in range(L):
        out.append(2 * (c_tilde * power).sum(-1).real)  # (..., H)
        power = power * z
    return torch.stack(out, -1)  # (..., H, L)


# --------------------------------------------------------------------------- kernel


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", ["lin", "inv"])
def test_kernel_equals_direct_evaluation(discretization, init):
    params = random_params(init=init)
    L = 200
    want = direct_kernel(*params, L, discretization)
    got64 = ssm.s4d_kernel(*params, L, discretization=discretization)
    assert got64.dtype == torch.float64 and rel_err(got64, want) < 1e-9
    assert rel_err(ssm.s4d_kernel_reference(*params, L, discretization=discretization), want) < 1e-9
    got32 = ssm.s4d_kernel(*[p.float() for p in params], L, discretization=discretization)
    assert got32.dtype == torch.float32 and rel_err(got32, want) < 1e-5


def test_zoh_is_accurate_in_fp32_for_small_steps():
    """C~ = C (exp(dt lambda) - 1) / lambda cancels badly at small dt unless computed with expm1."""
    log_A_real, A_imag = ssm.s4d_lin_init(2, 8)
    log_dt = torch.log(torch.tensor([1e-4, 1e-3]))
    C = torch.view_as_real(torch.randn(2, 4, dtype=torch.complex128))
    params = [log_dt, log_A_real, A_imag, C]
    want = direct_kernel(*params, 16, "zoh")
    assert rel_err(ssm.s4d_kernel(*[p.float() for p in params], 16), want) < 1e-6


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_chunked_equals_unchunked_values_and_gradients(discretization):
    params = [p.requires_grad_() for p in random_params(n_kernels=2)]
    L = 97
    dK = torch.randn(2, 3, L, dtype=torch.float64)
    ref = ssm.s4d_kernel_reference(*params, L, discretization=discretization)
    g_ref = torch.autograd.grad(ref, params, dK)
    for chunk in (1, 7, 10, 32, L, 2 * L, None):
        K = ssm.s4d_kernel(*params, L, discretization=discretization, chunk_size=chunk)
        assert K.shape == (2, 3, L) and rel_err(K, ref) < 1e-12
        for a, b in zip(torch.autograd.grad(K, params, dK), g_ref):
            assert rel_err(a, b) < 1e-10


def test_vandermonde_gradcheck():
    c = torch.randn(2, 2, 3, dtype=torch.complex128, requires_grad=True)
    w = torch.complex(-torch.rand(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda c, w: ssm.vandermonde(c, w, 11, chunk_size=4), (c, w))


def test_chunked_kernel_never_holds_the_whole_vandermonde(monkeypatch):
    """Forward intermediates and tensors saved for backward stay O(H N/2 (c + L/c)), never (H, N/2, L)."""
    H, N, L = 4, 16, 1024
    params = [p.float().requires_grad_() for p in random_params(H, N)]
    largest = {"exp": 0, "saved": 0}
    exp = torch.exp

    def spy_exp(x, *a, **k):
        out = exp(x, *a, **k)
        largest["exp"] = max(largest["exp"], out.numel())
        return out

    def pack(t):
        largest["saved"] = max(largest["saved"], t.numel())
        return t

    monkeypatch.setattr(torch, "exp", spy_exp)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        K = ssm.s4d_kernel(*params, L)
    K.sum().backward()
    assert ssm.default_chunk_size(L) == 32
    assert largest["exp"] <= H * (N // 2) * 32  # P (H, N/2, c) and Q (H, N/2, L/c)
    assert largest["saved"] <= H * L  # at most the kernel's size, never H * N/2 * L
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


def test_initialisers():
    log_A_real, A_imag = ssm.s4d_lin_init(2, 8)
    assert torch.allclose(-torch.exp(log_A_real), torch.full((2, 4), -0.5))
    assert torch.allclose(A_imag[1], math.pi * torch.arange(4.0))
    _, A_imag = ssm.s4d_inv_init(2, 8)
    n = torch.arange(4.0)
    assert torch.allclose(A_imag[0], (8 / math.pi) * (8 / (2 * n + 1) - 1))
    log_dt = ssm.log_dt_init(1000, 1e-3, 1e-1)
    assert log_dt.min() >= math.log(1e-3) and log_dt.max() <= math.log(1e-1)
    assert log_dt.max() - log_dt.min() > 0.9 * (math.log(1e-1) - math.log(1e-3))  # spread over the range


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dt_min": 0.0}, "positive"),
        ({"dt_min": -1e-3}, "positive"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min <= dt_max"),
        ({"d_state": 7}, "even"),
        ({"d_state": 0}, "even"),
        ({"discretization": "euler"}, "zoh"),
        ({"init": "legs"}, "lin"),
        ({"activation": "swish"}, "gelu"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config_raises_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S4DConfig(d_model=8, **kwargs)


def test_bad_functional_arguments_raise_clearly():
    params = random_params()
    with pytest.raises(ValueError, match="dt_min <= dt_max"):
        ssm.log_dt_init(4, 0.1, 0.01)
    with pytest.raises(ValueError, match="even"):
        ssm.s4d_lin_init(4, 5)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, N/2, 2\)"):
        ssm.s4d_kernel(*params[:3], params[3][..., :1], 10)
    with pytest.raises(ValueError, match="L must be"):
        ssm.s4d_kernel(*params, 0)
    with pytest.raises(ValueError, match="discretization"):
        ssm.s4d_kernel(*params, 10, discretization="foh")


# --------------------------------------------------------------------------- layer


def test_layer_is_the_documented_block():
    torch.manual_seed(0)
    layer = S4D(S4DConfig(d_model=6, d_state=8, causal=False)).double().eval()
    x = torch.randn(2, 30, 6, dtype=torch.float64)
    u = x.transpose(1, 2)
    k = ssm.s4d_kernel_reference(layer.log_dt, layer.log_A_real, layer.A_imag, layer.C, 30)  # (2, H, L)
    y = torch.nn.functional.gelu(fftconv_reference(u, k, causal=False) + u * layer.D[:, None]).transpose(1, 2)
    want = torch.nn.functional.glu(layer.out(y), dim=-1)
    assert rel_err(layer(x), want) < 1e-10


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_recurrent_step_equals_convolution(discretization, dtype, tol):
    torch.manual_seed(0)
    layer = S4D(S4DConfig(d_model=8, d_state=16, discretization=discretization, dt_max=0.5)).to(dtype).eval()
    x = torch.randn(3, 60, 8, dtype=dtype)
    y = layer(x)
    state = layer.default_state(3)
    steps = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state)
        steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), y) < tol


def test_step_rejects_bidirectional_and_bad_state():
    layer = S4D(S4DConfig(d_model=4, d_state=4, causal=False))
    with pytest.raises(RuntimeError, match="causal=True"):
        layer.step(torch.randn(2, 4), torch.zeros(2, 4, 2, dtype=torch.cfloat))
    layer = S4D(S4DConfig(d_model=4, d_state=4))
    with pytest.raises(ValueError, match="default_state"):
        layer.step(torch.randn(2, 4), torch.zeros(2, 4, 3, dtype=torch.cfloat))


def test_bidirectional_padding_and_future_dependence():
    torch.manual_seed(0)
    layer = S4D(S4DConfig(d_model=8, d_state=8, causal=False)).eval()
    x = torch.randn(2, 30, 8)
    pad = torch.zeros(2, 30, dtype=torch.bool)
    pad[0, 20:] = True
    y = layer(x, pad)
    garbage = torch.where(pad[..., None], 1e3 * torch.randn_like(x), x)
    assert rel_err(layer(garbage, pad), y) < 1e-5
    assert (y[pad] == 0).all()
    assert rel_err(y[:1, :20], layer(x[:1, :20])) < 1e-5
    x2 = x.clone()
    x2[:, 25:] += 1.0
    assert (layer(x2)[:, :25] - layer(x)[:, :25]).abs().max() > 1e-3  # sees the future


def test_bf16_and_autocast_keep_the_ssm_in_fp32(monkeypatch):
    torch.manual_seed(0)
    layer = S4D(S4DConfig(d_model=16, d_state=8)).eval()
    x = torch.randn(2, 50, 16)
    y32 = layer(x)
    seen = []
    for name in ("rfft", "irfft"):
        original = getattr(torch.fft, name)

        def spy(t, *args, _original=original, **kwargs):
            seen.append(t.dtype)
            return _original(t, *args, **kwargs)

        monkeypatch.setattr(torch.fft, name, spy)
    # a bf16 module and input: the kernel is still generated in fp32
    layer16 = S4D(S4DConfig(d_model=16, d_state=8)).eval()
    layer16.load_state_dict(layer.state_dict())
    layer16 = layer16.bfloat16()
    assert layer16.kernel(50).dtype == torch.float32
    y16 = layer16(x.bfloat16())
    assert y16.dtype == torch.bfloat16 and rel_err(y16, y32) < 5e-2
    # autocast with an fp32 module: fp32 out, within bf16 tolerance
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = layer(x)
    assert ya.dtype == torch.float32 and rel_err(ya, y32) < 5e-2
    assert seen and set(seen) <= {torch.float32, torch.complex64}, seen


def test_param_groups():
    layer = S4D(S4DConfig(d_model=8, d_state=8, lr=3e-4))
    default, ssm_group = layer.param_groups()
    assert {id(p) for p in ssm_group["params"]} == {id(layer.log_dt), id(layer.log_A_real), id(layer.A_imag)}
    assert ssm_group["lr"] == 3e-4 and ssm_group["weight_decay"] == 0.0
    assert set(default) == {"params"}
    everything = [id(p) for g in (default, ssm_group) for p in g["params"]]
    assert sorted(everything) == sorted(id(p) for p in layer.parameters())  # each parameter exactly once
    assert id(layer.C) in everything and id(layer.D) in everything
    opt = torch.optim.AdamW(layer.param_groups(), lr=1e-2, weight_decay=0.1)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 3e-4]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_wrong_channel_count_raises():
    layer = S4D(S4DConfig(d_model=8, d_state=4))
    with pytest.raises(ValueError, match="d_model=8"):
        layer(torch.randn(2, 10, 9))


def test_registry_builds_from_yaml_and_rejects_bad_values():
    from omegaconf import OmegaConf

    import registry

    layer = registry.build(OmegaConf.load(ROOT / "configs" / "layers" / "s4d.yaml"), d_model=16, causal=False)
    assert isinstance(layer, S4D) and tuple(layer.C.shape) == (2, 16, 32, 2)
    with pytest.raises(registry.ConfigError, match="even"):
        registry.build("s4d", d_model=8, d_state=7)
    with pytest.raises(registry.ConfigError, match="dt_min <= dt_max"):
        registry.build("s4d", d_model=8, dt_min=0.5)


# --------------------------------------------------------------------------- benchmark script


def test_benchmark_quick_runs_on_cpu(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_ssm.py"), "--out", str(tmp_path), "--quick",
         "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    result = json.loads((tmp_path / "bench_ssm.json").read_text())
    assert result["meta"]["torch"] == torch.__version__ and "--quick" in result["meta"]["command"]
    assert [r["L"] for r in result["rows"]] == [64, 256]
    for r in result["rows"]:
        assert r["fast_ms"] > 0 and r["naive_ms"] > 0 and 0 < r["conv_frac_of_copy"]
    table = (tmp_path / "bench_ssm.md").read_text()
    assert "| L | B |" in table and table in proc.stdout
