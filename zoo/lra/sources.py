"""Readers of the official LRA files, each writing one task's splits as arrays (see ``cache``).

Every builder has the signature ``build(cfg, src, out, rep, progress) -> dict`` and returns what
it found (split sizes, skipped rows, length statistics, where each split came from). Malformed
rows are reported through ``rep`` (file and line; skipped and counted, or raised under strict);
a split that comes out empty raises ``EmptySplitError``.
"""

from __future__ import annotations

import os
import pickle
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from zoo.lra.cache import SplitWriter
from zoo.lra.common import DataWarning, EmptySplitError, RowReporter, TaskNotFoundError
from zoo.lra.tokenizers import ByteTokenizer, ListOpsTokenizer, first_chars_bytes, grayscale

__all__ = ["BUILDERS", "FINGERPRINTS", "parse_label", "read_pathfinder_metadata"]

_ROWS = 1024  # rows buffered before an append


def _bar(progress: bool, **kw):
    from tqdm import tqdm

    return tqdm(disable=not progress, **kw)


def parse_label(field: str | bytes, n_classes: int) -> int:
    """``"3"``, ``"3.0"``, ``b"1.0"`` -> int; raises ``ValueError`` if not an integer class id."""
    if isinstance(field, bytes):
        field = field.decode("ascii", errors="replace")
    field = field.strip()
    try:
        v = float(field)
        ok = v == int(v) and 0 <= int(v) < n_classes
    except (ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"label {field[:20]!r} is not a class id in 0..{n_classes - 1}")
    return int(v)


def _require_nonempty(task: str, split: str, n: int, where: str) -> None:
    if n == 0:
        raise EmptySplitError(f"{task}: the {split} split is empty after reading {where} "
                              "(every row missing or malformed?): refusing to return an empty split")


