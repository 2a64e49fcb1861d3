"""Every registered layer honours the SequenceMixer contract. Parametrised over the registry:
a newly registered layer (a plugin too) is tested here with no test edits.

Each check is a function of the layer's name that fails with ONE line naming the layer and the
broken rule ("plugin my_mixer: output at padded positions must be zero"), so a plugin author
reading `make test` sees what to fix, not an assertion on numbers.
"""

from importlib import metadata
from pathlib import Path

import pytest
import torch
from conftest import rel_err

import registry
from zoo.base import MixerConfig, SequenceMixer

NAMES = registry.list()
D = 32
L = 40
PLUGINS = Path(__file__).parent / "plugins"


def test_the_registry_is_not_empty():
    assert NAMES, "registry.list() is empty: the tests parametrised over it would run nothing"


def who(name: str) -> str:
    """``plugin NAME`` for an entry-point plugin, ``layer NAME`` otherwise."""
    return f"{'plugin' if registry.get(name).source.startswith('plugin') else 'layer'} {name}"


def expect(ok, name: str, rule: str) -> None:
    if not bool(ok):
        pytest.fail(f"{who(name)}: {rule}", pytrace=False)


def make(name: str, dtype=torch.float32, **overrides):
    cls = registry.get(name).cls
    if cls.needs_max_len:
        overrides.setdefault("max_len", 64)
    torch.manual_seed(1)
    layer = registry.build(name, d_model=D, **overrides).to(dtype)
    return layer.eval()  # no dropout: outputs must be deterministic


# ----------------------------------------------------------------------------- the checks


def check_shape_dtype_finite(name, dtype=torch.float32):
    layer = make(name, dtype)
    x = torch.randn(3, L, D, dtype=dtype)
    y = layer(x)
    expect(y.shape == x.shape and y.dtype == dtype, name, f"output must have the input's shape and dtype {dtype}")
    expect(torch.isfinite(y).all(), name, "output must be finite")
    expect(y.float().abs().max() > 0, name, "output is all zero")


def check_bf16_matches_fp32(name):
    x = torch.randn(2, L, D)
    y32 = make(name, torch.float32)(x)
    y16 = make(name, torch.bfloat16)(x.bfloat16())
    expect(rel_err(y16.float(), y32) < 5e-2, name, "bfloat16 output must match float32 within 5e-2")


def check_backward(name):
    layer = make(name)
    x = torch.randn(2, L, D, requires_grad=True)
    layer(x).pow(2).sum().backward()
    expect(x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().max() > 0, name,
           "the input must get a finite, non-zero gradient")
    for pname, p in layer.named_parameters():
        if p.requires_grad:
            expect(p.grad is not None, name, f"parameter {pname} got no gradient")
            expect(torch.isfinite(p.grad).all(), name, f"parameter {pname} has a non-finite gradient")


def check_padding(name):
    """Padded positions never influence valid ones, whatever they hold (large values, NaN, inf):
    a padded batch equals the unpadded sequences on their valid positions; padded outputs are 0."""
    if not registry.get(name).cls.supports_padding_mask:
        return
    layer = make(name)
    lengths = [L, 27, 11]
    x = torch.randn(3, L, D)
    pad = torch.arange(L)[None, :] >= torch.tensor(lengths)[:, None]  # (B, L) True = padding
    y = layer(x, key_padding_mask=pad)
    expect((y[pad] == 0).all(), name, "output at padded positions must be zero")
    for label, fill in (("large values", 1e3 * torch.randn_like(x)), ("NaN", torch.full_like(x, float("nan"))),
                        ("inf", torch.full_like(x, float("inf")))):
        y2 = layer(torch.where(pad[..., None], fill, x), key_padding_mask=pad)
        expect(torch.isfinite(y2).all() and rel_err(y2, y) < 1e-5, name,
               f"{label} at padded positions must not change the outputs (padded keys act as positions past the end)")
    for b, n in enumerate(lengths):
        alone = layer(x[b : b + 1, :n])
        expect(rel_err(y[b : b + 1, :n], alone) < 1e-5, name,
               f"a padded sample (length {n}) must equal its unpadded run on its valid positions")


def check_empty_batch(name):
    layer = make(name)
    for pad in (None, torch.zeros(0, L, dtype=torch.bool)):
        try:
            y = layer(torch.randn(0, L, D), key_padding_mask=pad)
        except Exception as exc:  # noqa: BLE001 - the contract says: an empty output
            pytest.fail(f"{who(name)}: a batch of 0 must give an empty output, got {type(exc).__name__}: {exc}",
                        pytrace=False)
        expect(y.shape == (0, L, D), name, f"a batch of 0 must give a (0, L, D) output, got {tuple(y.shape)}")


def check_no_future_leakage_when_causal(name):
    if not registry.get(name).cls.supports_causal:
        return
    layer = make(name, causal=True)
    x = torch.randn(2, L, D, requires_grad=True)
    t = 17
    y = layer(x)
    y[:, t].sum().backward()
    g = x.grad.abs()
    expect(g[:, : t + 1].max() > 0, name, "causal output at t must depend on inputs up to t")
    # exact zero for masked attention; FFT convolutions leave rounding noise (~1e-8 relative)
    expect(g[:, t + 1 :].max() <= 1e-6 * g[:, : t + 1].max(), name, "causal output at t depends on inputs after t")
    x2 = x.detach().clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
    expect(rel_err(layer(x2)[:, : t + 1], y[:, : t + 1].detach()) < 1e-6, name,
           "causal outputs up to t changed with the inputs after t")


