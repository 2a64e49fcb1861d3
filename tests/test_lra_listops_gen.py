"""The ListOps generator: written form, labels, lengths, depth, label shape, determinism.

Labels and depths are recomputed here by an independent parser of the written text that follows
LRA's pair semantics (``( x y )`` nests pairs; an operator applied to pairs of arguments until
``]``), not by the generator's own code.
"""

import random
from collections import Counter

import numpy as np
import pytest

from zoo.data.generators.listops import (
    ListOpsGenConfig,
    generate_listops,
    generate_listops_examples,
    generate_tree_reference,
    tree_to_string,
    tree_value,
)

OPS = {"[MIN", "[MAX", "[MED", "[SM"}


def _parse_pairs(tokens, i=0):
    """Recursive descent over ``expr := atom | '(' expr expr ')'``; returns (node, next index)."""
    t = tokens[i]
    if t == "(":
        left, i = _parse_pairs(tokens, i + 1)
        right, i = _parse_pairs(tokens, i)
        assert tokens[i] == ")", f"expected ')' at {i}, got {tokens[i]!r}"
        return (left, right), i + 1
    assert t != ")", f"unexpected ')' at {i}"
    return t, i + 1


def _apply(op, args):
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        s = sorted(args)
        n = len(s)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2
    return sum(args) % 10


def _evaluate(node, depth=1):
    """Pair tree -> ('value', v, max_depth) or ('partial', op, args, depth_of_args).

    ``depth`` is the tree depth of the node this pair belongs to (root = 1)."""
    if isinstance(node, str):
        if node in OPS:
            return ("partial", node, [], 0)
        if node == "]":
            return ("end",)
        assert node.isdigit() and len(node) == 1, f"bad atom {node!r}"
        return ("value", int(node), depth)
    left, right = node
    lv = _evaluate(left, depth)
    if lv[0] == "partial":
        if isinstance(right, str) and right == "]":
            assert lv[2], "operator closed with no arguments"
            return ("value", _apply(lv[1], lv[2]), max(lv[3], depth))
        rv = _evaluate(right, depth + 1)
        assert rv[0] == "value", f"argument is not a value: {rv}"
        return ("partial", lv[1], lv[2] + [rv[1]], max(lv[3], rv[2]))
    raise AssertionError(f"pair whose left side is not an operator application: {lv}")


def evaluate_written(text: str):
    """(label, tree depth) of LRA's written form, e.g. ``( ( ( [MAX 2 ) 9 ) ] )`` -> (9, 2)."""
    tokens = text.split()
    node, end = _parse_pairs(tokens)
    assert end == len(tokens), "trailing tokens"
    res = _evaluate(node)
    assert res[0] == "value"
    return res[1], res[2]


def test_written_form_example():
    tree = ("[MAX", [2, 9])
    assert tree_to_string(tree) == "( ( ( [MAX 2 ) 9 ) ] )"
    assert evaluate_written("( ( ( [MAX 2 ) 9 ) ] )") == (9, 2)
    assert evaluate_written("( ( ( ( [MED 2 ) 9 ) 4 ) ] )")[0] == 4
    assert evaluate_written("( ( ( ( ( [MED 1 ) 2 ) 9 ) 8 ) ] )")[0] == 5  # int(median([1,2,9,8])) = int(5.0)
    assert evaluate_written("( ( ( ( [SM 7 ) 8 ) 9 ) ] )")[0] == 4


@pytest.fixture(scope="module")
def default_sample():
    """400 trees with the default (LRA) parameters."""
    cfg = ListOpsGenConfig(seed=123)
    return list(generate_listops_examples(cfg, 400))


def test_default_sample_labels_lengths_depth(default_sample):
    assert len(default_sample) == 400
    labels, lengths, depths = [], [], []
    for text, label, length in default_sample:
        s = text.decode("ascii")
        value, depth = evaluate_written(s)
        assert value == label, s[:200]
        # counted length = number of tokens once '(' and ')' are deleted
        assert length == sum(1 for t in s.split() if t not in ("(", ")"))
        labels.append(label), lengths.append(length), depths.append(depth)
    assert 500 < min(lengths) and max(lengths) < 2000
    assert max(depths) <= 10
    assert max(depths) >= 6  # long trees are deep; a generator ignoring depth would differ
    counts = Counter(labels)
    assert set(counts) == set(range(10)), counts
    assert max(counts.values()) / len(labels) < 0.35, counts  # LRA's shape: 0 and 9 ~17% each, others ~8%
    assert counts[0] + counts[9] > 2 * (len(labels) / 10) * 1.2  # MIN/MAX pile up at 0 and 9
    assert len({t for t, _, _ in default_sample}) == 400  # de-duplicated
    assert 850 < np.mean(lengths) < 1250  # LRA's generator: mean ~1040


