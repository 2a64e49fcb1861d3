"""The synthetic comparisons: coupled sweep axes, zoology's Figure 2 and MAD's table drawn from made-up
report rows, the report's `figures:` hook, and the four comparison configs planned against stand-in
experiments (the real configs/experiments/mqar.yaml and mad.yaml come with the token models)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from test_compare import comparison, summaries
from test_runs import run_cli

# --------------------------------------------------------------------------- coupled sweep axes


def test_a_coupled_axis_moves_its_keys_together_and_multiplies_the_others():
    from zoo.train.sweep import axis_keys, check_sweep, combinations, setting_name

    assert axis_keys("optim.lr") == ("optim.lr",)
    assert axis_keys("task.options.[seq_len,num_kv_pairs]") == ("task.options.seq_len", "task.options.num_kv_pairs")
    assert axis_keys("[task.options.seq_len, train.batch_size]") == ("task.options.seq_len", "train.batch_size")
    sweep = {"task.options.[seq_len,num_kv_pairs]": [[64, 4], [128, 8]], "optim.lr": [1e-3, 3e-3]}
    check_sweep(sweep)
    got = combinations(sweep)
    assert got == [{"task.options.seq_len": L, "task.options.num_kv_pairs": kv, "optim.lr": lr}
                   for L, kv in ((64, 4), (128, 8)) for lr in (1e-3, 3e-3)]  # 4 settings, not 2 x 2 x 2
    assert setting_name(got[-1]) == "seq_len128-num_kv_pairs8-lr3e-3"
    assert setting_name({"task.name": "selective_copying", "optim.lr": 1e-3}) == "selective_copying-lr1e-3"


@pytest.mark.parametrize("sweep,why", [
    ({"task.options.[seq_len,num_kv_pairs]": [[64, 4], [128]]}, "each value lists one value per key (2)"),
    ({"task.options.[seq_len,num_kv_pairs]": [64, 128]}, "each value lists one value per key (2)"),
    ({"task.options.[seq_len]": [[64]]}, "names two or more distinct keys"),
    ({"[optim.lr,optim.lr]": [[1, 2]]}, "names two or more distinct keys"),
    ({"[optim.lr,train.seed]": [[1e-3, 1]]}, "'train.seed' cannot be swept"),
    ({"[optim.lr,model.d_model]": [[1e-3, 16]], "optim.lr": [1e-3]}, "'optim.lr' is set by two axes"),
    ({"task.options.[seq_len,num_kv_pairs]": [[64, 4], [64, 4]]}, "repeats a value"),
])
def test_bad_coupled_axes_are_one_line(sweep, why):
    from zoo.train.sweep import check_sweep

    with pytest.raises(ValueError, match=None) as err:
        check_sweep(sweep)
    assert why in str(err.value) and "\n" not in str(err.value)


def _mqar_experiment(tmp_path: Path) -> Path:
    """A stand-in for configs/experiments/mqar.yaml: enough for the grid to load and check every run."""
    path = tmp_path / "mqar_exp.yaml"
    path.write_text("task: mqar\nlayer: vanilla\nmodel: {d_model: 64, n_layers: 2}\ntrain: {batch_size: 64}\n")
    return path


def test_coupled_values_are_checked_together_and_a_bad_pair_is_one_line(tmp_path, capsys):
    from zoo.train.compare import load_comparison, plan

    grid = tmp_path / "g.yaml"
    grid.write_text(f"experiment: {_mqar_experiment(tmp_path)}\nlayers: [vanilla]\nbudget: {{steps: 2}}\n")
    # 20 pairs need L >= 80: fine at L=128, impossible at the base L=64 (so the keys are loaded together)
    cfg, _ = load_comparison(str(grid), ['sweep={"task.options.[seq_len,num_kv_pairs]": [[128, 20], [64, 4]]}'])
    runs = plan(cfg)
    assert [r.run_name for r in runs] == ["vanilla-seq_len128-num_kv_pairs20-seed0",
                                          "vanilla-seq_len64-num_kv_pairs4-seed0"]
    assert "task.options.seq_len=128" in runs[0].overrides and "task.options.num_kv_pairs=20" in runs[0].overrides
    code = run_cli(["compare", grid, 'sweep={"task.options.[seq_len,num_kv_pairs]": [[64, 20]]}',
                    "--out", tmp_path / "o"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "sweep.task.options.[seq_len,num_kv_pairs]=[64, 20]: " in err, err
    assert not (tmp_path / "o").exists()


def test_a_task_name_sweep_gives_each_task_its_own_fields(tmp_path):
    from zoo.train.compare import load_comparison, plan

    exp = tmp_path / "icr.yaml"
    exp.write_text("task: {name: in_context_recall, options: {multi_query: false}}\nlayer: vanilla\n")
    grid = tmp_path / "g.yaml"
    grid.write_text(f"experiment: {exp}\nlayers: [vanilla]\nbudget: {{steps: 2}}\n"
                    "sweep: {task.name: [in_context_recall, memorization]}\n")
    runs = plan(load_comparison(str(grid))[0])  # memorization has no multi_query: the base's options are dropped
    assert [r.run_name for r in runs] == ["vanilla-in_context_recall-seed0", "vanilla-memorization-seed0"]
    assert "task.name=memorization" in runs[1].overrides


def test_a_coupled_sweep_grid_end_to_end_draws_the_width_figure(tmp_path, capsys):
    grid = comparison(tmp_path, layers="[vanilla]", seeds="[0]", steps=2,
                      extra='sweep: {"[optim.lr,model.d_model]": [[1.0e-4, 16], [3.0e-2, 32]]}\n'
                            "figures: [recall_by_width]\n")
    assert run_cli(["compare", grid, "--out", tmp_path / "out"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "out" / "grid"
    runs = summaries(folder)
    assert sorted(runs) == ["vanilla-lr0.03-d_model32-seed0", "vanilla-lr1e-4-d_model16-seed0"]
    assert (folder / "recall_by_width.png").stat().st_size > 0 and "recall_by_width.png" in out
    md = (folder / "recall_by_width.md").read_text()
    for d, name in ((16, "vanilla-lr1e-4-d_model16-seed0"), (32, "vanilla-lr0.03-d_model32-seed0")):
        assert f" {100 * runs[name]['test_acc']:.1f} ({'0.0001' if d == 16 else '0.03'}) " in md  # that run's test acc
    assert "## Accuracy against width" in out


# --------------------------------------------------------------------------- the pictures, from made-up rows


def _row(layer, acc, val, **setting):
    return {"layer": layer, "setting": setting, "runs": [], "test_acc_mean": acc, "best_val_acc_mean": val,
            "task": setting.get("task.name")}


def test_zoology_figure_has_a_panel_per_length_a_line_per_layer_and_the_best_lr_points(tmp_path, monkeypatch):
    from zoo.train import figures

    rows = []
    for L, kv in ((64, 4), (128, 8)):
        for w in (64, 128):
            for layer, base in (("vanilla", 0.9), ("hyena", 0.2)):
                for lr, bump in ((1e-3, 0.0), (3e-3, 0.05)):  # the higher lr validates better: its point is drawn
                    acc = base + bump + w / 10000 - L / 100000
                    rows.append(_row(layer, acc, acc, **{"task.options.seq_len": L, "task.options.num_kv_pairs": kv,
                                                         "model.d_model": w, "optim.lr": lr}))
    points = figures.recall_points(tmp_path, rows)
    assert sorted(points) == [(64, 4), (128, 8)] and set(points[(64, 4)]) == {"vanilla", "hyena"}
    best = points[(128, 8)]["hyena"][64]
    assert best["setting"]["optim.lr"] == 3e-3 and best["test_acc_mean"] == pytest.approx(0.25 + 0.0064 - 0.00128)

    drawn = []
    import matplotlib.axes

    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, x, y, **kw: drawn.append((self.get_title(), kw.get("label"), list(x), list(y)))
                        or real(self, x, y, **kw))
    files, text = figures.draw_recall_by_width(tmp_path, rows, "mqar, 10 steps")
    assert all(f.stat().st_size > 0 for f in files) and files[0].name == "recall_by_width.png"
    assert len(drawn) == 4  # 2 panels x 2 layers
    want = sorted((layer, [100 * (base + 0.05 + w / 10000 - L / 100000) for w in (64, 128)])
                  for L in (64, 128) for layer, base in (("vanilla", 0.9), ("hyena", 0.2)))
    got = sorted((label, ys) for _title, label, xs, ys in drawn if xs == [64, 128])
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, ys), (_, expect) in zip(got, want):
        assert ys == pytest.approx(expect)  # each point: the best lr's accuracy at that width
    assert "| length | kv pairs | layer | width 64: acc % (lr) | width 128: acc % (lr) |" in text
    assert "| 128 | 8 | hyena | 25.5 (0.003) | 26.2 (0.003) |" in text


def test_the_width_and_length_fall_back_to_the_runs_saved_config(tmp_path):
    from zoo.train import figures

    (tmp_path / "runs" / "a-seed0").mkdir(parents=True)
    (tmp_path / "runs" / "a-seed0" / "config.yaml").write_text(
        "model: {d_model: 96}\ntask: {name: mqar, options: {seq_len: 256, num_kv_pairs: 16}}\n")
    row = {**_row("a", 0.5, 0.5), "runs": ["a-seed0"]}
    assert figures.recall_points(tmp_path, [row]) == {(256, 16): {"a": {96: row}}}


def test_mad_table_numbers_are_the_inputs_and_the_mean_is_their_mean(tmp_path):
    from zoo.train import figures

    tasks = ["in_context_recall", "selective_copying", "memorization"]
    accs = {"vanilla": [0.99, 0.80, 0.61], "s4d": [0.42, 0.30, 0.95]}
    rows = []
    for layer, vals in accs.items():
        for task, acc in zip(tasks, vals):
            rows.append(_row(layer, acc, acc, **{"task.name": task, "optim.weight_decay": 0.1}))
            # worse val
            rows.append(_row(layer, acc - 0.2, acc - 0.3, **{"task.name": task, "optim.weight_decay": 0.0}))
    rows.append(_row("hyena", 0.5, 0.5, **{"task.name": "memorization", "optim.weight_decay": 0.0}))
    files, text = figures.draw_mad_table(tmp_path, rows, "5 tasks, 300 steps")
    assert [f.name for f in files] == ["mad.md", "mad.png"] and all(f.stat().st_size > 0 for f in files)
    assert "| layer | in_context_recall | selective_copying | memorization | mean |" in text
    for layer, vals in accs.items():
        cells = " | ".join(f"{100 * v:.1f}" for v in vals)
        assert f"| {layer} | {cells} | {100 * statistics.fmean(vals):.1f} |" in text
    assert "| hyena | - | - | 50.0 | 50.0 (1 of 3) |" in text  # a missing task is shown, not averaged as 0
    assert "- vanilla: in_context_recall {weight_decay: 0.1}; selective_copying {weight_decay: 0.1}; " in text
    assert (tmp_path / "mad.md").read_text() == text
    task_order, cells = figures.mad_cells(rows)
    assert task_order == tasks and cells["s4d"]["memorization"]["test_acc_mean"] == 0.95


def test_mad_bars_are_one_group_per_task_and_the_mean(tmp_path, monkeypatch):
    import matplotlib.axes

    from zoo.train import figures

    heights = {}
    real = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", lambda self, x, h, w, label=None, **kw:
                        heights.setdefault(label, list(h)) and real(self, x, h, w, label=label, **kw))
    rows = [_row("las", 0.5, 0.5, **{"task.name": "a"}), _row("las", 0.7, 0.7, **{"task.name": "b"}),
            _row("vanilla", 0.9, 0.9, **{"task.name": "a"}), _row("vanilla", 0.3, 0.3, **{"task.name": "b"})]
    figures.draw_mad_table(tmp_path, rows, "t")
    assert heights == {"las": pytest.approx([50.0, 70.0, 60.0]), "vanilla": pytest.approx([90.0, 30.0, 60.0])}


def test_the_report_draws_the_figures_its_comparison_names(tmp_path, capsys):
    from zoo.train.compare import ComparisonConfig, GridRun
    from zoo.train.report import write_report

    runs = []
    for layer, task, acc in (("s4d", "in_context_recall", 0.4), ("s4d", "memorization", 0.8)):
        name = f"{layer}-{task}-seed0"
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "summary.json").write_text(json.dumps(
            {"status": "complete", "task": task, "params": 10, "steps": 3, "test_acc": acc, "best_val_acc": acc}))
        runs.append(GridRun(label=layer, layer=layer, seed=0, experiment="x", overrides=[f"layer={layer}"],
                            run_name=name, setting={"task.name": task}))
    cfg = ComparisonConfig(experiment="x", layers=["s4d"], seeds=[0], figures=["mad_table"])
    cfg.budget.steps = 3
    write_report(tmp_path, runs, cfg, "grid", wall_seconds=1.0, executor="local")
    out = capsys.readouterr().out
    assert "| s4d | 40.0 | 80.0 | 60.0 |" in out and (tmp_path / "mad.png").exists()
    assert "Task `in_context_recall, memorization`" in out and "## MAD tasks (2 tasks, 3 steps)" in out
    assert not (tmp_path / "recall_by_width.png").exists()  # only what the comparison names


def test_parameters_are_compared_with_the_baseline_at_the_same_setting(tmp_path):
    from zoo.train.compare import GridRun
    from zoo.train.report import aggregate

    runs = []
    for layer, d, params in (("vanilla", 64, 1000), ("vanilla", 128, 4000), ("s4d", 64, 1050), ("s4d", 128, 2000)):
        name = f"{layer}-d{d}-seed0"
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "summary.json").write_text(json.dumps(
            {"status": "complete", "task": "mqar", "params": params, "test_acc": 0.5}))
        runs.append(GridRun(label=layer, layer=layer, seed=0, experiment="x", overrides=[f"layer={layer}"],
                            run_name=name, setting={"model.d_model": d}))
    rows = {(r["layer"], r["setting"]["model.d_model"]): r for r in aggregate(tmp_path, runs, "vanilla")}
    assert rows[("s4d", 64)]["params_vs_baseline"] == pytest.approx(1.05) and rows[("s4d", 64)]["within_param_budget"]
    assert rows[("s4d", 128)]["params_vs_baseline"] == pytest.approx(0.5)  # against vanilla at 128, not at 64
    assert rows[("vanilla", 128)]["params_vs_baseline"] == 1.0


def test_an_unknown_figure_kind_is_one_line_and_exit_2(tmp_path, capsys):
    code = run_cli(["compare", comparison(tmp_path, seeds="[0]"), "figures=[zoology_fig2]", "--out", tmp_path / "o"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "figures: unknown kind 'zoology_fig2'" in err, err
    assert "recall_by_width" in err and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- the four configs


@pytest.mark.parametrize("name,task,n_runs,figure", [
    ("mqar_small", "mqar", 5 * 2 * 2, "recall_by_width"),
    # the GPU protocols: every one of their 320 / 150 runs is loaded and checked (30 s on 2 cores)
    pytest.param("mqar_zoology", "mqar", 5 * 4 * 4 * 4, "recall_by_width", marks=pytest.mark.slow),
    pytest.param("mad", "in_context_recall", 5 * 5 * 3 * 2, "mad_table", marks=pytest.mark.slow),
    ("mad_small", "in_context_recall", 5 * 5 * 2, "mad_table"),
])
def test_the_synthetic_comparisons_plan(tmp_path, name, task, n_runs, figure):
    """Every run of the grid loads (with a stand-in experiment of the right task) and the grid is as documented."""
    from zoo.train.compare import load_comparison, plan

    exp = _mqar_experiment(tmp_path)
    exp.write_text(exp.read_text().replace("task: mqar", f"task: {task}"))
    cfg, _ = load_comparison(name, [f"experiment={exp}"])
    runs = plan(cfg)
    assert len(runs) == n_runs and cfg.figures == [figure]
    assert {r.label for r in runs} == {"vanilla", "las", "s4d", "long_conv", "hyena"}
    heads = {r.label: r.layer_fields.get("n_heads") for r in runs if r.layer in ("vanilla", "las")}
    if name != "mqar_zoology":  # zoology's attention has 1 head, which LaS cannot use
        assert len(set(heads.values())) == 1 and heads["las"] > 1
    if name.startswith("mqar"):
        pairs = {(r.setting["task.options.seq_len"], r.setting["task.options.num_kv_pairs"]) for r in runs}
        assert {(64, 4), (128, 8)} <= pairs
    else:
        assert "compression" not in {r.setting["task.name"] for r in runs}  # needs an encoder-decoder
