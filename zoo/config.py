"""Config files and the one layer-config resolver.

YAML configs ship inside the package (``zoo.configs``: the repository's top-level ``configs/``
folder, installed as package data and read through :mod:`importlib.resources`), in four kinds:
``layers/``, ``tasks/``, ``experiments/`` and ``comparisons/``. A name is looked up in
``$ZOO_CONFIG_PATH`` (``os.pathsep``-separated folders), then ``./configs`` of the working
directory, then the shipped configs; a path to a YAML file works everywhere a name does.

:func:`resolve_layer` turns a layer given by registry name, YAML path or mapping, plus dotlist
overrides and the model's ``d_model`` (and ``max_len`` for layers that declare
``needs_max_len``), into a validated :class:`ResolvedLayer`, once. Models, the trainer and the
benchmarks take its result and never validate again.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

import registry

__all__ = [
    "CONFIG_PATH_ENV",
    "ResolvedLayer",
    "available",
    "config_dirs",
    "find_config",
    "layer_fields",
    "layer_yaml",
    "load_named",
    "load_yaml",
    "parse_overrides",
    "resolve_layer",
]

CONFIG_PATH_ENV = "ZOO_CONFIG_PATH"


def config_dirs() -> list:
    """Where configs are searched, first match wins: ``$ZOO_CONFIG_PATH``, ``./configs``, the shipped configs."""
    dirs: list = [Path(p).expanduser() for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    for d in dirs:
        _validate_config_dir(d)
    dirs.append(Path.cwd() / "configs")
    out, seen = [], set()
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    shipped = _shipped()
    if not any(Path(str(d)).resolve() == Path(str(shipped)).resolve() for d in out):
        out.append(shipped)
    return out


def _validate_config_dir(d: Path) -> None:
    if not d.is_dir():
        raise FileNotFoundError(
            f"{CONFIG_PATH_ENV}: {d} is not a folder; point {CONFIG_PATH_ENV} at folders holding layers/, tasks/, "
            f"experiments/ or comparisons/ (separated by {os.pathsep!r}), or unset it"
        )


def _shipped():
    """The shipped configs: package data ``zoo.configs`` when installed, else (a source tree on
    ``PYTHONPATH``) the repository's ``configs/`` beside the package."""
    try:
        return resources.files("zoo.configs")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "configs"


def find_config(kind: str, name: str):
    """``<dir>/<kind>/<name>.yaml`` from the first config dir that has it, else None."""
    for d in config_dirs():
        p = d / kind / f"{name}.yaml"
        if p.is_file():
            return p
    return None


def available(kind: str) -> list[str]:
    """Names of the configs of one kind, over every config dir."""
    names = set()
    for d in config_dirs():
        folder = d / kind
        if folder.is_dir():
            names.update(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
    return sorted(names)


def load_named(kind: str, name_or_path: str) -> tuple[DictConfig, str]:
    """``(config, where)`` of a config given by name (of ``kind``) or by YAML path.

    Raises:
        FileNotFoundError: naming close matches and the available names.
    """
    if str(name_or_path).endswith((".yaml", ".yml")) or os.sep in str(name_or_path):
        p = Path(name_or_path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"{kind[:-1]} config {name_or_path} does not exist")
        return load_yaml(p), str(p)
    found = find_config(kind, name_or_path)
    if found is None:
        names = available(kind)
        close = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise FileNotFoundError(f"no {kind[:-1]} {name_or_path!r}.{hint} Available: {', '.join(names) or 'none'} "
                                f"(configs/{kind}/*.yaml), or pass a path to a YAML file.")
    return load_yaml(found), str(found)


def load_yaml(path) -> DictConfig:
    """A YAML config file as a DictConfig (safe YAML: no code runs from the file).

    Raises:
        ValueError: one line ``FILE:LINE:COLUMN: YAML syntax error: ...`` (1-based, as editors count)
            for a file that does not parse, or naming the file when it is not a mapping of keys.
    """
    import yaml  # omegaconf's own parser (a safe loader)

    try:
        text = Path(str(path)).read_text() if isinstance(path, (str, os.PathLike)) else path.read_text()
        cfg = OmegaConf.create(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
        opened = getattr(exc, "context_mark", None)
        if opened is not None and (mark is None or opened.line != mark.line):
            what += f" ({exc.context} at line {opened.line + 1}, column {opened.column + 1})"
        raise ValueError(f"{where}: YAML syntax error: {what}; fix the file (indentation, ':' and brackets)") from None
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{path}: a config file must be a mapping of keys (key: value), got a {type(cfg).__name__}")
    return cfg


def parse_overrides(overrides: Iterable[str]) -> DictConfig:
    """``["a=1", "b.c=x"]`` -> DictConfig; a token without ``=`` raises with the expected form."""
    overrides = list(overrides)
    for o in overrides:
        if "=" not in o or o.startswith("="):
            raise ValueError(f"override {o!r} is not of the form key=value (e.g. n_heads=4)")
    return OmegaConf.from_dotlist(overrides)


@dataclass(frozen=True)
class ResolvedLayer:
    """A validated layer config: the registry entry and an instance of its config dataclass."""

    entry: Any
    config: Any

    @property
    def name(self) -> str:
        return self.entry.name

    def build(self):
        """A new mixer built from this config (no further validation)."""
        return self.entry.cls(self.config)

    def to_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self.config)}


