"""The LRA trainer: ``zoo train EXPERIMENT [key=value ...]``.

An *experiment* is four configs plus two for data and the loop, in one YAML under
``configs/experiments/`` (or any path), merged with OmegaConf dotlist overrides:

    task:   listops                   # configs/tasks/<name>.yaml, or {name: ..., options: {...}}
    layer:  s4d                       # a registry name (configs/layers/<name>.yaml) or {name: ..., fields}
    model:  {d_model: 64, n_layers: 2, ...}                 # zoo.models.ModelConfig
    optim:  {opt: adamw, lr: 1e-3, sched: cosine, ...}      # OptimConfig (timm factories)
    data:   {root: data, generate_if_missing: true, ...}    # DataConfig
    train:  {epochs: 3, batch_size: 32, ...}                # TrainConfig

``layer.d_model`` is always the model's ``d_model`` and ``layer.max_len`` (for layers that declare
``needs_max_len``) the task's ``max_len``: both are injected. Unknown keys raise with the valid
keys listed. ``layer=las`` or ``task=text`` on the command line replaces the whole section (the
fields of the previous layer would not fit the new one).

A run folder (``--out``/``train.run_name``) holds ``config.yaml``, ``checkpoint.pt`` (model,
optimizer, scheduler, step/epoch/batch, RNG states, config; written atomically every
``train.checkpoint_every`` steps, at each epoch end and when stopping), ``best.pt`` (the weights
with the best validation accuracy), ``metrics.jsonl``, ``curve.png`` and ``summary.json``.
Running the same experiment again resumes from ``checkpoint.pt`` exactly (same batches, same
dropout masks, same learning rates).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import registry
from zoo.configs import find_config, config_dirs, layer_config, parse_overrides
from zoo.lra.common import TaskNotFoundError, default_cache_dir, validate_task
from zoo.models import ModelConfig, build_model

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "ExperimentConfigError",
    "OptimConfig",
    "TaskConfig",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "add_train_parser",
    "build_optimizer",
    "build_scheduler",
    "find_experiment",
    "load_experiment",
    "param_groups",
    "run_experiment",
]

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


def _help(default, text: str):
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text})
    return field(default=default, metadata={"help": text})


# =========================================================================== configs


@dataclass
class TaskConfig:
    """Which LRA task, and its protocol fields (``zoo.lra.config``: max_len, pixels, ...)."""

    name: str = _help(MISSING, "listops | text | retrieval | image | pathfinder | pathx")
    options: Dict[str, Any] = _help({}, "task protocol fields passed to zoo.lra.prepare (validated there)")


@dataclass
class DataConfig:
    """Where the data is, and what to do when it is missing."""

    root: str = _help("data", "folder searched for the task's files (the official layout; see docs/data.md)")
    cache_dir: Optional[str] = _help(None, "processed-data cache (default: $ZOO_DATA_CACHE or ~/.cache/zoo/lra)")
    generate_if_missing: bool = _help(False, "generate the task's data if it is not under root (ListOps)")
    generate: Dict[str, Any] = _help({}, "generator fields (zoo.lra.ListOpsGenConfig) for generate_if_missing")
    num_workers: int = _help(0, "DataLoader worker processes")
    trim: bool = _help(True, "drop the all-padding tail columns of each batch")


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule, built by timm's factories."""

    opt: str = _help("adamw", "timm optimizer name (timm.optim.list_optimizers())")
    lr: float = _help(1e-3, "peak learning rate of the default groups")
    weight_decay: float = _help(0.01, "weight decay of >= 2-D parameters (1-D: 0; mixer hooks: their own)")
    opt_kwargs: Dict[str, Any] = _help({}, "extra optimizer arguments, e.g. {betas: [0.9, 0.98]}")
    sched: str = _help("cosine", "timm scheduler: cosine | step | constant | poly | none ...")
    warmup_steps: int = _help(0, "linear warm-up steps from warmup_lr")
    warmup_lr: float = _help(1e-6, "learning rate at step 0 of the warm-up")
    min_lr: float = _help(0.0, "floor of the schedule")
    schedule_steps: Optional[int] = _help(None, "schedule length in steps (default: epochs * steps per epoch)")
    grad_clip: float = _help(1.0, "clip the global gradient norm to this (0 = off)")


