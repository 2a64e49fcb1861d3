"""Loaders of the six LRA tasks on tiny official-format fixtures (quirks included)."""

import warnings

import numpy as np
import pytest
import torch

from zoo.data import (
    LISTOPS_VOCAB,
    DataWarning,
    EmptySplitError,
    ListOpsTokenizer,
    MalformedRowError,
    TaskNotFoundError,
    collate,
    locate,
    padding_mask,
    prepare,
)
from zoo.data.testing import write_aan_tsv, write_cifar_batch, write_imdb, write_listops_tsv, write_pathfinder

# the documented vocabulary, spelled out independently of the code
LISTOPS_IDS = {**{str(d): d + 1 for d in range(10)}, "[MAX": 11, "[MED": 12, "[MIN": 13, "[SM": 14, "]": 15}


def _ids(*tokens):
    return [LISTOPS_IDS[t] for t in tokens]


def _prep(task, root, tmp_path, **kw):
    kw.setdefault("progress", False)
    return prepare(task, root, cache_dir=tmp_path / "cache", **kw)


# --------------------------------------------------------------------------- ListOps


def test_listops_vocabulary_is_fixed_and_sorted():
    assert LISTOPS_VOCAB[0] == "<pad>" and len(LISTOPS_VOCAB) == 16
    assert {t: i for i, t in enumerate(LISTOPS_VOCAB) if i} == LISTOPS_IDS
    tok = ListOpsTokenizer()
    assert tok.encode("( ( ( [MAX 2 ) 9 ) ] )").tolist() == _ids("[MAX", "2", "9", "]")
    assert tok.decode([11, 3, 10, 15, 0, 0]) == "[MAX 2 9 ]"


@pytest.fixture
def listops_root(tmp_path):
    base = tmp_path / "data" / "lra_release" / "lra_release" / "listops-1000"
    write_listops_tsv(base / "basic_train.tsv", [
        ("( ( ( [MAX 2 ) 9 ) ] )", "9"),
        ("( ( ( ( [SM 7 ) 8 ) 9 ) ] )", "4.0"),                # float-looking label
        ("( ( ( [MIN ( ( ( [MED 1 ) 5 ) ] ) ) 4 ) ] )", "3"),  # nested
        ("( ( [FOO 2 ) ] )", "1"),                             # unknown token -> skipped
        ("( ( ( [MAX 2 ) 9 ) ] )", "x"),                       # bad label -> skipped
        ("( ( ( [MAX 2 ) 9 ) ] )", "12"),                      # label out of range -> skipped
    ])
    with open(base / "basic_train.tsv", "ab") as f:
        f.write(b"no tab on this line\r\n")                   # -> skipped
    write_listops_tsv(base / "basic_val.tsv", [("( ( ( [MED 1 ) 2 ) ] )", "1")])
    write_listops_tsv(base / "basic_test.tsv", [("( ( ( [MIN 0 ) 6 ) ] )", "0"), ("( ( ( [SM 6 ) 6 ) ] )", "2.0")])
    return tmp_path / "data"


