"""Long convolution and Hyena: kernel regularisation, the block vs a manual computation, masks, errors."""

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_err

from zoo.functional.fftconv import fftconv_reference
from zoo.layers.long_conv import Hyena, HyenaConfig, LongConv, LongConvConfig, regularize_kernel


def manual_regularize(k: torch.Tensor, lam: float, window: int) -> torch.Tensor:
    """Moving average (zeros beyond the ends, divided by the window), then soft threshold."""
    L, h = k.shape[-1], window // 2
    padded = F.pad(k, (h, h))
    smooth = sum(padded[..., s : s + L] for s in range(window)) / window
    return torch.where(smooth.abs() > lam, smooth - lam * smooth.sign(), torch.zeros_like(smooth))


@pytest.mark.parametrize("lam, window", [(0.0, 1), (0.1, 1), (0.0, 5), (0.05, 3)])
def test_regularize_kernel_is_smooth_then_squash(lam, window):
    k = torch.randn(2, 3, 40, dtype=torch.float64) * 0.2
    got = regularize_kernel(k, lam, window)
    assert got.shape == k.shape
    assert torch.allclose(got, manual_regularize(k, lam, window), atol=1e-12)
    if lam > 0:
        assert (got == 0).any()  # squash produces exact zeros


def test_kernel_is_regularised_over_max_len_then_truncated():
    layer = LongConv(LongConvConfig(d_model=4, max_len=32, squash_lambda=0.01, smooth_window=5))
    full = manual_regularize(layer.kernel.weight.detach().double(), 0.01, 5)
    assert torch.allclose(layer.kernel(32).double(), full, atol=1e-6)
    assert torch.allclose(layer.kernel(10).double(), full[..., :10], atol=1e-6)  # not re-smoothed at L=10


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_long_conv_is_the_documented_block(causal):
    torch.manual_seed(0)
    layer = LongConv(LongConvConfig(d_model=6, max_len=40, causal=causal)).double().eval()
    x = torch.randn(2, 33, 6, dtype=torch.float64)
    u = x.transpose(1, 2)
    k = manual_regularize(layer.kernel.weight, 1e-3, 3)[..., :33]
    y = fftconv_reference(u, k[0] if causal else k, causal) + u * layer.D[:, None]
    want = F.glu(layer.out(F.gelu(y).transpose(1, 2)), dim=-1)
    assert rel_err(layer(x), want) < 1e-10


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_hyena_is_the_documented_operator(causal):
    torch.manual_seed(0)
    layer = Hyena(HyenaConfig(d_model=6, max_len=40, causal=causal, short_filter=3)).double().eval()
    x = torch.randn(2, 33, 6, dtype=torch.float64)
    z = layer.in_proj(x).transpose(1, 2)  # (B, 3D, L)
    z = F.conv1d(F.pad(z, (2, 0) if causal else (1, 1)), layer.short.weight, layer.short.bias, groups=18)
    x1, x2, v = z.chunk(3, dim=1)
    k = manual_regularize(layer.kernel.weight, 1e-3, 3)[..., :33]
    xv = x1 * v
    y = x2 * (fftconv_reference(xv, k[0] if causal else k, causal) + xv * layer.D[:, None])
    want = layer.out_proj(y.transpose(1, 2))
    assert rel_err(layer(x), want) < 1e-10


def build(cls, cfg_cls, **kw):
    torch.manual_seed(0)
    return cls(cfg_cls(d_model=8, max_len=48, **kw)).eval()


LAYERS = [(LongConv, LongConvConfig), (Hyena, HyenaConfig)]
IDS = ["long_conv", "hyena"]


@pytest.mark.parametrize("cls, cfg_cls", LAYERS, ids=IDS)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_padding_never_influences_valid_positions(cls, cfg_cls, causal):
    layer = build(cls, cfg_cls, causal=causal)
    x = torch.randn(3, 40, 8)
    lengths = [40, 25, 9]
    pad = torch.arange(40)[None, :] >= torch.tensor(lengths)[:, None]
    y = layer(x, pad)
    garbage = torch.where(pad[..., None], 1e3 * torch.randn_like(x), x)
    assert rel_err(layer(garbage, pad), y) < 1e-5
    assert (y[pad] == 0).all()
    for b, n in enumerate(lengths):
        assert rel_err(y[b : b + 1, :n], layer(x[b : b + 1, :n])) < 1e-5


