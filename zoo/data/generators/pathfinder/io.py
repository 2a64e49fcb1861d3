"""The data set on disk: ``generate_pathfinder`` (official layout, worker processes), metadata
lines, PNGs, reading back and a picture of samples."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Mapping

import numpy as np

from zoo._io import atomic_write_text

from .params import PathfinderParams, difficulty_dir_name, pathfinder_params
from .sample import PathfinderSample, generate_sample

__all__ = ["generate_pathfinder", "read_metadata", "render_sample_grid"]


def _metadata_line(p: PathfinderParams, k: int, j: int, s: PathfinderSample) -> str:
    margin = int(s.margin) if float(s.margin).is_integer() else s.margin
    (y0, x0), (y1, x1) = s.markers
    return (f"imgs/{k} sample_{j}.png {j} {s.label} {float(p.continuity)!r} {p.contour_length} "
            f"{p.distractor_length} {p.paddle_length} {float(p.paddle_thickness)!r} {margin} 1 "
            f"{s.n_distractors} {y0:.3f} {x0:.3f} {y1:.3f} {x1:.3f}")


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG")


def _work(job: tuple) -> list[tuple[int, int, str]]:
    p, seed, task_dir, start, stop, per_folder = job
    task_dir = Path(task_dir)
    out = []
    for i in range(start, stop):
        k, j = divmod(i, per_folder)
        s = generate_sample(p, seed, i)
        _save_png(task_dir / "imgs" / str(k) / f"sample_{j}.png", s.image)
        out.append((k, j, _metadata_line(p, k, j, s)))
    return out


def _write_metadata(task_dir: Path, k: int, rows: list[tuple[int, str]]) -> None:
    rows.sort()
    path = task_dir / "metadata" / f"{k}.npy"
    atomic_write_text(path, "".join(line + "\n" for _, line in rows))


def generate_pathfinder(
    out_dir,
    *,
    resolution: int = 32,
    contour_length: int = 14,
    n_images: int = 200_000,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    images_per_folder: int = 1000,
    overrides: Mapping | None = None,
    chunk_size: int | None = None,
    mp_context: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate a Pathfinder data set in the official on-disk layout; returns the task folder
    ``out_dir/pathfinder{resolution}/<difficulty>``, where ``<difficulty>`` is the release's name
    (``curv_baseline`` for contour length 6, else ``curv_contour_length_{contour_length}``).

    Image ``i`` goes to ``imgs/{i // images_per_folder}/sample_{i % images_per_folder}.png`` and
    depends only on ``(seed, i)``. Work is spread over ``workers`` processes (default
    ``os.cpu_count()``) in chunks of ``chunk_size`` indices. ``overrides`` replaces fields of
    :class:`PathfinderParams` (e.g. ``{"distractor_budget": 0}``). A task folder that already
    holds metadata is refused unless ``overwrite=True``, which first deletes its ``imgs/`` and
    ``metadata/`` (stale metadata files would otherwise be read as part of the new set).
    """
    overrides = dict(overrides or {})
    if {"resolution", "contour_length"} & overrides.keys():
        raise ValueError("pass resolution and contour_length as arguments, not in overrides")
    p = pathfinder_params(resolution, contour_length, **overrides)
    if n_images < 0 or images_per_folder < 1:
        raise ValueError("n_images must be >= 0 and images_per_folder >= 1")
    task_dir = Path(out_dir) / f"pathfinder{resolution}" / difficulty_dir_name(contour_length)
    old = sorted((task_dir / "metadata").glob("*.npy")) if (task_dir / "metadata").is_dir() else []
    if old:
        if not overwrite:
            raise FileExistsError(f"{task_dir} already holds a data set ({len(old)} metadata files); "
                                  "pass overwrite=True to replace it")
        for sub in ("metadata", "imgs"):
            shutil.rmtree(task_dir / sub, ignore_errors=True)
    n_folders = -(-n_images // images_per_folder)
    (task_dir / "metadata").mkdir(parents=True, exist_ok=True)
    for k in range(n_folders):
        (task_dir / "imgs" / str(k)).mkdir(parents=True, exist_ok=True)

    workers = max(1, int(workers if workers is not None else (os.cpu_count() or 1)))
    if chunk_size is None:
        chunk_size = int(min(256, max(8, -(-n_images // (8 * workers)))))
    jobs, remaining, rows = [], {}, {}
    for k in range(n_folders):
        lo, hi = k * images_per_folder, min(n_images, (k + 1) * images_per_folder)
        remaining[k], rows[k] = 0, []
        for start in range(lo, hi, chunk_size):
            jobs.append((p, seed, str(task_dir), start, min(hi, start + chunk_size), images_per_folder))
            remaining[k] += 1

    from tqdm.auto import tqdm

    bar = tqdm(total=n_images, disable=not progress, unit="img",
               desc=f"pathfinder{resolution} cl{contour_length}")

    def collect(result: list[tuple[int, int, str]], k: int) -> None:
        rows[k].extend((j, line) for _, j, line in result)
        remaining[k] -= 1
        if remaining[k] == 0:
            _write_metadata(task_dir, k, rows.pop(k))
        bar.update(len(result))

    try:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                collect(_work(job), job[3] // images_per_folder)
        else:
            if mp_context is None and "fork" in multiprocessing.get_all_start_methods():
                mp_context = "fork"  # workers need only numpy + PIL; avoids re-importing torch
            ctx = multiprocessing.get_context(mp_context)
            ex = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx)
            try:
                pending = {ex.submit(_work, job): job[3] // images_per_folder for job in jobs}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        collect(fut.result(), pending.pop(fut))
            except BaseException:
                ex.shutdown(wait=False, cancel_futures=True)
                raise
            ex.shutdown(wait=True)
    finally:
        bar.close()
    return task_dir


# --------------------------------------------------------------------------------------------
# reading back + a picture
# --------------------------------------------------------------------------------------------


def read_metadata(task_dir) -> list[list[str]]:
    """All metadata rows (whitespace-split fields) of a task folder, files in numeric order."""
    files = sorted((Path(task_dir) / "metadata").glob("*.npy"),
                   key=lambda f: (0, int(f.stem), "") if f.stem.isdigit() else (1, 0, f.stem))
    rows = []
    for f in files:
        rows.extend(line.split() for line in f.read_text().splitlines() if line.strip())
    return rows


def render_sample_grid(task_dir, out_png, n: int = 16, *, ncols: int = 8, title: str | None = None) -> Path:
    """Write a PNG grid of the first ``n`` samples of ``task_dir``, each titled with its label.

    ``task_dir`` may also be a list of task folders: each gets its own block of rows (e.g. a
    32 px and a 128 px set in one picture). Drawn with matplotlib's Agg canvas (no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    dirs = [task_dir] if isinstance(task_dir, (str, os.PathLike)) else list(task_dir)
    blocks = []  # per task folder: [(image, caption)], name
    for d in map(Path, dirs):
        items = []
        for row in read_metadata(d)[:n]:
            img = np.asarray(Image.open(d / row[0] / row[1]).convert("L"))
            same = "same" if int(row[3]) == 1 else "different"
            items.append((img, f"{row[0][5:]}/{row[1]}\nlabel {row[3]} ({same})"))
        blocks.append((items, f"{d.parent.name}/{d.name}"))
    ncols = max(1, min(ncols, max((len(items) for items, _ in blocks), default=1)))
    rows_of = [max(1, -(-len(items) // ncols)) for items, _ in blocks]
    nrows = sum(rows_of)
    fig = Figure(figsize=(1.55 * ncols, 1.85 * nrows + (0.4 if title else 0.0)), dpi=110)
    FigureCanvasAgg(fig)
    r0 = 0
    for (items, name), nr in zip(blocks, rows_of):
        for i, (img, cap) in enumerate(items):
            ax = fig.add_subplot(nrows, ncols, (r0 + i // ncols) * ncols + i % ncols + 1)
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(cap, fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            if i % ncols == 0:
                ax.set_ylabel(f"{name}\n{img.shape[0]} px", fontsize=6)
        r0 += nr
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png
