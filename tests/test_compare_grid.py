"""`zoo compare`, second pass: declared executors, layer fields as a mapping, failed runs recorded
(a full disk stops the grid), the report's time and chance columns, one default folder, sweeps."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from test_compare import comparison, summaries
from test_runs import run_cli

ROOT = Path(__file__).resolve().parents[1]


# --- executors -----------------------------------------------------------------------------------

def test_executors_are_declared_and_an_unknown_one_is_one_line_before_anything(tmp_path, capsys):
    from zoo.train.executors import EXECUTORS, resolve

    assert {"local", "processes", "submitit"} <= set(EXECUTORS)
    assert resolve("local") == "local" and resolve("auto") in ("local", "processes")
    code = run_cli(["compare", comparison(tmp_path), "execution.executor=slurmm", "--out", tmp_path / "results"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "execution.executor: unknown executor 'slurmm'; valid: auto, local, processes, submitit" in err
    assert not (tmp_path / "results").exists()  # no grid.json written


@pytest.mark.parametrize("cuda,want", [(True, "processes"), (False, "local")])
def test_auto_is_processes_on_gpus_and_local_on_the_cpu(monkeypatch, cuda, want):
    import torch

    from zoo.train.executors import resolve

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve("auto") == want


def test_a_new_executor_is_one_registration(tmp_path, monkeypatch):
    from zoo.train import executors
    from zoo.train.compare import load_comparison, run_grid

    seen = []

    def run(todo, folder, execution, progress):
        seen.extend(r.run_name for r in todo)
        return {r.run_name: "not really trained" for r in todo}

    monkeypatch.setitem(executors.EXECUTORS, "mine", run)
    cfg, name = load_comparison(str(comparison(tmp_path, seeds="[0]")), ["execution.executor=mine"])
    folder = run_grid(cfg, name, tmp_path / "out", progress=False)
    assert seen == ["s4d-seed0", "vanilla-seed0"]
    assert json.loads((folder / "failed.json").read_text()) == {n: "not really trained" for n in seen}


# --- layer fields as a mapping; the record of existing grids is unchanged -------------------------

def test_layer_fields_travel_as_a_mapping(tmp_path):
    from zoo.train.compare import load_comparison, plan
    from zoo.train.experiment import load_experiment

    cfg, _ = load_comparison(str(comparison(tmp_path, layers="[{name: local, label: loc, alpha_max: 0.25}]",
                                            seeds="[0]")))
    (run,) = plan(cfg)
    assert run.layer_fields == {"alpha_max": 0.25} and not any(o.startswith("layer.") for o in run.overrides)
    assert "layer.alpha_max=0.25" in run.dotlist()
    exp = load_experiment(run.experiment, run.overrides, layer_fields=run.layer_fields)
    assert exp.layer.name == "local" and exp.cfg.layer["alpha_max"] == 0.25
    with pytest.raises(ValueError, match="alpha_maks"):
        load_experiment(run.experiment, run.overrides, layer_fields={"alpha_maks": 0.1})


def test_the_digest_of_a_stored_grid_is_unchanged():
    from omegaconf import OmegaConf

    from zoo.train.compare import ComparisonConfig, _grid_record, plan

    stored = json.loads((ROOT / "docs/results/listops_paper_1epoch/grid.json").read_text())
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ComparisonConfig), stored["comparison"]))
    record = _grid_record(cfg, plan(cfg))
    assert record["runs"] == stored["runs"] and record["digest"] == stored["digest"]


# --- failures ------------------------------------------------------------------------------------

def _failing(monkeypatch, bad: str, exc: BaseException):
    import zoo.train.runs as runs

    real = runs.run_experiment

    def fake(experiment, overrides, **kw):
        if f"train.run_name={bad}" in overrides:
            raise exc
        return real(experiment, overrides, **kw)

    monkeypatch.setattr(runs, "run_experiment", fake)


def test_a_failed_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch, capsys):
    from zoo.train.stopping import TrainingDiverged

    _failing(monkeypatch, "s4d-seed0", TrainingDiverged("loss is nan at step 3\nmore detail"))
    grid = comparison(tmp_path, seeds="[0]", steps=2)
    assert run_cli(["compare", grid, "--out", tmp_path / "out"]) == 1
    captured = capsys.readouterr()
    folder = tmp_path / "out" / "grid"
    assert sorted(summaries(folder)) == ["vanilla-seed0"]  # the other run trained
    assert json.loads((folder / "failed.json").read_text()) == {"s4d-seed0": "TrainingDiverged: loss is nan at step 3"}
    results = json.loads((folder / "results.json").read_text())
    assert results["failed"] == {"s4d-seed0": "TrainingDiverged: loss is nan at step 3"}
    table = (folder / "table.md").read_text()
    assert "Failed runs:\n- s4d-seed0: TrainingDiverged: loss is nan at step 3" in table
    assert "s4d-seed0: TrainingDiverged" in captured.out and "Traceback" not in captured.err
    monkeypatch.undo()  # the cause is gone: the same command trains it and forgets the failure
    assert run_cli(["compare", grid, "--out", tmp_path / "out"]) == 0
    assert json.loads((folder / "failed.json").read_text()) == {}
    assert "Failed runs" not in (folder / "table.md").read_text()


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"),
                                 OSError(errno.EROFS, "Read-only file system"),
                                 RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter "
                                              "failed writing file data/3: file write failed")])
def test_a_full_disk_stops_the_grid_in_one_line(tmp_path, monkeypatch, capsys, exc):
    _failing(monkeypatch, "s4d-seed0", exc)
    code = run_cli(["compare", comparison(tmp_path, seeds="[0]", steps=2), "--out", tmp_path / "out"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err
    assert last.startswith("zoo compare: error: s4d-seed0: cannot write under") and "free space" in last
    folder = tmp_path / "out" / "grid"
    assert summaries(folder) == {}  # stopped: vanilla was not started
    assert (folder / "grid.json").exists() and "s4d-seed0" in json.loads((folder / "failed.json").read_text())


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    code = run_cli(["compare", comparison(tmp_path, seeds="[0]", steps=2), "--out", blocker])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err and "choose a writable --out" in err, err


def _script_runs(tmp_path, monkeypatch, scripts: dict):
    """GridRuns whose `zoo train` process is replaced by a tiny script (exit code and output chosen)."""
    import sys

    from zoo.train.compare import GridRun
    from zoo.train.executors import processes

    monkeypatch.setattr(processes, "command", lambda r, folder: [sys.executable, "-c", scripts[r.run_name]])
    return [GridRun(label=n, layer="s4d", seed=0, experiment="x", overrides=["layer=s4d"], run_name=n)
            for n in scripts]


def test_the_processes_executor_records_a_failed_process_and_goes_on(tmp_path, monkeypatch):
    from zoo.train.compare import ExecutionConfig
    from zoo.train.executors import processes

    todo = _script_runs(tmp_path, monkeypatch, {
        "bad": "import sys; print('step 1'); print('zoo train: error: loss is nan at step 3'); sys.exit(3)",
        "good": "print('done')"})
    failed = processes.run(todo, tmp_path, ExecutionConfig(runs_per_gpu=1, gpus=[]), False)
    assert failed == {"bad": "exit 3: zoo train: error: loss is nan at step 3"}
    assert (tmp_path / "runs" / "good.log").read_text() == "done\n"


def test_the_processes_executor_stops_on_a_full_disk(tmp_path, monkeypatch):
    from zoo.train.compare import ExecutionConfig
    from zoo.train.executors import DiskError, processes

    todo = _script_runs(tmp_path, monkeypatch, {
        "full": "import sys; print('OSError: [Errno 28] No space left on device'); sys.exit(2)",
        "next": "open('started', 'w')"})
    with pytest.raises(DiskError, match="full: cannot write under .*No space left on device") as info:
        processes.run(todo, tmp_path, ExecutionConfig(runs_per_gpu=1, gpus=[]), False)
    assert info.value.failed == {"full": "exit 2: OSError: [Errno 28] No space left on device"}
    assert not (Path.cwd() / "started").exists()  # the next run was never started


def test_the_processes_executor_runs_cpu_workers_at_once_sharing_the_cores(tmp_path, monkeypatch):
    """Without GPUs, `cpu_workers` runs overlap, each told its share of the cores (OMP_NUM_THREADS)."""
    import os

    from zoo.train.compare import ExecutionConfig
    from zoo.train.executors import processes

    wait = ("import os, time, pathlib; pathlib.Path({me!r}).touch(); t = time.time()\n"
            "while not pathlib.Path({other!r}).exists() and time.time() - t < 20: time.sleep(0.05)\n"
            "print(os.environ['OMP_NUM_THREADS'], pathlib.Path({other!r}).exists())")
    a, b = str(tmp_path / "a.started"), str(tmp_path / "b.started")
    todo = _script_runs(tmp_path, monkeypatch, {"a": wait.format(me=a, other=b), "b": wait.format(me=b, other=a)})
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert processes.run(todo, tmp_path, ExecutionConfig(cpu_workers=2, gpus=[]), False) == {}
    for name in ("a", "b"):  # each saw the other start while it ran, and got half of the 4 cores
        assert (tmp_path / "runs" / f"{name}.log").read_text() == "2 True\n"


def test_execution_counts_must_be_positive(tmp_path):
    from zoo.train.compare import load_comparison
    from zoo.train.experiment import ExperimentConfigError

    with pytest.raises(ExperimentConfigError, match="execution.cpu_workers=0: must be a positive integer"):
        load_comparison("listops_small", ["execution.cpu_workers=0"])
