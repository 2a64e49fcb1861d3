"""`zoo compare` sweeps and the report's honesty about time: run names, the best-lr pick (on
synthetic summaries and a tiny grid end to end), bad sweeps, speed spread, wall time, chance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_compare import comparison, summaries
from test_runs import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_setting_names_are_readable():
    from zoo.train.sweep import setting_name

    assert setting_name({"optim.lr": 1e-3, "model.d_model": 64}) == "lr1e-3-d_model64"
    assert setting_name({"optim.lr": 3.2e-4}) == "lr3.2e-4"
    assert setting_name({"optim.lr": 0.03, "task.options.seq_len": 128}) == "lr0.03-seq_len128"
    assert setting_name({}) == ""


def test_the_best_lr_is_picked_per_layer_and_other_setting():
    from zoo.train.sweep import pick_best_lr

    def row(layer, lr, d, val):
        return {"layer": layer, "setting": {"optim.lr": lr, "model.d_model": d}, "best_val_acc_mean": val}

    rows = [row("las", 1e-4, 64, 0.30), row("las", 1e-3, 64, 0.55), row("las", 1e-2, 64, 0.40),
            row("las", 1e-4, 128, 0.70), row("las", 1e-3, 128, 0.20), row("las", 1e-2, 128, None),
            row("s4d", 1e-4, 64, None), row("s4d", 1e-3, 64, None)]
    picked = pick_best_lr(rows)
    assert [(r["layer"], r["setting"]["model.d_model"], r["picked_lr"]) for r in picked] == [
        ("las", 64, 1e-3), ("las", 128, 1e-4), ("s4d", 64, None)]
    assert picked[0]["lr_candidates"] == {"1e-4": 0.30, "1e-3": 0.55, "0.01": 0.40}
    plain = [{"layer": "vanilla", "setting": {}, "best_val_acc_mean": 0.5}]
    assert pick_best_lr(plain) == plain  # no lr axis: nothing to pick


def test_a_sweep_grid_end_to_end_keeps_every_run_and_shows_the_picked_lr(tmp_path, capsys):
    grid = comparison(tmp_path, layers="[vanilla]", seeds="[0]", steps=2,
                      extra="sweep: {optim.lr: [1e-4, 3e-2], model.d_model: [16, 32]}\n")
    assert run_cli(["compare", grid, "--out", tmp_path / "out"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "out" / "grid"
    runs = summaries(folder)
    assert sorted(runs) == ["vanilla-lr0.03-d_model16-seed0", "vanilla-lr0.03-d_model32-seed0",
                            "vanilla-lr1e-4-d_model16-seed0", "vanilla-lr1e-4-d_model32-seed0"]
    assert all(s["status"] == "complete" for s in runs.values())
    cfgs = {n: (folder / "runs" / n / "config.yaml").read_text() for n in runs}
    assert "lr: 0.03" in cfgs["vanilla-lr0.03-d_model16-seed0"]
    assert "d_model: 32" in cfgs["vanilla-lr1e-4-d_model32-seed0"]
    results = json.loads((folder / "results.json").read_text())
    assert len(results["all_runs"]) == 4 and len(results["layers"]) == 2  # every run kept; one row per d_model
    for d in (16, 32):
        val = {lr: runs[f"vanilla-lr{name}-d_model{d}-seed0"]["best_val_acc"] for lr, name in ((1e-4, "1e-4"),
                                                                                              (0.03, "0.03"))}
        want = 1e-4 if val[1e-4] >= val[0.03] else 0.03  # ties keep the first listed lr
        (row,) = [r for r in results["layers"] if r["setting"]["model.d_model"] == d]
        assert row["picked_lr"] == want and row["runs"] == [f"vanilla-lr{'1e-4' if want == 1e-4 else '0.03'}"
                                                            f"-d_model{d}-seed0"]
        assert f"- vanilla at {{'model.d_model': {d}}}: picked lr {want} by best validation accuracy" in out
    table = (folder / "table.md").read_text()
    assert "| layer | lr (picked) | model.d_model |" in table
    assert (folder / "curves.png").stat().st_size > 0


@pytest.mark.parametrize("sweep,why", [
    ("{optim.lrr: [1e-3]}", "sweep.optim.lrr=0.001: "),
    ("{optim.lr: []}", "sweep.optim.lr: give a non-empty list of values"),
    ("{optim.lr: [fast]}", "sweep.optim.lr='fast': "),
    ("{model.d_model: [64, 64]}", "sweep.model.d_model: [64, 64] repeats a value"),
    ("{train.seed: [1, 2]}", "sweep: 'train.seed' cannot be swept"),
    ("{optim.lr: 1e-3}", "sweep.optim.lr: give a non-empty list of values"),
])
def test_bad_sweeps_are_one_line_and_exit_2(tmp_path, capsys, sweep, why):
    code = run_cli(["compare", comparison(tmp_path, seeds="[0]"), f"sweep={sweep}", "--out", tmp_path / "out"])
    err = capsys.readouterr().err
    assert code == 2 and why in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def _fake_grid(tmp_path: Path, rows: dict) -> list:
    from zoo.train.compare import GridRun

    runs = []
    for label, seeds in rows.items():
        for seed, s in enumerate(seeds):
            name = f"{label}-seed{seed}"
            (tmp_path / "runs" / name).mkdir(parents=True)
            (tmp_path / "runs" / name / "summary.json").write_text(json.dumps(
                {"status": "complete", "task": "listops", "params": 1000, "steps": 10, "epochs_completed": 1,
                 "best_val_acc": 0.3, "chance_acc": 0.172, "device": "cpu", "threads": 1, **s}))
            runs.append(GridRun(label=label, layer=label, seed=seed, experiment="x", overrides=[f"layer={label}"],
                                run_name=name))
    return runs


def test_the_table_shows_speed_spread_wall_time_and_chance(tmp_path):
    from zoo.train.report import aggregate, format_table

    runs = _fake_grid(tmp_path, {
        "s4d": [{"test_acc": 0.4, "tokens_per_s": 50000, "step_ms_median": 20.0, "train_seconds": 7.0,
                 "eval_seconds": 2.0, "warmup_seconds": 1.04},
                {"test_acc": 0.5, "tokens_per_s": 25000, "step_ms_median": 40.0, "train_seconds": 9.0,
                 "wall_seconds": 30.0}],
        "vanilla": [{"test_acc": 0.6, "tokens_per_s": 40000, "step_ms_median": 26.0, "train_seconds": 8.25}]})
    rows = aggregate(tmp_path, runs, "s4d")
    s4d = rows[0]
    assert s4d["tokens_per_s_range"] == [25000, 50000] and s4d["step_ms_range"] == [20.0, 40.0]
    assert s4d["wall_seconds"] == pytest.approx((7.0 + 2.0 + 1.04 + 30.0) / 2)  # wall_seconds, else the parts
    table = format_table(rows, "s4d")
    assert "| tokens/s (min-max) | step ms (min-max) | peak MiB | train s | wall s |" in table
    assert "| 37,500 (25,000-50,000) | 30.0 (20.0-40.0) | - | 8.0 | 20.0 |" in table
    assert "| 40,000 | 26.0 | - | 8.2 | - |" not in table and "| 40,000 | 26.0 | - | 8.2 |" in table
    assert "| chance (majority class) | 17.20 |" in table


def test_the_printed_report_keeps_the_header_and_the_plots_their_titles(tmp_path, capsys, monkeypatch):
    import zoo.train.report as report
    from zoo.train.compare import ComparisonConfig

    runs = _fake_grid(tmp_path, {"s4d": [{"test_acc": 0.4, "tokens_per_s": 5, "train_seconds": 1.0}]})
    titles = []
    monkeypatch.setattr(report, "plot_curves", lambda folder, rows, out, title: titles.append(title) or out)
    monkeypatch.setattr(report, "plot_cost", lambda rows, out, title: titles.append(title) or out)
    cfg = ComparisonConfig(experiment="x", layers=["s4d"], seeds=[0])
    cfg.budget.steps = 10
    report.write_report(tmp_path, runs, cfg, "grid", wall_seconds=1.0, executor="local")
    out = capsys.readouterr().out
    assert out.startswith("# grid\n\nTask `listops` (experiment `x`), budget 10 steps, seeds [0], threads 1, "
                          "device cpu")
    assert (tmp_path / "table.md").read_text().startswith(out.split("\n\n| layer")[0][:60])
    assert titles == ["listops, 10 steps", "listops, 10 steps"]


def test_the_chance_line_is_drawn(tmp_path):
    import matplotlib.pyplot as plt

    from zoo.train import report_plots

    rows = [{"layer": "s4d", "setting": {}, "runs": [], "test_acc_mean": 0.4, "test_acc_std": 0.0,
             "wall_seconds": 1.0, "tokens_per_s": 5.0, "chance_acc": 0.172}]
    drawn = []
    real = plt.Axes.axhline
    plt.Axes.axhline = lambda self, y, **kw: drawn.append((y, kw.get("linestyle"))) or real(self, y, **kw)
    try:
        report_plots.plot_curves(tmp_path, rows, tmp_path / "c.png", "t")
        report_plots.plot_cost(rows, tmp_path / "k.png", "t")
    finally:
        plt.Axes.axhline = real
    assert drawn == [(pytest.approx(17.2), "--"), (pytest.approx(17.2), "--")]


def test_zoo_compare_and_make_run_write_the_same_folder():
    from zoo.cli import build_parser

    args = build_parser().parse_args(["compare", "mqar_quick"])
    assert args.out == "runs"
    run_target = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "zoo compare mqar_quick" in run_target and "--out" not in run_target


def test_sweep_axes_nest_or_dot_and_multiply_the_plan(tmp_path):
    from zoo.train.compare import load_comparison, plan

    grid = comparison(tmp_path, layers="[s4d, vanilla]", seeds="[0, 1]")
    for sweep in ("{optim: {lr: [1e-3, 3e-3]}, train.batch_size: [8]}",
                  "{optim.lr: [1e-3, 3e-3], train: {batch_size: [8]}}"):
        cfg, _ = load_comparison(str(grid), [f"sweep={sweep}"])
        runs = plan(cfg)
        assert len(runs) == 2 * 2 * 1 * 2
        assert runs[0].run_name == "s4d-lr1e-3-batch_size8-seed0"
        assert runs[-1].run_name == "vanilla-lr3e-3-batch_size8-seed1"
        assert "optim.lr=0.003" in runs[-1].overrides and "train.batch_size=8" in runs[-1].overrides


def test_the_report_ranks_the_layers_per_setting_in_one_sentence():
    from zoo.train.report import ranking

    rows = [{"layer": "vanilla", "setting": {"task.options.seq_len": 64, "optim.lr": 3e-3}, "test_acc_mean": 0.6,
             "chance_acc": 0.004},
            {"layer": "s4d", "setting": {"task.options.seq_len": 64, "optim.lr": 1e-2}, "test_acc_mean": 0.9},
            {"layer": "las", "setting": {"task.options.seq_len": 64, "optim.lr": 1e-2}, "test_acc_mean": None},
            {"layer": "vanilla", "setting": {"task.options.seq_len": 128}, "test_acc_mean": 0.1},
            {"layer": "s4d", "setting": {"task.options.seq_len": 128}, "test_acc_mean": 0.2}]
    assert ranking(rows).splitlines() == [
        "Test accuracy % at seq_len=64, highest first: s4d 90.00 > vanilla 60.00 (chance 0.40).",
        "Test accuracy % at seq_len=128, highest first: s4d 20.00 > vanilla 10.00 (chance 0.40)."]
    assert ranking(rows[:1]) == ""  # one finished layer ranks nothing
