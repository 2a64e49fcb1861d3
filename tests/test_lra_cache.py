"""The processed-data cache: hits, misses, atomic builds, corruption detected and rebuilt."""

import dataclasses
import json
import warnings

import numpy as np
import pytest

from zoo.data import DataWarning, prepare
from zoo.data.cache import NpyAppender, build_entry, cache_key, check_entry
from zoo.data.tasks import get_task
from zoo.data.tasks import registry as task_registry
from zoo.data.testing import write_listops_tsv

ROWS = [("( ( ( [MAX 2 ) 9 ) ] )", "9"), ("( ( ( ( [SM 7 ) 8 ) 9 ) ] )", "4"), ("( ( ( [MIN 3 ) 5 ) ] )", "3")]


@pytest.fixture
def root(tmp_path):
    base = tmp_path / "data" / "listops-1000"
    for split in ("train", "val", "test"):
        write_listops_tsv(base / f"basic_{split}.tsv", ROWS)
    return tmp_path / "data"


def _prep(root, tmp_path, **kw):
    return prepare("listops", root, cache_dir=tmp_path / "cache", progress=False, **kw)


def _replace_builder(monkeypatch, build):
    """The listops spec with another builder, for this test only."""
    monkeypatch.setitem(task_registry._TASKS, "listops", dataclasses.replace(get_task("listops"), build=build))


def _no_build(*args, **kwargs):
    raise AssertionError("the builder ran: expected a cache hit")


def test_hit_and_miss(root, tmp_path, monkeypatch):
    first = _prep(root, tmp_path)
    assert check_entry(first.path, first.manifest["key"]) == (True, "ok")
    _replace_builder(monkeypatch, _no_build)
    again = _prep(root, tmp_path)  # hit: the builder must not run
    assert again.path == first.path and [again.dataset("train")[i][1] for i in range(3)] == [9, 4, 3]
    with pytest.raises(AssertionError, match="builder ran"):
        _prep(root, tmp_path, options=["max_len=100"])  # another protocol: a miss
    with pytest.raises(AssertionError, match="builder ran"):
        _prep(root, tmp_path, rebuild=True)
    write_listops_tsv(root / "listops-1000" / "basic_val.tsv", ROWS[:2])  # the source changed: a miss
    with pytest.raises(AssertionError, match="builder ran"):
        _prep(root, tmp_path)


def test_manifest_records_protocol(root, tmp_path):
    data = _prep(root, tmp_path)
    m = json.loads((data.path / "manifest.json").read_text())
    assert m["task"] == "listops" and m["key"] == data.path.name.split("-")[-1]
    assert m["build"]["protocol"] == {"max_len": 2000, "file_prefix": "basic"}
    assert m["build"]["encoding"]["pad_id"] == 0
    assert {f["file"] for f in m["build"]["source"]["files"]} == {f"basic_{s}.tsv" for s in ("train", "val", "test")}
    assert m["result"]["splits"]["train"]["n"] == 3 and m["result"]["splits"]["train"]["length_max"] == 5
    assert m["result"]["split_sources"]["val"] == "official basic_val.tsv"
    assert cache_key(m["build"]) == m["key"]


@pytest.mark.parametrize("damage", ["no_marker", "truncate", "flip", "bad_manifest", "missing_file"])
def test_corrupt_entry_is_rebuilt(root, tmp_path, damage):
    data = _prep(root, tmp_path)
    entry = data.path
    if damage == "no_marker":
        (entry / "COMPLETE.json").unlink()
        reason = "COMPLETE.json"
    elif damage == "truncate":
        p = entry / "train.inputs.npy"
        p.write_bytes(p.read_bytes()[:-100])
        reason = "bytes"
    elif damage == "flip":
        p = entry / "train.labels.npy"
        raw = bytearray(p.read_bytes())
        raw[-1] ^= 0xFF
        p.write_bytes(bytes(raw))
        reason = "hash"
    elif damage == "bad_manifest":
        (entry / "manifest.json").write_text("{not json")
        reason = "unreadable"
    else:
        (entry / "test.lengths.npy").unlink()
        reason = "missing"
    ok, why = check_entry(entry, data.manifest["key"])
    assert not ok and reason in why
    with pytest.warns(DataWarning, match="unusable"):
        again = _prep(root, tmp_path)
    assert again.path == entry and check_entry(entry, again.manifest["key"]) == (True, "ok")
    assert [again.dataset("train")[i][1] for i in range(3)] == [9, 4, 3]
    assert not [p for p in entry.parent.iterdir() if p.name.startswith((".tmp", ".trash"))]


def test_failed_build_leaves_nothing(root, tmp_path, monkeypatch):
    def half_build(cfg, src, out, rep, progress):
        (out / "train.inputs.npy").write_bytes(b"partial")
        raise KeyboardInterrupt

    _replace_builder(monkeypatch, half_build)
    with pytest.raises(KeyboardInterrupt):
        _prep(root, tmp_path)
    assert list((tmp_path / "cache").iterdir()) == []


def test_npy_appender_roundtrip(tmp_path):
    w = NpyAppender(tmp_path / "a.npy", np.uint16, (3,))
    w.append(np.arange(6).reshape(2, 3))
    w.append(np.zeros((0, 3)))
    w.append(np.full((1, 3), 7))
    assert w.close() == 3
    a = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert a.dtype == np.uint16 and a.shape == (3, 3) and a.tolist() == [[0, 1, 2], [3, 4, 5], [7, 7, 7]]
    w = NpyAppender(tmp_path / "b.npy", np.int64)
    assert w.close() == 0 and np.load(tmp_path / "b.npy").shape == (0,)
    with pytest.raises(ValueError, match="rows of shape"):
        NpyAppender(tmp_path / "c.npy", np.uint8, (4,)).append(np.zeros((2, 3)))


def test_big_file_sampled_check_and_full_verify(tmp_path):
    """Files over 4 MiB are checked by sampled blocks on load; ``full=True`` reads everything."""

    def build(out):
        np.save(out / "train.inputs.npy", np.zeros(6 << 20, dtype=np.uint8))
        return {"task": "test"}

    entry = build_entry(tmp_path, "t-0", "k0", build)
    assert check_entry(entry, "k0", full=True) == (True, "ok")
    p = entry / "train.inputs.npy"
    with open(p, "r+b") as f:  # a byte between two sampled blocks
        f.seek(128 + (1 << 16) + 1000)
        f.write(b"\x01")
    assert check_entry(entry, "k0")[0]  # documented: sampled check misses it
    ok, why = check_entry(entry, "k0", full=True)
    assert not ok and "SHA-256" in why
    with open(p, "r+b") as f:  # a byte inside the first sampled block
        f.seek(200)
        f.write(b"\x01")
    assert not check_entry(entry, "k0")[0]
    assert not check_entry(entry, "other-key")[0]


def test_verify_option_rebuilds_silently_corrupt_entry(root, tmp_path):
    data = _prep(root, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _prep(root, tmp_path, verify=True).path == data.path  # a sound entry passes
