"""YAML configs by name + dotlist overrides, and the `zoo` command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import registry
from zoo.cli import main
from zoo.configs import config_dirs, layer_config, layer_yaml

CONFIGS = Path(__file__).parent.parent / "configs" / "layers"


@pytest.mark.parametrize("name", registry.list())
def test_every_builtin_has_a_yaml_in_sync_with_its_dataclass(name):
    if not registry.get(name).source == "builtin":
        pytest.skip("plugins ship their own configs")
    path = CONFIGS / f"{name}.yaml"
    assert path.is_file(), f"missing {path}; write it with zoo.configs.layer_yaml({name!r})"
    assert OmegaConf.load(path) == OmegaConf.create(layer_yaml(name)), f"{path} drifted from the dataclass defaults"
    registry.build(OmegaConf.load(path))


def test_layer_config_by_name_with_overrides():
    cfg = layer_config("las", ["n_heads=4", "causal=true", "alpha_max=0.25"])
    layer = registry.build(cfg)
    assert (layer.config.n_heads, layer.config.causal, layer.config.alpha_max) == (4, True, 0.25)


def test_layer_config_errors():
    with pytest.raises(registry.ConfigError, match="no config key 'n_head'"):
        layer_config("las", ["n_head=4"])
    with pytest.raises(ValueError, match="key=value"):
        layer_config("las", ["n_heads"])
    with pytest.raises(FileNotFoundError):
        layer_config("nope/missing.yaml")
    with pytest.raises(registry.UnknownNameError, match="Did you mean 'smooth'"):
        layer_config("smoth")


def test_config_path_env(tmp_path, monkeypatch):
    (tmp_path / "layers").mkdir()
    (tmp_path / "layers" / "my_las.yaml").write_text("name: las\nd_model: 32\nn_heads: 2\n")
    monkeypatch.setenv("ZOO_CONFIG_PATH", str(tmp_path))
    assert config_dirs()[0] == tmp_path
    assert registry.build(layer_config("my_las")).config.n_heads == 2


def test_cli_list_describe_info(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "las_chunk" in out and "complexity" in out
    assert main(["describe", "las", "pool_size=5"]) == 0
    assert "pool_size: 5" in capsys.readouterr().out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "xformers" in out and "device=cpu" in out and "las" in out


def test_cli_errors_are_clear(capsys):
    assert main(["describe", "lass"]) == 2
    assert "Did you mean 'las'" in capsys.readouterr().err
    assert main(["describe", "las", "n_head=4"]) == 2
    assert "Valid keys" in capsys.readouterr().err


def test_cli_compare_writes_table_json_plot(tmp_path, capsys):
    rc = main(["compare", "--layers", "vanilla", "smooth", "las", "--lengths", "32", "64", "--reps", "1",
               "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "x vanilla" in out and "rel err vs ref" in out
    data = json.loads((tmp_path / "compare.json").read_text())
    rows = {(r["layer"], r["length"]): r for r in data["rows"]}
    assert rows[("vanilla", 32)]["ratio"] == 1.0
    assert all(r["ms"] > 0 and r["peak_mib"] >= 0 for r in data["rows"])
    assert rows[("las", 64)]["rel_err"] < 1e-5
    assert (tmp_path / "compare.png").stat().st_size > 0 and "Command:" in (tmp_path / "compare.md").read_text()


def test_console_script_help():
    exe = Path(sys.executable).parent / "zoo"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 0 and "registry" in out.stdout and "compare" in out.stdout
