"""Per-task protocol configs: every choice that changes what a model sees is a field here.

Fields marked ``view`` only change how cached arrays are presented (pixels as tokens or floats),
so they are recorded in the manifest but do not key the cache. Everything else keys it.
Overrides come as ``key=value`` strings (OmegaConf dotlist) or a dict; unknown keys and wrong
types raise, listing the valid keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable

from zoo.lra.common import validate_task
from zoo.lra.tokenizers import PIXEL_MODES

__all__ = ["ImageConfig", "ListOpsConfig", "PathfinderConfig", "RetrievalConfig", "TextConfig", "make_config",
           "split_fields"]


def _view(default):
    return field(default=default, metadata={"view": True})


@dataclass
class ListOpsConfig:
    """ListOps: official ``{file_prefix}_{train,val,test}.tsv``; tokens padded to ``max_len``."""

    max_len: int = 2000
    file_prefix: str = "basic"

    def validate(self) -> None:
        _positive("max_len", self.max_len)


@dataclass
class TextConfig:
    """IMDB bytes. ``val_from="train"`` holds out ``val_fraction`` of train (seeded); ``"test"``
    is LRA's choice (validation = test, warned about). LRA's public config used ``max_len=1000``."""

    max_len: int = 4000
    val_from: str = "train"
    val_fraction: float = 0.1
    seed: int = 0
    source: str = "auto"  # auto: the aclImdb folder, else HF `datasets` "imdb" if installed; folder; hf

    def validate(self) -> None:
        _positive("max_len", self.max_len)
        _choice("val_from", self.val_from, ("train", "test"))
        _choice("source", self.source, ("auto", "folder", "hf"))
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction={self.val_fraction}: must lie strictly between 0 and 1")


@dataclass
class RetrievalConfig:
    """AAN pairs: bytes of the first ``max_chars`` characters of each document, truncated/padded to ``max_len``."""

    max_len: int = 4000
    max_chars: int = 10000

    def validate(self) -> None:
        _positive("max_len", self.max_len)
        _positive("max_chars", self.max_chars)


@dataclass
class ImageConfig:
    """CIFAR-10 grayscale, 1024 pixels; validation = the last ``val_size`` training images."""

    val_size: int = 5000
    pixels: str = _view("tokens")  # tokens (0..255) | unit ([0,1]) | signed ([-1,1]) | standard (train mean/std)

    def validate(self) -> None:
        if not 0 < self.val_size < 50000:
            raise ValueError(f"val_size={self.val_size}: must lie in 1..49999")
        _choice("pixels", self.pixels, PIXEL_MODES)


@dataclass
class PathfinderConfig:
    """Pathfinder / Path-X PNGs; no official split: seeded ``train_fraction``/``val_fraction``/rest."""

    resolution: int = 32
    contour_length: int = 14
    train_fraction: float = 0.8
    val_fraction: float = 0.1
    seed: int = 0
    pixels: str = _view("tokens")  # tokens (0..255) | signed ([-1,1]) | unit | standard
    workers: int = field(default=0, metadata={"runtime": True})  # PNG decoding processes; 0 = all cores

    def validate(self) -> None:
        _choice("resolution", self.resolution, (32, 64, 128, 256))
        _positive("contour_length", self.contour_length)
        if not (0 < self.train_fraction and 0 < self.val_fraction and self.train_fraction + self.val_fraction < 1):
            raise ValueError(f"train_fraction={self.train_fraction}, val_fraction={self.val_fraction}: both must be "
                             "> 0 and sum to < 1 (the rest is the test split)")
        _choice("pixels", self.pixels, PIXEL_MODES)


_CONFIGS = {"listops": ListOpsConfig, "text": TextConfig, "retrieval": RetrievalConfig, "image": ImageConfig,
            "pathfinder": PathfinderConfig, "pathx": PathfinderConfig}


def _positive(name, v):
    if not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name}={v!r}: must be a positive integer")


def _choice(name, v, options):
    if v not in options:
        raise ValueError(f"{name}={v!r}: choose one of {', '.join(map(str, options))}")


def make_config(task: str, overrides: dict | Iterable[str] | None = None):
    """The config dataclass of ``task`` with ``overrides`` (dict or ``["key=value", ...]``), validated.

    ``pathx`` is Pathfinder with ``resolution=128``.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    task = validate_task(task)
    cls = _CONFIGS[task]
    base = cls(resolution=128) if task == "pathx" else cls()
    if isinstance(overrides, cls):
        cfg = overrides
    else:
        schema = OmegaConf.structured(base)
        if overrides is None:
            over = OmegaConf.create({})
        elif isinstance(overrides, dict):
            over = OmegaConf.create(overrides)
        else:
            items = list(overrides)
            for o in items:
                if "=" not in o:
                    raise ValueError(f"option {o!r} is not of the form key=value (e.g. max_len=1000)")
            over = OmegaConf.from_dotlist(items)
        try:
            cfg = OmegaConf.to_object(OmegaConf.merge(schema, over))
        except OmegaConfBaseException as exc:
            keys = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ValueError(f"{task}: bad option ({str(exc).splitlines()[0]}); valid keys: {keys}") from None
    cfg.validate()
    return cfg


def split_fields(cfg) -> tuple[dict, dict]:
    """``(build, view)``: the fields that key the cache, and those applied when loading
    (runtime-only fields such as ``workers`` are in neither)."""
    build, view = {}, {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("runtime"):
            continue
        (view if f.metadata.get("view") else build)[f.name] = getattr(cfg, f.name)
    return build, view
