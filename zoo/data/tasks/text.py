"""Text (IMDB reviews as UTF-8 bytes, as in LRA): binary sentiment, vocabulary 257, pad 0.

Files: ``aclImdb/{train,test}/{pos,neg}/*.txt``, or HF ``datasets`` "imdb" when installed.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.cache import SplitWriter
from zoo.data.errors import DataWarning, RowReporter, TaskNotFoundError, log
from zoo.data.tasks.common import ROWS, bar, choice, positive, require_nonempty
from zoo.data.tasks.registry import TaskSpec, register_task
from zoo.data.tokenizers import BYTE_VOCAB_SIZE, PAD_ID, ByteTokenizer
from zoo.fields import config_field

VAL_IS_TEST_WARNING = (
    "!!! text: val_from='test' -> the validation split IS the test split (LRA's original protocol). Model "
    "selection and early stopping on it leak the test set; report it as such. The default holds out "
    "10% of train (val_from='train').")


@dataclass
class TextConfig:
    """IMDB bytes. ``val_from="train"`` holds out ``val_fraction`` of train (seeded); ``"test"``
    is LRA's choice (validation = test, warned about). LRA's public config used ``max_len=1000``."""

    max_len: int = config_field(4000, "bytes per review (LRA's public config used 1000)")
    val_from: str = config_field("train", "train: hold out val_fraction of train | test: LRA's choice (val = test)")
    val_fraction: float = config_field(0.1, "share of train held out for validation")
    seed: int = config_field(0, "seed of the validation hold-out")
    source: str = config_field("auto", "auto (aclImdb folder, else HF datasets imdb) | folder | hf")

    def validate(self) -> None:
        positive("max_len", self.max_len)
        choice("val_from", self.val_from, ("train", "test"))
        choice("source", self.source, ("auto", "folder", "hf"))
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction={self.val_fraction}: must lie strictly between 0 and 1")


def _imdb_files(src: Path, split: str) -> list[tuple[Path, int]]:
    out = []
    for label, cls in ((0, "neg"), (1, "pos")):
        out += [(p, label) for p in sorted((src / split / cls).glob("*.txt"))]
    return out


def _fp_text(cfg, src: Path | None) -> dict:
    if src is None:
        import datasets  # noqa: F401  (checked by the caller)

        return {"hf_dataset": "imdb", "datasets_version": datasets.__version__}
    fp = []
    for split in ("train", "test"):
        for cls in ("neg", "pos"):
            d = src / split / cls
            st = d.stat()
            fp.append({"dir": f"{split}/{cls}", "n_txt": sum(1 for _ in d.glob("*.txt")), "mtime_ns": st.st_mtime_ns})
    return {"dirs": fp}


def _iter_imdb(cfg, src: Path | None, split: str, rep: RowReporter):
    """``(bytes, label)`` for one official split (``train`` / ``test``)."""
    if src is None:
        import datasets

        ds = datasets.load_dataset("imdb", split=split)
        for i, row in enumerate(ds):
            yield row["text"].encode("utf-8"), int(row["label"]), f"imdb[{split}]", i
        return
    for path, label in _imdb_files(src, split):
        try:
            data = path.read_bytes()
        except OSError as exc:
            rep.bad(path, None, f"unreadable ({exc})")
            continue
        yield data, label, path, None


def _build_text(cfg, src: Path | None, out: Path, rep: RowReporter, progress: bool) -> dict:
    official = {}
    for split in ("train", "test"):
        docs, labels, lengths = [], [], []
        where = src / split if src is not None else f"HF datasets imdb[{split}]"
        for data, label, path, line in bar(progress, iterable=_iter_imdb(cfg, src, split, rep),
                                            desc=f"text {split}", unit=" docs"):
            if not data.strip():
                rep.bad(path, line, "empty review")
                continue
            ids = ByteTokenizer.encode(data, cfg.max_len)
            docs.append(ids), labels.append(label), lengths.append(ids.size)
        require_nonempty("text", split, len(docs), str(where))
        official[split] = (docs, np.array(labels, dtype=np.int64), np.array(lengths, dtype=np.int32), len(docs))

    def write(split, docs, labels, lengths, idx):
        w = SplitWriter(out, split, {"inputs": (np.uint16, (cfg.max_len,)), "labels": (np.int64, ()),
                                     "lengths": (np.int32, ())})
        for s in range(0, len(idx), ROWS):
            part = idx[s: s + ROWS]
            x = np.zeros((len(part), cfg.max_len), dtype=np.uint16)
            for i, j in enumerate(part):
                x[i, : docs[j].size] = docs[j]
            w.append(inputs=x, labels=labels[part], lengths=lengths[part])
        require_nonempty("text", split, w.close(), "aclImdb")

    docs, labels, lengths, n = official["train"]
    split_files = {}
    if cfg.val_from == "train":
        perm = np.random.default_rng(cfg.seed).permutation(n)
        n_val = max(1, int(round(n * cfg.val_fraction)))
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        require_nonempty("text", "train", train_idx.size, "aclImdb/train after holding out validation")
        write("train", docs, labels, lengths, train_idx)
        write("val", docs, labels, lengths, val_idx)
        sources = {"train": f"aclImdb/train minus the validation hold-out ({n - n_val} of {n})",
                   "val": f"{n_val} of aclImdb/train ({cfg.val_fraction:.0%}, "
                          f"numpy default_rng({cfg.seed}) permutation)"}
    else:
        write("train", docs, labels, lengths, np.arange(n))
        split_files["val"] = "test"
        sources = {"train": "aclImdb/train (all)", "val": "= test (LRA's choice: model selection on the test set)"}
    del docs
    docs, labels, lengths, n = official["test"]
    write("test", docs, labels, lengths, np.arange(n))
    sources["test"] = "aclImdb/test (official)"
    return {"split_sources": sources, "split_files": split_files}


def _encoding(cfg: TextConfig) -> dict:
    return {"kind": "utf-8 bytes", "id": "byte + 1", "pad_id": PAD_ID, "vocab_size": BYTE_VOCAB_SIZE,
            "rule": "raw file bytes, truncated to max_len, padded with 0; no BOS/EOS", "padded_to": cfg.max_len,
            "dtype": "uint16"}


def _is_task_dir(cfg, d: Path, entries: set[str]) -> bool:
    return all((d / s / c).is_dir() for s in ("train", "test") for c in ("pos", "neg"))


def _resolve_source(cfg: TextConfig, find) -> Path | None:
    """The aclImdb folder (``find()`` locates it under the root), or ``None`` for HF ``datasets``."""
    has_hf = importlib.util.find_spec("datasets") is not None
    if cfg.source == "hf":
        if not has_hf:
            raise TaskNotFoundError("text: source='hf' needs the `datasets` package (pip install datasets)")
        return None
    try:
        return find()
    except TaskNotFoundError as exc:
        if cfg.source == "auto" and has_hf:
            log.warning("%s; using HF datasets 'imdb'", str(exc).split(".")[0])
            return None
        raise


def _check(cfg: TextConfig) -> None:
    if cfg.val_from == "test":
        warnings.warn(VAL_IS_TEST_WARNING, DataWarning, stacklevel=3)
        log.warning(VAL_IS_TEST_WARNING)


def _describe(ds, i: int) -> list[str]:
    tokens, label = ds[i]
    return [f"#{i} label={label} ({'pos' if label else 'neg'}) bytes={int(ds.lengths[i])}: "
            f"{ByteTokenizer.decode(tokens.numpy())}"]


register_task(TaskSpec(
    name="text",
    summary="IMDB sentiment from raw bytes, 2 classes, up to 4000 bytes",
    config_class=TextConfig,
    n_classes=2,
    build=_build_text,
    fingerprint=_fp_text,
    encoding=_encoding,
    length=lambda cfg: cfg.max_len,
    is_task_dir=_is_task_dir,
    patterns=lambda cfg: ["aclImdb/{train,test}/{pos,neg}/"],
    how_to_get="download and unpack aclImdb_v1.tar.gz (https://ai.stanford.edu/~amaas/data/sentiment/) under {root}",
    aliases=("imdb",),
    vocab_size=BYTE_VOCAB_SIZE,
    class_names=("neg", "pos"),
    describe_example=_describe,
    resolve_source=_resolve_source,
    check=_check,
))
