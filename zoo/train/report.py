"""The comparison report, made from the runs' own ``summary.json`` and ``metrics.jsonl``.

``table.md`` / ``results.json``: per layer, test accuracy mean +/- sample std over seeds (with n),
best validation accuracy, parameters and whether they are within the LRA 10% budget of the
baseline layer, tokens/s, peak memory, training time and steps. ``curves.png``: validation
accuracy against step, one line per layer (mean over seeds) with a band from the lowest to the
highest seed. ``cost.png``: accuracy against cost (training seconds and tokens/s), one bar per layer.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from zoo._io import atomic_write_text
from zoo.train.metrics import read_metrics

__all__ = ["aggregate", "write_report"]

PARAM_BUDGET = 0.10  # LRA: models within 10% of the baseline's parameter count


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _std(xs):
    xs = [x for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)


def aggregate(folder: Path, runs, baseline: str | None) -> list[dict]:
    """One row per layer label, in the grid's order, from the finished runs' summaries."""
    by_label: dict[str, list] = {}
    for r in runs:
        by_label.setdefault(r.label, []).append(r)
    rows = []
    for label, cells in by_label.items():
        summaries = []
        for r in cells:
            p = folder / "runs" / r.run_name / "summary.json"
            if p.exists():
                s = json.loads(p.read_text())
                if s.get("test_acc") is not None and s.get("status") == "complete":
                    summaries.append((r.seed, s))
        tests = [s["test_acc"] for _, s in summaries]
        rows.append({
            "layer": label, "registry_name": cells[0].layer, "seeds": [seed for seed, _ in summaries],
            "n": len(summaries), "planned": len(cells),
            "test_acc_mean": _mean(tests), "test_acc_std": _std(tests), "test_acc": tests,
            "best_val_acc_mean": _mean([s["best_val_acc"] for _, s in summaries]),
            "params": summaries[0][1]["params"] if summaries else None,
            "tokens_per_s": _mean([s.get("tokens_per_s") for _, s in summaries]),
            "step_ms": _mean([s.get("step_ms_median") for _, s in summaries]),
            "peak_mem_mib": max((s["peak_mem_mib"] for _, s in summaries if s.get("peak_mem_mib")), default=None),
            "train_seconds": _mean([s["train_seconds"] for _, s in summaries]),
            "steps": summaries[0][1]["steps"] if summaries else None,
            "epochs": summaries[0][1]["epochs_completed"] if summaries else None,
            "kernel": summaries[0][1].get("kernel") if summaries else None,
            "device": summaries[0][1].get("device") if summaries else None,
        })
    base = next((r for r in rows if r["layer"] == (baseline or rows[0]["layer"])), None)
    for r in rows:
        if base and base["params"] and r["params"]:
            r["params_vs_baseline"] = r["params"] / base["params"]
            r["within_param_budget"] = abs(r["params"] / base["params"] - 1.0) <= PARAM_BUDGET
        else:
            r["params_vs_baseline"] = r["within_param_budget"] = None
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def format_table(rows: list[dict], baseline: str) -> str:
    head = ("layer", "test acc % (mean ± std)", "n", "best val %", "params", f"within 10% of {baseline}",
            "tokens/s", "step ms", "peak MiB", "train s", "steps")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        acc = "-" if r["test_acc_mean"] is None else f"{_pct(r['test_acc_mean'])} ± {_pct(r['test_acc_std'])}"
        within = {True: "yes", False: f"NO ({r['params_vs_baseline']:.2f}x)", None: "-"}[r["within_param_budget"]]
        cells = (r["layer"], acc, f"{r['n']}/{r['planned']}", _pct(r["best_val_acc_mean"]),
                 "-" if r["params"] is None else f"{r['params']:,}", within,
                 "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:,.0f}",
                 "-" if r["step_ms"] is None else f"{r['step_ms']:.1f}",
                 "-" if r["peak_mem_mib"] is None else f"{r['peak_mem_mib']:,.0f}",
                 "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}", str(r["steps"] or "-"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _curves(folder: Path, runs, rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row in rows:
        series = []
        for r in runs:
            if r.label == row["layer"] and r.seed in row["seeds"]:
                pts = [(m["step"], m["acc"]) for m in read_metrics(folder / "runs" / r.run_name / "metrics.jsonl")
                       if m.get("kind") == "val"]
                if pts:
                    series.append(dict(pts))
        if not series:
            continue
        steps = sorted(set.intersection(*(set(s) for s in series)))
        acc = np.array([[s[k] for k in steps] for s in series])  # (seeds, steps)
        (line,) = ax.plot(steps, 100 * acc.mean(0), marker="o", markersize=3, label=f"{row['layer']} (n={len(series)})")
        if len(series) > 1:
            ax.fill_between(steps, 100 * acc.min(0), 100 * acc.max(0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("validation accuracy: mean over seeds, band = lowest to highest seed")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no validation yet (set train.eval_every, or train to an epoch end)", ha="center",
                transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _cost(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["test_acc_mean"] is not None]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    names = [r["layer"] for r in done]
    axes[0].bar(names, [100 * r["test_acc_mean"] for r in done], yerr=[100 * r["test_acc_std"] for r in done],
                capsize=3, color="tab:blue")
    axes[0].set_ylabel("test accuracy (%), mean ± std")
    axes[1].bar(names, [r["train_seconds"] for r in done], color="tab:orange")
    axes[1].set_ylabel("training seconds per run")
    axes[2].bar(names, [r["tokens_per_s"] or 0 for r in done], color="tab:green")
    axes[2].set_ylabel("real tokens / s")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("accuracy and what it cost")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_report(folder: Path, runs, cfg, name: str, *, wall_seconds: float, executor: str) -> Path:
    """Write table.md, results.json, curves.png and cost.png in ``folder``; print the table and the files."""
    import dataclasses

    from zoo.measure import environment

    baseline = cfg.baseline or runs[0].label
    rows = aggregate(folder, runs, baseline)
    budget = {k: v for k, v in dataclasses.asdict(cfg.budget).items() if v is not None}
    table = format_table(rows, baseline)
    missing = [f"{r['layer']} ({r['planned'] - r['n']} of {r['planned']})" for r in rows if r["n"] < r["planned"]]
    env = environment()
    header = (f"# {name}\n\nBase experiment `{cfg.experiment}`, budget {budget}, seeds {list(cfg.seeds)}; "
              f"executor {executor}; {env}\n\n")
    note = f"\n\nNot finished yet: {', '.join(missing)} (run the same command again to continue).\n" if missing else "\n"
    atomic_write_text(folder / "table.md", header + table + note)
    atomic_write_text(folder / "results.json", json.dumps({
        "comparison": name, "experiment": cfg.experiment, "budget": budget, "seeds": list(cfg.seeds),
        "baseline": baseline, "executor": executor, "wall_seconds_this_call": round(wall_seconds, 1),
        "environment": env, "layers": rows}, indent=2) + "\n")
    files = [folder / "table.md", folder / "results.json", _curves(folder, runs, rows, folder / "curves.png"),
             _cost(rows, folder / "cost.png")]
    print(table)
    if missing:
        print(f"not finished yet: {', '.join(missing)}")
    for f in files:
        print(f"wrote {f}")
    return folder