@dataclass
class TrainConfig:
    """The loop: length, batches, evaluation, checkpoints, device."""

    epochs: int = _help(10, "passes over the training split")
    batch_size: int = _help(32, "training batch size")
    eval_batch_size: Optional[int] = _help(None, "evaluation batch size (default: 2 x batch_size)")
    max_steps: Optional[int] = _help(None, "stop after this many optimizer steps in total (the schedule is unchanged)")
    seed: int = _help(0, "seeds the model init, the batch order and dropout")
    device: str = _help("auto", "auto (cuda if available) | cpu | cuda | cuda:N")
    precision: str = _help("auto", "auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32")
    checkpoint_every: int = _help(500, "write checkpoint.pt every N steps (also at each epoch end and at stop)")
    eval_every: int = _help(0, "also evaluate on val every N steps (0: at epoch ends only)")
    log_every: int = _help(20, "append a training record to metrics.jsonl every N steps")
    progress: bool = _help(True, "tqdm progress bars")
    run_name: Optional[str] = _help(None, "run folder name under --out (default: the experiment's name)")


@dataclass
class ExperimentConfig:
    """task + layer + model + optim (+ data, train)."""

    task: TaskConfig = field(default_factory=TaskConfig)
    layer: Dict[str, Any] = _help({}, "registry layer config: name + fields")
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# keys that may differ between a checkpoint's config and the resuming one
_RUNTIME_KEYS = {"train.max_steps", "train.progress", "train.eval_batch_size", "data.root", "data.cache_dir",
                 "data.num_workers", "train.device", "train.run_name"}


class ExperimentConfigError(ValueError):
    """An experiment config has an unknown key, a wrong type or an invalid value."""


class TrainingDiverged(RuntimeError):
    """The loss (or gradient norm) became NaN or infinite; the last good checkpoint is kept."""


# =========================================================================== loading experiments


def available_experiments() -> list[str]:
    names = set()
    for d in config_dirs():
        names.update(p.stem for p in (d / "experiments").glob("*.yaml"))
    return sorted(names)


def find_experiment(name_or_path: str) -> Path:
    """``configs/experiments/<name>.yaml`` (see ``zoo.configs.config_dirs``) or a YAML path."""
    p = Path(name_or_path).expanduser()
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        if not p.is_file():
            raise FileNotFoundError(f"experiment config {name_or_path} does not exist")
        return p
    found = find_config("experiments", name_or_path)
    if found is None:
        names = available_experiments()
        close = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise FileNotFoundError(f"no experiment {name_or_path!r}.{hint} Available: {', '.join(names) or 'none'} "
                                f"(configs/experiments/*.yaml), or pass a path to a YAML file.")
    return found


def _task_base(name: str) -> DictConfig:
    found = find_config("tasks", name)
    if found is not None:
        cfg = OmegaConf.load(found)
        if not isinstance(cfg, DictConfig) or "name" not in cfg:
            raise ExperimentConfigError(f"{found}: a task config needs a top-level `name:` key")
        return cfg
    return OmegaConf.create({"name": validate_task(name), "options": {}})


def _layer_base(name: str) -> DictConfig:
    return OmegaConf.create(OmegaConf.to_container(layer_config(name), resolve=True))


def _named_section(kind: str, values: list, base_fn) -> DictConfig:
    """Merge ``values`` (str name or mapping, in order); a new ``name`` discards earlier fields."""
    name, parts = None, []
    for v in values:
        if v is None:
            continue
        if isinstance(v, str):
            name, parts = v, []
            continue
        d = OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) else dict(v)
        if not isinstance(d, dict):
            raise ExperimentConfigError(f"`{kind}` must be a name or a mapping, got {v!r}")
        new = d.pop("name", None)
        if new is not None and new != name:
            name, parts = new, []
        parts.append(d)
    if name is None:
        raise ExperimentConfigError(f"the experiment has no `{kind}`: set e.g. `{kind}: "
                                    f"{'listops' if kind == 'task' else 's4d'}` or `{kind}.name=...`")
    return OmegaConf.merge(base_fn(name), *[OmegaConf.create(p) for p in parts])


