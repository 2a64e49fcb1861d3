"""The comparison grid: every listed layer (and seed) trained under one budget, one table, one picture.

A comparison (``configs/comparisons/<name>.yaml``, OmegaConf, dotlist overrides, unknown keys are
errors) names a base experiment, the layers (registry names, with optional fields, a display
``label`` and experiment ``overrides`` of their own), the seeds and the budget (epochs or steps,
identical for every run)::

    experiment: listops_small
    layers: [vanilla, las, s4d, {name: local, label: local-a0.1, alpha_max: 0.1}]
    seeds: [0, 1]
    budget: {epochs: 2}
    baseline: vanilla                 # parameters of the others are checked against it (LRA's 10% rule)

Every run is an ordinary resumable ``zoo train`` run folder, ``OUT/<comparison>/runs/<label>-seed<k>``:
stopping the comparison and starting it again resumes the unfinished runs and skips the finished
ones. The runs execute one after another in this process (CPU), several at a time in separate
``zoo train`` processes spread over the GPUs (``execution.runs_per_gpu``, ``CUDA_VISIBLE_DEVICES``
per process), or as a job array on a cluster through submitit (``execution.executor=submitit``).
``zoo.train.report`` turns the runs' own summaries into ``table.md``, ``results.json``,
``curves.png`` and ``cost.png``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import signal
import subprocess
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
from zoo.train.experiment import ExperimentConfigError, load_experiment

__all__ = ["BudgetConfig", "ComparisonConfig", "ExecutionConfig", "GridRun", "load_comparison", "plan", "run_grid"]


@dataclass
class BudgetConfig:
    """The training budget, the same for every run: epochs or optimizer steps (one of them)."""

    epochs: Optional[int] = config_field(None, "passes over the training split (the schedule spans them)")
    steps: Optional[int] = config_field(None, "optimizer steps (the schedule spans them)")


@dataclass
class ExecutionConfig:
    """Where the runs execute."""

    executor: str = config_field("auto", "auto (in this process on CPU, processes on GPUs) | local | processes | "
                                         "submitit")
    runs_per_gpu: int = config_field(3, "concurrent runs on each GPU (their warm-ups and evaluations overlap; "
                                                "graphed steps share the GPU's throughput)")
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
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)


@dataclass
class GridRun:
    """One cell of the grid: a label, a seed and the ``zoo train`` arguments that make it."""

    label: str
    layer: str
    seed: int
    experiment: str
    overrides: List[str]
    run_name: str


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
    except OmegaConfBaseException as exc:
        first = str(exc).strip().splitlines()[0]
        keys = ", ".join(f.name for f in dataclasses.fields(ComparisonConfig))
        raise ExperimentConfigError(f"comparison {name_or_path}: {first} (valid keys: {keys})") from None
    except ValueError as exc:
        raise ExperimentConfigError(f"comparison {name_or_path}: {exc}") from None
    return obj, Path(where).stem


def _entry(layer: Any) -> tuple[str, str, list[str], list[str]]:
    """``(label, name, layer field overrides, experiment overrides)`` of one ``layers`` entry."""
    if isinstance(layer, str):
        return layer, layer, [], []
    if not isinstance(layer, dict) or "name" not in layer:
        raise ExperimentConfigError(f"layers: an entry is a registry name or a mapping with `name:`, got {layer!r}")
    d = dict(layer)
    name = str(d.pop("name"))
    label = str(d.pop("label", name))
    over = [str(o) for o in d.pop("overrides", [])]
    fields = [f"layer.{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in d.items()]
    return label, name, fields, over


def plan(cfg: ComparisonConfig) -> list[GridRun]:
    """Every run of the grid, each validated (layer, task, keys) before anything is trained."""
    if not cfg.layers:
        raise ExperimentConfigError("layers: the comparison lists no layer (layers: [vanilla, las, ...])")
    if not cfg.seeds:
        raise ExperimentConfigError("seeds: the seed list is empty (seeds: [0] for one run per layer)")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ExperimentConfigError(f"seeds: {cfg.seeds} repeats a seed")
    b = cfg.budget
    if (b.epochs is None) == (b.steps is None):
        raise ExperimentConfigError("budget: set exactly one of budget.epochs and budget.steps (the same for every run)")
    if (b.epochs or b.steps) <= 0:
        raise ExperimentConfigError(f"budget: must be positive, got {dataclasses.asdict(b)}")
    budget = ([f"train.epochs={b.epochs}"] if b.epochs is not None else
              [f"optim.schedule_steps={b.steps}", f"train.max_steps={b.steps}"])
    runs, labels = [], set()
    for layer in cfg.layers:
        label, name, fields, over = _entry(layer)
        if label in labels:
            raise ExperimentConfigError(f"layers: the label {label!r} appears twice (give one a `label:`)")
        labels.add(label)
        for o in [*cfg.overrides, *over]:
            if o.split("=", 1)[0] in _BUDGET_KEYS:
                raise ExperimentConfigError(f"mismatched budgets: {o!r} ({label}) would change the budget of some "
                                            "runs; set it once, in budget.epochs / budget.steps")
        for seed in cfg.seeds:
            run = GridRun(label=label, layer=name, seed=seed, experiment=cfg.experiment,
                          overrides=[*cfg.overrides, f"layer={name}", *fields, *over, *budget, f"train.seed={seed}",
                                     f"train.run_name={label}-seed{seed}"], run_name=f"{label}-seed{seed}")
            try:
                load_experiment(cfg.experiment, run.overrides)
            except ExperimentConfigError as exc:
                raise ExperimentConfigError(f"{run.run_name}: {exc}") from None
            runs.append(run)
    if cfg.baseline is not None and cfg.baseline not in labels:
        raise ExperimentConfigError(f"baseline: {cfg.baseline!r} is not one of the layers ({', '.join(sorted(labels))})")
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
            "runs": {r.run_name: r.overrides for r in runs}}
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


def run_grid(cfg: ComparisonConfig, name: str, out: str | os.PathLike = "results", *, progress: bool = True) -> Path:
    """Train every run of the grid that is not finished yet, then write the report; returns the folder."""
    import torch

    from zoo.train.report import write_report

    runs = plan(cfg)
    folder = Path(out).expanduser() / name
    record = _grid_record(cfg, runs)
    _check_folder(folder, record)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "grid.json", json.dumps({**record, "comparison": OmegaConf.to_container(
        OmegaConf.structured(cfg))}, indent=2) + "\n")
    todo = [r for r in runs if not _finished(folder / "runs" / r.run_name)]
    done = len(runs) - len(todo)
    ex = cfg.execution
    executor = ex.executor
    if executor == "auto":
        executor = "processes" if torch.cuda.is_available() else "local"
    n_layers = len({r.label for r in runs})
    layers = f"{n_layers} layers" if n_layers == len(cfg.layers) else f"{n_layers} of {len(cfg.layers)} layers"
    print(f"zoo compare: {name}: {len(runs)} runs ({layers} x {len(cfg.seeds)} seeds), {done} "
          f"finished, {len(todo)} to train, executor {executor} -> {folder}", file=sys.stderr)
    t0 = time.perf_counter()
    if todo:
        {"local": _run_local, "processes": _run_processes, "submitit": _run_submitit}[executor](
            todo, folder, ex, progress)
    wall = time.perf_counter() - t0
    return write_report(folder, runs, cfg, name, wall_seconds=wall, executor=executor)


def _finished(run_dir: Path) -> bool:
    p = run_dir / "summary.json"
    if not p.exists():
        return False
    s = json.loads(p.read_text())
    return s.get("status") == "complete" and s.get("test_acc") is not None


def _run_local(todo: list[GridRun], folder: Path, ex: ExecutionConfig, progress: bool) -> None:
    """One after another, in this process (a Ctrl-C saves the current run's checkpoint and stops)."""
    from zoo.train.runs import run_experiment

    for i, r in enumerate(todo, 1):
        print(f"zoo compare: [{i}/{len(todo)}] {r.run_name}", file=sys.stderr)
        run_experiment(r.experiment, r.overrides, out=folder / "runs", progress=progress)


def _command(r: GridRun, folder: Path) -> list[str]:
    return [sys.executable, "-m", "zoo", "train", r.experiment, *r.overrides, "--out", str(folder / "runs"),
            "--no-progress"]


def _run_processes(todo: list[GridRun], folder: Path, ex: ExecutionConfig, progress: bool) -> None:
    """Several ``zoo train`` processes at a time, ``runs_per_gpu`` per GPU (or 1 without GPUs)."""
    import torch

    gpus = list(ex.gpus) if ex.gpus is not None else list(range(torch.cuda.device_count()))
    slots = [g for g in gpus for _ in range(ex.runs_per_gpu)] or [None]
    queue, running, failed = list(todo), {}, []

    def stop_all(signum, frame):
        for p, _ in running.values():
            p.send_signal(signal.SIGTERM)  # each run saves a checkpoint and exits
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop_all)
    try:
        while queue or running:
            for slot in [s for s in range(len(slots)) if s not in running][: len(queue)]:
                r = queue.pop(0)
                env = dict(os.environ)
                if slots[slot] is not None:
                    env["CUDA_VISIBLE_DEVICES"] = str(slots[slot])
                log = folder / "runs" / f"{r.run_name}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a") as fh:
                    p = subprocess.Popen(_command(r, folder), stdout=fh, stderr=subprocess.STDOUT, env=env)
                running[slot] = (p, r)
                print(f"zoo compare: started {r.run_name} (gpu {slots[slot]}, log {log})", file=sys.stderr)
            time.sleep(0.5)
            for slot, (p, r) in list(running.items()):
                if p.poll() is not None:
                    del running[slot]
                    print(f"zoo compare: {r.run_name} finished (exit {p.returncode})", file=sys.stderr)
                    if p.returncode:
                        failed.append(r.run_name)
    except KeyboardInterrupt:
        for p, _ in running.values():
            p.send_signal(signal.SIGTERM)
        for p, _ in running.values():
            p.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
    if failed:
        print(f"zoo compare: {len(failed)} run(s) failed: {', '.join(failed)} (see their .log files); the report "
              "covers the finished ones", file=sys.stderr)


def _train_one(r: GridRun, folder: str) -> dict:
    """The job a submitit worker runs (top-level: it is pickled)."""
    from zoo.train.runs import run_experiment

    return run_experiment(r.experiment, r.overrides, out=Path(folder) / "runs", progress=False)


def _run_submitit(todo: list[GridRun], folder: Path, ex: ExecutionConfig, progress: bool) -> None:
    """A job array through submitit (SLURM, or ``cluster: local`` for this machine)."""
    import submitit

    params = dict(ex.submitit)
    cluster = params.pop("cluster", None)
    executor = submitit.AutoExecutor(folder=folder / "submitit", cluster=cluster)
    executor.update_parameters(**params)
    jobs = executor.map_array(_train_one, todo, [str(folder)] * len(todo))
    for job, r in zip(jobs, todo):
        print(f"zoo compare: submitted {r.run_name} as job {job.job_id}", file=sys.stderr)
    for job, r in zip(jobs, todo):
        try:
            job.result()
        except Exception as exc:  # one failed job must not hide the others
            print(f"zoo compare: {r.run_name} failed: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
