"""Pathfinder (32 px) and Path-X (128 px), as in LRA: are the two circles connected by a path?

Files: ``pathfinder{R}/<difficulty>/{imgs,metadata}/`` with ``metadata/<k>.npy`` TEXT files, one
line per image (``imgs/<k> sample_<j>.png <idx> <label> ...``). There is no official split: a
seeded 80/10/10. ``zoo data generate pathfinder`` / ``pathx`` write the same layout offline.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.cache import SplitWriter
from zoo.data.errors import DataWarning, RowReporter, TaskNotFoundError
from zoo.data.generators.pathfinder import difficulty_dir_name
from zoo.data.tasks.common import bar, choice, file_fp, parse_label, positive, require_nonempty
from zoo.data.tasks.registry import GeneratorSpec, TaskSpec, register_task
from zoo.data.tokenizers import PIXEL_MODES
from zoo.fields import config_field

RESOLUTIONS = (32, 64, 128, 256)


@dataclass
class PathfinderConfig:
    """Pathfinder / Path-X PNGs; no official split: seeded ``train_fraction``/``val_fraction``/rest."""

    resolution: int = config_field(32, "image side in pixels (32: Pathfinder, 128: Path-X)")
    contour_length: int = config_field(14, "difficulty: 6 (easy, curv_baseline), 9, 14 (hard, LRA's)")
    train_fraction: float = config_field(0.8, "share of the metadata rows in the training split")
    val_fraction: float = config_field(0.1, "share in the validation split (the rest is the test split)")
    seed: int = config_field(0, "seed of the split permutation")
    pixels: str = config_field("tokens", "tokens (0..255) | signed ([-1,1]) | unit | standard", view=True)
    workers: int = config_field(0, "PNG decoding processes; 0 = all cores", runtime=True)

    def validate(self) -> None:
        choice("resolution", self.resolution, RESOLUTIONS)
        positive("contour_length", self.contour_length)
        if not (0 < self.train_fraction and 0 < self.val_fraction and self.train_fraction + self.val_fraction < 1):
            raise ValueError(f"train_fraction={self.train_fraction}, val_fraction={self.val_fraction}: both must be "
                             "> 0 and sum to < 1 (the rest is the test split)")
        choice("pixels", self.pixels, PIXEL_MODES)


@dataclass
class PathfinderGenConfig:
    """Parameters of the offline generator (``zoo.data.generators.pathfinder``)."""

    resolution: int = config_field(32, "image side: 32 = Pathfinder, 128 = Path-X")
    contour_length: int = config_field(14, "paddles per target snake: 6 / 9 / 14 = easy / medium / hard")
    n_images: int = config_field(200_000, "images to generate (labels exactly balanced)")
    seed: int = config_field(0, "image i depends only on (seed, i)")
    workers: int = config_field(0, "processes; 0 = all cores")

    def validate(self) -> None:
        choice("resolution", self.resolution, (32, 128))
        choice("contour_length", self.contour_length, (6, 9, 14))
        if self.n_images < 1:
            raise ValueError(f"n_images={self.n_images}: must be >= 1")


def dir_names(contour_length: int) -> list[str]:
    """Folder names of one difficulty: the release's (which the generator writes), then the name older
    versions of our generator wrote for the easy set."""
    return [difficulty_dir_name(contour_length)] + (["curv_contour_length_6"] if contour_length == 6 else [])


def _is_task_dir(cfg: PathfinderConfig, d: Path, entries: set[str]) -> bool:
    return (d.parent.name == f"pathfinder{cfg.resolution}" and d.name in dir_names(cfg.contour_length)
            and "metadata" in entries and (d / "metadata").is_dir())


def _metadata_files(src: Path) -> list[Path]:
    files = [p for p in (src / "metadata").iterdir() if p.is_file() and p.suffix == ".npy"]
    if not files:
        raise TaskNotFoundError(f"pathfinder: no metadata/*.npy files in {src}")

    def order(p: Path):
        return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)

    return sorted(files, key=order)


def _fp_pathfinder(cfg, src: Path) -> dict:
    return {"dir": src.parent.name + "/" + src.name, "metadata": [file_fp(p, src) for p in _metadata_files(src)]}


def read_pathfinder_metadata(src: Path, rep: RowReporter) -> tuple[list[str], np.ndarray]:
    """``(relative image paths, labels)`` from ``src/metadata/*.npy`` (text files, one line per
    image: ``imgs/<k> sample_<j>.png <idx> <label> ...``; the label is the 4th field)."""
    paths, labels = [], []
    for mf in _metadata_files(src):
        with open(mf, encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) < 4:
                    rep.bad(mf, line_no, f"{len(fields)} fields, expected >= 4 (imgs/<k> sample_<j>.png <idx> <label>)")
                    continue
                try:
                    y = parse_label(fields[3], 2)
                except ValueError as exc:
                    rep.bad(mf, line_no, str(exc))
                    continue
                paths.append(f"{fields[0]}/{fields[1]}")
                labels.append(y)
    return paths, np.array(labels, dtype=np.int64)


def _load_pngs(args) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Worker: ``(ok mask, pixels (n, res*res) uint8, error messages)`` for a chunk of PNG paths."""
    from PIL import Image

    base, rels, res = args
    ok = np.zeros(len(rels), dtype=bool)
    px = np.zeros((len(rels), res * res), dtype=np.uint8)
    errors = []
    for i, rel in enumerate(rels):
        path = os.path.join(base, rel)
        try:
            with Image.open(path) as im:
                im.load()
                if im.size != (res, res):
                    raise ValueError(f"size {im.size}, expected {(res, res)}")
                if im.mode != "L":
                    im = im.convert("L")
                px[i] = np.asarray(im, dtype=np.uint8).reshape(-1)
            ok[i] = True
        except Exception as exc:  # empty / truncated / not a PNG: skipped and counted, never fatal
            errors.append(f"{path}: {type(exc).__name__}: {exc}")
    return ok, px, errors


def _build_pathfinder(cfg, src: Path, out: Path, rep: RowReporter, progress: bool) -> dict:
    task = f"pathfinder{cfg.resolution}"
    rels, labels = read_pathfinder_metadata(src, rep)
    require_nonempty(task, "metadata", len(rels), str(src / "metadata"))
    n = len(rels)
    perm = np.random.default_rng(cfg.seed).permutation(n)
    n_train, n_val = int(n * cfg.train_fraction), int(n * cfg.val_fraction)
    assign = {"train": np.sort(perm[:n_train]), "val": np.sort(perm[n_train: n_train + n_val]),
              "test": np.sort(perm[n_train + n_val:])}
    workers = cfg.workers or os.cpu_count() or 1
    chunk = 256 if cfg.resolution <= 32 else 64
    skipped, first_errors, result = 0, [], {}
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for split, idx in assign.items():
            w = SplitWriter(out, split, {"inputs": (np.uint8, (cfg.resolution ** 2,)), "labels": (np.int64, ()),
                                         "lengths": (np.int32, ())})
            jobs = [(str(src), [rels[j] for j in idx[s: s + chunk]], cfg.resolution) for s in range(0, idx.size, chunk)]
            results = pool.map(_load_pngs, jobs) if pool else map(_load_pngs, jobs)
            split_skipped = 0
            with bar(progress, total=idx.size, desc=f"{task} {split}", unit=" png") as pbar:
                for s, (ok, px, errors) in zip(range(0, idx.size, chunk), results):
                    y = labels[idx[s: s + chunk]][ok]
                    w.append(inputs=px[ok], labels=y, lengths=np.full(y.size, cfg.resolution ** 2, dtype=np.int32))
                    split_skipped += len(errors)
                    first_errors += errors[: max(0, 5 - len(first_errors))]
                    pbar.update(ok.size)
            n_ok = w.close()
            skipped += split_skipped
            if n_ok == 0 and skipped:
                warnings.warn(f"{task}: skipped {skipped} unreadable or empty PNG(s) (first: "
                              f"{'; '.join(first_errors[:3])})", DataWarning)
            require_nonempty(task, split, n_ok, str(src))
            result[split] = {"skipped_images": split_skipped}
    finally:
        if pool:
            pool.shutdown()
    if skipped:
        warnings.warn(f"{task}: skipped {skipped} unreadable or empty PNG(s) (first: {'; '.join(first_errors[:3])})",
                      DataWarning)
    return {"splits": result, "skipped_images": skipped, "skipped_examples": first_errors,
            "split_sources": {s: f"seeded split of metadata rows (numpy default_rng({cfg.seed}) permutation; "
                                 f"{cfg.train_fraction:g}/{cfg.val_fraction:g}/rest)" for s in assign}}


def _encoding(cfg: PathfinderConfig) -> dict:
    return {"kind": "grayscale pixels", "source": "8-bit PNG (converted to L if not)", "order": f"row-major "
            f"{cfg.resolution}x{cfg.resolution}", "length": cfg.resolution ** 2, "stored": "uint8", "pad": None,
            "unreadable_png": "skipped and counted"}


def _generate(out_root: Path, cfg: PathfinderGenConfig, task_cfg, progress: bool, overwrite: bool) -> Path:
    from zoo.data.generators.pathfinder import generate_pathfinder

    return generate_pathfinder(out_root, resolution=cfg.resolution, contour_length=cfg.contour_length,
                               n_images=cfg.n_images, seed=cfg.seed, workers=cfg.workers or None,
                               progress=progress, overwrite=overwrite)


_GENERATOR = GeneratorSpec(PathfinderGenConfig, _generate, "snakes in the official layout (Linsley et al. 2018)")
_CLASSES = ("not connected", "connected")

for _name, _res, _aliases, _summary in (
        ("pathfinder", 32, ("pathfinder32",), "are two circles connected? 32 x 32 pixels, 2 classes"),
        ("pathx", 128, ("pathfinder128",), "Pathfinder at 128 x 128 (16384 pixels), 2 classes")):
    register_task(TaskSpec(
        name=_name,
        summary=_summary,
        config_class=PathfinderConfig,
        n_classes=2,
        build=_build_pathfinder,
        fingerprint=_fp_pathfinder,
        encoding=_encoding,
        length=lambda cfg: cfg.resolution ** 2,
        is_task_dir=_is_task_dir,
        patterns=lambda cfg: [f"pathfinder{cfg.resolution}/{n}/metadata/" for n in dir_names(cfg.contour_length)],
        how_to_get=f"download lra_release.gz (docs/data.md) or run `zoo data generate {_name} --out {{root}}`",
        aliases=_aliases,
        defaults={"resolution": _res},
        class_names=_CLASSES,
        generator=_GENERATOR,
    ))