def _check_keys(values: dict, cls: type, prefix: str = "") -> None:
    """Unknown keys raise, naming the valid keys of that section (recursively into dataclasses)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(prefix + c) for c in close)}?" if close else ""
            raise ExperimentConfigError(
                f"unknown config key {prefix + str(key)!r}.{hint} Valid keys{' of ' + prefix[:-1] if prefix else ''}: "
                f"{', '.join(prefix + k for k in fields)}.")
        ftype = fields[key].type
        sub = ftype if isinstance(ftype, type) and dataclasses.is_dataclass(ftype) else None
        if sub is None and isinstance(ftype, str):  # postponed annotations
            sub = {c.__name__: c for c in (TaskConfig, DataConfig, OptimConfig, TrainConfig, ModelConfig)}.get(ftype)
        if sub is not None:
            if not isinstance(value, dict):
                raise ExperimentConfigError(f"{prefix + key} must be a mapping of {', '.join(f.name for f in dataclasses.fields(sub))}")
            _check_keys(value, sub, prefix + key + ".")


def load_experiment(name_or_path: str | os.PathLike | dict | DictConfig, overrides: Iterable[str] = ()) -> DictConfig:
    """The validated experiment config (a structured DictConfig) from a name, path or mapping + overrides."""
    if isinstance(name_or_path, (dict, DictConfig)):
        raw = OmegaConf.create(name_or_path)
    else:
        raw = OmegaConf.load(find_experiment(str(name_or_path)))
    # `layer=NAME` / `task=NAME` name the section (a dotlist would let `layer.x=..` overwrite the string)
    overrides = [f"{o.split('=', 1)[0]}.name={o.split('=', 1)[1]}" if o.split("=", 1)[0] in ("task", "layer") else o
                 for o in overrides]
    try:
        over = parse_overrides(overrides)
    except ValueError as exc:
        raise ExperimentConfigError(str(exc)) from None
    raw_d = OmegaConf.to_container(raw, resolve=True) or {}
    over_d = OmegaConf.to_container(over, resolve=True) or {}
    for d in (raw_d, over_d):
        _check_keys({k: v for k, v in d.items() if k not in ("task", "layer")}, ExperimentConfig)
        unknown = [k for k in d if k not in {f.name for f in dataclasses.fields(ExperimentConfig)}]
        if unknown:
            _check_keys({unknown[0]: None}, ExperimentConfig)
    try:
        task = _named_section("task", [raw_d.get("task"), over_d.get("task")], _task_base)
        layer = _named_section("layer", [raw_d.get("layer"), over_d.get("layer")], _layer_base)
    except registry.ConfigError as exc:
        raise ExperimentConfigError(f"layer: {exc}") from None
    task_d = OmegaConf.to_container(task, resolve=True)
    _check_keys(task_d, TaskConfig, "task.")
    rest = [{k: v for k, v in d.items() if k not in ("task", "layer")} for d in (raw_d, over_d)]
    schema = OmegaConf.structured(ExperimentConfig)
    try:
        cfg = OmegaConf.merge(schema, *rest, {"task": task_d, "layer": OmegaConf.to_container(layer, resolve=True)})
        OmegaConf.to_object(cfg)  # runs the dataclasses' __post_init__ checks
    except OmegaConfBaseException as exc:
        raise ExperimentConfigError(f"invalid experiment config: {str(exc).strip().splitlines()[0]}") from None
    except (ValueError, TypeError) as exc:
        raise ExperimentConfigError(f"invalid experiment config: {exc}") from None
    _validate(cfg)
    return cfg


def _validate(cfg: DictConfig) -> None:
    from zoo.lra.config import make_config
    from zoo.lra.listops_gen import ListOpsGenConfig

    try:
        make_config(cfg.task.name, OmegaConf.to_container(cfg.task.options, resolve=True))
    except ValueError as exc:
        raise ExperimentConfigError(f"task.options: {exc}") from None
    layer = OmegaConf.to_container(cfg.layer, resolve=True)
    try:
        registry.make_config({**layer, "d_model": cfg.model.d_model})
    except registry.RegistryError as exc:
        raise ExperimentConfigError(f"layer: {exc}") from None
    gen = OmegaConf.to_container(cfg.data.generate, resolve=True)
    if gen:
        if cfg.task.name not in _GENERATORS:
            raise ExperimentConfigError(f"data.generate: task {cfg.task.name!r} has no generator here "
                                        f"(generators: {', '.join(_GENERATORS)})")
        keys = [f.name for f in dataclasses.fields(ListOpsGenConfig)]
        bad = [k for k in gen if k not in keys]
        if bad:
            raise ExperimentConfigError(f"unknown config key 'data.generate.{bad[0]}'. Valid keys of data.generate: "
                                        f"{', '.join(keys)}.")
    t, o = cfg.train, cfg.optim
    for name, value, ok in (("train.epochs", t.epochs, t.epochs > 0), ("train.batch_size", t.batch_size, t.batch_size > 0),
                            ("train.checkpoint_every", t.checkpoint_every, t.checkpoint_every >= 0),
                            ("train.log_every", t.log_every, t.log_every > 0), ("optim.lr", o.lr, o.lr > 0),
                            ("optim.grad_clip", o.grad_clip, o.grad_clip >= 0),
                            ("train.precision", t.precision, t.precision in ("auto", "bf16", "fp32"))):
        if not ok:
            raise ExperimentConfigError(f"{name}={value!r} is not valid")


# =========================================================================== data


def _generate_listops(out: Path, fields: dict, progress: bool) -> Path:
    from zoo.lra.listops_gen import ListOpsGenConfig, generate_listops

    generate_listops(out, ListOpsGenConfig(**fields), progress=progress, overwrite=False)
    return out


_GENERATORS = {"listops": _generate_listops}
_GENERATE_HINT = {
    "listops": "zoo data generate listops --out {root} --n-train 2000 --n-val 200 --n-test 200 "
               "--max-depth 6 --min-length 20 --max-length 256  (or set data.generate_if_missing=true)",
}


def prepare_data(cfg: DictConfig, *, progress: bool = True):
    """``(PreparedTask, source)``: the task's cache entry; ``source`` says where the files came from."""
    from zoo.lra import prepare

    task = cfg.task.name
    root = Path(cfg.data.root).expanduser()
    cache_dir = Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache_dir()
    options = OmegaConf.to_container(cfg.task.options, resolve=True)
    try:
        return prepare(task, root, options=options, cache_dir=cache_dir, progress=progress), f"files under {root}"
    except TaskNotFoundError as exc:
        if task not in _GENERATORS:
            raise
        if not cfg.data.generate_if_missing:
            raise TaskNotFoundError(f"{exc}\nGenerate a ListOps set with: "
                                    f"{_GENERATE_HINT[task].format(root=root)}") from None
    fields = OmegaConf.to_container(cfg.data.generate, resolve=True)
    key = hashlib.sha256(json.dumps({"task": task, **fields}, sort_keys=True).encode()).hexdigest()[:12]
    gen_root = cache_dir / "generated" / f"{task}-{key}"
    if not gen_root.exists():
        print(f"zoo train: no {task} data under {root}; generating a small set at {gen_root} ({fields})",
              file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix=f".{task}-{key}.tmp-", dir=_mkdir(cache_dir / "generated")))
        _GENERATORS[task](tmp, fields, progress)
        os.replace(tmp, gen_root)
    source = f"GENERATED at {gen_root} (data.generate_if_missing; not the official files)"
    return prepare(task, gen_root, options=options, cache_dir=cache_dir, progress=progress), source


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled batches of one epoch, a pure function of (seed, epoch) (so resuming is exact)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


