"""The committed form of a comparison's runs: finished run folders made small, merged session by session.

A GPU session trains complete runs of a comparison (``zoo compare NAME``); nothing on the GPU
machine outlives the session, so only the runs' small result files travel back and are committed.
:func:`export_runs` copies, for each FINISHED run under ``SRC/NAME/runs/``::

    DEST/NAME/runs/<run>/summary.json    as written by the trainer
    DEST/NAME/runs/<run>/config.yaml     the resolved experiment
    DEST/NAME/runs/<run>/metrics.jsonl   every val / test record, train records thinned to <= 200
    DEST/NAME/grid.json                  the grid record, merged: every committed run's arguments and environment

and never a checkpoint, ``best.pt``, TensorBoard or W&B files. Unfinished runs are skipped (one
line each). Exporting into a folder that already holds committed runs keeps them: a run of the
same name with the same configuration is left as committed, one whose configuration differs (or
whose budget is not the comparison's) is refused with one line, and the others are added, so the
committed table grows session by session. ``zoo compare NAME --report-only --out DEST`` rebuilds
the report from these files alone (:func:`zoo.train.compare.report_only`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

from zoo._io import atomic_write_text
from zoo.train.experiment import ExperimentConfigError
from zoo.train.folder import RunFolder
from zoo.train.metrics import read_metrics

__all__ = ["COMMITTED_FILES", "MAX_TRAIN_RECORDS", "budget_mismatch", "config_difference", "export_runs",
           "grid_environment", "thin_metrics"]

COMMITTED_FILES = ("summary.json", "config.yaml", "metrics.jsonl")
MAX_TRAIN_RECORDS = 200
# Keys that say where and how verbosely a run was made, not what was trained: they may differ between sessions.
_PLACE_KEYS = frozenset({"data.root", "data.cache_dir", "data.generate_if_missing", "data.on_device", "train.device",
                         "train.progress", "train.tensorboard", "train.wandb", "train.warmup_compile"})


def thin_metrics(records: list[dict], max_train: int = MAX_TRAIN_RECORDS) -> list[dict]:
    """Every non-train record, and at most ``max_train`` train records evenly spread (first and last kept).

    The report's curves use the validation records; the train records only show the loss trend,
    so a 60,000-step run's 3,000 of them shrink to ``max_train`` without changing any curve.
    """
    train = [i for i, r in enumerate(records) if r.get("kind") == "train"]
    if len(train) <= max_train:
        return list(records)
    if max_train < 2:
        raise ValueError(f"max_train: keep at least 2 train records (the first and the last), got {max_train}")
    keep = {train[round(k * (len(train) - 1) / (max_train - 1))] for k in range(max_train)}
    return [r for i, r in enumerate(records) if r.get("kind") != "train" or i in keep]


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def run_config(run: Path) -> dict:
    """The run's ``config.yaml`` as flat ``{"train.epochs": 20, ...}`` (yaml safe-loaded; {} if absent)."""
    path = Path(run) / "config.yaml"
    try:
        tree = yaml.safe_load(path.read_text()) if path.exists() else {}
    except yaml.YAMLError as exc:
        raise ExperimentConfigError(f"{path}: not readable YAML ({str(exc).splitlines()[0]}); restore it from git "
                                    "or delete the run folder") from None
    return _flat(tree or {})


def config_difference(a: dict, b: dict) -> list[str]:
    """The keys (``train.epochs``...) whose values differ between two flat run configs, where aside."""
    keys = sorted((set(a) | set(b)) - _PLACE_KEYS)
    return [k for k in keys if a.get(k) != b.get(k)]


def budget_keys(budget) -> dict:
    """What a run's config must hold to have the comparison's budget (``BudgetConfig``)."""
    if budget.epochs is not None:
        return {"train.epochs": budget.epochs, "train.max_steps": None, "optim.schedule_steps": None}
    return {"train.max_steps": budget.steps, "optim.schedule_steps": budget.steps}


def budget_mismatch(run: Path, budget) -> str | None:
    """None when the run folder's config has the budget, else one line saying what it has and how to fix it."""
    cfg = run_config(run)
    if not cfg:
        return (f"{run}: no config.yaml, so its budget cannot be checked; restore the file from the run's session "
                "or delete the run folder")
    want = budget_keys(budget)
    bad = [k for k, v in want.items() if cfg.get(k) != v]
    if not bad:
        return None
    has = ", ".join(f"{k}={cfg.get(k)}" for k in bad)
    wanted = ", ".join(f"{k}={want[k]}" for k in bad)
    given = ", ".join(f"budget.{k}={v}" for k, v in dataclasses.asdict(budget).items() if v is not None)
    theirs = (f"budget.steps={cfg['train.max_steps']}" if cfg.get("train.max_steps") is not None else
              f"budget.epochs={cfg.get('train.epochs')}")
    return (f"{run}: trained with {has}, but the comparison's {given} needs {wanted}; pass {theirs} (the budget "
            "it was trained with), or keep runs of other budgets in another folder")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        raise ExperimentConfigError(f"{path}: not readable JSON; restore it from git or delete it") from None
    return data if isinstance(data, dict) else {}


def grid_environment(folder: Path, run_names) -> dict | None:
    """The environment the committed runs were trained in (from ``grid.json``): one dict, or ``{"sessions": [...]}``
    when they came from different machines; None when none is recorded."""
    envs = _read_json(Path(folder) / "grid.json").get("environments", {})
    seen = []
    for name in run_names:
        env = envs.get(name)
        if env is not None and env not in seen:
            seen.append(env)
    return None if not seen else seen[0] if len(seen) == 1 else {"sessions": seen}


