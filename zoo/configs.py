"""YAML configs: layers are chosen by registry name, fields overridden from the command line.

``configs/layers/<name>.yaml`` holds ``name: <registry name>`` plus the layer's fields. A layer
config is resolved from a registry name (its YAML if one exists, else the dataclass defaults) or
from a YAML path, then merged with OmegaConf dotlist overrides (``n_heads=4 causal=true``) and
validated by the registry: unknown keys and wrong types raise with the valid keys listed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

import registry

CONFIG_PATH_ENV = "ZOO_CONFIG_PATH"


def config_dirs() -> list[Path]:
    """Where configs are searched: ``$ZOO_CONFIG_PATH`` (os.pathsep-separated), then ``configs/``
    of the working directory, then the repository's own ``configs/``."""
    dirs = [Path(p) for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "configs", Path(__file__).resolve().parent.parent / "configs"]
    seen, out = set(), []
    for d in dirs:
        if d.resolve() not in seen and d.is_dir():
            seen.add(d.resolve())
            out.append(d)
    return out


def find_config(kind: str, name: str) -> Path | None:
    """``configs/<kind>/<name>.yaml`` from the first config dir that has it."""
    for d in config_dirs():
        p = d / kind / f"{name}.yaml"
        if p.is_file():
            return p
    return None


def parse_overrides(overrides: Iterable[str]) -> DictConfig:
    """``["a=1", "b.c=x"]`` -> DictConfig; a token without ``=`` raises with the expected form."""
    overrides = list(overrides)
    for o in overrides:
        if "=" not in o:
            raise ValueError(f"override {o!r} is not of the form key=value (e.g. n_heads=4)")
    return OmegaConf.from_dotlist(overrides)


def layer_config(name_or_path: str, overrides: Iterable[str] = ()) -> DictConfig:
    """The layer config (with ``name``) from a registry name or YAML path, plus overrides.

    The result is validated (built into the config dataclass) before it is returned.
    """
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise FileNotFoundError(f"layer config {name_or_path} does not exist")
        cfg = OmegaConf.load(path)
    else:
        found = find_config("layers", name_or_path)
        cfg = OmegaConf.load(found) if found else OmegaConf.create({"name": name_or_path})
    if not isinstance(cfg, DictConfig) or "name" not in cfg:
        raise registry.ConfigError(f"{name_or_path}: a layer config needs a top-level `name:` key")
    cfg = OmegaConf.merge(cfg, parse_overrides(overrides))
    registry.make_config(cfg)  # validates: unknown keys, types, values
    return cfg


def layer_yaml(name: str) -> str:
    """The canonical YAML of a registered layer: every field, its default, its help as a comment."""
    entry = registry.get(name)
    lines = [f"# {entry.summary}" if entry.summary else f"# {name}", f"name: {name}"]
    defaults = dataclasses.asdict(entry.config_class())
    for f in dataclasses.fields(entry.config_class):
        value = OmegaConf.to_yaml({f.name: defaults[f.name]}).strip()
        help_ = f.metadata.get("help", "")
        lines.append(f"{value}{'  # ' + help_ if help_ else ''}")
    return "\n".join(lines) + "\n"