def test_listops_loader(listops_root, tmp_path):
    with pytest.warns(DataWarning, match=r"skipped 4 malformed row\(s\) in .*basic_train.tsv"):
        data = _prep("listops", listops_root, tmp_path)
    assert data.manifest["result"]["skipped_rows"]["skipped_rows"] == 4
    train, val, test = (data.dataset(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (3, 1, 2)
    x, y = train[0]
    assert x.dtype == torch.int64 and x.shape == (2000,)
    assert x[:4].tolist() == _ids("[MAX", "2", "9", "]") and int(x[4:].abs().sum()) == 0
    assert [train[i][1] for i in range(3)] == [9, 4, 3]
    assert train[2][0][:8].tolist() == _ids("[MIN", "[MED", "1", "5", "]", "4", "]") + [0]
    assert train.lengths.tolist() == [4, 5, 7]
    assert [test[i][1] for i in range(2)] == [0, 2]
    assert padding_mask(x)[:5].tolist() == [False] * 4 + [True]
    tokens, labels = collate([train[0], train[1]])
    assert tokens.shape == (2, 5) and labels.tolist() == [9, 4]  # trimmed to the longest row
    assert data.manifest["build"]["encoding"]["vocab"] == list(LISTOPS_VOCAB)


def test_listops_strict_names_file_and_line(listops_root, tmp_path):
    with pytest.raises(MalformedRowError, match=r"basic_train\.tsv:5: unknown ListOps token '\[FOO'"):
        _prep("listops", listops_root, tmp_path, strict=True)


def test_listops_empty_split_raises(tmp_path):
    base = tmp_path / "d" / "listops-1000"
    write_listops_tsv(base / "basic_train.tsv", [("( ( ( [MAX 2 ) 9 ) ] )", "9")])
    write_listops_tsv(base / "basic_val.tsv", [("( ( [BAD 2 ) ] )", "1")])
    write_listops_tsv(base / "basic_test.tsv", [])
    with pytest.warns(DataWarning), pytest.raises(EmptySplitError, match="val split is empty"):
        _prep("listops", tmp_path / "d", tmp_path)
    assert not list((tmp_path / "cache").glob("listops-*"))  # nothing left under a real entry name


def test_missing_task_folder_error_names_search(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskNotFoundError) as err:
        _prep("listops", tmp_path / "empty", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "empty") in msg and "listops-1000/basic_train.tsv" in msg and "levels" in msg
    with pytest.raises(TaskNotFoundError, match=r"pathfinder128/curv_contour_length_14/metadata/"):
        locate("pathx", tmp_path / "empty")
    with pytest.raises(TaskNotFoundError, match=r"aclImdb/\{train,test\}/\{pos,neg\}"):
        locate("text", tmp_path / "empty")


def test_missing_split_file_is_named(tmp_path):
    base = tmp_path / "d" / "listops-1000"
    write_listops_tsv(base / "basic_train.tsv", [("( ( ( [MAX 2 ) 9 ) ] )", "9")])
    with pytest.raises(TaskNotFoundError, match=r"basic_val\.tsv"):
        _prep("listops", tmp_path / "d", tmp_path)


# --------------------------------------------------------------------------- Text (IMDB)


@pytest.fixture
def imdb_root(tmp_path):
    docs = {
        ("train", "pos"): [f"great film {i} caf\u00e9".encode() for i in range(10)],
        ("train", "neg"): [f"bad film {i}".encode() for i in range(10)] + [b""],  # an empty review
        ("test", "pos"): [b"loved it <br /> really"],
        ("test", "neg"): [b"hated it", b"meh"],
    }
    write_imdb(tmp_path / "imdb_data", docs)
    return tmp_path / "imdb_data"


@pytest.mark.filterwarnings("ignore:skipped 1 malformed row")
def test_text_loader_holds_out_validation(imdb_root, tmp_path):
    with pytest.warns(DataWarning, match="empty review"):
        data = _prep("text", imdb_root, tmp_path)
    train, val, test = (data.dataset(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (18, 2, 3)
    decoded = lambda ds: {bytes((ds[i][0][: int(ds.lengths[i])] - 1).tolist()) for i in range(len(ds))}  # noqa: E731
    all_train = ({f"great film {i} caf\u00e9".encode() for i in range(10)}
                 | {f"bad film {i}".encode() for i in range(10)})
    tr, va = decoded(train), decoded(val)
    assert tr | va == all_train and not tr & va  # val is held out of train, nothing lost
    assert decoded(test) == {b"loved it <br /> really", b"hated it", b"meh"}
    x, y = train[0]
    assert x.shape == (4000,) and x.dtype == torch.int64 and int(x.max()) <= 256
    labels = {bytes((train[i][0][: int(train.lengths[i])] - 1).tolist()): train[i][1] for i in range(len(train))}
    assert all(v == (1 if k.startswith(b"great") else 0) for k, v in labels.items())
    cafe = [train[i][0] for i in range(len(train)) if bytes((train[i][0][:5] - 1).tolist()) == b"great"][0]
    # bytes, not chars
    assert (cafe[cafe != 0] - 1).to(torch.uint8).numpy().tobytes().decode("utf-8").endswith("caf\u00e9")
    p = data.manifest["build"]["protocol"]
    assert p["val_from"] == "train" and p["val_fraction"] == 0.1 and p["seed"] == 0 and p["max_len"] == 4000
    other = _prep("text", imdb_root, tmp_path, options=["seed=1"])
    assert other.path != data.path  # the seed keys the cache


@pytest.mark.filterwarnings("ignore:skipped 1 malformed row")
def test_text_val_is_test_warns_loudly(imdb_root, tmp_path):
    with pytest.warns(DataWarning, match=r"validation split IS the test split"):
        data = _prep("text", imdb_root, tmp_path, options=["val_from=test", "max_len=8"])
    val, test = data.dataset("val"), data.dataset("test")
    assert len(val) == len(test) == 3 and len(data.dataset("train")) == 20
    assert torch.equal(val[0][0], test[0][0]) and val[0][0].shape == (8,)
    assert data.manifest["result"]["splits"]["val"]["same_as"] == "test"


# --------------------------------------------------------------------------- Retrieval (AAN)


@pytest.fixture
def aan_root(tmp_path):
    base = tmp_path / "r" / "lra_release" / "lra_release" / "tsv_data"
    long_doc = "x" * 5000
    write_aan_tsv(base / "new_aan_pairs.train.tsv", [
        ("1.0", "id1", "id2", 'He said "hi" and \'yo\'', '"quoted start'),
        ("0.0", "id3", "id4", "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9", long_doc),
        ("0", "id5", "id6", "plain", 'a "" b'),
        ("1", "only", "four", "fields"),                          # malformed
        ("maybe", "id7", "id8", "t1", "t2"),                      # malformed label
    ], newline=b"\r\n")
    write_aan_tsv(base / "new_aan_pairs.eval.tsv", [("1", "a", "b", "same", "same")])
    write_aan_tsv(base / "new_aan_pairs.test.tsv", [("0", "a", "b", "one", "two"), ("1.0", "c", "d", "x", "y")])
    return tmp_path / "r"


def _doc(t, n):
    return (t[:n] - 1).to(torch.uint8).numpy().tobytes()


def test_retrieval_loader(aan_root, tmp_path):
    with pytest.warns(DataWarning, match=r"skipped 2 malformed row\(s\)"):
        data = _prep("retrieval", aan_root, tmp_path)
    train = data.dataset("train")
    assert len(train) == 3 and len(data.dataset("val")) == 1 and len(data.dataset("test")) == 2
    t1, t2, y = train[0]
    assert t1.shape == t2.shape == (4000,) and y == 1
    assert _doc(t1, train.lengths[0][0]) == b'He said "hi" and \'yo\''  # quotes are plain characters
    assert _doc(t2, train.lengths[0][1]) == b'"quoted start'
    assert _doc(train[2][1], train.lengths[2][1]) == b'a "" b'
    t1, t2, y = train[1]
    assert y == 0 and _doc(t1, 12) == "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9".encode() and int(train.lengths[1][0]) == 12
    assert int(train.lengths[1][1]) == 4000 and int(t2.min()) == ord("x") + 1  # truncated to max_len
    assert [data.dataset("test")[i][2] for i in range(2)] == [0, 1]
    a, b, labels = collate([train[0], train[2]])
    assert a.shape == (2, 21) and b.shape == (2, 13) and labels.tolist() == [1, 0]


def test_retrieval_max_chars_counts_characters(aan_root, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        data = _prep("retrieval", aan_root, tmp_path, options=["max_chars=4", "max_len=6"])
    train = data.dataset("train")
    # 4 chars = 8 bytes -> 6
    assert int(train.lengths[1][0]) == 6 and _doc(train[1][0], 6) == "\u00e9\u00e9\u00e9".encode()
    assert _doc(train[0][0], int(train.lengths[0][0])) == b"He s"


def test_retrieval_strict(aan_root, tmp_path):
    with pytest.raises(MalformedRowError, match=r"new_aan_pairs\.train\.tsv:4: 4 TAB-separated fields"):
        _prep("retrieval", aan_root, tmp_path, strict=True)


# --------------------------------------------------------------------------- Image (CIFAR-10)


def test_image_loader(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "c" / "cifar-10-batches-py"
    batches = [(rng.integers(0, 256, (4, 3072)).astype(np.uint8), rng.integers(0, 10, 4)) for _ in range(6)]
    batches[0][0][0, :] = 255  # white image -> 255 (weights sum to 0.9999)
    for i, (x, y) in enumerate(batches[:5], 1):
        write_cifar_batch(base / f"data_batch_{i}", x, y)
    write_cifar_batch(base / "test_batch", *batches[5])
    data = _prep("image", tmp_path / "c", tmp_path, options=["val_size=4"])
    train, val, test = (data.dataset(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (16, 4, 4)

    def gray(rows):
        r, g, b = rows[:, :1024].astype(float), rows[:, 1024:2048].astype(float), rows[:, 2048:].astype(float)
        return np.floor(0.2989 * r + 0.5870 * g + 0.1140 * b + 0.5).astype(int)

    all_x = np.concatenate([b[0] for b in batches[:5]])
    all_y = np.concatenate([b[1] for b in batches[:5]])
    x, y = train[0]
    assert x.dtype == torch.int64 and x.shape == (1024,) and int(x.max()) == 255 and int(x.min()) == 255
    assert np.abs(np.stack([train[i][0].numpy() for i in range(16)]) - gray(all_x[:16])).max() <= 1
    assert [train[i][1] for i in range(16)] == all_y[:16].tolist()
    assert [val[i][1] for i in range(4)] == batches[4][1].tolist()  # the last images of train
    assert [test[i][1] for i in range(4)] == batches[5][1].tolist()
    assert train.padding_mask(x) is None
    unit = _prep("image", tmp_path / "c", tmp_path, options=["val_size=4", "pixels=unit"])
    assert unit.path == data.path  # a view field: same cache entry
    u = unit.dataset("train")[0][0]
    assert u.dtype == torch.float32 and float(u.max()) == 1.0
    std = _prep("image", tmp_path / "c", tmp_path, options=["val_size=4", "pixels=standard"]).dataset("train")
    s = torch.stack([std[i][0] for i in range(len(std))])
    assert abs(float(s.mean())) < 1e-4 and abs(float(s.std()) - 1) < 1e-2


def test_image_corrupt_batch_is_named(tmp_path):
    base = tmp_path / "c" / "cifar-10-batches-py"
    for i in range(1, 6):
        write_cifar_batch(base / f"data_batch_{i}", np.zeros((2, 3072)), [0, 1])
    (base / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 python batch"):
        _prep("image", tmp_path / "c", tmp_path, options=["val_size=2"])


# --------------------------------------------------------------------------- Pathfinder / Path-X


def _pf_fixture(task_dir, res=32, n=20, bad=True):
    imgs = [np.full((res, res), 10 * j, dtype=np.uint8) for j in range(n)]  # pixel value identifies the image
    labels = [j % 2 for j in range(n)]
    if bad:
        imgs.append(b"")                                             # an empty PNG (like sample_172)
        labels.append(1)
        imgs.append(np.zeros((res // 2, res // 2), dtype=np.uint8))  # wrong size
        labels.append(0)
    write_pathfinder(task_dir, imgs, labels, per_folder=8, extra_lines=["imgs/0 sample_x.png"] if bad else [])
    return n


@pytest.mark.parametrize("workers", [1, 2])
def test_pathfinder_loader(tmp_path, workers):
    root = tmp_path / "p"
    n = _pf_fixture(root / "lra_release" / "lra_release" / "pathfinder32" / "curv_contour_length_14")
    with pytest.warns(DataWarning) as rec:
        data = _prep("pathfinder", root, tmp_path, options=[f"workers={workers}"])
    msgs = " ".join(str(w.message) for w in rec)
    assert "skipped 2 unreadable or empty PNG" in msgs and "skipped 1 malformed row" in msgs
    r = data.manifest["result"]
    assert r["skipped_images"] == 2
    sizes = [r["splits"][s]["n"] for s in ("train", "val", "test")]
    assert sum(sizes) == n and sizes[0] >= 15  # 22 metadata rows -> 17/2/3, minus the 2 bad images
    seen = []
    for split in ("train", "val", "test"):
        ds = data.dataset(split)
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (1024,) and x.dtype == torch.int64
            j = int(x[0]) // 10
            assert int(x.min()) == int(x.max()) == 10 * j and y == j % 2  # label belongs to its image
            seen.append(j)
    assert sorted(seen) == list(range(n))  # splits are disjoint and complete
    signed = _prep("pathfinder", root, tmp_path, options=["pixels=signed"]).dataset("train")
    v = torch.stack([signed[i][0] for i in range(len(signed))])
    assert v.dtype == torch.float32 and float(v.min()) >= -1 and float(v.max()) <= 1 and float(v.min()) == -1


def test_pathfinder_split_is_seeded(tmp_path):
    root = tmp_path / "p"
    _pf_fixture(root / "pathfinder32" / "curv_contour_length_14")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        a = _prep("pathfinder", root, tmp_path, options=["workers=1"])
        b = _prep("pathfinder", root, tmp_path, options=["workers=1", "seed=5"])
    ta = sorted(int(a.dataset("test")[i][0][0]) for i in range(len(a.dataset("test"))))
    tb = sorted(int(b.dataset("test")[i][0][0]) for i in range(len(b.dataset("test"))))
    assert a.path != b.path and ta != tb


def test_pathx_and_baseline_folder(tmp_path):
    root = tmp_path / "p"
    _pf_fixture(root / "pathfinder128" / "curv_contour_length_14", res=128, n=10, bad=False)
    _pf_fixture(root / "pathfinder32" / "curv_baseline", n=10, bad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        x = _prep("pathx", root, tmp_path, options=["workers=1"])
        assert x.dataset("train")[0][0].shape == (16384,)
        easy = _prep("pathfinder", root, tmp_path, options=["workers=1", "contour_length=6"])
    assert easy.manifest["source_dir"].endswith("pathfinder32/curv_baseline")
    with pytest.raises(TaskNotFoundError, match="curv_contour_length_14"):
        _prep("pathfinder", root, tmp_path)


def test_pathfinder_all_images_bad_raises(tmp_path):
    d = tmp_path / "p" / "pathfinder32" / "curv_contour_length_14"
    write_pathfinder(d, [b""] * 10, [0] * 10)
    with pytest.warns(DataWarning), pytest.raises(EmptySplitError):
        _prep("pathfinder", tmp_path / "p", tmp_path, options=["workers=1"])


# --------------------------------------------------------------------------- locate


def test_locate_doubled_prefix_and_shallowest(tmp_path):
    deep = tmp_path / "lra_release" / "lra_release" / "listops-1000"
    write_listops_tsv(deep / "basic_train.tsv", [])
    assert locate("listops", tmp_path) == deep
    assert locate("listops", deep) == deep  # the task folder itself
    shallow = tmp_path / "listops-1000"
    write_listops_tsv(shallow / "basic_train.tsv", [])
    assert locate("listops", tmp_path) == shallow
    with pytest.raises(TaskNotFoundError):
        locate("listops", tmp_path / "lra_release", max_depth=0)


# --------------------------------------------------------------------------- torch integration


def test_dataloader_and_pickling(listops_root, tmp_path):
    import pickle

    from torch.utils.data import DataLoader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        train = _prep("listops", listops_root, tmp_path).dataset("train")
    train[0]  # opens the memory maps
    clone = pickle.loads(pickle.dumps(train))
    assert len(pickle.dumps(train)) < 10_000  # the memory maps are not pickled (no data copy)
    assert torch.equal(clone[1][0], train[1][0])
    batches = list(DataLoader(train, batch_size=2, collate_fn=train.collate_fn()))
    assert [b[0].shape for b in batches] == [(2, 5), (1, 7)] and batches[0][1].tolist() == [9, 4]
    fixed = next(iter(DataLoader(train, batch_size=3)))  # default collate: fixed length
    assert fixed[0].shape == (3, 2000) and fixed[1].dtype == torch.int64
    assert train.padding_mask(fixed[0]).sum(dim=1).tolist() == [1996, 1995, 1993]
