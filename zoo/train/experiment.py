"""The experiment: loading it from YAML + overrides, validated once (the schema: ``zoo.train.schema``).

An *experiment* is a task + a layer + a model + an optimisation config, plus ``data`` and
``train``, in one YAML under ``configs/experiments/`` (or any path), merged with OmegaConf
dotlist overrides::

    task:   listops                   # configs/tasks/<name>.yaml, or {name: ..., options: {...}}
    layer:  s4d                       # a registry name (configs/layers/<name>.yaml) or {name: ..., fields}
    model:  {d_model: 64, n_layers: 2, ...}                 # zoo.models.ModelConfig
    optim:  {opt: adamw, lr: 1e-3, sched: cosine, ...}      # OptimConfig (timm factories)
    data:   {root: data, generate_if_missing: true, ...}    # DataConfig
    train:  {epochs: 3, batch_size: 32, ...}                # TrainConfig

:func:`load_experiment` returns an :class:`Experiment`: the merged config, the task's spec and
validated protocol config, and the layer resolved once (``layer.d_model`` is always the model's
``d_model``; ``layer.max_len`` the task's input length for layers that declare
``needs_max_len``). Unknown keys raise with close matches and the valid keys. ``layer=las`` or
``task=text`` replaces the whole section (the fields of the previous layer would not fit the new one).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import registry
from zoo.config import ResolvedLayer, find_config, layer_fields, load_named, load_yaml, parse_overrides, resolve_layer
from zoo.data.tasks import TaskSpec, get_task
from zoo.models import ModelConfig
from zoo.train.schema import RUNTIME_KEYS, SECTIONS, DataConfig, ExperimentConfig, OptimConfig, TaskConfig, TrainConfig

__all__ = [
    "DataConfig",
    "Experiment",
    "ExperimentConfig",
    "ExperimentConfigError",
    "OptimConfig",
    "RUNTIME_KEYS",
    "TaskConfig",
    "TrainConfig",
    "flatten",
    "load_experiment",
]


class ExperimentConfigError(ValueError):
    """An experiment config has an unknown key, a wrong type or an invalid value."""


@dataclass
class Experiment:
    """A loaded, validated experiment.

    Attributes:
        cfg: the merged config (a structured DictConfig; ``cfg.layer`` holds every field).
        name: the experiment's name (the YAML's stem, or ``"run"`` for a mapping).
        task: the task's spec; ``task_config`` its validated protocol config.
        layer: the layer, resolved once (with the model's ``d_model`` and the task's length).
        max_len: the task's input length: the one length the model and the layer are built for.
        base: the config of the experiment without the command-line overrides (names run folders).
    """

    cfg: DictConfig
    name: str
    task: TaskSpec
    task_config: Any
    layer: ResolvedLayer
    max_len: int = 0
    base: DictConfig | None = None

    def model_config(self) -> ModelConfig:
        """The typed model section."""
        return ModelConfig(**OmegaConf.to_container(self.cfg.model, resolve=True))

    def run_name(self) -> str:
        """``train.run_name``, else ``<experiment>-<layer>``, plus a digest of the other keys that the
        overrides changed (so two different runs never share a folder)."""
        if self.cfg.train.run_name:
            return str(self.cfg.train.run_name)
        name = f"{self.name}-{self.layer.name}"
        if self.base is None:
            return name
        a, b = (flatten(OmegaConf.to_container(c, resolve=True)) for c in (self.base, self.cfg))
        same_layer = a.get("layer.name") == b.get("layer.name")
        diff = {k: b.get(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in RUNTIME_KEYS
                and k != "layer.name" and (same_layer or not k.startswith("layer."))}
        if diff:
            name += "-" + hashlib.sha256(json.dumps(diff, sort_keys=True, default=str).encode()).hexdigest()[:8]
        return name


def flatten(d: Any, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


# --------------------------------------------------------------------------- key checks


def _leaf_keys() -> dict[str, list[str]]:
    """Every leaf field name -> the dotted keys it appears under (for bare ``n_layers=6``)."""
    out: dict[str, list[str]] = {}
    for sec, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, []).append(f"{sec}.{f.name}")
    return out


def _check_keys(values: dict, cls: type, prefix: str = "") -> None:
    """Unknown keys raise, naming close matches and the valid keys of that section."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            close = [prefix + c for c in difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.5)]
            if not prefix:
                close = _leaf_keys().get(str(key), []) + close
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ExperimentConfigError(
                f"unknown config key {prefix + str(key)!r}.{hint} Valid keys{' of ' + prefix[:-1] if prefix else ''}: "
                f"{', '.join(prefix + k for k in fields)}.")
        sub = SECTIONS.get(key) if not prefix else None
        if sub is not None and key not in ("task",):
            if not isinstance(value, dict):
                raise ExperimentConfigError(
                    f"{key} must be a mapping of {', '.join(f.name for f in dataclasses.fields(sub))}"
                )
            _check_keys(value, sub, key + ".")