# =========================================================================== optimisation


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups: the mixers' ``param_groups()`` hooks, then decay / no-decay for the rest.

    Every mixer (``model.mixers()``) is asked; a returned group *with options* (e.g. ``lr``,
    ``weight_decay``) is kept with those options (groups with equal options are merged); a group
    without options ("the rest") gets the default treatment: weight decay for parameters of two
    or more dimensions, none for biases, norms and other 1-D parameters.
    """
    claimed: dict[int, tuple] = {}
    special: dict[tuple, list] = {}
    for mixer in model.mixers():
        hook = getattr(mixer, "param_groups", None)
        groups = hook() if callable(hook) else None
        for g in groups or []:
            opts = tuple(sorted((k, v) for k, v in g.items() if k != "params"))
            if not opts:
                continue
            for p in g["params"]:
                if not p.requires_grad or id(p) in claimed:
                    continue
                claimed[id(p)] = opts
                special.setdefault(opts, []).append(p)
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad and id(p) not in claimed:
            (decay if p.ndim >= 2 else no_decay).append(p)
    out = [{"name": "decay", "params": decay, "weight_decay": weight_decay},
           {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
    for opts, ps in special.items():
        out.append({"name": "mixer:" + ",".join(f"{k}={v}" for k, v in opts), "params": ps, **dict(opts)})
    return [g for g in out if g["params"]]


def build_optimizer(model: torch.nn.Module, optim: DictConfig | OptimConfig) -> torch.optim.Optimizer:
    """``timm.optim.create_optimizer_v2`` over :func:`param_groups`."""
    from timm.optim import create_optimizer_v2

    kwargs = optim.opt_kwargs
    kwargs = OmegaConf.to_container(kwargs, resolve=True) if isinstance(kwargs, DictConfig) else dict(kwargs)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return create_optimizer_v2(param_groups(model, optim.weight_decay), opt=optim.opt, lr=optim.lr,
                               weight_decay=optim.weight_decay, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: DictConfig | OptimConfig, total_steps: int):
    """``timm.scheduler.create_scheduler_v2`` counted in optimizer steps (``step_update(step)``)."""
    from timm.scheduler import create_scheduler_v2

    if optim.sched == "none":
        return None
    scheduler, _ = create_scheduler_v2(optimizer, sched=optim.sched, num_epochs=total_steps,
                                       warmup_epochs=optim.warmup_steps, warmup_lr=optim.warmup_lr,
                                       min_lr=optim.min_lr, step_on_epochs=False, updates_per_epoch=1)
    return scheduler


# =========================================================================== helpers


def _atomic_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_write_text(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _flatten(d: Any, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    # RNG states are CPU ByteTensors; a checkpoint loaded with map_location="cuda" moved them.
    torch.set_rng_state(s["torch"].cpu())
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in s["cuda"]])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def plot_curves(metrics_path: Path, out: Path, title: str = "") -> Path | None:
    """Loss and accuracy vs step (train and val) from ``metrics.jsonl`` into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for kind, style in (("train", "-"), ("val", "o-")):
        pts = [r for r in rows if r.get("kind") == kind]
        if not pts:
            continue
        steps = [r["step"] for r in pts]
        axes[0].plot(steps, [r["loss"] for r in pts], style, label=kind, markersize=3)
        axes[1].plot(steps, [r["acc"] for r in pts], style, label=kind, markersize=3)
    for ax, name in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# =========================================================================== trainer


