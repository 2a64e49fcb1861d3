"""Writers of tiny data sets in the official LRA layouts, for tests (ours and the trainer's).

``tiny_lra(root)`` writes all six tasks under ``root/lra_release/lra_release/`` (plus
``aclImdb`` and ``cifar-10-batches-py`` beside it), small enough to prepare in about a second:

    from zoo.data.testing import tiny_lra
    root = tiny_lra(tmp_path)                 # then: zoo.data.prepare("listops", root, cache_dir=...)

The single-file writers (``write_listops_tsv``, ``write_imdb``, ``write_aan_tsv``,
``write_cifar_batch``, ``write_pathfinder``) write exactly what they are given, quirks included.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

__all__ = ["tiny_lra", "write_aan_tsv", "write_cifar_batch", "write_imdb", "write_listops_tsv", "write_pathfinder"]


def write_listops_tsv(path: Path, rows, *, header: bool = True, newline: str = "\r\n") -> Path:
    """``rows``: ``(source_text, target)`` pairs; target written as given (``"3"``, ``"3.0"``, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["Source\tTarget"] if header else []) + [f"{s}\t{t}" for s, t in rows]
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))
    return path


def write_imdb(root: Path, docs: dict) -> Path:
    """``docs[(split, "pos"|"neg")] = [bytes, ...]`` -> ``root/aclImdb/<split>/<cls>/<i>_<r>.txt``."""
    base = Path(root) / "aclImdb"
    for split in ("train", "test"):
        for cls in ("pos", "neg"):
            d = base / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i, text in enumerate(docs.get((split, cls), [])):
                (d / f"{i}_{8 if cls == 'pos' else 2}.txt").write_bytes(text)
    return base


def write_aan_tsv(path: Path, rows, *, newline: bytes = b"\n") -> Path:
    """``rows``: tuples of fields (str or bytes) joined by TAB, no quoting (quotes stay plain)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for row in rows:
            f.write(b"\t".join(x if isinstance(x, bytes) else str(x).encode("utf-8") for x in row) + newline)
    return path


def write_cifar_batch(path: Path, data: np.ndarray, labels) -> Path:
    """A CIFAR-10 python batch: pickle of ``{b"data": (N, 3072) uint8, b"labels": [int]}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"fixture", b"data": np.asarray(data, dtype=np.uint8),
                     b"labels": [int(y) for y in labels], b"filenames": [b"x.png"] * len(labels)}, f)
    return path


def write_pathfinder(task_dir: Path, images, labels, *, per_folder: int = 1000, extra_lines=()) -> Path:
    """``images[j]``: an (R, R) uint8 array, or ``b""``/bytes written verbatim (e.g. an empty PNG).
    Writes ``imgs/<k>/sample_<j>.png`` and text ``metadata/<k>.npy`` lines
    ``imgs/<k> sample_<j>.png <j> <label> 0 0``; ``extra_lines`` are appended to ``metadata/0.npy``."""
    from PIL import Image

    task_dir = Path(task_dir)
    meta: dict[int, list[str]] = {}
    for j, (img, y) in enumerate(zip(images, labels)):
        k = j // per_folder
        d = task_dir / "imgs" / str(k)
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"sample_{j}.png"
        if isinstance(img, (bytes, bytearray)):
            p.write_bytes(bytes(img))
        else:
            Image.fromarray(np.asarray(img, dtype=np.uint8), mode="L").save(p)
        meta.setdefault(k, []).append(f"imgs/{k} sample_{j}.png {j} {y} 0 0")
    (task_dir / "metadata").mkdir(parents=True, exist_ok=True)
    meta.setdefault(0, [])
    meta[0] += list(extra_lines)
    for k, lines in meta.items():
        (task_dir / "metadata" / f"{k}.npy").write_text("\n".join(lines) + "\n")
    return task_dir


def tiny_lra(root: Path, *, seed: int = 0, n: int = 40) -> Path:
    """All six tasks, ``n`` examples per official split (CIFAR: ``n`` per batch), well formed."""
    from zoo.data.generators.listops import ListOpsGenConfig, generate_listops

    rng = np.random.default_rng(seed)
    root = Path(root)
    rel = root / "lra_release" / "lra_release"
    generate_listops(rel, ListOpsGenConfig(n_train=n, n_val=n // 2, n_test=n // 2, max_depth=5, min_length=10,
                                           max_length=100, seed=seed), progress=False, overwrite=True)
    words = ["good", "bad", "long", "range", "arena", "film", "plot", "caf\u00e9", "\u201cquoted\u201d"]
    docs = {(s, c): [" ".join(rng.choice(words, size=int(rng.integers(5, 60)))).encode() for _ in range(n // 2)]
            for s in ("train", "test") for c in ("pos", "neg")}
    write_imdb(root, docs)
    for split, name in (("train", "train"), ("val", "eval"), ("test", "test")):
        rows = [(str(int(rng.integers(0, 2))), f"a{i}", f"b{i}", " ".join(rng.choice(words, size=50)),
                 " ".join(rng.choice(words, size=40))) for i in range(n)]
        write_aan_tsv(rel / "tsv_data" / f"new_aan_pairs.{name}.tsv", rows)
    cifar = root / "cifar-10-batches-py"
    for i in range(1, 6):
        write_cifar_batch(cifar / f"data_batch_{i}", rng.integers(0, 256, size=(n, 3072)), rng.integers(0, 10, size=n))
    write_cifar_batch(cifar / "test_batch", rng.integers(0, 256, size=(n, 3072)), rng.integers(0, 10, size=n))
    for res in (32, 128):
        imgs = [rng.integers(0, 256, size=(res, res)) for _ in range(n if res == 32 else 10)]
        write_pathfinder(rel / f"pathfinder{res}" / "curv_contour_length_14", imgs, rng.integers(0, 2, size=len(imgs)))
    return root