def _named_section(kind: str, values: list, base_fn) -> dict:
    """Merge ``values`` (a name or a mapping each, in order); a new ``name`` discards earlier fields."""
    name, parts = None, []
    for v in values:
        if v is None:
            continue
        if isinstance(v, str):
            name, parts = v, []
            continue
        if not isinstance(v, dict):
            raise ExperimentConfigError(f"`{kind}` must be a name or a mapping, got {v!r}")
        d = dict(v)
        new = d.pop("name", None)
        if new is not None and new != name:
            name, parts = new, []
        parts.append(d)
    if name is None:
        raise ExperimentConfigError(f"the experiment has no `{kind}`: set e.g. `{kind}: "
                                    f"{'listops' if kind == 'task' else 's4d'}` or `{kind}.name=...`")
    merged = base_fn(name)
    for p in parts:
        merged = {**merged, **p, **({"options": {**merged.get("options", {}), **p.get("options", {})}}
                                   if kind == "task" and "options" in p else {})}
    return merged


def _task_base(name: str) -> dict:
    found = find_config("tasks", name)
    if found is not None:
        cfg = OmegaConf.to_container(load_yaml(found), resolve=True)
        if not isinstance(cfg, dict) or "name" not in cfg:
            raise ExperimentConfigError(f"{found}: a task config needs a top-level `name:` key")
        return cfg
    try:
        return {"name": get_task(name).name, "options": {}}
    except ValueError as exc:
        raise ExperimentConfigError(str(exc)) from None


def _layer_base(name: str) -> dict:
    """The layer's YAML defaults (validated once, with the rest of the section, in ``_validate``)."""
    try:
        return layer_fields(name)
    except (registry.RegistryError, FileNotFoundError) as exc:
        raise ExperimentConfigError(f"layer: {exc}") from None


# --------------------------------------------------------------------------- loading


def load_experiment(experiment: str | os.PathLike | dict | DictConfig, overrides: Iterable[str] = (),
                    layer_fields: dict | None = None) -> Experiment:
    """The validated :class:`Experiment` from a name, a YAML path or a mapping, plus dotlist overrides
    and ``layer_fields`` (a mapping of the layer's own fields, applied after the overrides)."""
    if isinstance(experiment, (dict, DictConfig)):
        raw, name = OmegaConf.create(experiment), "run"
    else:
        try:
            raw, where = load_named("experiments", str(experiment))
        except FileNotFoundError as exc:
            raise ExperimentConfigError(str(exc)) from None
        name = Path(where).stem
    raw_d = OmegaConf.to_container(raw, resolve=True) or {}
    overrides = list(overrides)
    # `layer=NAME` / `task=NAME` name the section (a dotlist would let `layer.x=..` overwrite the string)
    overrides = [f"{o.split('=', 1)[0]}.name={o.split('=', 1)[1]}" if o.split("=", 1)[0] in ("task", "layer") else o
                 for o in overrides]
    try:
        over_d = OmegaConf.to_container(parse_overrides(overrides), resolve=True) or {}
    except ValueError as exc:
        raise ExperimentConfigError(str(exc)) from None
    if layer_fields:
        layer_d = over_d.get("layer") if isinstance(over_d.get("layer"), dict) else {}
        over_d["layer"] = {**layer_d, **dict(layer_fields)}
    exp = _validate(_merge(raw_d, over_d), name)
    if not over_d:
        exp.base = exp.cfg
    else:  # the experiment as its file says, to name the run folder after what the overrides changed
        try:
            exp.base = _validate(_merge(raw_d, {}), name).cfg
        except ExperimentConfigError:  # the file alone is incomplete: every override counts
            exp.base = OmegaConf.create({})
    return exp


