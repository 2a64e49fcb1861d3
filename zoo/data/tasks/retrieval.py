"""Retrieval (AAN citation pairs, as in LRA): do two papers cite each other? A dual encoder.

Files: ``tsv_data/new_aan_pairs.{train,eval,test}.tsv``, no header, 5 TAB fields
``label id1 id2 text1 text2``; the ~8 GB train file is streamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.cache import SplitWriter
from zoo.data.errors import RowReporter, TaskNotFoundError
from zoo.data.tasks.common import ROWS, bar, file_fp, parse_label, positive, require_nonempty
from zoo.data.tasks.registry import TaskSpec, register_task
from zoo.data.tokenizers import BYTE_VOCAB_SIZE, PAD_ID, ByteTokenizer, first_chars_bytes
from zoo.fields import config_field


@dataclass
class RetrievalConfig:
    """AAN pairs: bytes of the first ``max_chars`` characters of each document, truncated/padded to ``max_len``."""

    max_len: int = config_field(4000, "bytes per document, truncated/padded")
    max_chars: int = config_field(10000, "characters read from each document before encoding")

    def validate(self) -> None:
        positive("max_len", self.max_len)
        positive("max_chars", self.max_chars)


_AAN = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}


def _aan_files(src: Path) -> dict[str, Path]:
    files = {s: src / n for s, n in _AAN.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise TaskNotFoundError(f"retrieval: {', '.join(missing)} not found (the official layout is "
                                "tsv_data/new_aan_pairs.{train,eval,test}.tsv)")
    return files


def _fp_retrieval(cfg, src: Path) -> dict:
    return {"files": [file_fp(p, src) for p in _aan_files(src).values()]}


def _build_retrieval(cfg, src: Path, out: Path, rep: RowReporter, progress: bool) -> dict:
    L = cfg.max_len
    result = {}
    for split, path in _aan_files(src).items():
        w = SplitWriter(out, split, {"inputs1": (np.uint16, (L,)), "inputs2": (np.uint16, (L,)),
                                     "labels": (np.int64, ()), "lengths1": (np.int32, ()), "lengths2": (np.int32, ())})
        x1 = np.zeros((ROWS, L), dtype=np.uint16)
        x2 = np.zeros((ROWS, L), dtype=np.uint16)
        y = np.zeros(ROWS, dtype=np.int64)
        l1 = np.zeros(ROWS, dtype=np.int32)
        l2 = np.zeros(ROWS, dtype=np.int32)
        k = 0
        done_bytes = 0
        with open(path, "rb") as f, bar(progress, total=path.stat().st_size, desc=f"retrieval {split}", unit="B",
                                         unit_scale=True) as pbar:
            for line_no, line in enumerate(f, 1):  # streamed: never the whole file in memory
                done_bytes += len(line)
                if line_no % 256 == 0:
                    pbar.update(done_bytes)
                    done_bytes = 0
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                fields = line.split(b"\t")
                if len(fields) != 5:
                    rep.bad(path, line_no,
                            f"{len(fields)} TAB-separated fields, expected 5 (label id1 id2 text1 text2)")
                    continue
                try:
                    label = parse_label(fields[0], 2)
                except ValueError as exc:
                    rep.bad(path, line_no, str(exc))
                    continue
                d1 = first_chars_bytes(fields[3], cfg.max_chars)[:L]
                d2 = first_chars_bytes(fields[4], cfg.max_chars)[:L]
                x1[k], x2[k] = 0, 0
                x1[k, : len(d1)] = ByteTokenizer.encode(d1)
                x2[k, : len(d2)] = ByteTokenizer.encode(d2)
                y[k], l1[k], l2[k] = label, len(d1), len(d2)
                k += 1
                if k == ROWS:
                    w.append(inputs1=x1, inputs2=x2, labels=y, lengths1=l1, lengths2=l2)
                    k = 0
            pbar.update(done_bytes)
        if k:
            w.append(inputs1=x1[:k], inputs2=x2[:k], labels=y[:k], lengths1=l1[:k], lengths2=l2[:k])
        n = w.close()
        require_nonempty("retrieval", split, n, str(path))
        result[split] = {"file": path.name}
    return {"splits": result, "split_sources": {s: f"official {p.name}" for s, p in _aan_files(src).items()}}


def _encoding(cfg: RetrievalConfig) -> dict:
    return {"kind": "utf-8 bytes", "id": "byte + 1", "pad_id": PAD_ID, "vocab_size": BYTE_VOCAB_SIZE,
            "rule": "per document: bytes of the first max_chars characters, truncated/padded to max_len",
            "padded_to": cfg.max_len, "dtype": "uint16"}


def _describe(ds, i: int) -> list[str]:
    doc1, doc2, label = ds[i]
    n1, n2 = (int(n) for n in ds.lengths[i])
    return [f"#{i} label={label} ({'cited' if label else 'not cited'}) bytes={n1}+{n2}",
            f"   doc1: {ByteTokenizer.decode(doc1.numpy())}", f"   doc2: {ByteTokenizer.decode(doc2.numpy())}"]


register_task(TaskSpec(
    name="retrieval",
    kind="pair",
    summary="AAN citation pairs (dual encoder), 2 classes, 2 x 4000 bytes",
    config_class=RetrievalConfig,
    n_classes=2,
    build=_build_retrieval,
    fingerprint=_fp_retrieval,
    encoding=_encoding,
    length=lambda cfg: cfg.max_len,
    is_task_dir=lambda cfg, d, entries: "new_aan_pairs.train.tsv" in entries,
    patterns=lambda cfg: ["tsv_data/new_aan_pairs.train.tsv", "*/new_aan_pairs.train.tsv"],
    how_to_get="download lra_release.gz (docs/data.md); it holds tsv_data/new_aan_pairs.*.tsv",
    aliases=("aan",),
    inputs=("inputs1", "inputs2"),
    vocab_size=BYTE_VOCAB_SIZE,
    class_names=("not cited", "cited"),
    describe_example=_describe,
))
