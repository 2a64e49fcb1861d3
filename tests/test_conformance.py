"""Every registered layer honours the SequenceMixer contract. Parametrised over the registry:
a newly registered layer is tested here with no test edits."""

import pytest
import torch

import registry
from conftest import rel_err

NAMES = registry.list()
D = 32
L = 40


def make(name: str, dtype=torch.float32, **overrides):
    cls = registry.get(name).cls
    if cls.needs_max_len:
        overrides.setdefault("max_len", 64)
    torch.manual_seed(1)
    layer = registry.build(name, d_model=D, **overrides).to(dtype)
    return layer.eval()  # no dropout: outputs must be deterministic


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_finite(name, dtype):
    layer = make(name, dtype)
    x = torch.randn(3, L, D, dtype=dtype)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y).all()
    assert y.float().abs().max() > 0


@pytest.mark.parametrize("name", NAMES)
def test_bf16_matches_fp32(name):
    x = torch.randn(2, L, D)
    y32 = make(name, torch.float32)(x)
    y16 = make(name, torch.bfloat16)(x.bfloat16())
    assert rel_err(y16.float(), y32) < 5e-2


@pytest.mark.parametrize("name", NAMES)
def test_backward(name):
    layer = make(name)
    x = torch.randn(2, L, D, requires_grad=True)
    layer(x).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    for pname, p in layer.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", NAMES)
def test_padding_mask_invariance(name):
    """Padded positions never influence valid ones: a padded batch equals the unpadded
    sequences on their valid positions, whatever the padding holds; padded outputs are 0."""
    if not registry.get(name).cls.supports_padding_mask:
        pytest.skip(f"{name} declares supports_padding_mask = False")
    layer = make(name)
    lengths = [L, 27, 11]
    x = torch.randn(3, L, D)
    pad = torch.arange(L)[None, :] >= torch.tensor(lengths)[:, None]  # (B, L) True = padding
    y = layer(x, key_padding_mask=pad)
    garbage = torch.where(pad[..., None], 1e3 * torch.randn_like(x), x)
    y2 = layer(garbage, key_padding_mask=pad)
    assert rel_err(y2, y) < 1e-5
    assert (y[pad] == 0).all()
    for b, n in enumerate(lengths):
        alone = layer(x[b : b + 1, :n])
        assert rel_err(y[b : b + 1, :n], alone) < 1e-5, f"sample {b} (length {n}) differs from its unpadded run"


@pytest.mark.parametrize("name", NAMES)
def test_no_future_leakage_when_causal(name):
    cls = registry.get(name).cls
    if not cls.supports_causal:
        pytest.skip(f"{name} declares supports_causal = False")
    layer = make(name, causal=True)
    x = torch.randn(2, L, D, requires_grad=True)
    t = 17
    y = layer(x)
    y[:, t].sum().backward()
    g = x.grad.abs()
    assert g[:, : t + 1].max() > 0
    # exact zero for masked attention; FFT convolutions leave rounding noise (~1e-8 relative)
    assert g[:, t + 1 :].max() <= 1e-6 * g[:, : t + 1].max(), "output at t depends on inputs after t"
    x2 = x.detach().clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
    assert rel_err(layer(x2)[:, : t + 1], y[:, : t + 1].detach()) < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_batch_independence(name):
    layer = make(name)
    x = torch.randn(4, L, D)
    y = layer(x)
    for b in range(4):
        assert rel_err(y[b : b + 1], layer(x[b : b + 1])) < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_rejected_clearly(name):
    layer = make(name)
    with pytest.raises(ValueError, match="shape"):
        layer(torch.randn(L, D))
    with pytest.raises(ValueError, match="d_model"):
        layer(torch.randn(2, L, D + 1))
    with pytest.raises(TypeError, match="floating point"):
        layer(torch.randint(0, 5, (2, L, D)))
    with pytest.raises(TypeError, match="bool"):
        layer(torch.randn(2, L, D), key_padding_mask=torch.zeros(2, L))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        layer(torch.randn(2, L, D), key_padding_mask=torch.zeros(2, L + 1, dtype=torch.bool))


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_declared(name):
    cls = registry.get(name).cls
    assert cls.complexity in ("L^2", "L log L", "L")
    for attr in ("supports_causal", "supports_padding_mask", "needs_max_len"):
        assert isinstance(getattr(cls, attr), bool)
    groups = make(name).param_groups()
    assert groups is None or all("params" in g for g in groups)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("name", NAMES)
def test_fast_path_matches_the_layers_reference(name, causal):
    """Where a layer has a separate reference path (materialised attention, Vandermonde +
    direct-sum convolution), forward equals it on a padded batch."""
    cls = registry.get(name).cls
    if causal and not cls.supports_causal:
        pytest.skip(f"{name} declares supports_causal = False")
    layer = make(name, causal=causal) if cls.supports_causal else make(name)
    x = torch.randn(2, L, D)
    pad = torch.zeros(2, L, dtype=torch.bool)
    pad[1, 30:] = True
    try:
        ref = layer.reference_forward(x, pad)
    except NotImplementedError:
        pytest.skip(f"{name} has no separate reference path (its forward is the definition)")
    assert rel_err(layer(x, pad), ref) < 1e-5