def check_batch_independence(name):
    layer = make(name)
    x = torch.randn(4, L, D)
    y = layer(x)
    for b in range(4):
        expect(rel_err(y[b : b + 1], layer(x[b : b + 1])) < 1e-5, name,
               f"sample {b} depends on the others in its batch")


def check_bad_input_is_rejected_clearly(name):
    layer = make(name)
    for exc, match, call in (
        (ValueError, "shape", lambda: layer(torch.randn(L, D))),
        (ValueError, "d_model", lambda: layer(torch.randn(2, L, D + 1))),
        (TypeError, "floating point", lambda: layer(torch.randint(0, 5, (2, L, D)))),
        (TypeError, "bool", lambda: layer(torch.randn(2, L, D), key_padding_mask=torch.zeros(2, L))),
        (ValueError, r"\(B, L\)",
         lambda: layer(torch.randn(2, L, D), key_padding_mask=torch.zeros(2, L + 1, dtype=torch.bool))),
    ):
        with pytest.raises(exc, match=match):
            call()


def check_capabilities_declared(name):
    cls = registry.get(name).cls
    expect(cls.complexity in ("L^2", "L log L", "L"), name, "complexity must be 'L^2', 'L log L' or 'L'")
    for attr in ("supports_causal", "supports_padding_mask", "needs_max_len", "needs_positions"):
        expect(isinstance(getattr(cls, attr), bool), name, f"{attr} must be a bool class attribute")
    groups = make(name).param_groups()
    expect(groups is None or all("params" in g for g in groups), name,
           "param_groups() must return None or dicts with 'params'")


CHECKS = (check_shape_dtype_finite, check_bf16_matches_fp32, check_backward, check_padding, check_empty_batch,
          check_no_future_leakage_when_causal, check_batch_independence, check_bad_input_is_rejected_clearly,
          check_capabilities_declared)


# ----------------------------------------------------------------------------- over the registry


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_finite(name, dtype):
    check_shape_dtype_finite(name, dtype)


@pytest.mark.parametrize("check", [c for c in CHECKS if c is not check_shape_dtype_finite],
                         ids=lambda c: c.__name__[6:])
@pytest.mark.parametrize("name", NAMES)
def test_contract(name, check):
    if check is check_padding and not registry.get(name).cls.supports_padding_mask:
        pytest.skip(f"{name} declares supports_padding_mask = False")
    if check is check_no_future_leakage_when_causal and not registry.get(name).cls.supports_causal:
        pytest.skip(f"{name} declares supports_causal = False")
    check(name)


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


# ----------------------------------------------------------------------------- plugins, as installed


class BadMixer(SequenceMixer):
    """Breaks the contract on purpose: overrides forward and leaves the padded outputs alone."""

    config_class = MixerConfig
    complexity = "L"

    def forward(self, x, key_padding_mask=None):
        self._validate_input(x, key_padding_mask)
        return x * 2.0


@pytest.fixture
def as_plugin(monkeypatch):
    """``as_plugin(name, "module:attr")``: the registry sees an entry point of the group
    ``zoo.layers``, exactly as after ``pip install`` (nothing is installed)."""
    real = metadata.entry_points

    def install(name: str, value: str) -> None:
        ep = metadata.EntryPoint(name=name, value=value, group=registry.ENTRY_POINT_GROUP)

        def entry_points(**kw):
            eps = real(**kw)
            return [*eps, ep] if kw.get("group") == registry.ENTRY_POINT_GROUP else eps

        monkeypatch.setattr(metadata, "entry_points", entry_points)
        registry.reload_plugins()
        assert registry.get(name).source.startswith("plugin")

    yield install
    monkeypatch.undo()
    registry.reload_plugins()


def test_a_plugin_that_breaks_the_contract_is_named_in_one_line(as_plugin):
    as_plugin("bad_mixer", f"{__name__}:BadMixer")
    with pytest.raises(pytest.fail.Exception) as info:
        check_padding("bad_mixer")
    assert str(info.value) == "plugin bad_mixer: output at padded positions must be zero"
    check_shape_dtype_finite("bad_mixer")  # the rest of its contract holds: only the broken rule is named


def test_readme_plugin_example_follows_the_contract(as_plugin, monkeypatch):
    """The README's plugin example, as written there, passes every conformance check."""
    example = (PLUGINS / "readme" / "my_pkg_mixer.py").read_text()
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert f"```python\n{example}```" in readme, (
        "README's plugin example drifted from tests/plugins/readme/my_pkg_mixer.py"
    )
    monkeypatch.syspath_prepend(str(PLUGINS / "readme"))
    as_plugin("my_mixer", "my_pkg_mixer:MyMixer")
    for check in CHECKS:
        check("my_mixer")
    y = registry.build("my_mixer", d_model=2, gain=2.0)(torch.tensor([[[1.0, 1.0], [3.0, 3.0]]]))
    assert torch.equal(y, torch.tensor([[[2.0, 2.0], [4.0, 4.0]]]))  # gain * running mean