class Trainer:
    """Builds data, model, optimizer and scheduler from an experiment config and runs the loop.

    Args:
        cfg: a config from :func:`load_experiment`.
        run_dir: the run folder (created).
        datasets: optional ``{"train", "val", "test"}`` datasets with the ``LRADataset`` interface
            (``n_classes``, ``max_len``, ``vocab_size``, ``is_pair``, ``collate_fn()``, ``padding_mask()``)
            instead of ``zoo.lra.prepare`` (tests, custom data).
    """

    def __init__(self, cfg: DictConfig, run_dir: str | os.PathLike, *, datasets: dict | None = None) -> None:
        self.cfg = cfg
        self.run_dir = _mkdir(Path(run_dir))
        t = cfg.train
        self.progress = bool(t.progress)
        if datasets is None:
            prepared, self.data_source = prepare_data(cfg, progress=self.progress)
            datasets = {s: prepared.dataset(s) for s in ("train", "val", "test")}
            self.data_protocol = prepared.manifest.get("build", {}).get("protocol")
        else:
            self.data_source, self.data_protocol = "datasets passed to Trainer", None
        self.datasets = datasets
        train_ds = datasets["train"]
        dev = t.device if t.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(dev)
        prec = t.precision if t.precision != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        self.precision = prec
        _seed_all(t.seed)
        self.model = build_model(ModelConfig(**OmegaConf.to_container(cfg.model)), cfg.layer,
                                 n_classes=train_ds.n_classes, max_len=train_ds.max_len,
                                 vocab_size=train_ds.vocab_size, n_inputs=2 if getattr(train_ds, "is_pair", False) else 1)
        self.model.to(self.device)
        self.n_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.steps_per_epoch = math.ceil(len(train_ds) / t.batch_size)
        self.total_steps = int(cfg.optim.schedule_steps or t.epochs * self.steps_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.total_steps)
        # loop state (all of it goes into the checkpoint)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_val_acc: float | None = None
        self.best_step: int | None = None
        self.train_seconds = 0.0
        self._window = [0.0, 0, 0, 0]  # loss sum, correct, count, batches since the last record

    # ------------------------------------------------------------------ checkpoints

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best_val_acc": self.best_val_acc, "best_step": self.best_step,
            "train_seconds": self.train_seconds, "window": list(self._window),
            "total_steps": self.total_steps,
            "rng": _rng_state(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def save_checkpoint(self) -> Path:
        _atomic_save(self.state_dict(), self.checkpoint_path)
        return self.checkpoint_path

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> None:
        path = Path(path or self.checkpoint_path)
        ck = torch.load(path, map_location=self.device, weights_only=False)
        self._check_compatible(ck["config"], path)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.scheduler is not None and ck["scheduler"] is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
        for k in ("step", "epoch", "batch_in_epoch", "best_val_acc", "best_step", "train_seconds"):
            setattr(self, k, ck[k])
        self._window = list(ck["window"])
        _set_rng_state(ck["rng"])
        self._truncate_metrics(self.step)

    def _check_compatible(self, saved: dict, path: Path) -> None:
        a, b = _flatten(saved), _flatten(OmegaConf.to_container(self.cfg, resolve=True))
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in _RUNTIME_KEYS)
        if diff:
            show = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:6])
            raise ExperimentConfigError(
                f"{path} was written with a different config ({show}{', ...' if len(diff) > 6 else ''}). "
                "Resume with the same config, or start a new run (train.run_name=NEW or another --out).")

    def _truncate_metrics(self, step: int) -> None:
        p = self.run_dir / "metrics.jsonl"
        if not p.exists():
            return
        rows = [line for line in p.read_text().splitlines() if line.strip()]
        keep = [r for r in rows if json.loads(r).get("kind") in ("train", "val") and json.loads(r)["step"] <= step]
        if len(keep) != len(rows):
            _atomic_write_text("".join(r + "\n" for r in keep), p)

    # ------------------------------------------------------------------ batches

    def _to_device(self, batch, ds):
        *seqs, labels = batch
        seqs = [s.to(self.device, non_blocking=True) for s in seqs]
        masks = [ds.padding_mask(s) for s in seqs]
        return seqs, masks, labels.to(self.device, non_blocking=True)

    def _loader(self, ds, batches):
        return torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=ds.collate_fn(trim=self.cfg.data.trim),
                                           num_workers=self.cfg.data.num_workers,
                                           generator=torch.Generator(),  # never touches the global RNG
                                           pin_memory=self.device.type == "cuda")

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Mean loss and accuracy over a split (eval mode, no gradients)."""
        ds = self.datasets[split]
        bs = self.cfg.train.eval_batch_size or 2 * self.cfg.train.batch_size
        batches = [list(range(i, min(i + bs, len(ds)))) for i in range(0, len(ds), bs)]
        was_training = self.model.training
        self.model.eval()
        loss_sum, correct, n = 0.0, 0, 0
        from tqdm.auto import tqdm

        for batch in tqdm(self._loader(ds, batches), desc=f"eval {split}", leave=False, disable=not self.progress,
                          dynamic_ncols=True):
            seqs, masks, labels = self._to_device(batch, ds)
            with self._autocast():
                logits = self.model(seqs, masks).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(-1) == labels).sum())
            n += labels.numel()
        self.model.train(was_training)
        return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1), "n": n}

    # ------------------------------------------------------------------ the loop

    def _log(self, record: dict) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _diverged(self, what: str, value: float) -> TrainingDiverged:
        step = self.step + 1
        ck = (f"the last good checkpoint is {self.checkpoint_path} (step {torch.load(self.checkpoint_path, weights_only=False)['step']})"
              if self.checkpoint_path.exists() else "no checkpoint was written before it")
        self._log({"kind": "diverged", "step": step, "epoch": self.epoch, "what": what, "value": str(value)})
        return TrainingDiverged(
            f"non-finite {what} ({value}) at step {step} (epoch {self.epoch}, batch {self.batch_in_epoch}): training "
            f"stopped, nothing after step {self.step} was saved; {ck}. Try a lower optim.lr, a warm-up "
            "(optim.warmup_steps), gradient clipping (optim.grad_clip) or train.precision=fp32.")

    def train_step(self, batch, ds) -> tuple[float, int, int]:
        seqs, masks, labels = self._to_device(batch, ds)
        self.model.train()
        with self._autocast():
            logits = self.model(seqs, masks)
        loss = F.cross_entropy(logits.float(), labels)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise self._diverged("loss", loss_value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        if not math.isfinite(float(norm)):
            raise self._diverged("gradient norm", float(norm))
        self.optimizer.step()
        self.step += 1
        if self.scheduler is not None:
            self.scheduler.step_update(self.step)
        correct = int((logits.detach().argmax(-1) == labels).sum())
        return loss_value, correct, labels.numel()

    def fit(self, max_steps: int | None = None) -> dict:
        """Train until the schedule ends (or ``max_steps`` total steps), then test; returns the summary."""
        from tqdm.auto import tqdm

        t = self.cfg.train
        max_steps = max_steps if max_steps is not None else t.max_steps
        stop = min(self.total_steps, max_steps) if max_steps is not None else self.total_steps
        ds = self.datasets["train"]
        if self.step == 0 and not (self.run_dir / "metrics.jsonl").exists():
            (self.run_dir / "metrics.jsonl").touch()
        _atomic_write_text(OmegaConf.to_yaml(self.cfg), self.run_dir / "config.yaml")
        bar = tqdm(total=stop, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        t0 = time.perf_counter()
        saved_at = self.step
        try:
            while self.step < stop:
                batches = epoch_batches(len(ds), t.batch_size, t.seed, self.epoch)
                n_batches = len(batches)
                for batch in self._loader(ds, batches[self.batch_in_epoch:]):
                    loss, correct, n = self.train_step(batch, ds)
                    self.batch_in_epoch += 1
                    w = self._window
                    w[0] += loss * n
                    w[1] += correct
                    w[2] += n
                    w[3] += 1
                    bar.update(1)
                    bar.set_postfix(epoch=self.epoch, loss=f"{loss:.4f}", lr=f"{self._lr():.2e}")
                    if w[3] >= t.log_every:
                        self._log({"kind": "train", "step": self.step, "epoch": self.epoch, "loss": w[0] / w[2],
                                   "acc": w[1] / w[2], "lr": self._lr()})
                        self._window = [0.0, 0, 0, 0]
                    epoch_end = self.batch_in_epoch == n_batches
                    if epoch_end:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                    if epoch_end or (t.eval_every and self.step % t.eval_every == 0):
                        self._validate()
                    if epoch_end or (t.checkpoint_every and self.step % t.checkpoint_every == 0) or self.step >= stop:
                        self.train_seconds += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        self.save_checkpoint()
                        saved_at = self.step
                    if self.step >= stop or epoch_end:
                        break
        finally:
            bar.close()
            if saved_at != self.step:
                self.train_seconds += time.perf_counter() - t0
        return self.finish(reached_end=self.step >= self.total_steps)

    def _validate(self) -> None:
        r = self.evaluate("val")
        self._log({"kind": "val", "step": self.step, "epoch": self.epoch, "loss": r["loss"], "acc": r["acc"]})
        if self.best_val_acc is None or r["acc"] > self.best_val_acc:
            self.best_val_acc, self.best_step = r["acc"], self.step
            _atomic_save({"model": self.model.state_dict(), "step": self.step, "val_acc": r["acc"]},
                         self.run_dir / BEST)
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"step {self.step} epoch {self.epoch}: val loss {r['loss']:.4f} acc {r['acc']:.4f} "
                  f"(best {self.best_val_acc:.4f} at step {self.best_step})", file=sys.stderr)

    def finish(self, reached_end: bool) -> dict:
        """Test with the best-val weights, write curve.png and summary.json."""
        best = self.run_dir / BEST
        tested = "last"
        if best.exists():
            self.model.load_state_dict(torch.load(best, map_location=self.device, weights_only=False)["model"])
            tested = f"best val (step {self.best_step})"
        test = self.evaluate("test")
        self._log({"kind": "test", "step": self.step, "loss": test["loss"], "acc": test["acc"], "weights": tested})
        name = self.cfg.layer.get("name")
        curve = plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curve.png",
                            f"{self.cfg.task.name} / {name} ({self.step} steps)")
        summary = {
            "status": "complete" if reached_end else f"stopped at step {self.step} of {self.total_steps} (resume to continue)",
            "task": self.cfg.task.name,
            "layer": name,
            "params": self.n_params,
            "steps": self.step,
            "total_steps": self.total_steps,
            "epochs_completed": self.epoch,
            "best_val_acc": self.best_val_acc,
            "best_step": self.best_step,
            "test_acc": test["acc"],
            "test_loss": test["loss"],
            "test_weights": tested,
            "train_seconds": round(self.train_seconds, 2),
            "device": str(self.device),
            "precision": self.precision,
            "data_source": self.data_source,
            "data_protocol": self.data_protocol,
            "sizes": {s: len(d) for s, d in self.datasets.items()},
            "run_dir": str(self.run_dir),
            "curve": str(curve) if curve else None,
        }
        _atomic_write_text(json.dumps(summary, indent=2) + "\n", self.run_dir / "summary.json")
        return summary


# =========================================================================== entry points


def run_experiment(experiment: str | os.PathLike | dict | DictConfig, overrides: Iterable[str] = (), *,
                   out: str | os.PathLike = "runs", data_root: str | None = None, resume: bool | None = None,
                   max_steps: int | None = None, progress: bool | None = None, datasets: dict | None = None) -> dict:
    """Load, build, train (resuming if the run folder has a checkpoint) and test; returns the summary.

    ``resume``: None = automatic (resume if ``checkpoint.pt`` exists), True = require a checkpoint,
    False = refuse to overwrite an existing one.
    """
    overrides = list(overrides)
    if data_root is not None:
        overrides.append(f"data.root={data_root}")
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    if progress is not None:
        overrides.append(f"train.progress={str(bool(progress)).lower()}")
    cfg = load_experiment(experiment, overrides)
    if cfg.train.run_name:
        run_name = cfg.train.run_name
    elif isinstance(experiment, (str, os.PathLike)):
        run_name = Path(str(experiment)).stem
    else:
        run_name = "run"
    run_dir = Path(out).expanduser() / run_name
    ck = run_dir / CHECKPOINT
    if resume is True and not ck.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {ck}")
    if resume is False and ck.exists():
        raise FileExistsError(f"{ck} exists: resume it (the default), or choose another train.run_name / --out")
    trainer = Trainer(cfg, run_dir, datasets=datasets)
    if ck.exists():
        trainer.load_checkpoint(ck)
        stop = cfg.train.max_steps if cfg.train.max_steps is not None else trainer.total_steps
        print(f"zoo train: resuming {run_dir} at step {trainer.step} (epoch {trainer.epoch}, batch "
              f"{trainer.batch_in_epoch})", file=sys.stderr)
        if trainer.step >= min(stop, trainer.total_steps) and (run_dir / "summary.json").exists():
            print("zoo train: nothing left to train (raise train.max_steps / --max-steps to continue)", file=sys.stderr)
            return json.loads((run_dir / "summary.json").read_text())
    if trainer.progress:
        print(f"zoo train: {run_name}: task {cfg.task.name} ({trainer.data_source}), layer {cfg.layer.name}, "
              f"{trainer.n_params:,} parameters, {trainer.steps_per_epoch} steps/epoch, {trainer.total_steps} steps, "
              f"{trainer.device} {trainer.precision} -> {run_dir}", file=sys.stderr)
    return trainer.fit()


def _cmd_train(args) -> int:
    try:
        summary = run_experiment(args.experiment, [*args.overrides, *args.set_overrides], out=args.out, data_root=args.data_root,
                                 resume=True if args.resume else None, max_steps=args.max_steps,
                                 progress=False if args.no_progress else None)
    except TrainingDiverged as exc:
        print(f"zoo train: error: {exc}", file=sys.stderr)
        return 3
    except (ExperimentConfigError, registry.RegistryError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"zoo train: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


TRAIN_EPILOG = """\
examples:
  zoo train listops_small                         tiny CPU run; generates a small ListOps set if none is found
  zoo train listops_small layer=las model.n_layers=4 optim.lr=5e-4
  zoo train listops --data-root ~/lra --out runs  the official files, found under ~/lra
  zoo train listops_small --max-steps 50          stop early (the lr schedule is unchanged); run again to continue

