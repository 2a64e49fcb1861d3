"""``zoo data show``: sizes, length statistics and decoded examples of a prepared task."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data.prepare import PreparedTask

__all__ = ["describe", "sample_grid"]


GENERATOR_RECORD = "generator.json"  # written beside the files by the zoo's generators (zoo data generate)


def _generated(source_dir) -> bool:
    """Was the source folder written by a zoo generator (not the official release)?"""
    return bool(source_dir) and (Path(source_dir) / GENERATOR_RECORD).is_file()


def _source_label(text: str, generated: bool) -> str:
    """A split's source as the build recorded it ("official basic_train.tsv"), relabelled
    "generated ..." when the files came from a zoo generator."""
    return "generated" + text[len("official"):] if generated and text.startswith("official") else text


def _clip(s: str, n: int = 160) -> str:
    s = s.replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return s if len(s) <= n else s[: n - 3] + "..."


def describe(data: PreparedTask, n_examples: int = 3, split: str = "train") -> str:
    """A human-readable summary of ``data``: protocol, split sizes, lengths, labels, examples."""
    m = data.manifest
    r = m["result"]
    generated = _generated(m.get("source_dir"))
    lines = [f"{data.task}: cache {data.path}",
             f"  source:   {m.get('source_dir')}" + (f" (generated: see its {GENERATOR_RECORD})" if generated else "")]
    proto = " ".join(f"{k}={v}" for k, v in m["build"]["protocol"].items())
    view = " ".join(f"{k}={v}" for k, v in m.get("view", {}).items())
    lines.append(f"  protocol: {proto}" + (f"  (view: {view})" if view else ""))
    enc = m["build"]["encoding"]
    lines.append(f"  encoding: {enc['kind']}" + (f", pad id {enc['pad_id']}" if "pad_id" in enc else ", no padding"))
    lines.append(f"  {'split':<6} {'n':>8}  {'length min / median / mean / max':>34}  labels (count per class)  source")
    for name, st in r["splits"].items():
        lens = f"{st['length_min']} / {st['length_median']:g} / {st['length_mean']:g} / {st['length_max']}"
        src = _source_label(r.get("split_sources", {}).get(name, ""), generated)
        labels = st["label_counts"] if "label_counts" in st else f"{st['labelled_per_example']:g} labelled/example"
        lines.append(f"  {name:<6} {st['n']:>8}  {lens:>34}  {labels}  {src}")
    skipped = r.get("skipped_rows", {}).get("skipped_rows", 0)
    if skipped or r.get("skipped_images"):
        lines.append(f"  skipped: {skipped} malformed row(s), {r.get('skipped_images', 0)} unreadable image(s)")
    ds = data.dataset(split)
    idx = np.linspace(0, len(ds) - 1, num=min(n_examples, len(ds))).astype(int) if n_examples > 0 else []
    if len(idx):
        lines.append(f"  examples ({split}):")
    for i in idx:
        if data.spec.describe_example is not None:
            shown = data.spec.describe_example(ds, int(i))
        else:
            *inputs, label = ds[int(i)]
            x = inputs[0].float().numpy()
            shown = [f"#{i} label={_label(data, label)} pixels={x.size} min={x.min():g} mean={x.mean():.3g} "
                     f"max={x.max():g}"]
        lines += ["    " + _clip(line) for line in shown]
    return "\n".join(lines)


def _label(data: PreparedTask, label: int) -> str:
    names = data.spec.class_names
    return f"{label} ({names[label]})" if names else str(label)


def sample_grid(data: PreparedTask, out: str | Path, *, split: str = "train", n: int = 16, seed: int = 0) -> Path:
    """Write a PNG grid of ``n`` pixel-task examples with their labels; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ds = data.dataset(split)
    side = int(round(np.sqrt(ds.max_len)))
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    cols = int(np.ceil(np.sqrt(idx.size)))
    rows = int(np.ceil(idx.size / cols))
    fig = Figure(figsize=(2.0 * cols, 2.2 * rows))
    FigureCanvasAgg(fig)
    arrays = ds.arrays[0]
    for k, i in enumerate(idx):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(np.asarray(arrays[i]).reshape(side, side), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"#{i}: {_label(data, int(ds.labels[i]))}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{data.task} {split} ({data.manifest['source_dir']})", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
