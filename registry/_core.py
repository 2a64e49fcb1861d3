"""Name -> (mixer class, typed config), with validation and entry-point plugins.

Every layer, built-in or third-party, arrives through the Python entry-point group ``zoo.layers``
(declared in the providing package's metadata) and is loaded lazily, the first time a name is
looked up or listed. The zoo's own package declares one entry point, the module ``zoo.layers``,
whose explicit import lines register the built-ins; the registry knows nothing about its
clients. A plugin that fails to load is reported by name and isolated: the rest of the registry
keeps working, and asking for the broken name raises with the original error.
``ZOO_DISABLE_PLUGINS=1`` switches third-party plugins off (the built-ins stay).

An entry point may name

* a :class:`zoo.base.SequenceMixer` subclass with a ``config_class`` attribute: it is registered
  under the entry point's name;
* a module whose import registers layers with the :func:`register` decorator (as ``pytest11``
  plugins are modules); or
* a callable taking no arguments that calls :func:`register` itself (for packages that ship
  several layers or presets).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
import threading
import types
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

ENTRY_POINT_GROUP = "zoo.layers"
DISABLE_ENV = "ZOO_DISABLE_PLUGINS"
BUILTIN_DISTRIBUTION = "zoo-mixers"  # entry points of this distribution are the built-ins
NAME_KEY = "name"


class RegistryError(Exception):
    """Base class of every registry error."""


class UnknownNameError(RegistryError, KeyError):
    """No layer is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DuplicateNameError(RegistryError):
    """A name was registered twice."""


class ConfigError(RegistryError, ValueError):
    """A config has an unknown key, a value of the wrong type or an invalid value."""


class PluginError(RegistryError):
    """A third-party plugin could not be loaded."""


@dataclass(frozen=True)
class Entry:
    """One registered layer: the mixer class, its config dataclass and where it came from."""

    name: str
    cls: type
    config_class: type
    source: str  # "builtin" or "plugin <distribution> (<entry point value>)"
    summary: str = ""


@dataclass
class _State:
    entries: dict[str, Entry] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # plugin name -> error text
    plugins_loaded: bool = False
    current_source: str | None = None  # set while an entry point loads; None: label by module


_state = _State()
_lock = threading.RLock()


# --------------------------------------------------------------------------- registration


def register(name: str, config_class: type) -> Callable[[type], type]:
    """Class decorator: register a mixer under ``name`` with its config dataclass.

    The same class may be registered several times under different names with different config
    dataclasses (presets are configurations, not classes)::

        @register("my_mixer", MyMixerConfig)
        class MyMixer(SequenceMixer): ...

    Raises:
        DuplicateNameError: ``name`` is already registered.
        TypeError: ``config_class`` is not a dataclass.
    """
    _validate_name(name)
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(
            f"register({name!r}, ...): config_class must be a dataclass type, got {config_class!r}. "
            "Decorate the config with @dataclasses.dataclass."
        )

    def decorator(cls: type) -> type:
        with _lock:
            if name in _state.entries:
                old = _state.entries[name]
                raise DuplicateNameError(
                    f"layer name {name!r} is already registered by {old.cls.__module__}."
                    f"{old.cls.__qualname__} ({old.source}); choose another name."
                )
            doc = (config_class.__doc__ or cls.__doc__ or "").strip().splitlines()
            _state.entries[name] = Entry(
                name=name,
                cls=cls,
                config_class=config_class,
                source=_state.current_source or _source_of(cls),
                summary=doc[0] if doc else "",
            )
        return cls

    return decorator


def _source_of(cls: type) -> str:
    """The label of a layer registered outside an entry point: the zoo's own modules are
    "builtin", anything else (a script, a notebook, ``__main__``) is "user (<module>)"."""
    module = getattr(cls, "__module__", "") or "?"
    return "builtin" if module == "zoo" or module.startswith("zoo.") else f"user ({module})"


def unregister(name: str) -> None:
    """Remove ``name`` (for tests and interactive sessions)."""
    with _lock:
        _state.entries.pop(name, None)
        _state.broken.pop(name, None)


