"""The comparison report's two figures: validation curves and accuracy against cost.

Both carry the task and budget in their titles and the chance accuracy (majority class share,
the summaries' ``chance_acc``) as a dashed line, so a layer at chance reads as one.
"""

from __future__ import annotations

from pathlib import Path

from zoo.train.metrics import read_metrics

__all__ = ["plot_cost", "plot_curves"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _chance(rows: list[dict]):
    return next((r["chance_acc"] for r in rows if r.get("chance_acc") is not None), None)


def _name(row: dict) -> str:
    rest = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in row.get("setting", {}).items())
    return f"{row['layer']} ({rest})" if rest else row["layer"]


def plot_curves(folder: Path, rows: list[dict], out: Path, title: str) -> Path:
    """Validation accuracy against step: one line per row (mean over its seeds), band lowest-highest seed."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row in rows:
        series = []
        for run_name in row["runs"]:
            pts = [(m["step"], m["acc"]) for m in read_metrics(folder / "runs" / run_name / "metrics.jsonl")
                   if m.get("kind") == "val"]
            if pts:
                series.append(dict(pts))
        if not series:
            continue
        steps = sorted(set.intersection(*(set(s) for s in series)))
        acc = np.array([[s[k] for k in steps] for s in series])  # (seeds, steps)
        (line,) = ax.plot(steps, 100 * acc.mean(0), marker="o", markersize=3, label=f"{_name(row)} (n={len(series)})")
        if len(series) > 1:
            ax.fill_between(steps, 100 * acc.min(0), 100 * acc.max(0), color=line.get_color(), alpha=0.2)
    chance = _chance(rows)
    if chance is not None:
        ax.axhline(100 * chance, color="gray", linestyle="--", linewidth=1, label="chance (majority class)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{title}: validation accuracy, mean over seeds (band: lowest to highest)", fontsize=9)
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


def plot_cost(rows: list[dict], out: Path, title: str) -> Path:
    """Test accuracy (mean ± std, chance dashed), wall seconds per run and tokens/s, one bar per row."""
    plt = _plt()
    done = [r for r in rows if r["test_acc_mean"] is not None]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    names = [_name(r) for r in done]
    axes[0].bar(names, [100 * r["test_acc_mean"] for r in done], yerr=[100 * r["test_acc_std"] for r in done],
                capsize=3, color="tab:blue")
    chance = _chance(rows)
    if chance is not None:
        axes[0].axhline(100 * chance, color="gray", linestyle="--", linewidth=1, label="chance")
        axes[0].legend(fontsize=8)
    axes[0].set_ylabel("test accuracy (%), mean ± std")
    axes[1].bar(names, [r["wall_seconds"] or 0 for r in done], color="tab:orange")
    axes[1].set_ylabel("wall seconds per run")
    axes[2].bar(names, [r["tokens_per_s"] or 0 for r in done], color="tab:green")
    axes[2].set_ylabel("real tokens / s")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title}: accuracy and what it cost")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
