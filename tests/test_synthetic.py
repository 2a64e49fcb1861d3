"""The synthetic tasks against their definitions: zoology's MQAR (Arora et al., ICLR 2024) and MAD's
six tasks (Poli et al., ICML 2024), checked on every generated example; the task registry, the
cache, the datasets and `zoo data show` carry them."""

import numpy as np
import pytest
import torch

from zoo.data import prepare, synthetic, synthetic_tasks
from zoo.data.dataset import collate
from zoo.data.generators.synthetic.mad_memory import MemorizationConfig, memorization_map
from zoo.data.generators.synthetic.mqar import MQARConfig, gap_probabilities
from zoo.data.tasks import get_task
from zoo.data.tasks.synthetic import split_seed

IGN = -100
MAD = ["in_context_recall", "noisy_in_context_recall", "fuzzy_in_context_recall", "selective_copying",
       "compression", "memorization"]
SMALL = {"num_train_examples": 300, "num_test_examples": 200}


# ---------------------------------------------------------------- MQAR


def _mqar_check(x, y, V, L, k, which=0):
    """Every example against the definition; returns key ``which``'s query gap per example."""
    n = x.shape[0]
    assert x.shape == y.shape == (n, L) and x.dtype == y.dtype == np.int64
    keys, values = x[:, 0:2 * k:2], x[:, 1:2 * k:2]
    assert ((keys >= 1) & (keys < V // 2)).all() and ((values >= V // 2) & (values < V)).all()
    assert (np.diff(np.sort(keys, 1), axis=1) > 0).all(), "keys must be distinct within an example"
    assert (np.diff(np.sort(values, 1), axis=1) > 0).all(), "values are drawn without replacement (zoology)"
    assert ((y != IGN).sum(1) == k).all(), "exactly one label per key, everything else -100"
    assert (y[:, :2 * k] == IGN).all()
    gap0 = np.empty(n, dtype=np.int64)
    for i in range(n):
        pos = np.nonzero(y[i] != IGN)[0]
        assert ((pos - 2 * k) % 2 == 0).all(), "queries sit on the even slots of the query section"
        queried = x[i, pos]
        order = [int(np.nonzero(keys[i] == q)[0][0]) for q in queried]  # each label is a queried key's value
        assert sorted(order) == list(range(k)), "each key is queried exactly once"
        assert (y[i, pos] == values[i, order]).all(), "label = the value of the key at that position"
        gap0[i] = (pos[order.index(which)] - 2 * k) // 2
    return gap0


@pytest.mark.parametrize("random_non_queries", [True, False])
def test_mqar_every_example(random_non_queries):
    V, L, k = 128, 64, 8
    x, y = synthetic("mqar", "train", seed=3, vocab_size=V, seq_len=L, num_kv_pairs=k, num_train_examples=400,
                     random_non_queries=random_non_queries)
    _mqar_check(x, y, V, L, k)
    rest = (y == IGN)
    rest[:, :2 * k] = False
    if random_non_queries:
        assert x[rest].min() >= 0 and x[rest].max() < V and (x[rest] != 0).mean() > 0.9
    else:
        assert (x[rest] == 0).all(), "without random_non_queries the non-query slots are 0 (zoology)"


def test_mqar_zoology_docstring_layout():
    """zoology's example: kv pairs first; the label sits at the query's own position (seq[1:] shift)."""
    x, y = synthetic("mqar", seed=0, vocab_size=12, seq_len=10, num_kv_pairs=2, num_train_examples=50,
                     random_non_queries=False)
    for xi, yi in zip(x, y):
        lab = np.nonzero(yi != IGN)[0]
        for p in lab:
            j = int(np.nonzero(xi[:4:2] == xi[p])[0][0])
            assert yi[p] == xi[2 * j + 1]
        assert set(np.nonzero(xi[4:])[0] + 4) == set(lab)


def _ks(samples: np.ndarray, p: np.ndarray) -> float:
    """One-sample KS statistic of integer samples against the discrete distribution ``p`` on 0..len-1."""
    ecdf = np.cumsum(np.bincount(samples, minlength=p.size)[: p.size]) / samples.size
    return float(np.abs(ecdf - np.cumsum(p)).max())


def test_mqar_gap_distribution_ks():
    V, L, k, n = 256, 128, 4, 4000
    x, y = synthetic("mqar", seed=11, vocab_size=V, seq_len=L, num_kv_pairs=k, num_train_examples=n)
    gap0 = _mqar_check(x, y, V, L, k)  # the first key's gap is the first draw: distributed as p exactly
    p = gap_probabilities(MQARConfig(vocab_size=V, seq_len=L, num_kv_pairs=k))
    crit = 1.63 / np.sqrt(n)  # the 1% critical value (conservative for a discrete law)
    assert _ks(gap0, p) < crit
    uniform = np.full(p.size, 1 / p.size)
    assert _ks(gap0, uniform) > 3 * crit, "the test must be able to tell p(i) from uniform"
    # power_a = 1 is uniform: then the same statistic rejects a = 0.01 and accepts uniform
    x1, y1 = synthetic("mqar", seed=11, vocab_size=V, seq_len=L, num_kv_pairs=k, num_train_examples=n, power_a=1.0)
    g1 = _mqar_check(x1, y1, V, L, k)
    assert _ks(g1, uniform) < crit and _ks(g1, p) > 3 * crit


def test_mqar_second_gap_is_drawn_without_replacement():
    """Key 2's gap follows successive sampling: P(j) = sum_i p_i p_j / (1 - p_i), i != j."""
    V, L, k, n = 256, 40, 4, 4000
    x, y = synthetic("mqar", seed=12, vocab_size=V, seq_len=L, num_kv_pairs=k, num_train_examples=n)
    g2 = _mqar_check(x, y, V, L, k, which=1)
    p = gap_probabilities(MQARConfig(vocab_size=V, seq_len=L, num_kv_pairs=k))
    q = p * ((p / (1 - p)).sum() - p / (1 - p))  # (space,) the exact law of the second draw
    assert abs(q.sum() - 1) < 1e-9
    crit = 1.63 / np.sqrt(n)
    assert _ks(g2, q) < crit and _ks(g2, p) > crit, "second draw: not p itself (that would be with replacement)"


@pytest.mark.parametrize("V, L, k", [(64, 32, 4), (40, 32, 8)])  # rejection path; top-k-of-scores path
def test_mqar_keys_and_values_uniform(V, L, k):
    n = 3000
    x, _ = synthetic("mqar", seed=1, vocab_size=V, seq_len=L, num_kv_pairs=k, num_train_examples=n)
    for lo, hi, cols in ((1, V // 2, x[:, 0:2 * k:2]), (V // 2, V, x[:, 1:2 * k:2])):
        assert (np.diff(np.sort(cols, 1), axis=1) > 0).all()
        counts = np.bincount(cols.ravel() - lo, minlength=hi - lo)
        assert counts.size == hi - lo
        e = cols.size / (hi - lo)
        chi2 = ((counts - e) ** 2 / e).sum()
        assert chi2 < (hi - lo - 1) + 6 * np.sqrt(2 * (hi - lo - 1)), f"chi2 {chi2:.1f}: not uniform on [{lo}, {hi})"
        first = np.bincount(cols[:, 0] - lo, minlength=hi - lo)  # the order within a row is random too
        assert first.min() > 0


def test_mqar_deterministic_and_disjoint_splits():
    kw = dict(vocab_size=512, seq_len=64, num_kv_pairs=4, num_train_examples=200, num_test_examples=200)
    a, b = synthetic("mqar", "train", seed=5, **kw), synthetic("mqar", "train", seed=5, **kw)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    c = synthetic("mqar", "train", seed=6, **kw)
    assert not np.array_equal(a[0], c[0])
    t = synthetic("mqar", "test", seed=5, **kw)
    v = synthetic("mqar", "val", seed=5, **kw)
    assert np.array_equal(t[0], v[0]), "val is the test set"
    assert not {r.tobytes() for r in a[0]} & {r.tobytes() for r in t[0]}, "no test example in the train set"
    for s in range(20):
        assert split_seed(s, "train") < 2**31 <= split_seed(s, "test") < 2**32


@pytest.mark.parametrize("fields, words", [
    ({"seq_len": 63}, "seq_len=63 must be even"),
    ({"vocab_size": 64, "seq_len": 64}, "vocab_size=64 must be > seq_len=64"),
    ({"seq_len": 64, "num_kv_pairs": 17}, "need seq_len >= 68"),
    ({"power_a": 0.0}, "power_a"),
    ({"num_kv_paris": 4}, "unknown option 'num_kv_paris'. Did you mean 'num_kv_pairs'"),
])
def test_mqar_bad_settings_one_line(fields, words):
    with pytest.raises(ValueError) as e:
        synthetic("mqar", **fields)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_unknown_task_and_lra_task_one_line():
    with pytest.raises(ValueError, match="unknown synthetic task 'mqr'; choose one of mqar"):
        synthetic("mqr")
    with pytest.raises(ValueError, match="'listops' is an LRA task"):
        synthetic("listops")
    with pytest.raises(ValueError, match="split='dev'"):
        synthetic("mqar", "dev", num_train_examples=4)


# ---------------------------------------------------------------- MAD


def test_in_context_recall_definition():
    for split in ("train", "test"):
        x, y = synthetic("in_context_recall", split, seed=1, **SMALL)
        n, L = x.shape
        assert L == 127, "MAD's multi-query sequence of 128 tokens, shifted by one"
        keys, vals = (x[:, 0::2] < 8), (x[:, 1::2] >= 8)  # V=16, multi-query: keys [0,8), values [8,16)
        assert keys.all() and vals.all()
        if split == "train":  # plain next-token targets over the whole sequence (MAD's training targets)
            assert np.array_equal(y[:, :-1], x[:, 1:])
            continue
        for xi, yi in zip(x, y):
            table = {}
            for j in range(0, L - 1, 2):
                assert table.setdefault(xi[j], xi[j + 1]) == xi[j + 1], "a key keeps its value"
            lab = np.nonzero(yi != IGN)[0]
            assert lab[-1] == L - 1 and yi[-1] == table[xi[-1]], "the final probe asks a key shown before"
            seen = set()
            for j in range(0, L - 1, 2):  # multi-query: a value is labelled iff its key was shown before
                assert (yi[j] != IGN) == (xi[j] in seen) and (yi[j] == IGN or yi[j] == xi[j + 1])
                seen.add(xi[j])
            assert (yi[1::2] == IGN).all(), "labels sit on the key positions (the value is the next token)"


def test_single_query_recall_has_the_copy_prefix_and_one_target():
    x, y = synthetic("in_context_recall", "test", seed=1, multi_query=False, **SMALL)
    assert x.shape[1] == 128, "single-query: 126 pair tokens + copy prefix + probe key (+ value, shifted off)"
    assert (x[:, -2] == 15).all() and ((y != IGN).sum(1) == 1).all() and (y[:, -1] != IGN).all()
    keys = x[:, :-2:2]
    assert (keys < 7).all() and (x[:, 1:-2:2] >= 7).all() and (x[:, 1:-2:2] < 15).all()  # ns = 15
    for xi, yi in zip(x, y):
        shown = {int(k): int(v) for k, v in zip(xi[:-2:2], xi[1:-2:2])}
        assert yi[-1] == shown[int(xi[-1])], "the probe's value is the one shown for its key"


def test_noisy_recall_noise_vocab_and_never_labelled():
    x, y = synthetic("noisy_in_context_recall", "test", seed=2, **SMALL)
    noise = x >= 16  # V=32, 16 noise tokens: ordinary [0,16), noise [16,32)
    assert 0.1 < noise.mean() < 0.3, "about frac_noise=0.2 of the pairs are noise"
    assert (x < 32).all() and (y[noise] == IGN).all(), "noise positions are never labelled"
    assert ((y == IGN) | (y < 16)).all(), "labels are values, never noise"
    pair_noise = noise[:, 0:-1:2]
    assert np.array_equal(pair_noise, noise[:, 1::2]), "noise replaces whole key-value pairs"
    assert ((y != IGN).sum(1) >= 1).all()
    xt, yt = synthetic("noisy_in_context_recall", "train", seed=2, **SMALL)
    assert np.array_equal(yt[:, :-1], xt[:, 1:])


def test_fuzzy_recall_multi_token_keys_and_values():
    km = vm = 3
    x, y = synthetic("fuzzy_in_context_recall", "test", seed=4, **SMALL)
    n, L = x.shape
    assert L == 128
    pad, sizes = 15, []  # V=16 multi-query: pad V-1; keys [0,7), values [7,15)
    for xi, yi in zip(x, y):
        lead = np.argmax(xi != pad)
        assert (yi[:lead] == IGN).all() and (xi[lead:] != pad).all(), "padding only on the left"
        run = len(yi) - np.nonzero(yi == IGN)[0][-1] - 1  # trailing labelled run = the probe's value
        assert 1 <= run <= vm
        v = yi[-run:]
        assert ((v >= 7) & (v < 15)).all() and len(set(v)) == run, "a value motif: distinct value tokens"
        k = xi[L - run - km + 1: L - run + 1]  # the probe key (test keys always k_motif_size tokens)
        assert (k < 7).all() and len(set(k)) == km, "a key motif: distinct key tokens"
        sizes.append(run)
    assert set(sizes) == {1, 2, 3}, "values of every motif size occur"
    xt, yt = synthetic("fuzzy_in_context_recall", "train", seed=4, **SMALL)
    assert np.array_equal(yt[:, :-1], xt[:, 1:])


def test_selective_copying_definition():
    V, L, c = 16, 64, 8
    x, y = synthetic("selective_copying", seed=0, vocab_size=V, seq_len=L, num_tokens_to_copy=c, **SMALL)
    blank, copy = V - 2, V - 1
    assert (x[:, L - c - 1] == copy).all() and (x[:, L - c:] == blank).all()
    assert (y[:, : L - c] == IGN).all()
    head = x[:, : L - c - 1]
    assert ((head == blank).sum(1) == L - 2 * c - 1).all() and (head[:, -1] != blank).all()
    for hi, yi in zip(head, y):
        assert np.array_equal(hi[hi != blank], yi[L - c:]), "the target is the selected tokens, in order"
    assert (y[:, L - c:] < V - 2).all()


def test_compression_target_is_the_sequence():
    x, y = synthetic("compression", seed=0, **SMALL)
    assert np.array_equal(x, y) and x.shape[1] == 32
    assert (x[:, -1] == 15).all() and (x[:, :-1] < 15).all()
    xn, yn = synthetic("compression", seed=0, noise_vocab_size=4, frac_noise=0.3, **SMALL)
    assert np.array_equal(xn, yn) and ((xn[:, :-1] >= 11) & (xn[:, :-1] < 15)).mean() > 0.2


def test_memorization_fixed_map_across_examples_and_splits():
    pairs = {}
    for split, seed in (("train", 0), ("test", 0), ("train", 9)):
        x, y = synthetic("memorization", split, seed=seed, **SMALL)
        assert (x[:, 1::2] == 255).all() and (y[:, 0::2] == IGN).all() and (y[:, 1::2] != IGN).all()
        for k, v in zip(x[:, 0::2].ravel(), y[:, 1::2].ravel()):
            assert pairs.setdefault(int(k), int(v)) == v, "one value per key in every example and split"
    keys, values = memorization_map(MemorizationConfig())
    assert dict(zip(keys.tolist(), values.tolist())).items() >= pairs.items()
    assert len(set(pairs.values())) == len(pairs) and min(pairs.values()) >= 127 and max(pairs) < 127
    other = memorization_map(MemorizationConfig(kv_map_seed=1))
    assert not np.array_equal(other[1], values), "the map comes from kv_map_seed"


@pytest.mark.parametrize("name", MAD)
def test_mad_deterministic_per_seed_and_split(name):
    a = synthetic(name, "train", seed=7, **SMALL)
    b = synthetic(name, "train", seed=7, **SMALL)
    t = synthetic(name, "test", seed=7, **SMALL)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0][:50], t[0][:50])


@pytest.mark.parametrize("name, fields, words", [
    ("in_context_recall", {"seq_len": 127}, "must be even"),
    ("noisy_in_context_recall", {"noise_vocab_size": 0}, "needs noise_vocab_size > 0"),
    ("fuzzy_in_context_recall", {"seq_len": 12}, "must be > 2*(k_motif_size+v_motif_size)+1"),
    ("selective_copying", {"seq_len": 33}, "must be > 2*num_tokens_to_copy+1"),
    ("compression", {"frac_noise": 0.5}, "needs noise_vocab_size > 0"),
    ("memorization", {"seq_len": 31}, "must be even"),
])
def test_mad_bad_settings_one_line(name, fields, words):
    with pytest.raises(ValueError) as e:
        synthetic(name, **fields)
    assert words in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- registry, cache, datasets, CLI


def test_registry_declares_kind_and_causal():
    assert set(synthetic_tasks()) == {"mqar", *MAD}
    for name in synthetic_tasks():
        spec = get_task(name)
        assert spec.kind == "token" and spec.causal and not spec.has_padding and not spec.is_pixels
    assert get_task("listops").kind == "classify" and not get_task("listops").causal
    assert get_task("retrieval").kind == "pair" and get_task("retrieval").is_pair
    assert get_task("in-context-recall").name == "in_context_recall"


def test_prepared_dataset_carries_per_position_labels(tmp_path):
    fields = dict(vocab_size=256, seq_len=32, num_kv_pairs=4, num_train_examples=64, num_test_examples=16)
    data = prepare("mqar", options={**fields, "seed": 2}, cache_dir=tmp_path, progress=False)
    ds = data.dataset("train")
    x, y = synthetic("mqar", "train", seed=2, **fields)
    assert np.array_equal(np.asarray(ds.arrays[0]), x) and np.array_equal(ds.labels, y)
    assert ds.n_classes == ds.vocab_size == 256 and ds.kind == "token" and ds.causal and not ds.has_padding
    assert ds.padding_mask(torch.zeros(2, 32, dtype=torch.long)) is None
    tokens, labels = collate([ds[0], ds[1]], has_padding=ds.has_padding)
    assert tokens.shape == labels.shape == (2, 32) and labels.dtype == torch.long
    assert np.array_equal(np.asarray(data.dataset("val").arrays[0]), synthetic("mqar", "test", seed=2, **fields)[0])
    again = prepare("mqar", options={**fields, "seed": 2}, cache_dir=tmp_path, progress=False)
    assert again.path == data.path


def test_cli_data_show_mqar(tmp_path, capsys):
    from zoo.cli import main

    rc = main(["data", "show", "mqar", "num_train_examples=50", "num_test_examples=10", "--root", str(tmp_path),
               "--cache-dir", str(tmp_path / "c"), "-n", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "4 labelled/example" in out and "generated (test seed)" in out
    rc = main(["data", "show", "mqar", "seq_len=63", "--root", str(tmp_path), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "seq_len=63 must be even" in err and "Traceback" not in err


def test_task_yamls_are_the_baselines():
    """configs/tasks/<name>.yaml for every synthetic task: valid, and equal to the registered defaults
    (MAD's baseline settings, zoology's defaults)."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1] / "configs" / "tasks"
    for name in synthetic_tasks():
        doc = yaml.safe_load((root / f"{name}.yaml").read_text())
        spec = get_task(doc["name"])
        assert spec.name == name
        assert spec.make_config(doc["options"]) == spec.default_config()