def _validate_name(name: str) -> None:
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(
            f"invalid layer name {name!r}: use letters, digits, '_' or '-' (e.g. 'las_chunk')."
        )


# --------------------------------------------------------------------------- loading


def _ensure_loaded() -> None:
    with _lock:
        if _state.plugins_loaded:
            return
        _state.plugins_loaded = True
        disabled = os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: not _is_builtin(ep))
        for ep in eps:
            if _is_builtin(ep) or not disabled:
                _load_entry_point(ep)


def _is_builtin(ep) -> bool:
    return (getattr(getattr(ep, "dist", None), "name", None) or "").lower() == BUILTIN_DISTRIBUTION


def _load_entry_point(ep) -> None:
    dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
    _state.current_source = "builtin" if _is_builtin(ep) else f"plugin {dist} ({ep.value})"
    try:
        obj = ep.load()
        if isinstance(obj, types.ModuleType):
            pass  # importing it registered its layers
        elif isinstance(obj, type):
            config_class = getattr(obj, "config_class", None)
            if config_class is None:
                raise TypeError(
                    f"{ep.value} is a class without a `config_class` attribute; set "
                    "`config_class = MyConfig` on it or point the entry point at a function "
                    "that calls registry.register()."
                )
            if ep.name not in _state.entries:
                register(ep.name, config_class)(obj)
        elif callable(obj):
            obj()
        else:
            raise TypeError(f"{ep.value} is neither a module, a mixer class nor a callable")
    except Exception as exc:  # isolate the broken plugin, keep the rest
        msg = f"{type(exc).__name__}: {exc}"
        _state.broken[ep.name] = f"plugin {ep.name!r} from {dist} ({ep.value}) failed to load: {msg}"
        warnings.warn(
            f"zoo: {_state.broken[ep.name]} (other layers are unaffected; set "
            f"{DISABLE_ENV}=1 to skip plugins)",
            RuntimeWarning,
            stacklevel=3,
        )
    finally:
        _state.current_source = None


def reload_plugins() -> None:
    """Forget loaded plugins and scan the entry points again (for tests and notebooks)."""
    with _lock:
        for name in [n for n, e in _state.entries.items() if e.source.startswith("plugin")]:
            del _state.entries[name]
        _state.broken.clear()
        _state.plugins_loaded = False
    _ensure_loaded()


def broken_plugins() -> dict[str, str]:
    """Plugins that failed to load: name -> error text."""
    _ensure_loaded()
    return dict(_state.broken)


# --------------------------------------------------------------------------- look-up


def get(name: str) -> Entry:
    """The :class:`Entry` registered under ``name``.

    Raises:
        UnknownNameError: with the closest registered names.
        PluginError: ``name`` belongs to a plugin that failed to load.
    """
    _ensure_loaded()
    if not isinstance(name, str):
        raise TypeError(f"layer name must be a string, got {type(name).__name__}")
    entry = _state.entries.get(name)
    if entry is not None:
        return entry
    if name in _state.broken:
        raise PluginError(_state.broken[name])
    close = difflib.get_close_matches(name, [*_state.entries], n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownNameError(
        f"unknown layer {name!r}.{hint} Registered: {', '.join(sorted(_state.entries))}. "
        "(`zoo list` shows them all.)"
    )


def list_layers(pattern: str = "*") -> list[str]:
    """Registered names matching the shell-style ``pattern``, sorted (also ``registry.list``)."""
    _ensure_loaded()
    return sorted(n for n in _state.entries if fnmatch.fnmatchcase(n, pattern))


def entries(pattern: str = "*") -> "list[Entry]":
    return [_state.entries[n] for n in list_layers(pattern)]


# --------------------------------------------------------------------------- configs


def schema(name: str) -> DictConfig:
    """The structured (typed, closed) OmegaConf config of ``name`` with its defaults."""
    cfg = OmegaConf.structured(get(name).config_class)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _valid_keys_hint(config_class: type, key: str | None = None) -> str:
    keys = [f.name for f in dataclasses.fields(config_class)]
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5) if key else []
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} Valid keys: {', '.join(keys)}."