@pytest.mark.parametrize("cls, cfg_cls", LAYERS, ids=IDS)
def test_causal_vs_bidirectional_dependence(cls, cfg_cls):
    x = torch.randn(2, 40, 8)
    x2 = x.clone()
    x2[:, 31:] = torch.randn_like(x2[:, 31:])
    causal, bidir = build(cls, cfg_cls, causal=True), build(cls, cfg_cls, causal=False)
    y, y2 = causal(x), causal(x2)
    assert (y2[:, :31] - y[:, :31]).abs().max() < 1e-6 * y2.abs().max()  # FFT round-off only
    assert (bidir(x2)[:, :31] - bidir(x)[:, :31]).abs().max() > 1e-3


@pytest.mark.parametrize("cls, cfg_cls", LAYERS, ids=IDS)
def test_too_long_sequence_and_wrong_channels_raise(cls, cfg_cls):
    layer = build(cls, cfg_cls)
    layer(torch.randn(1, 48, 8))  # max_len itself is fine
    with pytest.raises(ValueError, match="max_len=48"):
        layer(torch.randn(1, 49, 8))
    with pytest.raises(ValueError, match="d_model=8"):
        layer(torch.randn(1, 10, 7))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_len": 0}, "max_len"),
        ({"smooth_window": 4}, "odd"),
        ({"smooth_window": 0}, "odd"),
        ({"squash_lambda": -0.1}, "squash_lambda"),
        ({"kernel_dropout": 1.0}, "kernel_dropout"),
        ({"kernel_lr": -1.0}, "kernel_lr"),
    ],
)
@pytest.mark.parametrize("cfg_cls", [LongConvConfig, HyenaConfig], ids=IDS)
def test_bad_config_raises_clearly(cfg_cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cfg_cls(d_model=8, **kwargs)


def test_hyena_short_filter_must_be_positive():
    with pytest.raises(ValueError, match="short_filter"):
        HyenaConfig(d_model=8, short_filter=0)


@pytest.mark.parametrize("cls, cfg_cls", LAYERS, ids=IDS)
def test_param_groups(cls, cfg_cls):
    layer = build(cls, cfg_cls, kernel_lr=2e-4)
    default, kernel = layer.param_groups()
    assert kernel["params"] == [layer.kernel.weight]
    assert kernel["lr"] == 2e-4 and kernel["weight_decay"] == 0.0 and set(default) == {"params"}
    everything = [id(p) for g in (default, kernel) for p in g["params"]]
    assert sorted(everything) == sorted(id(p) for p in layer.parameters())
    torch.optim.AdamW(layer.param_groups(), lr=1e-3)  # accepted as-is


@pytest.mark.parametrize("cls, cfg_cls", LAYERS, ids=IDS)
def test_kernel_dropout_only_in_training(cls, cfg_cls):
    layer = build(cls, cfg_cls, kernel_dropout=0.5)
    x = torch.randn(2, 20, 8)
    assert torch.equal(layer(x), layer(x))  # eval: deterministic
    layer.train()
    assert not torch.equal(layer.kernel(20), layer.kernel(20))


@pytest.mark.parametrize("cls, cfg_cls", LAYERS, ids=IDS)
def test_bf16_module_and_autocast(cls, cfg_cls):
    layer = build(cls, cfg_cls)
    x = torch.randn(2, 40, 8)
    y32 = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = layer(x)
    assert ya.dtype == torch.float32 and rel_err(ya, y32) < 5e-2
    layer16 = build(cls, cfg_cls).bfloat16()
    assert layer16.kernel(40).dtype == torch.float32  # the long kernel stays fp32
    y16 = layer16(x.bfloat16())
    assert y16.dtype == torch.bfloat16 and rel_err(y16, y32) < 5e-2


@pytest.mark.parametrize("name, cls", [("long_conv", LongConv), ("hyena", Hyena)])
def test_registry_builds_from_yaml_and_rejects_bad_values(name, cls):
    from pathlib import Path

    from omegaconf import OmegaConf

    import registry

    path = Path(__file__).resolve().parents[1] / "configs" / "layers" / f"{name}.yaml"
    layer = registry.build(OmegaConf.load(path), d_model=8, max_len=16, causal=False)
    assert isinstance(layer, cls) and tuple(layer.kernel.weight.shape) == (2, 8, 16)
    with pytest.raises(registry.ConfigError, match="odd"):
        registry.build(name, d_model=8, smooth_window=2)
