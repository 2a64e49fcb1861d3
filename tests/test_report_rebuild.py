"""`zoo compare --export` / `--report-only`: the report rebuilt from committed run files equals the live grid's,
and merging a later session's exports keeps the committed runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_compare import comparison
from test_runs import run_cli

from zoo.train.export import MAX_TRAIN_RECORDS, thin_metrics

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = ("layer", "seeds", "runs", "n", "planned", "test_acc", "test_acc_mean", "test_acc_std", "best_val_acc_mean",
            "params", "within_param_budget", "tokens_per_s", "step_ms", "peak_mem_mib", "train_seconds",
            "wall_seconds", "steps", "epochs", "chance_acc", "task", "device")


def rows(folder: Path) -> list[dict]:
    return [{k: r.get(k) for k in ROW_KEYS} for r in json.loads((folder / "results.json").read_text())["layers"]]


def table_rows(folder: Path) -> list[str]:
    return [line for line in (folder / "table.md").read_text().splitlines() if line.startswith("|")]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A tiny live grid, 2 layers x 1 seed, a few steps, train records every step: (grid yaml, OUT)."""
    tmp = tmp_path_factory.mktemp("live")
    grid = comparison(tmp, layers="[s4d, vanilla]", seeds="[0]", steps=6,
                      overrides="[train.eval_every=2, train.checkpoint_every=2, train.log_every=1]")
    assert run_cli(["compare", grid, "--out", tmp / "results"]) == 0
    return grid, tmp / "results"


def export(grid, src, dest, *extra) -> int:
    return run_cli(["compare", grid, *extra, "--export", dest, "--out", src])


def test_the_report_rebuilt_from_exported_runs_equals_the_live_report(live, tmp_path, capsys, monkeypatch):
    grid, out = live
    monkeypatch.setattr("zoo.train.export.MAX_TRAIN_RECORDS", 3)  # thin the 6 train records of each run to 3
    assert export(grid, out, tmp_path / "committed") == 0
    committed = tmp_path / "committed" / "grid"
    for run in ("s4d-seed0", "vanilla-seed0"):
        saved = (committed / "runs" / run / "metrics.jsonl").read_text().splitlines()
        live_lines = (out / "grid" / "runs" / run / "metrics.jsonl").read_text().splitlines()
        kinds = [json.loads(line)["kind"] for line in saved]
        live_kinds = [json.loads(line)["kind"] for line in live_lines]
        assert kinds.count("train") == 3 < live_kinds.count("train")
        assert kinds.count("val") == live_kinds.count("val") > 0
    assert files_under(committed) == {"grid.json", *(f"runs/{r}-seed0/{f}" for r in ("s4d", "vanilla")
                                                     for f in ("summary.json", "config.yaml", "metrics.jsonl"))}
    assert (out / "grid" / "runs" / "s4d-seed0" / "checkpoint.pt").exists()  # the live folder had checkpoints
    record = json.loads((committed / "grid.json").read_text())
    assert sorted(record["runs"]) == ["s4d-seed0", "vanilla-seed0"]
    assert set(record["environments"]) == set(record["runs"])
    capsys.readouterr()
    assert run_cli(["compare", grid, "--report-only", "--out", tmp_path / "committed"]) == 0
    assert "nothing trained" in capsys.readouterr().err
    live_rows, rebuilt = rows(out / "grid"), rows(committed)
    assert [r["n"] for r in rebuilt] == [1, 1] and all(r["test_acc_mean"] is not None for r in rebuilt)
    assert rebuilt == live_rows
    assert table_rows(committed) == table_rows(out / "grid")
    for f in ("curves.png", "cost.png"):
        assert (committed / f).stat().st_size > 0
    env = json.loads((committed / "results.json").read_text())["environment"]
    assert env == json.loads((out / "grid" / "results.json").read_text())["environment"]  # where the runs ran


def test_missing_runs_are_reported_as_not_run_yet(live, tmp_path, capsys):
    grid, out = live
    assert export(grid, out, tmp_path / "c") == 0
    shutil.rmtree(tmp_path / "c" / "grid" / "runs" / "vanilla-seed0")
    capsys.readouterr()
    assert run_cli(["compare", grid, "--report-only", "--out", tmp_path / "c"]) == 0
    assert "not run yet: vanilla-seed0" in capsys.readouterr().err
    by_layer = {r["layer"]: r for r in rows(tmp_path / "c" / "grid")}
    assert by_layer["vanilla"]["n"] == 0 and by_layer["vanilla"]["test_acc_mean"] is None and by_layer["s4d"]["n"] == 1
    assert "Not finished yet: vanilla (1 of 1) (not run yet" in (tmp_path / "c" / "grid" / "table.md").read_text()


