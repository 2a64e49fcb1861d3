"""The task registry: one :class:`TaskSpec` per LRA task, looked up by name or alias.

A task is what a layer is to the model registry: a name, a typed config (its protocol fields),
and everything task-specific behind one record, so that the loaders, the cache, the trainer and
the CLI read the spec and never branch on a task name. Adding a seventh task is one new module
in ``zoo/data/tasks/`` that calls :func:`register_task`, plus its import line in the package
``__init__``.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["KINDS", "GeneratorSpec", "TaskSpec", "get_task", "register_task", "task_names"]


@dataclass(frozen=True)
class GeneratorSpec:
    """An offline generator of a task's files in the official layout.

    ``generate(out_root, cfg, task_config, progress, overwrite) -> Path`` writes under
    ``out_root`` (a folder :func:`zoo.data.locate` then finds) and returns the task folder;
    ``cfg`` is an instance of ``config_class``. A generator field that the task config also has
    (e.g. Pathfinder's ``resolution``) takes the task's value unless it is given explicitly.
    """

    config_class: type
    generate: Callable[..., Path]
    summary: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """Everything that is particular to one LRA task.

    Attributes:
        name: the name the CLI, configs and ``prepare`` take.
        summary: one line for listings.
        config_class: the protocol config dataclass (fields with ``view=True`` metadata only change
            how cached arrays are presented; ``runtime=True`` fields change neither).
        n_classes: number of labels.
        build: ``(cfg, src, out, rep, progress) -> dict`` reads the source files and writes the
            split arrays (``zoo.data.cache.SplitWriter``); returns what it found.
        fingerprint: ``(cfg, src) -> dict`` identifies the source files (keys the cache).
        encoding: ``(cfg) -> dict`` documents the encoding (goes into the manifest, keys the cache).
        length: ``(cfg) -> int`` the longest input (what a model's positional table and fixed-length
            kernels are sized to).
        is_task_dir: ``(cfg, folder, entries) -> bool`` recognises the task's folder.
        patterns: ``(cfg) -> list[str]`` what ``is_task_dir`` looks for, for error messages.
        how_to_get: how to obtain the data (shown when it is missing; ``{root}`` is filled in).
        aliases: other accepted names (``imdb`` for text, ...).
        defaults: config field values that differ from the dataclass defaults (``pathx``: 128 px).
        inputs: the array names of one example (a pair task has two: a dual-encoder).
        vocab_size: token vocabulary; ``None`` for pixel tasks (their vocabulary depends on the
            ``pixels`` view: 256 tokens or float inputs).
        class_names: a name per label, for listings and plots.
        describe_example: ``(dataset, i) -> list[str]`` lines showing example ``i`` (``zoo data show``).
        resolve_source: ``(cfg, find) -> Path | None`` where the files are; ``find()`` locates the
            task folder under the root (the default); ``None`` means a non-file source for ``build``.
        check: ``(cfg) -> None``: warn about protocol choices that deserve it.
        generator: an offline generator, or ``None``.
        kind: what is predicted, which picks the model's head and loss (never the name):
            ``"classify"`` (one label per example), ``"pair"`` (one label per pair of inputs, a dual
            encoder) or ``"token"`` (a label per position, ``-100`` where ignored).
        causal: each prediction may only see the past (next-token style tasks: MQAR, MAD); a
            trainer sets its layers' ``causal`` field and refuses layers that cannot be causal.
        arrays: ``(cfg, split) -> (inputs, labels)`` for a task generated in memory from its config
            (the synthetic tasks: no files; ``build`` writes these arrays into the cache).
        padding: token 0 is padding (LRA's token tasks); ``False`` where 0 is an ordinary token.
    """

    name: str
    summary: str
    config_class: type
    n_classes: int
    build: Callable
    fingerprint: Callable
    encoding: Callable
    length: Callable
    is_task_dir: Callable
    patterns: Callable
    how_to_get: str
    aliases: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ("inputs",)
    vocab_size: int | None = None
    class_names: tuple[str, ...] = ()
    describe_example: Callable | None = None
    resolve_source: Callable | None = None
    check: Callable | None = None
    generator: GeneratorSpec | None = None
    kind: str = "classify"
    causal: bool = False
    arrays: Callable | None = None
    padding: bool = True

    @property
    def is_pair(self) -> bool:
        """Two inputs per example (a dual encoder)."""
        return len(self.inputs) == 2

    @property
    def is_pixels(self) -> bool:
        """Pixel inputs: full length, no padding (a pixel 0 is a real token). Token tasks (whose
        vocabulary is a config field, hence ``vocab_size=None`` here) are never pixels."""
        return self.vocab_size is None and self.kind != "token"

    @property
    def has_padding(self) -> bool:
        return self.padding and not self.is_pixels

    @property
    def is_token(self) -> bool:
        """A label per position (``labels`` is ``(N, L)``, ``-100`` where ignored)."""
        return self.kind == "token"

    @property
    def has_files(self) -> bool:
        """The task is read from files (``False``: generated in memory from its config)."""
        return self.arrays is None

    def default_config(self):
        return self.config_class(**self.defaults)

    def make_config(self, overrides: Any = None):
        """The validated config of this task from ``overrides``: a config instance, a dict, or
        ``["key=value", ...]`` (OmegaConf dotlist). Unknown keys and wrong types raise, naming the
        valid keys."""
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(overrides, self.config_class):
            cfg = overrides
        else:
            if overrides is None:
                over = {}
            elif isinstance(overrides, Mapping):
                over = dict(overrides)
            else:
                items = list(overrides)
                for o in items:
                    if "=" not in o:
                        raise ValueError(f"{self.name}: option {o!r} is not of the form key=value (e.g. max_len=1000)")
                over = OmegaConf.to_container(OmegaConf.from_dotlist(items))
            keys = [f.name for f in dataclasses.fields(self.config_class)]
            for k in over:
                if k not in keys:
                    close = difflib.get_close_matches(str(k), keys, n=1, cutoff=0.5)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise ValueError(f"{self.name}: unknown option {k!r}.{hint} Valid keys: {', '.join(keys)}")
            try:
                merged = OmegaConf.merge(OmegaConf.structured(self.default_config()), over)
                cfg = OmegaConf.to_object(merged)
            except OmegaConfBaseException as exc:
                raise ValueError(f"{self.name}: bad option ({str(exc).splitlines()[0]}); valid keys: "
                                 f"{', '.join(keys)}") from None
        cfg.validate()
        return cfg

    def split_fields(self, cfg) -> tuple[dict, dict]:
        """``(build, view)``: the fields that key the cache, and those applied when loading."""
        build, view = {}, {}
        for f in dataclasses.fields(cfg):
            if f.metadata.get("runtime"):
                continue
            (view if f.metadata.get("view") else build)[f.name] = getattr(cfg, f.name)
        return build, view

    def generator_config(self, task_cfg, fields: Mapping[str, Any] | None = None):
        """The generator's config: ``fields``, plus the task config's values for shared field names."""
        if self.generator is None:
            raise ValueError(f"task {self.name!r} has no generator (generators: "
                             f"{', '.join(n for n in task_names() if get_task(n).generator) or 'none'})")
        cls = self.generator.config_class
        names = [f.name for f in dataclasses.fields(cls)]
        fields = dict(fields or {})
        for k in fields:
            if k not in names:
                close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.5)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown generator field {k!r} of {self.name}.{hint} Valid keys: {', '.join(names)}")
        shared = {n: getattr(task_cfg, n) for n in names if task_cfg is not None and hasattr(task_cfg, n)}
        cfg = cls(**{**shared, **fields})
        if hasattr(cfg, "validate"):
            cfg.validate()
        return cfg


_TASKS: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


KINDS = ("classify", "pair", "token")


def _validate_kind(spec: TaskSpec) -> None:
    if spec.kind not in KINDS:
        raise ValueError(f"task {spec.name!r}: kind={spec.kind!r}; declare one of {', '.join(KINDS)}")
    if (spec.kind == "pair") != (len(spec.inputs) == 2):
        raise ValueError(f"task {spec.name!r}: kind='pair' goes with exactly two inputs, got {spec.inputs}")


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec``; a name or alias used twice, or an unknown ``kind``, raises."""
    _validate_kind(spec)
    for n in (spec.name, *spec.aliases):
        k = _key(n)
        if k in _ALIASES:
            raise ValueError(f"task name {n!r} is already registered (by {_ALIASES[k]!r})")
    _TASKS[spec.name] = spec
    for n in (spec.name, *spec.aliases):
        _ALIASES[_key(n)] = spec.name
    return spec


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The spec of ``name`` (a name or an alias, case and ``-``/``_`` insensitive)."""
    if isinstance(name, TaskSpec):
        return name
    k = _key(str(name))
    if k in _ALIASES:
        return _TASKS[_ALIASES[k]]
    close = difflib.get_close_matches(k, list(_ALIASES), n=2, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(_ALIASES[c]) for c in close)}?" if close else ""
    raise ValueError(f"unknown LRA task {name!r}.{hint} Choose one of {', '.join(task_names())}")


def task_names() -> list[str]:
    """Registered task names, in registration order."""
    return list(_TASKS)
