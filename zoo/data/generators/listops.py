"""ListOps generator (Nangia & Bowman 2018, as the Long Range Arena used it), vectorised.

The algorithm is the LRA generator's (``lra_benchmarks/data/listops.py``); only the way the random
numbers are drawn differs. A tree is grown from a root at depth 1:

* a node at depth ``< max_depth`` is a leaf (a uniform digit 0-9) with probability
  ``leaf_prob`` = 0.75, else an operator drawn uniformly from MIN, MAX, MED, SM (sum mod 10) with a
  uniform number of arguments in ``[min_args, max_args]`` = [2, 10], each argument a new node one
  level deeper;
* a node at depth ``max_depth`` is always a leaf (so operators sit at depths 1 .. max_depth - 1);
* the counted length is 1 per leaf and 2 per operator (its token and its closing bracket), i.e.
  the number of tokens once the parentheses are deleted; trees with
  ``min_length < length < max_length`` are kept (strict bounds, as in LRA), duplicates dropped.

Written form (LRA's ``to_string``): an operator node ``OP c1 .. ck`` is nested pair by pair,
``( ( ( OP c1 ) c2 ) ... ck ) ] )``; e.g. ``[MAX 2 9]`` is written ``( ( ( [MAX 2 ) 9 ) ] )``.
Labels: MIN, MAX, ``MED = int(numpy.median(args))`` (even count: mean of the middle two,
truncated), ``SM = sum % 10``.

Speed. The official generator builds Python tuples recursively and rejects ~92 % of the trees it
builds (only ~8 % of trees have 500 < length < 2000). Here a batch of candidate trees is grown
level by level with numpy (breadth-first: per level, which nodes are operators and their arity);
a candidate is abandoned as soon as its partial length reaches ``max_length`` (length only grows),
so rejected trees cost little. The survivors' leaf digits and operators are drawn afterwards (they
are independent of the shape, so the distribution is unchanged), evaluated bottom-up and written
top-down, all with array operations. See ``generate_tree_reference`` for the plain recursive
version, kept as the readable semantics (tests compare the two).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from zoo.fields import config_field

__all__ = [
    "ListOpsGenConfig",
    "generate_listops",
    "generate_listops_examples",
    "generate_tree_reference",
    "tree_to_string",
    "tree_value",
]

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
ALGORITHM_VERSION = 1
_BATCH = 1 << 15  # candidates grown together; fixed, part of the (seeded) algorithm

# Internal token codes of the written form (not the model vocabulary: see tokenizers.py).
_T_OPEN, _T_CLOSE, _T_END = 10, 11, 12  # "(" ")" "]"; 0-9 are the digits; ops are 13..16
_TOKEN_STRINGS = [str(d) for d in range(10)] + ["(", ")", "]"] + list(OPERATORS)
_TOKEN_BYTES = np.zeros((len(_TOKEN_STRINGS), 4), dtype=np.uint8)
_TOKEN_NBYTES = np.array([len(s) for s in _TOKEN_STRINGS], dtype=np.int64)
for _i, _s in enumerate(_TOKEN_STRINGS):
    _TOKEN_BYTES[_i, : len(_s)] = np.frombuffer(_s.encode("ascii"), dtype=np.uint8)


@dataclass
class ListOpsGenConfig:
    """Parameters of the generator (defaults: LRA's ``basic`` task, 96k/2k/2k)."""

    n_train: int = config_field(96_000, "training trees")
    n_val: int = config_field(2_000, "validation trees")
    n_test: int = config_field(2_000, "test trees")
    max_depth: int = config_field(10, "root is depth 1; nodes at this depth are leaves")
    min_args: int = config_field(2, "fewest arguments of an operator")
    max_args: int = config_field(10, "most arguments of an operator")
    min_length: int = config_field(500, "keep trees longer than this (exclusive)")
    max_length: int = config_field(2000, "keep trees shorter than this (exclusive)")
    leaf_prob: float = config_field(0.75, "probability that a node above the maximum depth is a leaf")
    seed: int = config_field(0, "random seed")

    def validate(self) -> None:
        if min(self.n_train, self.n_val, self.n_test) < 0 or self.n_train + self.n_val + self.n_test == 0:
            raise ValueError("n_train, n_val, n_test must be >= 0 and not all 0")
        if self.max_depth < 2:
            raise ValueError(f"max_depth={self.max_depth}: needs >= 2 (the root must be able to be an operator)")
        if not 1 <= self.min_args <= self.max_args:
            raise ValueError(f"need 1 <= min_args <= max_args, got {self.min_args}, {self.max_args}")
        if not 0 < self.leaf_prob < 1:
            raise ValueError(f"leaf_prob={self.leaf_prob}: must lie strictly between 0 and 1")
        if not 0 <= self.min_length < self.max_length - 1:
            raise ValueError(
                f"length window ({self.min_length}, {self.max_length}) is empty: bounds are exclusive, "
                "so max_length must exceed min_length + 1")


# --------------------------------------------------------------------------- reference (readable)


def generate_tree_reference(rng: random.Random, depth: int = 1, *, max_depth: int = 10, min_args: int = 2,
                            max_args: int = 10, leaf_prob: float = 0.75):
    """One tree, recursively: ``(tree, counted_length)``; a leaf is an int, an operator node a
    tuple ``(op, [children])``. The semantics of the fast generator, far slower."""
    if depth < max_depth and rng.random() >= leaf_prob:
        k = rng.randint(min_args, max_args)
        children, length = [], 2
        for _ in range(k):
            child, n = generate_tree_reference(rng, depth + 1, max_depth=max_depth, min_args=min_args,
                                               max_args=max_args, leaf_prob=leaf_prob)
            children.append(child)
            length += n
        return (rng.choice(OPERATORS), children), length
    return rng.randrange(10), 1


def tree_to_string(tree) -> str:
    """LRA's written form of a tree from ``generate_tree_reference``."""
    if isinstance(tree, int):
        return str(tree)
    op, children = tree
    s = f"( {op} {tree_to_string(children[0])} )"
    for c in children[1:]:
        s = f"( {s} {tree_to_string(c)} )"
    return f"( {s} ] )"


def tree_value(tree) -> int:
    """The label of a tree from ``generate_tree_reference``."""
    if isinstance(tree, int):
        return tree
    op, children = tree
    vals = [tree_value(c) for c in children]
    if op == "[MIN":
        return min(vals)
    if op == "[MAX":
        return max(vals)
    if op == "[MED":
        return int(np.median(vals))
    return sum(vals) % 10


# --------------------------------------------------------------------------- fast (vectorised)


def _grow_shapes(rng: np.random.Generator, n: int, cfg: ListOpsGenConfig):
    """Grow ``n`` candidate trees breadth-first; return the accepted trees' levels.

    Returns ``levels``: per depth a pair ``(is_op (N_d,) bool, arity (N_d,) int)`` listing that
    depth's nodes tree by tree, each tree's nodes in breadth-first order (children of one parent
    are contiguous and in order), for the accepted trees only, and their counted lengths.
    """
    p_op = 1.0 - cfg.leaf_prob
    node_tree = np.arange(n, dtype=np.int64)  # (N_d,) tree of each node at this depth
    length = np.zeros(n, dtype=np.int64)
    raw = []
    for depth in range(1, cfg.max_depth + 1):
        m = node_tree.size
        if depth < cfg.max_depth:
            is_op = rng.random(m) < p_op
        else:
            is_op = np.zeros(m, dtype=bool)
        arity = np.zeros(m, dtype=np.int64)
        n_ops = int(is_op.sum())
        arity[is_op] = rng.integers(cfg.min_args, cfg.max_args + 1, size=n_ops)
        length += np.bincount(node_tree, weights=1 + is_op, minlength=n).astype(np.int64)
        raw.append((node_tree, is_op, arity))
        alive = length < cfg.max_length  # the length only grows: abandon as soon as it is too long
        grow = is_op & alive[node_tree]
        node_tree = np.repeat(node_tree[grow], arity[grow])
        if node_tree.size == 0:
            break
    accepted = (length > cfg.min_length) & (length < cfg.max_length)
    new_id = np.cumsum(accepted) - 1
    levels = []
    for node_tree, is_op, arity in raw:
        keep = accepted[node_tree]
        if not keep.any():
            break
        levels.append((new_id[node_tree[keep]], is_op[keep], arity[keep]))
    return levels, length[accepted]


def _group_starts(counts: np.ndarray) -> np.ndarray:
    starts = np.zeros(counts.size, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def _fill_trees(rng: np.random.Generator, levels) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Digits, operators, labels and written text of the accepted trees (see module docstring)."""
    n_levels = len(levels)
    n_trees = int(levels[0][0].size)
    # Leaf digits and operator ids, drawn per node (independent of the shape).
    code = []
    for _, is_op, _ in levels:
        c = rng.integers(0, 10, size=is_op.size)
        ops = rng.integers(0, len(OPERATORS), size=int(is_op.sum()))
        c[is_op] = 13 + ops
        code.append(c)
    # Bottom-up: value and written size (in tokens) of every node.
    value = [None] * n_levels
    size = [None] * n_levels
    for d in range(n_levels - 1, -1, -1):
        _, is_op, arity = levels[d]
        v = code[d].copy()
        s = np.ones(is_op.size, dtype=np.int64)
        if is_op.any():
            k = arity[is_op]
            starts = _group_starts(k)
            cv, cs = value[d + 1], size[d + 1]  # children, grouped by parent, in order
            s[is_op] = 2 * k + 4 + np.add.reduceat(cs, starts)
            op = code[d][is_op] - 13
            group = np.repeat(np.arange(k.size), k)
            srt = np.sort(group * 16 + cv) - group * 16  # values sorted within each group
            mid = starts + k // 2
            med = np.where(k % 2 == 1, srt[mid], (srt[mid - 1] + srt[mid]) // 2)
            res = np.select(
                [op == 0, op == 1, op == 2],
                [np.minimum.reduceat(cv, starts), np.maximum.reduceat(cv, starts), med],
                np.add.reduceat(cv, starts) % 10,
            )
            v[is_op] = res
        value[d] = v
        size[d] = s
    labels = value[0]
    counted = np.zeros(n_trees, dtype=np.int64)
    for node_tree, is_op, _ in levels:
        counted += np.bincount(node_tree, weights=1 + is_op, minlength=n_trees).astype(np.int64)
    # Top-down: start offset of every node in one concatenated token array.
    tree_size = size[0]
    start = [_group_starts(tree_size)]
    total = int(tree_size.sum())
    tok = np.full(total, _T_CLOSE, dtype=np.int64)  # every position not written below is a ")"
    for d in range(n_levels):
        _, is_op, arity = levels[d]
        st, sz = start[d], size[d]
        leaf = ~is_op
        tok[st[leaf]] = code[d][leaf]
        if not is_op.any():
            break
        k, ost, osz = arity[is_op], st[is_op], sz[is_op]
        tok[ost + k + 1] = code[d][is_op]  # operator token after its k+1 "("
        tok[ost + osz - 2] = _T_END
        run = k + 1
        pos = np.repeat(ost - _group_starts(run), run) + np.arange(int(run.sum()))
        tok[pos] = _T_OPEN
        if d + 1 < n_levels:
            cs = size[d + 1]
            gstart = _group_starts(k)
            excl = np.cumsum(cs + 1) - (cs + 1)
            excl -= np.repeat(excl[gstart], k)
            start.append(np.repeat(ost + k + 2, k) + excl)
    # Tokens -> bytes "t t t ... t" per tree, then one bytes object per tree.
    nb = _TOKEN_NBYTES[tok] + 1  # token + separator
    off = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(nb, out=off[1:])
    buf = np.full(int(off[-1]), ord(" "), dtype=np.uint8)
    buf[off[:-1]] = _TOKEN_BYTES[tok, 0]
    is_op_tok = tok >= 13  # only operator tokens are longer than one byte
    op_off, op_tok = off[:-1][is_op_tok], tok[is_op_tok]
    for col in range(1, 4):
        m = _TOKEN_NBYTES[op_tok] > col
        buf[op_off[m] + col] = _TOKEN_BYTES[op_tok[m], col]
    tree_first = start[0]
    tree_end = np.append(tree_first[1:], total)
    b0, b1 = off[tree_first], off[tree_end] - 1  # drop the trailing separator
    raw = buf.tobytes()
    texts = [raw[a:b] for a, b in zip(b0.tolist(), b1.tolist())]
    return texts, labels.astype(np.int64), counted


def generate_listops_examples(cfg: ListOpsGenConfig, n: int | None = None, *, progress: bool = False):
    """Yield ``(text: bytes, label: int, counted_length: int)`` for ``n`` distinct trees (default:
    ``n_train + n_val + n_test``), in the (seeded, deterministic) order they were generated."""
    cfg.validate()
    n = cfg.n_train + cfg.n_val + cfg.n_test if n is None else n
    rng = np.random.default_rng(cfg.seed)
    seen: set[bytes] = set()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="listops trees", unit="tree")
    made = 0
    candidates = 0
    try:
        while made < n:
            candidates += _BATCH
            levels, _ = _grow_shapes(rng, _BATCH, cfg)
            if not levels:
                if candidates > 1000 * _BATCH and made == 0:
                    raise RuntimeError(f"no tree with {cfg.min_length} < length < {cfg.max_length} in "
                                       f"{candidates} candidates: widen the length window")
                continue
            texts, labels, counted = _fill_trees(rng, levels)
            for text, label, length in zip(texts, labels.tolist(), counted.tolist()):
                digest = hashlib.blake2b(text, digest_size=16).digest()
                if digest in seen:
                    continue
                seen.add(digest)
                yield text, label, length
                made += 1
                if bar is not None:
                    bar.update(1)
                if made >= n:
                    break
    finally:
        if bar is not None:
            bar.close()


def generate_listops(out_dir: str | os.PathLike, cfg: ListOpsGenConfig | None = None, *, task_name: str = "basic",
                     progress: bool = True, overwrite: bool = False) -> Path:
    """Write ``out_dir/listops-1000/{task_name}_{train,val,test}.tsv`` in the official layout.

    Header ``Source<TAB>Target``, ``\\r\\n`` line ends (as Python's csv writer made the official
    files); rows are the first ``n_train`` distinct trees, then ``n_val``, then ``n_test``.
    Also writes ``generator.json`` (parameters, algorithm version, counts, seconds). The folder is
    written under a temporary name and renamed when complete. Returns the ``listops-1000`` folder.
    An existing ``listops-1000`` folder (perhaps the official one) is refused unless ``overwrite``.
    """
    cfg = cfg or ListOpsGenConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    final = out_dir / "listops-1000"
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists (official or generated data?): pass overwrite=True / --overwrite "
                              "to replace it, or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".listops-1000.tmp-", dir=out_dir))
    t0 = time.perf_counter()
    try:
        splits = [("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)]
        gen = generate_listops_examples(cfg, progress=progress)
        stats = {}
        for split, count in splits:
            lengths, label_counts = [], [0] * 10
            with open(tmp / f"{task_name}_{split}.tsv", "wb") as f:
                f.write(b"Source\tTarget\r\n")
                for _ in range(count):
                    text, label, length = next(gen)
                    f.write(text + b"\t" + str(label).encode() + b"\r\n")
                    lengths.append(length)
                    label_counts[label] += 1
            stats[split] = {
                "n": count,
                "label_counts": label_counts,
                "length_min": min(lengths) if lengths else None,
                "length_mean": float(np.mean(lengths)) if lengths else None,
                "length_max": max(lengths) if lengths else None,
            }
        seconds = time.perf_counter() - t0
        meta = {
            "generator": "zoo.data.generators.listops",
            "algorithm_version": ALGORITHM_VERSION,
            "batch": _BATCH,
            "params": asdict(cfg),
            "operators": list(OPERATORS),
            "task_name": task_name,
            "splits": stats,
            "seconds": round(seconds, 2),
        }
        (tmp / "generator.json").write_text(json.dumps(meta, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
