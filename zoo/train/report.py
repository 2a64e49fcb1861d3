"""The comparison report, made from the runs' own ``summary.json`` and ``metrics.jsonl``.

``table.md`` / ``results.json``: per layer (and sweep setting), test accuracy mean +/- sample std
over seeds (with n), best validation accuracy, parameters and whether they are within the LRA 10%
budget of the baseline layer, tokens/s and step time with their spread over seeds (lowest-highest:
one slow seed shows), peak memory, training and wall seconds per run, and the chance accuracy
(majority class). With a learning-rate sweep the table keeps, per layer and other setting, the lr
with the best validation accuracy (:func:`zoo.train.sweep.pick_best_lr`) and names it;
``results.json`` keeps every run. Failed runs are listed with their reason. ``curves.png``:
validation accuracy against step (mean over seeds, band lowest to highest seed); ``cost.png``:
accuracy against cost; both titled with the task and budget, with the chance level dashed.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from zoo._io import atomic_write_text
from zoo.train.figures import draw_figures
from zoo.train.folder import RunFolder
from zoo.train.report_plots import plot_cost, plot_curves
from zoo.train.sweep import LR_KEY, pick_best_lr

__all__ = ["aggregate", "format_table", "write_report"]

PARAM_BUDGET = 0.10  # LRA: models within 10% of the baseline's parameter count


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _std(xs):
    xs = [x for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)


def _spread(xs):
    xs = [x for x in xs if x is not None]
    return [min(xs), max(xs)] if xs else None


def _wall(s: dict):
    """Wall seconds of a run: the summary's ``wall_seconds``, else training + evaluation + warm-up."""
    if s.get("wall_seconds") is not None:
        return s["wall_seconds"]
    parts = [s.get(k) for k in ("train_seconds", "eval_seconds", "warmup_seconds")]
    return sum(p for p in parts if p is not None) if any(p is not None for p in parts) else None


def _row(label: str, cells: list, folder: Path, failed: dict) -> dict:
    summaries = []
    for r in cells:
        run = RunFolder(folder / "runs" / r.run_name)
        if run.finished():
            summaries.append((r, run.summary()))
    ss = [s for _, s in summaries]
    first = ss[0] if ss else {}
    tests = [s["test_acc"] for s in ss]
    tps, ms = [s.get("tokens_per_s") for s in ss], [s.get("step_ms_median") for s in ss]
    return {
        "layer": label, "registry_name": cells[0].layer, "setting": dict(cells[0].setting),
        "seeds": [r.seed for r, _ in summaries], "runs": [r.run_name for r, _ in summaries],
        "n": len(ss), "planned": len(cells),
        "test_acc_mean": _mean(tests), "test_acc_std": _std(tests), "test_acc": tests,
        "best_val_acc_mean": _mean([s.get("best_val_acc") for s in ss]),
        "params": first.get("params"),
        "tokens_per_s": _mean(tps), "tokens_per_s_range": _spread(tps),
        "step_ms": _mean(ms), "step_ms_range": _spread(ms),
        "peak_mem_mib": max((s["peak_mem_mib"] for s in ss if s.get("peak_mem_mib")), default=None),
        "train_seconds": _mean([s.get("train_seconds") for s in ss]),
        "wall_seconds": _mean([_wall(s) for s in ss]),
        "chance_acc": first.get("chance_acc"), "task": first.get("task"), "threads": first.get("threads"),
        "steps": first.get("steps"), "epochs": first.get("epochs_completed"),
        "kernel": first.get("kernel"), "device": first.get("device"),
        "failed": {r.run_name: failed[r.run_name] for r in cells if r.run_name in failed},
    }


