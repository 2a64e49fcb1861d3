"""Image (CIFAR-10 in grayscale, as in LRA): 10-way classification of 1024 pixels in raster order.

Files: ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` (the python version).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.cache import SplitWriter
from zoo.data.errors import EmptySplitError, RowReporter, TaskNotFoundError
from zoo.data.tasks.common import bar, choice, file_fp, require_nonempty
from zoo.data.tasks.registry import TaskSpec, register_task
from zoo.data.tokenizers import GRAY_WEIGHTS, PIXEL_MODES, grayscale
from zoo.fields import config_field

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class ImageConfig:
    """CIFAR-10 grayscale, 1024 pixels; validation = the last ``val_size`` training images."""

    val_size: int = config_field(5000, "the last val_size training images are the validation split")
    pixels: str = config_field("tokens", "tokens (0..255) | unit ([0,1]) | signed ([-1,1]) | standard", view=True)

    def validate(self) -> None:
        if not 0 < self.val_size < 50000:
            raise ValueError(f"val_size={self.val_size}: must lie in 1..49999")
        choice("pixels", self.pixels, PIXEL_MODES)


_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _fp_image(cfg, src: Path) -> dict:
    files = [src / n for n in _CIFAR_TRAIN + ["test_batch"]]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise TaskNotFoundError(f"image: {', '.join(missing)} not found "
                                "(cifar-10-batches-py/data_batch_1..5, test_batch)")
    return {"files": [file_fp(p, src) for p in files]}


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as exc:  # a batch is all or nothing: report the file
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: data {data.shape} / labels {labels.shape}, expected (N, 3072) / (N,)")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels outside 0..9")
    return data, labels


def _build_image(cfg, src: Path, out: Path, rep: RowReporter, progress: bool) -> dict:
    parts = [_read_cifar_batch(src / n) for n in bar(progress, iterable=_CIFAR_TRAIN, desc="image train batches")]
    train_x = grayscale(np.concatenate([p[0] for p in parts]))
    train_y = np.concatenate([p[1] for p in parts])
    test_rgb, test_y = _read_cifar_batch(src / "test_batch")
    test_x = grayscale(test_rgb)
    n = train_y.size
    if n <= cfg.val_size:
        raise EmptySplitError(f"image: {n} training images, cannot hold out val_size={cfg.val_size}")
    splits = {"train": (train_x[: n - cfg.val_size], train_y[: n - cfg.val_size]),
              "val": (train_x[n - cfg.val_size:], train_y[n - cfg.val_size:]), "test": (test_x, test_y)}
    for split, (x, y) in splits.items():
        require_nonempty("image", split, y.size, str(src))
        w = SplitWriter(out, split, {"inputs": (np.uint8, (1024,)), "labels": (np.int64, ()),
                                     "lengths": (np.int32, ())})
        w.append(inputs=x, labels=y, lengths=np.full(y.size, 1024, dtype=np.int32))
        w.close()
    f = splits["train"][0].astype(np.float64) / 255.0
    return {"pixel_mean": round(float(f.mean()), 6), "pixel_std": round(float(f.std()), 6),
            "split_sources": {"train": f"data_batch_1..5, first {n - cfg.val_size}",
                              "val": f"data_batch_1..5, last {cfg.val_size} (10% of train in LRA)",
                              "test": "test_batch (official)"}}


def _encoding(cfg: ImageConfig) -> dict:
    return {"kind": "grayscale pixels", "weights": list(GRAY_WEIGHTS), "rounding": "nearest, clipped to 0..255",
            "order": "row-major 32x32", "length": 1024, "stored": "uint8", "pad": None}


register_task(TaskSpec(
    name="image",
    summary="CIFAR-10 grayscale pixels, 10 classes, 1024 pixels",
    config_class=ImageConfig,
    n_classes=10,
    build=_build_image,
    fingerprint=_fp_image,
    encoding=_encoding,
    length=lambda cfg: 1024,
    is_task_dir=lambda cfg, d, entries: "data_batch_1" in entries and "test_batch" in entries,
    patterns=lambda cfg: ["cifar-10-batches-py/{data_batch_1,test_batch}"],
    how_to_get="download and unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) under {root}",
    aliases=("cifar", "cifar10"),
    class_names=CIFAR_CLASSES,
))
