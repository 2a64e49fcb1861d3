"""``zoo data show``: sizes, length statistics and decoded examples of a prepared task."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.lra.prepare import PreparedTask
from zoo.lra.tokenizers import ByteTokenizer, ListOpsTokenizer

__all__ = ["describe", "sample_grid"]


def _clip(s: str, n: int = 160) -> str:
    s = s.replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return s if len(s) <= n else s[: n - 3] + "..."


def describe(data: PreparedTask, n_examples: int = 3, split: str = "train") -> str:
    """A human-readable summary of ``data``: protocol, split sizes, lengths, labels, examples."""
    m = data.manifest
    r = m["result"]
    lines = [f"{data.task}: cache {data.path}", f"  source:   {m.get('source_dir')}"]
    proto = " ".join(f"{k}={v}" for k, v in m["build"]["protocol"].items())
    view = " ".join(f"{k}={v}" for k, v in m.get("view", {}).items())
    lines.append(f"  protocol: {proto}" + (f"  (view: {view})" if view else ""))
    enc = m["build"]["encoding"]
    lines.append(f"  encoding: {enc['kind']}" + (f", pad id {enc['pad_id']}" if "pad_id" in enc else ", no padding"))
    lines.append(f"  {'split':<6} {'n':>8}  {'length min / median / mean / max':>34}  labels (count per class)  source")
    for name, st in r["splits"].items():
        lens = f"{st['length_min']} / {st['length_median']:g} / {st['length_mean']:g} / {st['length_max']}"
        src = r.get("split_sources", {}).get(name, "")
        lines.append(f"  {name:<6} {st['n']:>8}  {lens:>34}  {st['label_counts']}  {src}")
    skipped = r.get("skipped_rows", {}).get("skipped_rows", 0)
    if skipped or r.get("skipped_images"):
        lines.append(f"  skipped: {skipped} malformed row(s), {r.get('skipped_images', 0)} unreadable image(s)")
    ds = data.dataset(split)
    idx = np.linspace(0, len(ds) - 1, num=min(n_examples, len(ds))).astype(int) if n_examples > 0 else []
    if len(idx):
        lines.append(f"  examples ({split}):")
    for i in idx:
        item = ds[int(i)]
        label = item[-1]
        if data.task == "listops":
            text = ListOpsTokenizer().decode(item[0].numpy())
            lines.append(f"    #{i} label={label} tokens={int(ds.lengths[i])}: {_clip(text)}")
        elif data.task == "text":
            lines.append(f"    #{i} label={label} ({'pos' if label else 'neg'}) bytes={int(ds.lengths[i])}: "
                         f"{_clip(ByteTokenizer.decode(item[0].numpy()))}")
        elif data.task == "retrieval":
            lines.append(f"    #{i} label={label} ({'cited' if label else 'not cited'}) "
                         f"bytes={int(ds.lengths[i][0])}+{int(ds.lengths[i][1])}")
            lines.append(f"       doc1: {_clip(ByteTokenizer.decode(item[0].numpy()), 120)}")
            lines.append(f"       doc2: {_clip(ByteTokenizer.decode(item[1].numpy()), 120)}")
        else:
            x = item[0].float().numpy()
            lines.append(f"    #{i} label={label} pixels={x.size} min={x.min():g} mean={x.mean():.3g} max={x.max():g}")
    return "\n".join(lines)


_CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


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
    arrays = ds._inputs()[0]
    for k, i in enumerate(idx):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(np.asarray(arrays[i]).reshape(side, side), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        label = int(ds.labels[i])
        if data.task == "image":
            title = f"#{i}: {label} {_CIFAR[label]}"
        else:
            title = f"#{i}: {label} ({'connected' if label else 'not connected'})"
        ax.set_title(title, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{data.task} {split} ({data.manifest['source_dir']})", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