def aggregate(folder: Path, runs, baseline: str | None, failed: dict | None = None) -> list[dict]:
    """One row per layer label and sweep setting, in the grid's order, from the finished runs' summaries."""
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r.label, json.dumps(r.setting, sort_keys=True)), []).append(r)
    rows = [_row(label, cells, folder, failed or {}) for (label, _), cells in groups.items()]
    # the baseline at the same sweep setting: a swept width or task (vocabulary) changes every layer's size
    bases = {}
    for r in rows:
        if r["layer"] == (baseline or rows[0]["layer"]) and r["params"]:
            bases.setdefault(json.dumps(r["setting"], sort_keys=True), r)
    for r in rows:
        base = bases.get(json.dumps(r["setting"], sort_keys=True))
        if base and r["params"]:
            r["params_vs_baseline"] = r["params"] / base["params"]
            r["within_param_budget"] = abs(r["params"] / base["params"] - 1.0) <= PARAM_BUDGET
        else:
            r["params_vs_baseline"] = r["within_param_budget"] = None
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _with_range(mean, rng, fmt: str) -> str:
    if mean is None:
        return "-"
    if not rng or rng[0] == rng[1]:
        return format(mean, fmt)
    return f"{format(mean, fmt)} ({format(rng[0], fmt)}-{format(rng[1], fmt)})"


def _sec(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_table(rows: list[dict], baseline: str) -> str:
    """The markdown table; tokens/s and step ms as mean (lowest-highest seed); a chance row when known."""
    axes = [k for k in (rows[0]["setting"] if rows else {})]
    head = ("layer", *[("lr (picked)" if k == LR_KEY else k) for k in axes], "test acc % (mean ± std)", "n",
            "best val %", "params", f"within 10% of {baseline}", "tokens/s (min-max)", "step ms (min-max)",
            "peak MiB", "train s", "wall s", "steps")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        acc = "-" if r["test_acc_mean"] is None else f"{_pct(r['test_acc_mean'])} ± {_pct(r['test_acc_std'])}"
        within = ("-" if r["within_param_budget"] is None else "yes" if r["within_param_budget"] else
                  f"NO ({r['params_vs_baseline']:.2f}x)")
        cells = (r["layer"], *[str(r["setting"][k]) for k in axes], acc, f"{r['n']}/{r['planned']}",
                 _pct(r["best_val_acc_mean"]), "-" if r["params"] is None else f"{r['params']:,}", within,
                 _with_range(r["tokens_per_s"], r["tokens_per_s_range"], ",.0f"),
                 _with_range(r["step_ms"], r["step_ms_range"], ".1f"),
                 "-" if r["peak_mem_mib"] is None else f"{r['peak_mem_mib']:,.0f}",
                 _sec(r["train_seconds"]), _sec(r["wall_seconds"]), str(r["steps"] or "-"))
        lines.append("| " + " | ".join(cells) + " |")
    chance = next((r["chance_acc"] for r in rows if r.get("chance_acc") is not None), None)
    if chance is not None:
        blank = ["-"] * (len(head) - 2 - len(axes))
        lines.append("| " + " | ".join(["chance (majority class)", *["-"] * len(axes), _pct(chance), *blank]) + " |")
    return "\n".join(lines)


def _notes(rows: list[dict], picked: list[dict], failed: dict,
           todo: str = "run the same command again to continue") -> str:
    notes = []
    for r in picked:
        if "lr_candidates" in r:
            cands = ", ".join(f"{lr}: {_pct(v)}" for lr, v in r["lr_candidates"].items())
            other = {k: v for k, v in r["setting"].items() if k != LR_KEY}
            where = f" at {other}" if other else ""
            notes.append(f"- {r['layer']}{where}: picked lr {r['picked_lr']} by best validation accuracy (% per lr: "
                         f"{cands})" if r["picked_lr"] is not None else
                         f"- {r['layer']}{where}: no validated run yet, no lr picked")
    missing = [f"{r['layer']}{' ' + str(r['setting']) if r['setting'] else ''} ({r['planned'] - r['n']} of "
               f"{r['planned']})" for r in rows if r["n"] < r["planned"]]
    text = ("\n\nLearning rate per layer (zoology / MAD protocol):\n" + "\n".join(notes)) if notes else ""
    if failed:
        text += "\n\nFailed runs:\n" + "\n".join(f"- {n}: {why}" for n, why in failed.items())
    if missing:
        text += f"\n\nNot finished yet: {', '.join(missing)} ({todo})."
    return text + "\n"


def ranking(picked: list[dict]) -> str:
    """One sentence per setting: the layers by mean test accuracy, highest first, and the chance level."""
    groups: dict[str, list[dict]] = {}
    for r in picked:
        if r["test_acc_mean"] is not None:
            where = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in r["setting"].items() if k != LR_KEY)
            groups.setdefault(where, []).append(r)
    chance = next((r["chance_acc"] for r in picked if r.get("chance_acc") is not None), None)
    lines = []
    for where, rs in groups.items():
        if len(rs) > 1:
            order = " > ".join(f"{r['layer']} {_pct(r['test_acc_mean'])}" for r in
                               sorted(rs, key=lambda r: -r["test_acc_mean"]))
            lines.append(f"Test accuracy %{' at ' + where if where else ''}, highest first: {order}"
                         f"{f' (chance {_pct(chance)})' if chance is not None else ''}.")
    return "\n".join(lines)


