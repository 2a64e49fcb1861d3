"""`zoo compare`: the layer x seed grid end to end, stopping and resuming it, plugins, bad input,
the submitit executor; and one run across processes (DDP over gloo) against one process."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from test_runs import prepare_data, run_cli, tiny_experiment

PLUGINS = Path(__file__).parent / "plugins"


def comparison(tmp_path: Path, *, layers="[s4d, vanilla]", seeds="[0, 1]", steps=4, extra="",
               overrides="[train.eval_every=2, train.checkpoint_every=2]", n_train=64) -> Path:
    exp = tiny_experiment(tmp_path, n_train=n_train, epochs=20)
    path = tmp_path / "grid.yaml"
    path.write_text(f"experiment: {exp}\nlayers: {layers}\nseeds: {seeds}\nbudget: {{steps: {steps}}}\n"
                    f"overrides: {overrides}\n{extra}")
    return path


def summaries(folder: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*/summary.json"))}


def test_a_grid_end_to_end(tmp_path, capsys):
    assert run_cli(["compare", comparison(tmp_path), "--out", tmp_path / "results"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "results" / "grid"
    for f in ("table.md", "results.json", "curves.png", "cost.png", "grid.json"):
        assert (folder / f).stat().st_size > 0, f
        assert f in out or f == "grid.json"  # the command names the files
    runs = summaries(folder)
    assert sorted(runs) == ["s4d-seed0", "s4d-seed1", "vanilla-seed0", "vanilla-seed1"]
    assert all(s["status"] == "complete" and s["steps"] == 4 for s in runs.values())
    results = {r["layer"]: r for r in json.loads((folder / "results.json").read_text())["layers"]}
    for layer in ("s4d", "vanilla"):
        accs = [runs[f"{layer}-seed{k}"]["test_acc"] for k in (0, 1)]
        r = results[layer]
        assert r["n"] == 2 and r["test_acc"] == accs
        assert r["test_acc_mean"] == pytest.approx(statistics.fmean(accs))
        assert r["test_acc_std"] == pytest.approx(statistics.stdev(accs))
        assert r["params"] == runs[f"{layer}-seed0"]["params"] and r["tokens_per_s"] > 0
    ratio = results["vanilla"]["params"] / results["s4d"]["params"]  # s4d, the first layer, is the baseline
    assert results["s4d"]["within_param_budget"] is True
    assert results["vanilla"]["within_param_budget"] == (abs(ratio - 1) <= 0.1)
    table = (folder / "table.md").read_text()
    assert f"{100 * results['vanilla']['test_acc_mean']:.2f} ± {100 * results['vanilla']['test_acc_std']:.2f}" in table
    rows = [line for line in table.splitlines() if line.startswith("| s4d") or line.startswith("| vanilla")]
    assert len(rows) == 2 and all("| 2/2 |" in r and r in out for r in rows)  # printed at the end


def test_a_stopped_grid_resumes_and_reaches_the_same_table(tmp_path):
    """SIGTERM in the middle of the second run (this process, as from a terminal), then the same command."""
    grid = comparison(tmp_path, layers="[s4d]", steps=120, n_train=2000,
                      overrides="[train.eval_every=50, train.checkpoint_every=25, train.log_every=5]")
    prepare_data(tmp_path / "tiny.yaml")
    out = tmp_path / "results"
    first = out / "grid" / "runs" / "s4d-seed0" / "summary.json"
    second = out / "grid" / "runs" / "s4d-seed1" / "metrics.jsonl"

    def stop_in_the_second_run():
        while not (first.exists() and second.exists() and second.read_text().count('"train"') >= 2):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler: finish the step, checkpoint, exit 143

    watcher = threading.Thread(target=stop_in_the_second_run, daemon=True)
    watcher.start()
    assert run_cli(["compare", grid, "--out", out]) == 143
    watcher.join()
    stopped = json.loads((second.parent / "summary.json").read_text())
    assert stopped["status"].startswith("interrupted by SIGTERM") and 0 < stopped["steps"] < 120
    finished_at = first.stat().st_mtime_ns
    assert run_cli(["compare", grid, "--out", out]) == 0  # again: resumes s4d-seed1
    assert first.stat().st_mtime_ns == finished_at  # the finished run was not touched
    assert run_cli(["compare", grid, "--out", tmp_path / "fresh"]) == 0  # the same grid, never stopped
    a, b = summaries(out / "grid"), summaries(tmp_path / "fresh" / "grid")
    assert {k: v["test_acc"] for k, v in a.items()} == {k: v["test_acc"] for k, v in b.items()}
    ra = json.loads((out / "grid" / "results.json").read_text())["layers"]
    rb = json.loads((tmp_path / "fresh" / "grid" / "results.json").read_text())["layers"]
    assert [r["test_acc"] for r in ra] == [r["test_acc"] for r in rb]


def test_a_plugin_layer_is_in_both_comparisons(tmp_path, monkeypatch, capsys):
    import registry

    grid = comparison(tmp_path, layers="[toy_cummean]", seeds="[0]", steps=2)
    monkeypatch.syspath_prepend(str(PLUGINS / "good"))  # the plugin's distribution, installed
    registry.reload_plugins()
    try:
        assert run_cli(["bench", "--layers", "toy_cummean", "vanilla", "--lengths", "16", "--reps", "1",
                        "--d-model", "16", "--no-baseline"]) == 0
        bench_rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("toy_cummean")]
        assert run_cli(["compare", grid, "--out", tmp_path / "results"]) == 0
    finally:
        monkeypatch.undo()
        for mod in [m for m in sys.modules if m.startswith("zoo_toy_plugin")]:
            del sys.modules[mod]
        registry.reload_plugins()
    assert bench_rows and bench_rows[0].split()[1] == "16"
    results = json.loads((tmp_path / "results" / "grid" / "results.json").read_text())
    assert [r["layer"] for r in results["layers"]] == ["toy_cummean"] and results["layers"][0]["n"] == 1


@pytest.mark.parametrize("override,why", [
    ("layers=[s4d,lass]", "unknown layer 'lass'. Did you mean 'las'"),
    ("seeds=[]", "the seed list is empty"),
    ("budget.epochs=1", "set exactly one of budget.epochs and budget.steps"),
    ("overrides=[train.epochs=3]", "mismatched budgets: 'train.epochs=3'"),
    ("overrides=[task=listopz]", "unknown LRA task 'listopz'. Did you mean 'listops'"),
    ("baseline=las", "baseline: 'las' is not one of the layers"),
    ("layerz=[s4d]", "Key 'layerz' not in 'ComparisonConfig'"),
    ("only=[vanila]", "only: 'vanila' is not a label of `layers` (did you mean vanilla?)"),
])
def test_bad_grids_are_one_line_and_exit_2(tmp_path, capsys, override, why):
    code = run_cli(["compare", comparison(tmp_path), override, "budget.steps=4" if "budget.epochs" in override else
                    "seeds=[0]" if override != "seeds=[]" else "layers=[s4d]", "--out", tmp_path / "results"])
    err = capsys.readouterr().err
    assert code == 2 and why in err and err.count("\n") == 1, err
    assert not (tmp_path / "results").exists()  # nothing was started


def test_a_folder_of_another_grid_is_refused_and_kept(tmp_path, capsys):
    grid = comparison(tmp_path, seeds="[0]", steps=2)
    out = tmp_path / "results"
    assert run_cli(["compare", grid, "--out", out]) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run_cli(["compare", grid, "budget.steps=3", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "holds the runs of a different grid (changed: budget" in err and err.count("\n") == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    assert run_cli(["compare", grid, "seeds=[0,1]", "--out", out]) == 0  # adding a seed is the same grid, grown


def test_the_grid_through_submitit_local_executor(tmp_path, capsys):
    extra = "execution: {executor: submitit, submitit: {cluster: local, timeout_min: 10}}\n"
    grid = comparison(tmp_path, layers="[s4d]", seeds="[0]", steps=2, extra=extra)
    assert run_cli(["compare", grid, "--out", tmp_path / "results"]) == 0
    err = capsys.readouterr().err
    assert "submitted s4d-seed0 as job" in err
    assert summaries(tmp_path / "results" / "grid")["s4d-seed0"]["status"] == "complete"
    assert list((tmp_path / "results" / "grid" / "submitit").glob("*_log.out"))  # submitit's own job logs


def test_torchrun_two_processes_match_one_process(tmp_path):
    """DDP over gloo: the same global batch split over 2 ranks gives the single-process gradient (an SGD
    step with lr 1 and no momentum state beyond the first step is a linear map of the gradient)."""
    exp = tiny_experiment(tmp_path, n_train=64)
    prepare_data(exp)
    sgd = ["optim.opt=sgd", "optim.lr=1.0", "optim.weight_decay=0", "optim.grad_clip=0", "optim.sched=none",
           "model.dropout=0", "train.batch_size=8", "--max-steps", "1", "--out", str(tmp_path / "runs")]
    assert run_cli(["train", exp, *sgd, "train.run_name=single"]) == 0
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(torchrun), "--nproc_per_node=2", "--standalone", "-m", "zoo", "train", str(exp), *sgd,
                          "train.run_name=ddp"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    a = torch.load(tmp_path / "runs" / "single" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "runs" / "ddp" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 1
    moved = 0
    for k, v in a["model"].items():
        if v.is_floating_point():
            assert torch.allclose(v, b["model"][k], atol=1e-6, rtol=1e-5), k
            moved += 1
    assert moved > 5
    # the DDP run resumes in one process (the same command without torchrun)
    assert run_cli(["train", exp, *sgd[:-4], "--max-steps", "2", "--out", str(tmp_path / "runs"),
                    "train.run_name=ddp"]) == 0
    assert torch.load(tmp_path / "runs" / "ddp" / "checkpoint.pt", weights_only=False)["step"] == 2


def test_the_paper_grid_keeps_parameter_budgets_and_only_picks_entries_whole():
    """listops_paper: every layer within LRA's 10% of vanilla's parameter count at the paper's
    model size; `only=` runs a subset with each entry's own overrides (the widths that make it so)."""
    from omegaconf import OmegaConf

    from zoo.config import resolve_layer
    from zoo.models import ModelConfig, build_model
    from zoo.train.compare import load_comparison, plan
    from zoo.train.experiment import load_experiment

    cfg, _ = load_comparison("listops_paper")
    counts = {}
    for run in plan(cfg):
        if run.seed == 0:
            exp = load_experiment(run.experiment, run.overrides)
            model = build_model(ModelConfig(**OmegaConf.to_container(exp.cfg.model)),
                                resolve_layer(exp.layer, max_len=2000), n_classes=10, max_len=2000, vocab_size=18)
            counts[run.label] = sum(p.numel() for p in model.parameters())
    assert set(counts) == {"vanilla", "las", "local", "smooth", "las_chunk", "s4d", "long_conv"}
    for label, n in counts.items():
        assert abs(n / counts["vanilla"] - 1) <= 0.10, (label, n, counts["vanilla"])
    cfg, _ = load_comparison("listops_paper", ["only=[s4d,vanilla]", "seeds=[0]"])
    runs = plan(cfg)
    assert [r.label for r in runs] == ["vanilla", "s4d"]
    assert "model.d_model=304" in runs[1].overrides