def _file_fp(path: Path, base: Path) -> dict:
    st = path.stat()
    return {"file": path.relative_to(base).as_posix(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# --------------------------------------------------------------------------- ListOps


def _listops_files(cfg, src: Path) -> dict[str, Path]:
    files = {s: src / f"{cfg.file_prefix}_{s}.tsv" for s in ("train", "val", "test")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise TaskNotFoundError(f"listops: {', '.join(missing)} not found (the official layout is "
                                f"listops-1000/{cfg.file_prefix}_{{train,val,test}}.tsv)")
    return files


def _fp_listops(cfg, src: Path) -> dict:
    return {"files": [_file_fp(p, src) for p in _listops_files(cfg, src).values()]}


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
                _bar(progress, desc=f"listops {split}", unit=" rows") as bar:
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
                bar.update(1)
                if len(buf_y) >= _ROWS:
                    flush()
            flush()
        n = w.close()
        _require_nonempty("listops", split, n, str(path))
        if truncated:
            warnings.warn(f"listops {split}: {truncated} expression(s) longer than max_len={cfg.max_len} truncated",
                          DataWarning)
        result[split] = {"file": path.name, "truncated": truncated}
    return {"splits": result,
            "split_sources": {s: f"official {p.name}" for s, p in files.items()}}


# --------------------------------------------------------------------------- Text (IMDB)


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
        for data, label, path, line in _bar(progress, iterable=_iter_imdb(cfg, src, split, rep),
                                            desc=f"text {split}", unit=" docs"):
            if not data.strip():
                rep.bad(path, line, "empty review")
                continue
            ids = ByteTokenizer.encode(data, cfg.max_len)
            docs.append(ids), labels.append(label), lengths.append(ids.size)
        _require_nonempty("text", split, len(docs), str(where))
        official[split] = (docs, np.array(labels, dtype=np.int64), np.array(lengths, dtype=np.int32), len(docs))

    def write(split, docs, labels, lengths, idx):
        w = SplitWriter(out, split, {"inputs": (np.uint16, (cfg.max_len,)), "labels": (np.int64, ()),
                                     "lengths": (np.int32, ())})
        for s in range(0, len(idx), _ROWS):
            part = idx[s: s + _ROWS]
            x = np.zeros((len(part), cfg.max_len), dtype=np.uint16)
            for i, j in enumerate(part):
                x[i, : docs[j].size] = docs[j]
            w.append(inputs=x, labels=labels[part], lengths=lengths[part])
        _require_nonempty("text", split, w.close(), "aclImdb")

    docs, labels, lengths, n = official["train"]
    split_files = {}
    if cfg.val_from == "train":
        perm = np.random.default_rng(cfg.seed).permutation(n)
        n_val = max(1, int(round(n * cfg.val_fraction)))
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        _require_nonempty("text", "train", train_idx.size, "aclImdb/train after holding out validation")
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


# --------------------------------------------------------------------------- Retrieval (AAN)


_AAN = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}


def _aan_files(src: Path) -> dict[str, Path]:
    files = {s: src / n for s, n in _AAN.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise TaskNotFoundError(f"retrieval: {', '.join(missing)} not found (the official layout is "
                                "tsv_data/new_aan_pairs.{train,eval,test}.tsv)")
    return files


def _fp_retrieval(cfg, src: Path) -> dict:
    return {"files": [_file_fp(p, src) for p in _aan_files(src).values()]}


def _build_retrieval(cfg, src: Path, out: Path, rep: RowReporter, progress: bool) -> dict:
    L = cfg.max_len
    result = {}
    for split, path in _aan_files(src).items():
        w = SplitWriter(out, split, {"inputs1": (np.uint16, (L,)), "inputs2": (np.uint16, (L,)),
                                     "labels": (np.int64, ()), "lengths1": (np.int32, ()), "lengths2": (np.int32, ())})
        x1 = np.zeros((_ROWS, L), dtype=np.uint16)
        x2 = np.zeros((_ROWS, L), dtype=np.uint16)
        y = np.zeros(_ROWS, dtype=np.int64)
        l1 = np.zeros(_ROWS, dtype=np.int32)
        l2 = np.zeros(_ROWS, dtype=np.int32)
        k = 0
        done_bytes = 0
        with open(path, "rb") as f, _bar(progress, total=path.stat().st_size, desc=f"retrieval {split}", unit="B",
                                         unit_scale=True) as bar:
            for line_no, line in enumerate(f, 1):  # streamed: never the whole file in memory
                done_bytes += len(line)
                if line_no % 256 == 0:
                    bar.update(done_bytes)
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
                if k == _ROWS:
                    w.append(inputs1=x1, inputs2=x2, labels=y, lengths1=l1, lengths2=l2)
                    k = 0
            bar.update(done_bytes)
        if k:
            w.append(inputs1=x1[:k], inputs2=x2[:k], labels=y[:k], lengths1=l1[:k], lengths2=l2[:k])
        n = w.close()
        _require_nonempty("retrieval", split, n, str(path))
        result[split] = {"file": path.name}
    return {"splits": result, "split_sources": {s: f"official {p.name}" for s, p in _aan_files(src).items()}}


# --------------------------------------------------------------------------- Image (CIFAR-10)


_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _fp_image(cfg, src: Path) -> dict:
    files = [src / n for n in _CIFAR_TRAIN + ["test_batch"]]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise TaskNotFoundError(f"image: {', '.join(missing)} not found "
                                "(cifar-10-batches-py/data_batch_1..5, test_batch)")
    return {"files": [_file_fp(p, src) for p in files]}


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
    parts = [_read_cifar_batch(src / n) for n in _bar(progress, iterable=_CIFAR_TRAIN, desc="image train batches")]
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
        _require_nonempty("image", split, y.size, str(src))
        w = SplitWriter(out, split, {"inputs": (np.uint8, (1024,)), "labels": (np.int64, ()),
                                     "lengths": (np.int32, ())})
        w.append(inputs=x, labels=y, lengths=np.full(y.size, 1024, dtype=np.int32))
        w.close()
    f = splits["train"][0].astype(np.float64) / 255.0
    return {"pixel_mean": round(float(f.mean()), 6), "pixel_std": round(float(f.std()), 6),
            "split_sources": {"train": f"data_batch_1..5, first {n - cfg.val_size}",
                              "val": f"data_batch_1..5, last {cfg.val_size} (10% of train in LRA)",
                              "test": "test_batch (official)"}}


# --------------------------------------------------------------------------- Pathfinder / Path-X


def _metadata_files(src: Path) -> list[Path]:
    files = [p for p in (src / "metadata").iterdir() if p.is_file() and p.suffix == ".npy"]
    if not files:
        raise TaskNotFoundError(f"pathfinder: no metadata/*.npy files in {src}")

    def order(p: Path):
        return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)

    return sorted(files, key=order)


def _fp_pathfinder(cfg, src: Path) -> dict:
    return {"dir": src.parent.name + "/" + src.name, "metadata": [_file_fp(p, src) for p in _metadata_files(src)]}


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
    task = "pathfinder" if cfg.resolution == 32 else "pathx"
    rels, labels = read_pathfinder_metadata(src, rep)
    _require_nonempty(task, "metadata", len(rels), str(src / "metadata"))
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
            with _bar(progress, total=idx.size, desc=f"{task} {split}", unit=" png") as bar:
                for s, (ok, px, errors) in zip(range(0, idx.size, chunk), results):
                    y = labels[idx[s: s + chunk]][ok]
                    w.append(inputs=px[ok], labels=y, lengths=np.full(y.size, cfg.resolution ** 2, dtype=np.int32))
                    split_skipped += len(errors)
                    first_errors += errors[: max(0, 5 - len(first_errors))]
                    bar.update(ok.size)
            n_ok = w.close()
            skipped += split_skipped
            if n_ok == 0 and skipped:
                warnings.warn(f"{task}: skipped {skipped} unreadable or empty PNG(s) (first: "
                              f"{'; '.join(first_errors[:3])})", DataWarning)
            _require_nonempty(task, split, n_ok, str(src))
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


BUILDERS = {"listops": _build_listops, "text": _build_text, "retrieval": _build_retrieval, "image": _build_image,
            "pathfinder": _build_pathfinder, "pathx": _build_pathfinder}
FINGERPRINTS = {"listops": _fp_listops, "text": _fp_text, "retrieval": _fp_retrieval, "image": _fp_image,
                "pathfinder": _fp_pathfinder, "pathx": _fp_pathfinder}