def layer_fields(layer: Any) -> dict:
    """The fields a layer is given as (``name`` + what its YAML or mapping says), not yet validated."""
    if isinstance(layer, ResolvedLayer):
        return layer.to_dict()
    if isinstance(layer, str):
        if layer.endswith((".yaml", ".yml")) or os.sep in layer:
            cfg, _ = load_named("layers", layer)
        else:
            found = find_config("layers", layer)
            cfg = load_yaml(found) if found else OmegaConf.create({"name": layer})
        d = OmegaConf.to_container(cfg, resolve=True)
    elif isinstance(layer, DictConfig):
        d = OmegaConf.to_container(layer, resolve=True)
    elif isinstance(layer, Mapping):
        d = dict(layer)
    elif dataclasses.is_dataclass(layer) and not isinstance(layer, type):
        entry, cfg = registry.make_config(layer)
        d = {"name": entry.name, **dataclasses.asdict(cfg)}
    else:
        raise TypeError(
            f"a layer is a registry name, a YAML path or a mapping with `name:`, got {type(layer).__name__}"
        )
    if not isinstance(d, dict) or "name" not in d:
        raise registry.ConfigError(f"layer config {d!r} has no `name:` key; add e.g. `name: las`")
    return d


def resolve_layer(layer: Any, overrides: Iterable[str] = (), *, d_model: int | None = None,
                  max_len: int | None = None) -> ResolvedLayer:
    """The one place a layer config is resolved and validated.

    Args:
        layer: a registry name (its ``configs/layers/<name>.yaml`` gives the defaults if there is
            one), a YAML path, a mapping / DictConfig with ``name``, or a :class:`ResolvedLayer`.
        overrides: dotlist field overrides, e.g. ``["n_heads=4", "causal=true"]``.
        d_model: the model width, injected (overrides the config's own).
        max_len: the longest input, injected when the layer declares ``needs_max_len``.

    Raises:
        registry.RegistryError: unknown name (with close matches), unknown key, wrong type or value.
    """
    overrides = list(overrides)
    if isinstance(layer, ResolvedLayer) and not overrides:
        same_width = d_model is None or layer.config.d_model == d_model
        same_len = (max_len is None or not getattr(layer.entry.cls, "needs_max_len", False)
                    or layer.config.max_len == max_len)
        if same_width and same_len:
            return _fits(layer, max_len)  # already validated: only the length it will see is new
    d = layer_fields(layer)
    d.update(OmegaConf.to_container(parse_overrides(overrides), resolve=True))
    entry = registry.get(d["name"])
    if d_model is not None:
        d["d_model"] = int(d_model)
    if getattr(entry.cls, "needs_max_len", False) and max_len is not None:
        d["max_len"] = int(max_len)
    entry, cfg = registry.make_config(d)
    return _fits(ResolvedLayer(entry, cfg), max_len)


def _fits(layer: ResolvedLayer, max_len: int | None) -> ResolvedLayer:
    """The layer class's own check (``check_length``) of the longest sequence it will see, when known."""
    check = getattr(layer.entry.cls, "check_length", None)
    if max_len is not None and check is not None:
        try:
            check(layer.config, int(max_len))
        except ValueError as exc:
            raise registry.ConfigError(f"invalid config for layer {layer.name!r}: {exc}") from None
    return layer


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