def write_report(folder: Path, runs, cfg, name: str, *, wall_seconds: float, executor: str,
                 failed: dict | None = None, environment: dict | None = None, todo: str | None = None) -> Path:
    """Write table.md, results.json, curves.png and cost.png in ``folder``; print the header, table and files.

    ``environment`` is where the runs were trained (default: this machine's, where they just ran); ``todo``
    what to do about runs not finished yet (default: run the same command again).
    """
    import dataclasses

    from zoo.measure import environment as this_machine

    failed = dict(failed or {})
    baseline = cfg.baseline or runs[0].label
    rows = aggregate(folder, runs, baseline, failed)
    picked = pick_best_lr(rows)
    budget = {k: v for k, v in dataclasses.asdict(cfg.budget).items() if v is not None}
    budget_text = ", ".join(f"{v} {k}" for k, v in budget.items())
    table = format_table(picked, baseline)
    env = this_machine() if environment is None else environment
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["task"]))  # several when the grid sweeps task.name
    task = ", ".join(tasks) or cfg.experiment
    threads = next((r["threads"] for r in rows if r.get("threads")), env.get("threads", "-"))
    device = next((r["device"] for r in rows if r["device"]), "-")
    header = (f"# {name}\n\nTask `{task}` (experiment `{cfg.experiment}`), budget {budget_text}, seeds "
              f"{list(cfg.seeds)}, threads {threads}, device {device}; executor {executor}; {env}\n\n")
    notes = _notes(rows, picked, failed, *([todo] if todo else []))
    summary = ranking(picked)
    notes += f"\n{summary}\n" if summary else ""
    atomic_write_text(folder / "table.md", header + table + notes)
    atomic_write_text(folder / "results.json", json.dumps({
        "comparison": name, "experiment": cfg.experiment, "task": task, "budget": budget, "seeds": list(cfg.seeds),
        "sweep": {k: list(v) for k, v in (cfg.sweep or {}).items()}, "baseline": baseline, "executor": executor,
        "wall_seconds_this_call": round(wall_seconds, 1), "environment": env, "failed": failed,
        "layers": picked, "all_runs": rows}, indent=2) + "\n")
    title = f"{task if len(tasks) < 2 else f'{len(tasks)} tasks'}, {budget_text}"
    files = [folder / "table.md", folder / "results.json",
             plot_curves(folder, picked, folder / "curves.png", title),
             plot_cost(picked, folder / "cost.png", title)]
    extra, pictures = draw_figures(cfg.figures, folder, picked, title)  # the comparison's `figures:`
    files += extra
    print(header.rstrip("\n") + "\n")
    print(table + notes.rstrip("\n"))
    if pictures:
        print("\n" + pictures.rstrip("\n"))
    for f in files:
        print(f"wrote {f}")
    return folder