EXPERIMENT is a name in configs/experiments/ or a YAML path. Overrides are OmegaConf dotlist pairs
(task.*, layer.*, model.*, optim.*, data.*, train.*) right after EXPERIMENT or after --set;
`layer=NAME` / `task=NAME` replace the whole section.
The run folder OUT/<name> gets config.yaml, checkpoint.pt, best.pt, metrics.jsonl, curve.png,
summary.json; if it already has checkpoint.pt the run resumes from it. See docs/train.md.
"""


def add_train_parser(subparsers) -> None:
    """Add ``zoo train`` to the main CLI (``args.func(args)`` returns the exit code)."""
    p = subparsers.add_parser("train", help="train a model on an LRA task (experiment YAML + overrides)",
                              description="Train an encoder with a registry layer on an LRA task.",
                              epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="experiment name (configs/experiments/NAME.yaml) or YAML path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides right after EXPERIMENT, e.g. optim.lr=1e-3 layer=las")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="set_overrides",
                   help="the same overrides, anywhere on the line (applied after the positional ones)")
    p.add_argument("--data-root", help="folder searched for the task's files (data.root)")
    p.add_argument("--out", default="runs", help="runs folder; the run goes to OUT/<experiment> (default: runs)")
    p.add_argument("--resume", action="store_true", help="require a checkpoint in the run folder and continue it "
                   "(without the flag an existing checkpoint is resumed automatically)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps in total (train.max_steps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)


def main(argv: list[str] | None = None) -> int:
    """``python -m zoo.lra.train EXPERIMENT ...`` (the same as ``zoo train``)."""
    parser = argparse.ArgumentParser(prog="zoo")
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
