"""The pictures people know for the synthetic tasks, drawn by a comparison's report when it asks.

A comparison names them in ``figures:`` (a declared property of the grid, never a branch on a
task name); each kind is a function in :data:`FIGURES` that takes the report's rows (after the
best-lr pick) and writes its files:

* ``recall_by_width``: zoology's Figure 2 (Arora et al., ICLR 2024, "Zoology: Measuring and
  Improving Recall in Efficient Language Models"): accuracy against model width, one panel per
  sequence length, one line per layer, each point the best-lr run of that (layer, width, length).
  Writes ``recall_by_width.png`` and ``recall_by_width.md`` (the plotted numbers).
* ``mad_table``: MAD's summary (Poli et al., ICML 2024, "Mechanistic Design and Scaling of Hybrid
  Architectures"): per layer, the test accuracy on each task and their mean, each cell the run
  with the best validation accuracy over the task's other settings (learning rate and weight
  decay, as MAD picks). Writes ``mad.md`` and a grouped bar chart ``mad.png``.

Width and length come from the run's sweep setting, else from its saved ``config.yaml``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

from zoo._io import atomic_write_text
from zoo.train.report_plots import _plt

__all__ = ["FIGURES", "check_figures", "draw_figures", "mad_cells", "recall_points"]

WIDTH_KEY, LENGTH_KEY, PAIRS_KEY, TASK_KEY = ("model.d_model", "task.options.seq_len", "task.options.num_kv_pairs",
                                              "task.name")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _config_value(folder: Path, row: dict, key: str):
    """``key`` of a row: its sweep setting, else the first run's saved config (None when neither has it)."""
    if key in row.get("setting", {}):
        return row["setting"][key]
    for run in row.get("runs", []):
        path = folder / "runs" / run / "config.yaml"
        if path.exists():
            node = OmegaConf.select(OmegaConf.create(path.read_text()), key)  # safe YAML: data only
            if node is not None:
                return node
    return None


def _best(rows: list[dict]) -> dict | None:
    """The row with the best validation accuracy (MAD's and zoology's pick); without any, the best test row."""
    for key in ("best_val_acc_mean", "test_acc_mean"):
        scored = [r for r in rows if r.get(key) is not None]
        if scored:
            return max(scored, key=lambda r: r[key])
    return None


# --------------------------------------------------------------------------- zoology Figure 2


def recall_points(folder: Path, rows: list[dict]) -> dict:
    """``{(length, kv): {layer: {width: row}}}``: per panel and line, the best run of each width."""
    cells: dict = {}
    for r in rows:
        length, width = _config_value(folder, r, LENGTH_KEY), _config_value(folder, r, WIDTH_KEY)
        panel = (length, _config_value(folder, r, PAIRS_KEY))
        cells.setdefault(panel, {}).setdefault(r["layer"], {}).setdefault(width, []).append(r)
    return {panel: {layer: {w: _best(rs) for w, rs in widths.items()} for layer, widths in lines.items()}
            for panel, lines in cells.items()}


def _point_text(row: dict | None) -> str:
    if not row or row.get("test_acc_mean") is None:
        return "-"
    lr = row.get("picked_lr") or row.get("setting", {}).get("optim.lr")
    return _pct(row["test_acc_mean"]) + (f" ({lr})" if lr is not None else "")