def make_config(name_or_cfg: Any, **overrides: Any) -> tuple[Entry, Any]:
    """Resolve ``name_or_cfg`` (+ overrides) into ``(entry, config dataclass instance)``.

    ``name_or_cfg`` is a registered name, a mapping / DictConfig with a ``name`` key and field
    values, or an instance of a registered config dataclass.
    """
    if isinstance(name_or_cfg, str):
        name, values = name_or_cfg, {}
    elif dataclasses.is_dataclass(name_or_cfg) and not isinstance(name_or_cfg, type):
        matches = [e for e in entries() if type(name_or_cfg) is e.config_class]
        if not matches:
            raise ConfigError(
                f"{type(name_or_cfg).__name__} is not the config class of any registered layer"
            )
        name, values = matches[0].name, dataclasses.asdict(name_or_cfg)
    elif isinstance(name_or_cfg, (Mapping, DictConfig)):
        values = (
            OmegaConf.to_container(name_or_cfg, resolve=True)
            if isinstance(name_or_cfg, DictConfig)
            else dict(name_or_cfg)
        )
        if NAME_KEY not in values:
            raise ConfigError(
                f"layer config {values!r} has no {NAME_KEY!r} key; add e.g. `name: las`."
            )
        name = values.pop(NAME_KEY)
    else:
        raise TypeError(
            "build() takes a layer name, a mapping with a 'name' key, or a config dataclass; "
            f"got {type(name_or_cfg).__name__}"
        )
    entry = get(name)
    cfg = schema(name)
    for source in (values, overrides):
        for key in source:
            if key not in cfg:
                raise ConfigError(
                    f"layer {name!r} has no config key {key!r}.{_valid_keys_hint(entry.config_class, key)}"
                )
        try:
            cfg = OmegaConf.merge(cfg, source)
        except OmegaConfBaseException as exc:
            bad_key = getattr(exc, "key", None) if isinstance(exc, ConfigKeyError) else None
            raise ConfigError(
                f"invalid config for layer {name!r}: {_first_line(exc)}."
                f"{_valid_keys_hint(entry.config_class, bad_key)}"
            ) from None
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config for layer {name!r}: {_first_line(exc)}") from None
    except (ValueError, TypeError) as exc:  # __post_init__ validation of the dataclass
        raise ConfigError(f"invalid config for layer {name!r}: {exc}") from None
    return entry, obj


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def build(name_or_cfg: Any, **overrides: Any):
    """Build a mixer by name (or from a config) with field overrides.

    Examples::

        registry.build("las", d_model=128, n_heads=4)
        registry.build({"name": "s4d", "d_model": 64})
        registry.build(OmegaConf.load("configs/layers/las.yaml"), causal=True)
    """
    entry, cfg = make_config(name_or_cfg, **overrides)
    return entry.cls(cfg)


def describe(name: str) -> str:
    """The config schema of ``name`` as readable text: field, type, default, help."""
    entry = get(name)
    lines = [f"{name}: {entry.cls.__module__}.{entry.cls.__qualname__}  [{entry.source}]"]
    if entry.summary:
        lines.append(f"  {entry.summary}")
    caps = []
    for attr in ("complexity", "supports_causal", "supports_padding_mask", "needs_max_len", "needs_positions"):
        if attr == "complexity" and hasattr(entry.cls, "complexity_for"):
            caps.append(f"complexity={entry.cls.complexity_for(entry.config_class())}")
        elif hasattr(entry.cls, attr):
            caps.append(f"{attr}={getattr(entry.cls, attr)}")
    if caps:
        lines.append("  capabilities: " + ", ".join(caps))
    lines.append("  fields:")
    rows = []
    for f in dataclasses.fields(entry.config_class):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else "???")
        )
        tname = getattr(f.type, "__name__", None) or str(f.type)
        rows.append((f.name, str(tname).replace("typing.", ""), repr(default), f.metadata.get("help", "")))
    w = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    for r in rows:
        lines.append(f"    {r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}".rstrip())
    return "\n".join(lines)


# ``registry.list`` is the public name (the API of the design card); inside this module the
# builtin ``list`` stays the builtin, so the alias is bound last.
list = list_layers  # noqa: A001
