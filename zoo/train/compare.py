"""The comparison grid: every listed layer (and seed, and sweep setting) trained under one budget, one table.

A comparison (``configs/comparisons/<name>.yaml``, OmegaConf, dotlist overrides, unknown keys are
errors) names a base experiment, the layers (registry names, with optional fields, a display
``label`` and experiment ``overrides`` of their own), the seeds, the budget (epochs or steps,
identical for every run) and optional sweep axes::

    experiment: listops_small
    layers: [vanilla, las, s4d, {name: local, label: local-a0.1, alpha_max: 0.1}]
    seeds: [0, 1]
    budget: {epochs: 2}
    baseline: vanilla                 # parameters of the others are checked against it (LRA's 10% rule)
    sweep: {optim.lr: [3e-4, 1e-3]}   # optional: every layer x seed per value (zoo.train.sweep)
    figures: [recall_by_width]        # optional: the task family's pictures (zoo.train.figures)

Every run is an ordinary resumable ``zoo train`` run folder,
``OUT/<comparison>/runs/<label>[-<sweep values>]-seed<k>`` (OUT defaults to ``runs``, as in
``make run``): stopping the comparison and starting it again resumes the unfinished runs and
skips the finished ones. Where the runs execute is a declared executor
(:mod:`zoo.train.executors`: ``local`` in this process, ``processes`` spread over the GPUs,
``submitit`` as a job array), checked when the config is read. A failed run is recorded
(``failed.json``) and the others go on; a full or read-only disk stops the grid.
``zoo.train.report`` turns the runs' own summaries into ``table.md``, ``results.json``,
``curves.png`` and ``cost.png``; :func:`report_only` rebuilds them from run folders alone (the
committed form of :mod:`zoo.train.export`: summary, config and thinned metrics per run), training nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo._io import atomic_write_text
from zoo.base import config_field
from zoo.config import load_named, parse_overrides
from zoo.train.executors import EXECUTORS, DiskError, check_executor, resolve
from zoo.train.experiment import ExperimentConfigError, load_experiment
from zoo.train.export import budget_mismatch, grid_environment
from zoo.train.figures import check_figures
from zoo.train.folder import RunFolder
from zoo.train.report import write_report
from zoo.train.sweep import axis_keys, check_sweep, combinations, setting_dotlist, setting_name

__all__ = ["BudgetConfig", "ComparisonConfig", "ExecutionConfig", "GridRun", "load_comparison", "plan", "report_only",
           "run_grid"]


@dataclass
class BudgetConfig:
    """The training budget, the same for every run: epochs or optimizer steps (one of them)."""

    epochs: Optional[int] = config_field(None, "passes over the training split (the schedule spans them)")
    steps: Optional[int] = config_field(None, "optimizer steps (the schedule spans them)")


@dataclass
class ExecutionConfig:
    """Where the runs execute."""

    executor: str = config_field("auto", "auto (in this process on CPU, processes on GPUs), or a name in "
                                         "zoo.train.executors: local | processes | submitit")
    runs_per_gpu: int = config_field(1, "concurrent runs on each GPU: paper-sized graphed steps fill an H200, so "
                                        "3 at once were each 3x slower (docs/training.md); small models may gain")
    cpu_workers: int = config_field(1, "without GPUs, `processes` runs this many at once, the cores shared out "
                                       "(OMP_NUM_THREADS = cores // cpu_workers each)")
    gpus: Optional[List[int]] = config_field(None, "GPU indices to use (default: every visible GPU)")
    submitit: Dict[str, Any] = config_field({}, "submitit parameters, e.g. {cluster: slurm, slurm_partition: gpu, "
                                                "timeout_min: 240, gpus_per_node: 1} (cluster: local runs it here)")


@dataclass
class ComparisonConfig:
    """A grid of layers x seeds over one base experiment and one budget."""

    experiment: str = config_field(MISSING, "base experiment: a name in configs/experiments/ or a YAML path")
    layers: List[Any] = config_field([], "registry names, or {name: ..., label: ..., overrides: [...], <fields>}")
    seeds: List[int] = config_field([0], "train.seed of the runs (one run per layer and seed)")
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    baseline: Optional[str] = config_field(None, "label whose parameter count the others are compared with "
                                                 "(default: the first layer)")
    overrides: List[str] = config_field([], "experiment overrides applied to every run (dotlist)")
    only: Optional[List[str]] = config_field(None, "labels of `layers` to train and report now (default: all), "
                                                   "to grow a grid piece by piece with each entry's settings")
    sweep: Dict[str, Any] = config_field({}, "experiment keys to sweep, each with its values, e.g. {optim.lr: [1e-4, "
                                             "1e-3], model.d_model: [64, 128]}: every layer and seed runs once "
                                             "per combination; the report keeps the best lr by validation; keys "
                                             "that move together: {task.options.[seq_len,num_kv_pairs]: [[64, 4], "
                                             "[128, 8]]}")
    figures: List[str] = config_field([], "pictures drawn beside the table (zoo.train.figures): recall_by_width "
                                          "(zoology Fig. 2: accuracy against width per length), mad_table (MAD's tasks "
                                          "and their mean per layer, a bar chart)")
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)


@dataclass
class GridRun:
    """One cell of the grid: a label, a seed, a sweep setting and the ``zoo train`` arguments that make it.

    ``layer_fields`` is the entry's own layer fields as a mapping (validated as such by
    :func:`~zoo.train.experiment.load_experiment`); :meth:`dotlist` renders them as ``layer.k=v``
    only where a command line is needed (``zoo train`` processes, the run's recorded arguments).
    """

    label: str
    layer: str
    seed: int
    experiment: str
    overrides: List[str]
    run_name: str
    layer_fields: Dict[str, Any] = field(default_factory=dict)
    setting: Dict[str, Any] = field(default_factory=dict)

    def dotlist(self) -> list[str]:
        """The overrides as one dotlist, the layer fields right after ``layer=NAME``."""
        fields = [f"layer.{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}"
                  for k, v in self.layer_fields.items()]
        at = self.overrides.index(f"layer={self.layer}") + 1
        return [*self.overrides[:at], *fields, *self.overrides[at:]]


_BUDGET_KEYS = ("train.epochs", "train.max_steps", "optim.schedule_steps")


def load_comparison(name_or_path: str, overrides=()) -> tuple[ComparisonConfig, str]:
    """``(config, name)`` of a comparison from its YAML (by name or path) and dotlist overrides."""
    raw, where = load_named("comparisons", name_or_path)
    overrides = list(overrides)
    keys = {o.split("=", 1)[0] for o in overrides}
    for given, other in (("budget.steps", "budget.epochs"), ("budget.epochs", "budget.steps")):
        if given in keys and other not in keys:  # a budget on the command line replaces the file's budget
            overrides.append(f"{other}=null")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(ComparisonConfig), raw, parse_overrides(overrides))
        obj = OmegaConf.to_object(cfg)
        check_executor(obj.execution.executor)
        for key in ("runs_per_gpu", "cpu_workers"):
            if getattr(obj.execution, key) < 1:
                raise ValueError(f"execution.{key}={getattr(obj.execution, key)}: must be a positive integer")
        check_figures(obj.figures)
    except OmegaConfBaseException as exc:
        first = str(exc).strip().splitlines()[0]
        keys = ", ".join(f.name for f in dataclasses.fields(ComparisonConfig))
        raise ExperimentConfigError(f"comparison {name_or_path}: {first} (valid keys: {keys})") from None
    except ValueError as exc:
        raise ExperimentConfigError(f"comparison {name_or_path}: {exc}") from None
    return obj, Path(where).stem


def _entry(layer: Any) -> tuple[str, str, dict, list[str]]:
    """``(label, name, layer fields, experiment overrides)`` of one ``layers`` entry."""
    if isinstance(layer, str):
        return layer, layer, {}, []
    if not isinstance(layer, dict) or "name" not in layer:
        raise ExperimentConfigError(f"layers: an entry is a registry name or a mapping with `name:`, got {layer!r}")
    d = dict(layer)
    name = str(d.pop("name"))
    label = str(d.pop("label", name))
    over = [str(o) for o in d.pop("overrides", [])]
    return label, name, d, over


def _check_overrides(label: str, overrides: list[str]) -> None:
    for o in overrides:
        if o.split("=", 1)[0] in _BUDGET_KEYS:
            raise ExperimentConfigError(f"mismatched budgets: {o!r} ({label}) would change the budget of some "
                                        "runs; set it once, in budget.epochs / budget.steps")


def _budget(cfg: ComparisonConfig) -> list[str]:
    b = cfg.budget
    if (b.epochs is None) == (b.steps is None):
        raise ExperimentConfigError(
            "budget: set exactly one of budget.epochs and budget.steps (the same for every run)"
        )
    if (b.epochs or b.steps) <= 0:
        raise ExperimentConfigError(f"budget: must be positive, got {dataclasses.asdict(b)}")
    return ([f"train.epochs={b.epochs}"] if b.epochs is not None else
            [f"optim.schedule_steps={b.steps}", f"train.max_steps={b.steps}"])


def _sweep_axes(sweep: dict, prefix: str = "") -> dict:
    """``{optim: {lr: [..]}}`` or ``{optim.lr: [..]}`` -> ``{"optim.lr": [..]}``."""
    flat = {}
    for k, v in (sweep or {}).items():
        flat.update(_sweep_axes(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return flat


def _check_setting(cfg: ComparisonConfig, axes: dict, settings: list[dict]) -> None:
    """Load the experiment with each swept value once (a coupled axis's keys together): an unknown key or a
    mistyped value is one line."""
    _, name, fields, over = _entry(cfg.layers[0])
    for axis in axes:
        keys = axis_keys(axis)
        for part in {json.dumps([s[k] for k in keys]): {k: s[k] for k in keys} for s in settings}.values():
            value = list(part.values()) if len(keys) > 1 else part[axis]
            try:
                load_experiment(cfg.experiment, [*cfg.overrides, f"layer={name}", *over, *setting_dotlist(part)],
                                layer_fields=fields)
            except ExperimentConfigError as exc:
                raise ExperimentConfigError(f"sweep.{axis}={value!r}: {exc}") from None


def plan(cfg: ComparisonConfig) -> list[GridRun]:
    """Every run of the grid (layers x sweep settings x seeds), each validated before anything is trained."""
    if not cfg.layers:
        raise ExperimentConfigError("layers: the comparison lists no layer (layers: [vanilla, las, ...])")
    if not cfg.seeds:
        raise ExperimentConfigError("seeds: the seed list is empty (seeds: [0] for one run per layer)")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ExperimentConfigError(f"seeds: {cfg.seeds} repeats a seed")
    budget = _budget(cfg)
    axes = _sweep_axes(cfg.sweep)
    try:
        check_sweep(axes)
    except ValueError as exc:
        raise ExperimentConfigError(str(exc)) from None
    settings = combinations(axes)
    _check_setting(cfg, axes, settings)
    runs, labels = [], set()
    for layer in cfg.layers:
        label, name, fields, over = _entry(layer)
        if label in labels:
            raise ExperimentConfigError(f"layers: the label {label!r} appears twice (give one a `label:`)")
        labels.add(label)
        _check_overrides(label, [*cfg.overrides, *over])
        for setting in settings:
            stem = "-".join(p for p in (label, setting_name(setting)) if p)
            for seed in cfg.seeds:
                run_name = f"{stem}-seed{seed}"
                run = GridRun(label=label, layer=name, seed=seed, experiment=cfg.experiment, run_name=run_name,
                              overrides=[*cfg.overrides, f"layer={name}", *over, *setting_dotlist(setting), *budget,
                                         f"train.seed={seed}", f"train.run_name={run_name}"],
                              layer_fields=fields, setting=setting)
                try:
                    load_experiment(cfg.experiment, run.overrides, layer_fields=fields)
                except ExperimentConfigError as exc:
                    raise ExperimentConfigError(f"{run.run_name}: {exc}") from None
                runs.append(run)
    if cfg.baseline is not None and cfg.baseline not in labels:
        raise ExperimentConfigError(
            f"baseline: {cfg.baseline!r} is not one of the layers ({', '.join(sorted(labels))})"
        )
    if cfg.only is not None:
        for label in cfg.only:
            if label not in labels:
                close = difflib.get_close_matches(label, labels, n=3)
                raise ExperimentConfigError(f"only: {label!r} is not a label of `layers`"
                                            f"{' (did you mean ' + ', '.join(close) + '?)' if close else ''}; "
                                            f"the labels: {', '.join(sorted(labels))}")
        runs = [r for r in runs if r.label in cfg.only]
    return runs


def _grid_record(cfg: ComparisonConfig, runs: list[GridRun]) -> dict:
    grid = {"experiment": cfg.experiment, "budget": dataclasses.asdict(cfg.budget),
            "runs": {r.run_name: r.dotlist() for r in runs}}
    return {**grid, "digest": hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:12]}


def _check_folder(out: Path, record: dict) -> None:
    """Refuse an output folder that holds the runs of a different grid (its runs would not compare)."""
    path = out / "grid.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    if old.get("digest") == record["digest"]:
        return
    changed = [k for k in ("experiment", "budget") if old.get(k) != record[k]]
    same = set(old.get("runs", {})) & set(record["runs"])
    changed += [f"run {n}" for n in sorted(same) if old["runs"][n] != record["runs"][n]][:3]
    if not changed:  # only runs added or removed: the shared ones are the same runs
        return
    raise ExperimentConfigError(f"{out} holds the runs of a different grid (changed: {', '.join(changed)}); nothing "
                                "was touched: choose another --out, or delete that folder to start over")


def run_grid(cfg: ComparisonConfig, name: str, out: str | os.PathLike = "runs", *, progress: bool = True) -> Path:
    """Train every run of the grid that is not finished yet, then write the report; returns the folder.

    A run that fails is recorded in ``failed.json`` (name and one-line reason) and the others go on;
    a full or read-only disk stops the grid (:class:`~zoo.train.executors.DiskError`).
    """
    runs = plan(cfg)
    executor = resolve(cfg.execution.executor)
    folder = Path(out).expanduser() / name
    record = _grid_record(cfg, runs)
    _check_folder(folder, record)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "grid.json", json.dumps({**record, "comparison": OmegaConf.to_container(
            OmegaConf.structured(cfg))}, indent=2) + "\n")
    except OSError as exc:
        raise DiskError(f"cannot write {folder}: {exc.strerror or exc}; choose a writable --out") from None
    todo = [r for r in runs if not RunFolder(folder / "runs" / r.run_name).finished()]
    done = len(runs) - len(todo)
    n_layers = len({r.label for r in runs})
    layers = f"{n_layers} layers" if n_layers == len(cfg.layers) else f"{n_layers} of {len(cfg.layers)} layers"
    n_set = len({json.dumps(r.setting, sort_keys=True) for r in runs})
    sweep = f" x {n_set} sweep settings" if cfg.sweep else ""
    print(f"zoo compare: {name}: {len(runs)} runs ({layers}{sweep} x {len(cfg.seeds)} seeds), {done} "
          f"finished, {len(todo)} to train, executor {executor} -> {folder}", file=sys.stderr)
    t0 = time.perf_counter()
    failed = _failures(folder, runs)
    try:
        if todo:
            failed.update(EXECUTORS[executor](todo, folder, cfg.execution, progress))
    except DiskError as exc:
        failed.update(exc.failed)
        raise
    finally:
        failed = {n: why for n, why in failed.items() if not RunFolder(folder / "runs" / n).finished()}
        _save_failures(folder, failed)
    if failed:
        print(f"zoo compare: {len(failed)} run(s) failed: {', '.join(failed)} (reasons in {folder / 'failed.json'}); "
              "the report covers the finished ones", file=sys.stderr)
    wall = time.perf_counter() - t0
    return write_report(folder, runs, cfg, name, wall_seconds=wall, executor=executor, failed=failed)


def _failures(folder: Path, runs: list[GridRun]) -> dict[str, str]:
    """The failures recorded by earlier calls, for the runs of this grid."""
    p = folder / "failed.json"
    try:
        old = json.loads(p.read_text()) if p.exists() else {}
    except (OSError, ValueError):  # unreadable: the runs it named are simply retried
        old = {}
    names = {r.run_name for r in runs}
    return {n: why for n, why in old.items() if n in names}


def _save_failures(folder: Path, failed: dict[str, str]) -> None:
    try:
        if failed or (folder / "failed.json").exists():
            atomic_write_text(folder / "failed.json", json.dumps(failed, indent=2) + "\n")
    except OSError:  # the disk that failed the runs: the error already says so
        pass


def report_only(cfg: ComparisonConfig, name: str, out: str | os.PathLike = "runs") -> Path:
    """Rebuild the report of ``OUT/NAME`` from the run folders there, training nothing; returns the folder.

    Works on the committed form (summary.json, config.yaml, metrics.jsonl per run; no checkpoint, no
    lock, no grid.json needed). Runs of the grid that are not there are reported as not run yet (n
    per layer in the table); a run trained with another budget is one ``ExperimentConfigError`` line.
    """
    runs = plan(cfg)
    folder = Path(out).expanduser() / name
    if not folder.is_dir():
        raise ExperimentConfigError(f"{folder}: no such folder to report on; give the --out that holds "
                                    f"{name}/runs/ (e.g. --out docs/results)")
    finished = [r for r in runs if RunFolder(folder / "runs" / r.run_name).finished()]
    for r in finished:
        problem = budget_mismatch(folder / "runs" / r.run_name, cfg.budget)
        if problem:
            raise ExperimentConfigError(problem)
    missing = [r.run_name for r in runs if r not in finished]
    print(f"zoo compare: {name}: report from {len(finished)} of {len(runs)} runs in {folder}, nothing trained"
          + (f"; not run yet: {', '.join(missing)}" if missing else ""), file=sys.stderr)
    env = grid_environment(folder, [r.run_name for r in finished]) or {"recorded": "no environment in grid.json"}
    return write_report(folder, runs, cfg, name, wall_seconds=0.0, executor="none (report rebuilt from the run files)",
                        failed=_failures(folder, runs), environment=env,
                        todo="not run yet: train them in a GPU session, export them here, rebuild")
