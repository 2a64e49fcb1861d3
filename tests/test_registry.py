"""Registry: names, typed configs, errors that say how to fix the call, entry-point plugins."""

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import registry
from zoo.base import MixerConfig, SequenceMixer

PLUGINS = Path(__file__).parent / "plugins"


@dataclass
class _TinyConfig(MixerConfig):
    scale: float = 2.0


class _Tiny(SequenceMixer):
    def forward(self, x, key_padding_mask=None):
        return x * self.config.scale


@pytest.fixture
def tiny():
    registry.register("tiny_test_layer", _TinyConfig)(_Tiny)
    yield "tiny_test_layer"
    registry.unregister("tiny_test_layer")


def test_builtins_are_registered():
    assert {"vanilla", "local", "smooth", "las", "las_chunk"} <= set(registry.list())
    assert registry.list("las*") == ["las", "las_chunk"]


def test_build_by_name_mapping_dataclass_and_yaml(tiny):
    layer = registry.build(tiny, d_model=8, scale=3.0)
    assert isinstance(layer, _Tiny) and layer.config.scale == 3.0 and layer.config.d_model == 8
    assert registry.build({"name": tiny, "scale": 4}).config.scale == 4.0  # int widened to float
    assert registry.build(_TinyConfig(d_model=4)).config.d_model == 4
    cfg = OmegaConf.create("name: las\nd_model: 64\nn_heads: 4\n")
    las = registry.build(cfg, causal=True)
    assert las.config.n_heads == 4 and las.config.causal is True


def test_unknown_name_suggests_close_matches():
    with pytest.raises(registry.UnknownNameError, match=r"unknown layer 'lass'.*Did you mean 'las'"):
        registry.build("lass")
    with pytest.raises(KeyError):  # also a KeyError, for callers that expect one
        registry.get("vanila")


def test_duplicate_name_raises(tiny):
    with pytest.raises(registry.DuplicateNameError, match="already registered"):
        registry.register(tiny, _TinyConfig)(_Tiny)
    with pytest.raises(registry.DuplicateNameError):
        registry.register("las", _TinyConfig)(_Tiny)


def test_register_requires_a_dataclass_and_a_valid_name():
    with pytest.raises(TypeError, match="dataclass"):
        registry.register("x_layer", dict)
    with pytest.raises(ValueError, match="invalid layer name"):
        registry.register("bad name!", _TinyConfig)


def test_unknown_key_lists_valid_keys_and_close_match():
    with pytest.raises(registry.ConfigError) as exc:
        registry.build("las", n_head=4)
    msg = str(exc.value)
    assert "no config key 'n_head'" in msg and "Did you mean 'n_heads'" in msg and "Valid keys:" in msg
    with pytest.raises(registry.ConfigError, match="no config key 'pool'"):
        registry.build({"name": "smooth", "pool": 3})


def test_wrong_types_raise():
    with pytest.raises(registry.ConfigError, match="n_heads"):
        registry.build("las", n_heads="eight")
    with pytest.raises(registry.ConfigError, match="causal"):
        registry.build("las", causal="maybe")
    with pytest.raises(registry.ConfigError, match="no 'name' key"):
        registry.build({"d_model": 8})
    with pytest.raises(TypeError):
        registry.build(42)


def test_describe_shows_fields_types_defaults_and_help():
    text = registry.describe("las")
    for token in ("alpha_max", "float", "0.5", "pool_size", "complexity=L^2", "builtin"):
        assert token in text


# ----------------------------------------------------------------------------- plugins


@pytest.fixture
def plugin_path(monkeypatch):
    def add(*names):
        for n in names:
            monkeypatch.syspath_prepend(str(PLUGINS / n))
        registry.reload_plugins()

    yield add
    monkeypatch.undo()
    for mod in [m for m in sys.modules if m.startswith(("zoo_toy_plugin", "zoo_broken_plugin"))]:
        del sys.modules[mod]
    registry.reload_plugins()


def test_entry_point_plugin_is_discovered_and_builds(plugin_path):
    plugin_path("good")
    assert "toy_cummean" in registry.list()
    entry = registry.get("toy_cummean")
    assert entry.source.startswith("plugin zoo-toy-plugin")
    layer = registry.build("toy_cummean", d_model=6, gain=2.0)
    x = torch.ones(1, 5, 6)
    assert torch.allclose(layer(x), 2 * torch.ones(1, 5, 6))


def test_plugin_used_from_yaml(plugin_path, tmp_path):
    plugin_path("good")
    from zoo.config import resolve_layer

    path = tmp_path / "mine.yaml"
    path.write_text("name: toy_cummean\nd_model: 4\ngain: 0.5\n")
    layer = resolve_layer(str(path), ["gain=3"]).build()
    assert layer.config.gain == 3.0


def test_broken_plugin_is_isolated_and_reported(plugin_path):
    with pytest.warns(RuntimeWarning, match="broken_layer.*zoo-broken-plugin.*failed to load"):
        plugin_path("good", "broken")
    assert "toy_cummean" in registry.list() and "las" in registry.list()
    assert "broken_layer" in registry.broken_plugins()
    with pytest.raises(registry.PluginError, match="not installed"):
        registry.build("broken_layer")


def test_plugins_can_be_switched_off(plugin_path, monkeypatch):
    monkeypatch.setenv(registry.DISABLE_ENV, "1")
    plugin_path("good")
    assert "toy_cummean" not in registry.list()


def test_plugin_through_the_cli_in_a_fresh_process():
    """The real thing: a fresh interpreter, the distribution on PYTHONPATH, `zoo list`."""
    env_path = str(PLUGINS / "good")
    code = textwrap.dedent(
        """
        import sys
        from zoo.cli import main
        sys.exit(main(["describe", "toy_cummean", "gain=2.5"]))
        """
    )
    import os

    env = dict(os.environ, PYTHONPATH=env_path + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "plugin zoo-toy-plugin" in out.stdout and "gain: 2.5" in out.stdout


# ----------------------------------------------------------------------------- API names and labels


def test_list_is_public_api_and_does_not_shadow_the_builtin_inside_the_registry():
    import ast

    import registry._core as core

    assert registry.list is registry.list_layers is core.list_layers
    assert registry.list() == registry.list_layers() and registry.list(), "the registry must not be empty"
    tree = ast.parse(Path(core.__file__).read_text())
    defs = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert "list" not in defs  # `list` inside the module is the builtin; the alias is bound at the end
    last = tree.body[-1]
    assert isinstance(last, ast.Assign) and last.targets[0].id == "list" and last.value.id == "list_layers"


def test_builtins_are_labelled_builtin_and_a_layer_from_a_script_is_not():
    assert {e.source for e in registry.entries()} >= {"builtin"}
    assert all(e.source == "builtin" for e in registry.entries() if e.cls.__module__.startswith("zoo."))
    script = textwrap.dedent("""
        from dataclasses import dataclass
        import registry
        from zoo import MixerConfig, SequenceMixer
        from zoo.cli import main

        @dataclass
        class MineConfig(MixerConfig):
            '''my own layer'''

        @registry.register("mine", MineConfig)
        class Mine(SequenceMixer):
            def mix(self, x, key_padding_mask=None):
                return x

        main(["list", "mine"])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert out.returncode == 0, out.stderr[-2000:]
    row = out.stdout.splitlines()[-1]
    assert row.startswith("mine") and "user (__main__)" in row and "builtin" not in row, out.stdout