def test_deterministic_and_seeded():
    cfg = ListOpsGenConfig(min_length=20, max_length=200, max_depth=6)
    a = list(generate_listops_examples(cfg, 30))
    b = list(generate_listops_examples(cfg, 30))
    c = list(generate_listops_examples(ListOpsGenConfig(min_length=20, max_length=200, max_depth=6, seed=1), 30))
    assert a == b
    assert a != c


def test_small_variant_bounds_and_depth():
    cfg = ListOpsGenConfig(max_depth=4, max_args=3, min_length=5, max_length=40, seed=7)
    sample = list(generate_listops_examples(cfg, 300))
    for text, label, length in sample:
        value, depth = evaluate_written(text.decode())
        assert value == label and depth <= 4 and 5 < length < 40
        for tok in text.decode().split():
            assert tok in OPS or tok in ("(", ")", "]") or tok.isdigit()
    # arity never exceeds max_args: count arguments per operator with a stack
    for text, _, _ in sample:
        stack = []
        for tok in text.decode().split():
            if tok in OPS:
                stack.append(0)
            elif tok == "]":
                assert 2 <= stack.pop() <= 3
                if stack:
                    stack[-1] += 1
            elif tok.isdigit():
                stack[-1] += 1


def test_fast_matches_reference_distribution():
    """Same parameters, fast vs recursive reference: accepted-length mean and label shape agree."""
    kw = dict(max_depth=6, min_length=20, max_length=200)
    fast = list(generate_listops_examples(ListOpsGenConfig(seed=3, **kw), 1500))
    rng = random.Random(3)
    ref = []
    while len(ref) < 1500:
        tree, length = generate_tree_reference(rng, max_depth=6)
        if 20 < length < 200:
            ref.append((tree_to_string(tree), tree_value(tree), length))
    assert all(evaluate_written(t)[0] == v for t, v, _ in ref[:200])  # the test parser agrees with the reference
    fl = np.array([x[2] for x in fast], dtype=float)
    rl = np.array([x[2] for x in ref], dtype=float)
    se = np.sqrt(fl.var() / fl.size + rl.var() / rl.size)
    assert abs(fl.mean() - rl.mean()) < 4 * se, (fl.mean(), rl.mean(), se)
    fc = np.bincount([x[1] for x in fast], minlength=10) / len(fast)
    rc = np.bincount([x[1] for x in ref], minlength=10) / len(ref)
    assert np.abs(fc - rc).max() < 0.05, (fc, rc)


def test_generate_writes_official_layout(tmp_path):
    cfg = ListOpsGenConfig(n_train=30, n_val=5, n_test=7, max_depth=5, min_length=10, max_length=80)
    out = generate_listops(tmp_path, cfg, progress=False)
    assert out == tmp_path / "listops-1000"
    seen = set()
    for split, n in (("train", 30), ("val", 5), ("test", 7)):
        raw = (out / f"basic_{split}.tsv").read_bytes()
        assert raw.startswith(b"Source\tTarget\r\n")
        lines = raw.split(b"\r\n")
        assert lines[-1] == b"" and len(lines) == n + 2
        for line in lines[1:-1]:
            text, label = line.decode().split("\t")
            assert evaluate_written(text)[0] == int(label)
            seen.add(text)
    assert len(seen) == 42  # no duplicates across splits
    assert (out / "generator.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_listops(tmp_path, cfg, progress=False)  # never clobbers existing data silently
    before = (out / "basic_train.tsv").read_bytes()
    generate_listops(tmp_path, ListOpsGenConfig(n_train=3, n_val=1, n_test=1, max_depth=5, min_length=10,
                                                max_length=80), progress=False, overwrite=True)
    assert (out / "basic_train.tsv").read_bytes() != before


def test_invalid_parameters():
    with pytest.raises(ValueError, match="length window"):
        ListOpsGenConfig(min_length=10, max_length=11).validate()
    with pytest.raises(ValueError, match="min_args"):
        ListOpsGenConfig(min_args=5, max_args=3).validate()