def _check_grid(dest_grid: dict, record: dict, dest: Path) -> None:
    changed = [k for k in ("experiment", "budget") if dest_grid and dest_grid.get(k) != record[k]]
    if changed:
        raise ExperimentConfigError(f"{dest / 'grid.json'} holds the runs of a different grid (changed: "
                                    f"{', '.join(changed)}: {dest_grid.get(changed[0])} there, {record[changed[0]]} "
                                    "here); nothing was exported: give the same budget.* as those runs, or "
                                    "choose another destination")


def _copy_run(src: Path, dest: Path) -> int:
    """Write the committed files of run ``src`` into ``dest`` (a new folder, made whole or not at all)."""
    tmp = dest.with_name(f".{dest.name}.export")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ("summary.json", "config.yaml"):
        shutil.copyfile(src / f, tmp / f)
    records = thin_metrics(read_metrics(src / "metrics.jsonl"), MAX_TRAIN_RECORDS)
    atomic_write_text(tmp / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, dest)
    return sum((dest / f).stat().st_size for f in COMMITTED_FILES)


def _record(name: str, runs: dict, envs: dict, src_grid: dict, src_env, run: Path) -> None:
    """Note run ``name``'s arguments (None without a source grid.json: its config.yaml says) and environment."""
    runs[name] = src_grid.get("runs", {}).get(name)
    env = src_grid.get("environments", {}).get(name) or src_env or _here(RunFolder(run).summary())
    if env is not None:
        envs[name] = env


def _here(summary: dict) -> dict | None:
    """This machine's environment when the run was trained on a device of its kind (the export of a session that
    stopped before its report), else None: a CPU machine never claims a GPU run."""
    import torch

    from zoo.measure import environment

    device = str(summary.get("device") or "")
    return environment() if device and device.startswith("cuda") == torch.cuda.is_available() else None


def _container(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg))


def export_runs(cfg, name: str, src_root, dest_root) -> tuple[list[str], list[str]]:
    """Export the finished runs of ``SRC/NAME`` into ``DEST/NAME`` in committed form; returns (added, refused).

    Args:
        cfg: the comparison (``ComparisonConfig``): its budget is checked on every run.
        name: the comparison's name (the folder under both roots).
        src_root, dest_root: the ``--out`` of the training and the committed folder (e.g. ``docs/results``).

    One line (stderr) per skipped, kept or refused run. Raises ``ExperimentConfigError`` (one line,
    nothing written) when the source holds no runs or the destination's grid has another budget.
    """
    src, dest = Path(src_root).expanduser() / name, Path(dest_root).expanduser() / name
    if not (src / "runs").is_dir():
        raise ExperimentConfigError(f"{src / 'runs'}: no run folders to export; give the --out the comparison "
                                    "trained into (its runs are under OUT/NAME/runs/)")
    src_grid, dest_grid = _read_json(src / "grid.json"), _read_json(dest / "grid.json")
    budget = dataclasses.asdict(cfg.budget)
    record = {"experiment": cfg.experiment, "budget": budget}
    _check_grid(dest_grid, record, dest)
    src_env = _read_json(src / "results.json").get("environment")
    runs = dict(dest_grid.get("runs", {}))
    envs = dict(dest_grid.get("environments", {}))
    added, refused, kept = [], [], []
    for run in sorted(p for p in (src / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")):
        target = dest / "runs" / run.name
        if not RunFolder(run).finished():
            print(f"zoo compare: skipped {run.name}: not finished (no complete summary.json); it is trained again "
                  "in a later session", file=sys.stderr)
            continue
        problem = budget_mismatch(run, cfg.budget)
        if problem is None and target.resolve() == run.resolve():
            continue  # exporting a committed folder into itself: already there
        if problem is None and RunFolder(target).finished():
            diff = config_difference(run_config(run), run_config(target))
            if not diff:
                print(f"zoo compare: kept {run.name}: already committed with the same config", file=sys.stderr)
                if run.name not in runs:  # committed by an export that stopped before its grid.json
                    kept.append(run.name)
                    _record(run.name, runs, envs, src_grid, src_env, run)
                continue
            problem = (f"{run}: its config differs from the committed {target} ({', '.join(diff[:4])}); "
                       "nothing was replaced: delete the committed run to replace it, or give this one another name")
        elif problem is None and target.exists():
            problem = (f"{run}: {target} exists but holds no finished run; nothing was replaced: look at it, delete "
                       "it, and export again")
        if problem is not None:
            print(f"zoo compare: refused {problem}", file=sys.stderr)
            refused.append(run.name)
            continue
        size = _copy_run(run, target)
        print(f"zoo compare: exported {run.name} ({size / 1024:.0f} KiB) -> {target}", file=sys.stderr)
        added.append(run.name)
        _record(run.name, runs, envs, src_grid, src_env, run)
    if not added and not kept:  # nothing new: the destination stays exactly as it was
        return added, refused
    grid = {**record, "runs": dict(sorted(runs.items()))}
    grid["digest"] = hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:12]
    atomic_write_text(dest / "grid.json", json.dumps({**grid, "environments": dict(sorted(envs.items())),
                                                       "comparison": src_grid.get("comparison") or
                                                       dest_grid.get("comparison") or _container(cfg)},
                                                      indent=2) + "\n")
    return added, refused