def _panel_title(panel) -> str:
    length, kv = panel
    return f"sequence length {length}" + (f", {kv} key-value pairs" if kv is not None else "")


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _recall_table(points: dict, panels: list, title: str) -> str:
    widths = sorted({w for p in points.values() for by_w in p.values() for w in by_w if w is not None})
    head = ["length", "kv pairs", "layer", *[f"width {w}: acc % (lr)" for w in widths]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for panel in panels:
        for layer, by_width in points[panel].items():
            cells = [_point_text(by_width.get(w)) for w in widths]
            lines.append(f"| {panel[0]} | {'-' if panel[1] is None else panel[1]} | {layer} | "
                         + " | ".join(cells) + " |")
    return f"## Accuracy against width ({title})\n\n" + "\n".join(lines) + "\n"


def _draw_panel(ax, lines: dict, layers: list[str]) -> None:
    """One panel: a line per layer (its own marker); with a single width, the layers' points side by side."""
    widths = sorted({w for by_w in lines.values() for w in by_w if w is not None})
    for layer, by_width in lines.items():
        xs = sorted((w, r) for w, r in by_width.items() if w is not None and r and r.get("test_acc_mean") is not None)
        if not xs:
            continue
        i = layers.index(layer)
        dodge = 2 ** (0.08 * (i - (len(layers) - 1) / 2)) if len(widths) == 1 else 1.0  # else points would hide
        ax.plot([w * dodge for w, _ in xs], [100 * r["test_acc_mean"] for _, r in xs],
                marker=_MARKERS[i % len(_MARKERS)], color=f"C{i % 10}", label=layer)
    ax.set_xscale("log", base=2)
    if widths:
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.minorticks_off()
        ax.set_xlim(widths[0] / 1.4, widths[-1] * 1.4)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("model width (d_model)")
    ax.grid(alpha=0.3)


def draw_recall_by_width(folder: Path, rows: list[dict], title: str) -> tuple[list[Path], str]:
    """Zoology's Figure 2: test accuracy against width, a panel per (length, kv), a line per layer."""
    points = recall_points(folder, rows)
    panels = sorted(points, key=lambda p: tuple(-1 if v is None else v for v in p))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    plt = _plt()
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(max(7.0, 4.2 * n), 4.2), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        _draw_panel(ax, points[panel], layers)
        ax.set_title(_panel_title(panel), fontsize=9)
    axes[0][0].set_ylabel("test accuracy (%), best lr")
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.suptitle(f"{title}\naccuracy against width (zoology Fig. 2 protocol; each point the best lr)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    out = folder / "recall_by_width.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    text = _recall_table(points, panels, title)
    atomic_write_text(folder / "recall_by_width.md", text)
    return [out, folder / "recall_by_width.md"], text


# --------------------------------------------------------------------------- MAD's table


def mad_cells(rows: list[dict]) -> tuple[list[str], dict]:
    """``(tasks in grid order, {layer: {task: best row}})``: per layer and task, the best-validated setting."""
    tasks: list[str] = []
    groups: dict = {}
    for r in rows:
        task = r.get("task") or r.get("setting", {}).get(TASK_KEY)
        if task not in tasks:
            tasks.append(task)
        groups.setdefault(r["layer"], {}).setdefault(task, []).append(r)
    return tasks, {layer: {t: _best(rs) for t, rs in by_task.items()} for layer, by_task in groups.items()}


def _mean_acc(by_task: dict, tasks: list[str]):
    accs = [by_task[t]["test_acc_mean"] for t in tasks
            if by_task.get(t) and by_task[t].get("test_acc_mean") is not None]
    return (statistics.fmean(accs) if accs else None), len(accs)


def _setting_text(row: dict) -> str:
    s = {k.rsplit(".", 1)[-1]: v for k, v in row.get("setting", {}).items() if k != TASK_KEY}
    return json.dumps(s).replace('"', "") if s else "-"


def draw_mad_table(folder: Path, rows: list[dict], title: str) -> tuple[list[Path], str]:
    """MAD's summary: a markdown table (tasks x layers, and the mean over tasks) and a grouped bar chart."""
    tasks, cells = mad_cells(rows)
    head = ["layer", *tasks, "mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means = {}
    for layer, by_task in cells.items():
        mean, n = _mean_acc(by_task, tasks)
        means[layer] = mean
        accs = [_pct(by_task[t]["test_acc_mean"]) if by_task.get(t) else "-" for t in tasks]
        of_all = "" if n == len(tasks) else f" ({n} of {len(tasks)})"
        lines.append("| " + " | ".join([layer, *accs, _pct(mean) + of_all]) + " |")
    picks = [f"- {layer}: " + "; ".join(f"{t} {_setting_text(r)}" for t, r in by_task.items() if r)
             for layer, by_task in cells.items()]
    text = (f"## MAD tasks ({title})\n\nTest accuracy %, each cell the setting with the best validation accuracy "
            "(MAD's protocol); mean over the tasks shown.\n\n" + "\n".join(lines) +
            "\n\nSettings picked:\n" + "\n".join(picks) + "\n")
    atomic_write_text(folder / "mad.md", text)

    import numpy as np

    plt = _plt()
    groups = [*tasks, "mean"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 4.2))
    width = 0.8 / max(len(cells), 1)
    x = np.arange(len(groups))
    for i, (layer, by_task) in enumerate(cells.items()):
        vals = [by_task[t]["test_acc_mean"] if by_task.get(t) and by_task[t].get("test_acc_mean") is not None
                else np.nan for t in tasks] + [means[layer] if means[layer] is not None else np.nan]
        ax.bar(x - 0.4 + width * (i + 0.5), 100 * np.asarray(vals, dtype=float), width, label=layer)
    ax.axvline(len(tasks) - 0.5, color="gray", linestyle=":", linewidth=1)  # the tasks | their mean
    ax.set_xticks(x, [g.replace("_", " ") for g in groups], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%), best setting")
    ax.set_ylim(0, 118)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{title}: MAD tasks and their mean", fontsize=10)
    if cells:
        ax.legend(fontsize=8, ncol=min(len(cells), 6), loc="upper center")
    fig.tight_layout()
    out = folder / "mad.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return [folder / "mad.md", out], text


FIGURES: dict[str, Callable[[Path, list, str], tuple[list[Path], str]]] = {
    "recall_by_width": draw_recall_by_width,
    "mad_table": draw_mad_table,
}


def check_figures(names) -> None:
    """One-line ``ValueError`` for a figure kind that does not exist."""
    for name in names or ():
        if name not in FIGURES:
            raise ValueError(f"figures: unknown kind {name!r}; the kinds: {', '.join(FIGURES)} "
                             "(zoo.train.figures.FIGURES)")


def draw_figures(names, folder: Path, rows: list[dict], title: str) -> tuple[list[Path], str]:
    """Draw each named kind from the report's rows; the files written and their text, in order."""
    files, texts = [], []
    for name in names or ():
        made, text = FIGURES[name](folder, rows, title)
        files += made
        texts.append(text)
    return files, "\n".join(texts)
