"""ListOps (Nangia & Bowman 2018, as in LRA): 10-way classification of nested list operations.

Official files: ``listops-1000/{file_prefix}_{train,val,test}.tsv``, header ``Source<TAB>Target``;
``zoo data generate listops`` writes the same layout offline.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.data.cache import SplitWriter
from zoo.data.errors import DataWarning, RowReporter, TaskNotFoundError
from zoo.data.generators.listops import ListOpsGenConfig, generate_listops
from zoo.data.tasks.common import ROWS, bar, file_fp, parse_label, positive, require_nonempty
from zoo.data.tasks.registry import GeneratorSpec, TaskSpec, register_task
from zoo.data.tokenizers import LISTOPS_VOCAB, PAD_ID, ListOpsTokenizer
from zoo.fields import config_field


@dataclass
class ListOpsConfig:
    """ListOps: official ``{file_prefix}_{train,val,test}.tsv``; tokens padded to ``max_len``."""

    max_len: int = config_field(2000, "tokens per example, padded with 0 (LRA: 2000)")
    file_prefix: str = config_field("basic", "file prefix: {prefix}_{train,val,test}.tsv")

    def validate(self) -> None:
        positive("max_len", self.max_len)


def _listops_files(cfg, src: Path) -> dict[str, Path]:
    files = {s: src / f"{cfg.file_prefix}_{s}.tsv" for s in ("train", "val", "test")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise TaskNotFoundError(f"listops: {', '.join(missing)} not found (the official layout is "
                                f"listops-1000/{cfg.file_prefix}_{{train,val,test}}.tsv)")
    return files


def _fp_listops(cfg, src: Path) -> dict:
    return {"files": [file_fp(p, src) for p in _listops_files(cfg, src).values()]}


def _build_listops(cfg, src: Path, out: Path, rep: RowReporter, progress: bool) -> dict:
    tok = ListOpsTokenizer()
    files = _listops_files(cfg, src)
    result = {}
    for split, path in files.items():
        w = SplitWriter(out, split, {"inputs": (np.uint8, (cfg.max_len,)), "labels": (np.int64, ()),
                                     "lengths": (np.int32, ())})
        buf_x, buf_y, buf_l, truncated = [], [], [], 0

        def flush():
            if buf_y:
                x = np.zeros((len(buf_x), cfg.max_len), dtype=np.uint8)
                for i, ids in enumerate(buf_x):
                    x[i, : ids.size] = ids
                w.append(inputs=x, labels=np.array(buf_y, dtype=np.int64), lengths=np.array(buf_l, dtype=np.int32))
                buf_x.clear(), buf_y.clear(), buf_l.clear()

        with open(path, encoding="utf-8", errors="replace", newline="") as f, \
                bar(progress, desc=f"listops {split}", unit=" rows") as pbar:
            for line_no, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if line_no == 1 and line.replace(" ", "").lower() == "source\ttarget":
                    continue
                if "\t" not in line:
                    rep.bad(path, line_no, "no TAB between Source and Target")
                    continue
                text, label = line.rsplit("\t", 1)
                text = text.strip()
                if len(text) >= 2 and text[0] == text[-1] == '"':  # a csv-quoted field
                    text = text[1:-1]
                try:
                    y = parse_label(label, 10)
                    ids = tok.encode(text)
                except ValueError as exc:
                    rep.bad(path, line_no, str(exc))
                    continue
                except KeyError as exc:
                    rep.bad(path, line_no, exc.args[0])
                    continue
                if ids.size == 0:
                    rep.bad(path, line_no, "empty expression")
                    continue
                if ids.size > cfg.max_len:
                    truncated += 1
                    ids = ids[: cfg.max_len]
                buf_x.append(ids), buf_y.append(y), buf_l.append(ids.size)
                pbar.update(1)
                if len(buf_y) >= ROWS:
                    flush()
            flush()
        n = w.close()
        require_nonempty("listops", split, n, str(path))
        if truncated:
            warnings.warn(f"listops {split}: {truncated} expression(s) longer than max_len={cfg.max_len} truncated",
                          DataWarning)
        result[split] = {"file": path.name, "truncated": truncated}
    return {"splits": result,
            "split_sources": {s: f"official {p.name}" for s, p in files.items()}}


def _encoding(cfg: ListOpsConfig) -> dict:
    return {"kind": "listops tokens", "vocab": list(LISTOPS_VOCAB), "pad_id": PAD_ID,
            "rule": "delete '(' and ')', split on whitespace; ']' is the close token; no BOS/EOS",
            "padded_to": cfg.max_len, "dtype": "uint8"}


def _describe(ds, i: int) -> list[str]:
    tokens, label = ds[i]
    return [f"#{i} label={label} tokens={int(ds.lengths[i])}: {ListOpsTokenizer().decode(tokens.numpy())}"]


def _generate(out_root: Path, cfg: ListOpsGenConfig, task_cfg: ListOpsConfig, progress: bool, overwrite: bool) -> Path:
    return generate_listops(out_root, cfg, task_name=task_cfg.file_prefix, progress=progress, overwrite=overwrite)


register_task(TaskSpec(
    name="listops",
    summary="nested MAX/MIN/MED/SM expressions, 10 classes, up to 2000 tokens",
    config_class=ListOpsConfig,
    n_classes=10,
    build=_build_listops,
    fingerprint=_fp_listops,
    encoding=_encoding,
    length=lambda cfg: cfg.max_len,
    is_task_dir=lambda cfg, d, entries: f"{cfg.file_prefix}_train.tsv" in entries,
    patterns=lambda cfg: [f"listops-1000/{cfg.file_prefix}_train.tsv", f"*/{cfg.file_prefix}_train.tsv"],
    how_to_get="download lra_release.gz (docs/data.md) or run `zoo data generate listops --out {root}`",
    vocab_size=len(LISTOPS_VOCAB),
    describe_example=_describe,
    generator=GeneratorSpec(ListOpsGenConfig, _generate, "LRA's ListOps generator (vectorised)"),
))