def _second_session(out: Path, tmp_path: Path) -> Path:
    """A copy of the live runs as another session's: a new seed, one changed config, one unfinished run."""
    src = tmp_path / "session2"
    shutil.copytree(out, src)
    runs = src / "grid" / "runs"
    shutil.copytree(runs / "s4d-seed0", runs / "s4d-seed1")
    cfg = yaml.safe_load((runs / "s4d-seed1" / "config.yaml").read_text())
    cfg["train"]["seed"], cfg["train"]["run_name"] = 1, "s4d-seed1"
    (runs / "s4d-seed1" / "config.yaml").write_text(yaml.safe_dump(cfg))
    cfg = yaml.safe_load((runs / "vanilla-seed0" / "config.yaml").read_text())
    cfg["optim"]["lr"] *= 2
    cfg["data"]["root"] = "/somewhere/else"  # a place, not a difference
    (runs / "vanilla-seed0" / "config.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copytree(runs / "s4d-seed0", runs / "vanilla-seed1")
    summary = json.loads((runs / "vanilla-seed1" / "summary.json").read_text())
    (runs / "vanilla-seed1" / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    return src


def test_merging_a_later_session_keeps_committed_runs_and_refuses_a_changed_config(live, tmp_path, capsys):
    grid, out = live
    dest = tmp_path / "committed"
    assert export(grid, out, dest) == 0
    before = {p: (dest / "grid" / p).read_bytes() for p in files_under(dest / "grid") if p.startswith("runs/")}
    src = _second_session(out, tmp_path)
    capsys.readouterr()
    assert export(grid, src, dest, "seeds=[0,1]") == 2
    err = capsys.readouterr().err.splitlines()
    refused = [e for e in err if e.startswith("zoo compare: refused")]
    assert len(refused) == 1 and "vanilla-seed0" in refused[0] and "optim.lr" in refused[0]
    assert "data.root" not in refused[0]
    assert sum("skipped vanilla-seed1: not finished" in e for e in err) == 1
    assert sum("kept s4d-seed0" in e for e in err) == 1 and sum("exported s4d-seed1" in e for e in err) == 1
    for p, data in before.items():
        assert (dest / "grid" / p).read_bytes() == data, p  # nothing committed was replaced
    assert sorted(p.name for p in (dest / "grid" / "runs").iterdir()) == ["s4d-seed0", "s4d-seed1", "vanilla-seed0"]
    assert sorted(json.loads((dest / "grid" / "grid.json").read_text())["runs"]) == [
        "s4d-seed0", "s4d-seed1", "vanilla-seed0"]
    assert run_cli(["compare", grid, "seeds=[0,1]", "--report-only", "--out", dest]) == 0
    assert [(r["layer"], r["n"], r["planned"]) for r in rows(dest / "grid")] == [("s4d", 2, 2), ("vanilla", 1, 2)]


def test_a_run_of_another_budget_is_one_line_and_exit_2(live, tmp_path, capsys):
    grid, out = live
    capsys.readouterr()
    assert run_cli(["compare", grid, "budget.steps=5", "--report-only", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.max_steps=6" in err[0] and "budget.steps" in err[0] and "Traceback" not in err[0]
    assert export(grid, out, tmp_path / "c", "budget.steps=5") == 2
    assert not (tmp_path / "c" / "grid").exists() or not files_under(tmp_path / "c" / "grid")  # nothing written
    assert export(grid, out, tmp_path / "c") == 0
    capsys.readouterr()
    assert export(grid, out, tmp_path / "c", "budget.steps=5") == 2  # the committed grid has another budget
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different grid" in err[0] and "nothing was exported" in err[0]


def test_thin_metrics_keeps_every_evaluation_and_at_most_200_train_records():
    records = []
    for step in range(1, 60_001):  # a 20-epoch ListOps run logging every 20 steps: 3,000 train records
        if step % 20 == 0:
            records.append({"kind": "train", "step": step, "loss": 2.0, "acc": 0.2, "step_ms": 12.9, "lr": 1e-3,
                            "tokens_per_s": 4.6e6, "padded_tokens_per_s": 5e6, "pad_fraction": 0.09})
        if step % 500 == 0:
            records.append({"kind": "val", "step": step, "loss": 1.9, "acc": 0.3})
    records.append({"kind": "test", "step": 60_000, "acc": 0.3})
    thin = thin_metrics(records)
    train = [r["step"] for r in thin if r["kind"] == "train"]
    assert len(train) == MAX_TRAIN_RECORDS and train[0] == 20 and train[-1] == 60_000 and train == sorted(train)
    assert [r for r in thin if r["kind"] != "train"] == [r for r in records if r["kind"] != "train"]
    assert [r["step"] for r in thin] == sorted(r["step"] for r in thin)  # the log's order is kept
    assert len("".join(json.dumps(r) + "\n" for r in thin)) < 100_000
    assert thin_metrics(records[:50]) == records[:50]
    with pytest.raises(ValueError, match="at least 2"):
        thin_metrics(records, 1)


def test_the_committed_one_epoch_slice_rebuilds_its_table(tmp_path):
    """The report rebuilt from docs/results/listops_paper_1epoch's committed run files equals its results.json."""
    committed = ROOT / "docs" / "results" / "listops_paper_1epoch"
    shutil.copytree(committed / "runs", tmp_path / "listops_paper" / "runs")
    assert run_cli(["compare", "listops_paper", "only=[vanilla,las,s4d]", "seeds=[0]", "budget.epochs=1",
                    "--report-only", "--out", tmp_path]) == 0
    keys = ("layer", "n", "test_acc", "best_val_acc_mean", "params", "steps", "tokens_per_s")
    want = [{k: r[k] for k in keys} for r in json.loads((committed / "results.json").read_text())["layers"]]
    assert [{k: r[k] for k in keys} for r in rows(tmp_path / "listops_paper")] == want


def test_the_environment_recorded_is_where_the_runs_ran(live, tmp_path):
    """From the live report's results.json; without one, this machine's only for runs on its kind of device."""
    grid, out = live
    src = tmp_path / "src"
    shutil.copytree(out, src)
    (src / "grid" / "results.json").unlink()
    (src / "grid" / "grid.json").unlink()
    summary = src / "grid" / "runs" / "vanilla-seed0" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "device": "cuda:0"}))  # "trained on a GPU"
    assert export(grid, src, tmp_path / "c") == 0
    envs = json.loads((tmp_path / "c" / "grid" / "grid.json").read_text())["environments"]
    from zoo.measure import environment

    assert envs == {"s4d-seed0": environment()}  # the CPU run ran here; the GPU run's machine is unknown
    assert run_cli(["compare", grid, "--report-only", "--out", tmp_path / "c"]) == 0
    assert json.loads((tmp_path / "c" / "grid" / "results.json").read_text())["environment"] == environment()


def test_a_full_disk_is_one_line_and_exit_2(live, tmp_path, capsys, monkeypatch):
    import errno

    grid, out = live
    assert export(grid, out, tmp_path / "c") == 0
    table = (tmp_path / "c" / "grid" / "runs" / "s4d-seed0" / "summary.json").read_bytes()

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("zoo.train.report.atomic_write_text", full)
    monkeypatch.setattr("zoo.train.export.atomic_write_text", full)
    capsys.readouterr()
    assert run_cli(["compare", grid, "--report-only", "--out", tmp_path / "c"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "No space left on device" in err[1] and "table.md" in err[1]  # the first: the plan line
    assert export(grid, out, tmp_path / "d") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0]
    assert (tmp_path / "c" / "grid" / "runs" / "s4d-seed0" / "summary.json").read_bytes() == table


def test_an_export_stopped_before_its_grid_record_is_completed_by_the_next(live, tmp_path):
    grid, out = live
    assert export(grid, out, tmp_path / "c") == 0
    record = tmp_path / "c" / "grid" / "grid.json"
    whole = json.loads(record.read_text())
    record.write_text(json.dumps({**whole, "runs": {}, "environments": {}}))  # as if it stopped before writing it
    assert export(grid, out, tmp_path / "c") == 0
    again = json.loads(record.read_text())
    assert again["runs"] == whole["runs"] and again["environments"] == whole["environments"]


def test_a_damaged_committed_run_is_never_overwritten(live, tmp_path, capsys):
    grid, out = live
    assert export(grid, out, tmp_path / "c") == 0
    summary = tmp_path / "c" / "grid" / "runs" / "s4d-seed0" / "summary.json"
    summary.write_text("{not json")
    capsys.readouterr()
    assert export(grid, out, tmp_path / "c") == 2
    err = [e for e in capsys.readouterr().err.splitlines() if e.startswith("zoo compare: refused")]
    assert len(err) == 1 and "s4d-seed0" in err[0] and "holds no finished run" in err[0]
    assert summary.read_text() == "{not json"