def _merge(raw_d: dict, over_d: dict) -> DictConfig:
    for d in (raw_d, over_d):
        if not isinstance(d, dict):
            raise ExperimentConfigError(f"an experiment is a mapping of sections, got {d!r}")
        _check_keys({k: v for k, v in d.items() if k != "layer"}, ExperimentConfig)
    task = _named_section("task", [raw_d.get("task"), over_d.get("task")], _task_base)
    layer = _named_section("layer", [raw_d.get("layer"), over_d.get("layer")], _layer_base)
    _check_keys(task, TaskConfig, "task.")
    rest = [{k: v for k, v in d.items() if k not in ("task", "layer")} for d in (raw_d, over_d)]
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), *rest, {"task": task, "layer": layer})
        OmegaConf.to_object(cfg)  # runs the dataclasses' __post_init__ checks
    except OmegaConfBaseException as exc:
        raise ExperimentConfigError(_type_error_line(exc)) from None
    except (ValueError, TypeError) as exc:
        raise ExperimentConfigError(f"invalid experiment config: {exc}") from None
    return cfg


_TYPE_WORDS = {"Integer": ("an int", "6"), "Float": ("a float", "0.1"), "Boolean": ("a bool", "true"),
               "String": ("a string", "text")}


def _type_error_line(exc: OmegaConfBaseException) -> str:
    """``model.n_layers: 'two' is not an int (e.g. model.n_layers=6)``: key, value and wanted type in one line."""
    key = getattr(exc, "full_key", None) or "?"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for word, (kind, example) in _TYPE_WORDS.items():
        if f"converted to {word}" in first:
            return f"{key}: {getattr(exc, 'value', None)!r} is not {kind} (e.g. {key}={example})"
    return f"invalid experiment config: {key}: {first}"


def _validate(cfg: DictConfig, name: str) -> Experiment:
    try:
        task = get_task(cfg.task.name)
        task_config = task.make_config(OmegaConf.to_container(cfg.task.options, resolve=True))
    except ValueError as exc:
        raise ExperimentConfigError(f"task.options: {exc}") from None
    needs = getattr(task.config_class, "needs_model", None)
    if needs:
        raise ExperimentConfigError(f"task {task.name} needs {needs}, which zoo does not build (docs/synthetic.md, "
                                    "'Models'): choose another task")
    max_len = int(task.length(task_config))
    if getattr(task, "causal", False):
        _make_causal(cfg, task.name)
    try:
        layer = resolve_layer(cfg.layer, d_model=cfg.model.d_model, max_len=max_len)
    except registry.RegistryError as exc:
        raise ExperimentConfigError(f"layer: {exc}") from None
    cfg.layer = layer.to_dict()
    gen = OmegaConf.to_container(cfg.data.generate, resolve=True)
    if gen:
        try:
            task.generator_config(task_config, gen)
        except (ValueError, TypeError) as exc:
            raise ExperimentConfigError(f"data.generate: {exc}") from None
    t, o = cfg.train, cfg.optim
    for section, key in (("train", "warmup_compile"), ("train", "cuda_graphs"), ("train", "tensorboard"),
                         ("data", "on_device")):
        cfg[section][key] = str(cfg[section][key]).lower()  # `key=true` arrives as the bool True, i.e. "True"
    checks = (
        ("train.epochs", t.epochs, t.epochs > 0, "a positive integer"),
        ("train.batch_size", t.batch_size, t.batch_size > 0, "a positive integer"),
        ("train.eval_batch_size", t.eval_batch_size, t.eval_batch_size is None or t.eval_batch_size > 0,
         "a positive integer or null"),
        ("train.max_steps", t.max_steps, t.max_steps is None or t.max_steps > 0, "a positive integer or null"),
        ("train.checkpoint_every", t.checkpoint_every, t.checkpoint_every >= 0, ">= 0"),
        ("train.eval_every", t.eval_every, t.eval_every >= 0, ">= 0"),
        ("train.log_every", t.log_every, t.log_every > 0, "a positive integer"),
        ("optim.lr", o.lr, o.lr > 0, "> 0"),
        ("optim.grad_clip", o.grad_clip, o.grad_clip >= 0, ">= 0"),
        ("optim.warmup_steps", o.warmup_steps, o.warmup_steps >= 0, ">= 0"),
        ("train.precision", t.precision, t.precision in ("auto", "bf16", "fp32"), "auto | bf16 | fp32"),
        ("train.warmup_compile", t.warmup_compile, t.warmup_compile in ("auto", "true", "false"),
         "auto | true | false"),
        ("train.cuda_graphs", t.cuda_graphs, t.cuda_graphs in ("auto", "true", "false"), "auto | true | false"),
        ("data.on_device", cfg.data.on_device, cfg.data.on_device in ("auto", "true", "false"), "auto | true | false"),
        ("train.tensorboard", t.tensorboard, t.tensorboard in ("auto", "true", "false"), "auto | true | false"),
    )
    for key, value, ok, want in checks:
        if not ok:
            raise ExperimentConfigError(f"{key}={value!r} is not valid: must be {want}")
    check_device(t.device)
    return Experiment(cfg=cfg, name=name, task=task, task_config=task_config, layer=layer, max_len=max_len)


def _make_causal(cfg: DictConfig, task: str) -> None:
    """A causal task (each prediction sees only the past: MQAR, MAD) sets the layer's ``causal`` field;
    a layer whose class does not declare ``supports_causal`` is refused in one line."""
    try:
        entry = registry.get(cfg.layer.name)
    except registry.RegistryError as exc:
        raise ExperimentConfigError(f"layer: {exc}") from None
    has_field = "causal" in {f.name for f in dataclasses.fields(entry.config_class)}
    if not getattr(entry.cls, "supports_causal", False) or not has_field:
        raise ExperimentConfigError(f"layer {cfg.layer.name} cannot be causal (its class does not declare "
                                    f"supports_causal) and task {task} is: choose a causal layer "
                                    "(`zoo layers` lists them)")
    cfg.layer.causal = True


def check_device(device: str) -> torch.device:
    """The ``torch.device`` of ``train.device`` (``auto`` = cuda if available); one clear error otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ExperimentConfigError(f"train.device={device!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ExperimentConfigError(
            f"train.device={device!r}: the trainer runs on cpu or cuda (use auto, cpu, cuda, cuda:N)"
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ExperimentConfigError(f"train.device={device!r} but no CUDA GPU is available here "
                                        "(torch.cuda.is_available() is False): use train.device=auto or cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ExperimentConfigError(
                f"train.device={device!r} but this machine has {torch.cuda.device_count()} GPU(s)"
            )
    return dev


def config_diff(saved: dict, current: dict) -> list[str]:
    """The keys (other than the runtime ones) whose values differ, the ones that matter most first."""
    a, b = flatten(saved), flatten(current)
    keys = [k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RUNTIME_KEYS]
    if "layer.name" in keys:  # another layer: its fields differ because the layer does
        keys = [k for k in keys if not k.startswith("layer.") or k == "layer.name"]
    order = ("layer.name", "task.name", "layer.", "model.", "task.", "optim.", "train.", "data.")
    return sorted(keys, key=lambda k: (next((i for i, p in enumerate(order) if k == p or k.startswith(p)), 99), k))


def describe_diff(saved: dict, current: dict, keys: List[str], limit: int = 12) -> str:
    a, b = flatten(saved), flatten(current)
    shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys[:limit])
    return shown + (f", and {len(keys) - limit} more" if len(keys) > limit else "")
