"""``zoo data``: locate / generate / prepare / show, parsed as the ``zoo`` command does."""

import sys
import types
import warnings

import numpy as np
import pytest

from zoo.data import DataWarning, MalformedRowError, TaskNotFoundError, prepare
from zoo.data.testing import tiny_lra, write_listops_tsv, write_pathfinder


def run(*argv):
    """``zoo data ARGV``, parsed as the ``zoo`` command does (overrides anywhere); errors propagate."""
    from zoo.cli import _parse, build_parser

    args = _parse(build_parser(), ["data", *map(str, argv)])
    return args.func(args)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_lra(tmp_path_factory.mktemp("tiny"))


def test_locate_prints_every_task(tiny, capsys):
    assert run("locate", tiny) == 0
    out = capsys.readouterr().out
    rel = tiny / "lra_release" / "lra_release"
    assert f"listops     {rel / 'listops-1000'}" in out
    assert f"text        {tiny / 'aclImdb'}" in out
    assert f"retrieval   {rel / 'tsv_data'}" in out
    assert f"image       {tiny / 'cifar-10-batches-py'}" in out
    assert f"pathfinder  {rel / 'pathfinder32' / 'curv_contour_length_14'}" in out
    assert f"pathx       {rel / 'pathfinder128' / 'curv_contour_length_14'}" in out


def test_locate_reports_what_was_searched(tmp_path, capsys):
    write_listops_tsv(tmp_path / "listops-1000" / "basic_train.tsv", [])
    assert run("locate", tmp_path) == 0
    out = capsys.readouterr().out
    assert "image       not found (searched" in out and "cifar-10-batches-py/{data_batch_1,test_batch}" in out
    (tmp_path / "e").mkdir()
    assert run("locate", tmp_path / "e") == 1  # nothing at all


@pytest.mark.parametrize("task", ["listops", "text", "retrieval", "image", "pathfinder", "pathx"])
def test_prepare_and_show_every_task(tiny, tmp_path, capsys, task):
    opts = ["val_size=20"] if task == "image" else []
    cache = tmp_path / "cache"
    assert run("prepare", task, "--root", tiny, "--cache-dir", cache, "--no-progress", *opts) == 0
    out = capsys.readouterr().out
    assert f"cache:    {cache}/{task}-" in out and "manifest:" in out
    png = tmp_path / "grid.png"
    assert run("show", task, "--root", tiny, "--cache-dir", cache, "--no-progress", "-n", "2", "--out", png, *opts) == 0
    out = capsys.readouterr().out
    assert "train" in out and "length min / median / mean / max" in out and "examples (train):" in out
    if task == "listops":
        assert "[M" in out or "[SM" in out
    if task in ("image", "pathfinder", "pathx"):
        assert f"sample grid: {png}" in out and png.stat().st_size > 1000
        from PIL import Image

        assert Image.open(png).size[0] > 100
    else:
        assert not png.exists()


def test_generate_listops_then_prepare(tmp_path, capsys):
    out_dir = tmp_path / "gen"
    assert run("generate", "listops", "--out", out_dir, "--n-train", 40, "--n-val", 5, "--n-test", 6, "--max-depth", 5,
               "--min-length", 10, "--max-length", 60, "--seed", 3, "--no-progress") == 0
    assert "n_train=40" in capsys.readouterr().out
    data = prepare("listops", out_dir, cache_dir=tmp_path / "c", progress=False)
    assert [data.manifest["result"]["splits"][s]["n"] for s in ("train", "val", "test")] == [40, 5, 6]
    assert 10 < data.manifest["result"]["splits"]["train"]["length_min"]
    assert data.manifest["result"]["splits"]["train"]["length_max"] < 60


def test_generate_pathfinder_is_wired(tmp_path, monkeypatch, capsys):
    calls = {}

    def fake(out_dir, *, resolution=32, contour_length=14, n_images=200_000, seed=0, workers=None, progress=True,
             overwrite=False):
        calls.update(resolution=resolution, contour_length=contour_length, n_images=n_images, seed=seed,
                     workers=workers, progress=progress)
        task = out_dir / f"pathfinder{resolution}" / f"curv_contour_length_{contour_length}"
        rng = np.random.default_rng(seed)
        write_pathfinder(task, [rng.integers(0, 256, (resolution, resolution)) for _ in range(n_images)],
                         [i % 2 for i in range(n_images)])
        return task

    monkeypatch.setitem(sys.modules, "zoo.data.generators.pathfinder", types.SimpleNamespace(generate_pathfinder=fake))
    assert run("generate", "pathfinder", "--out", tmp_path, "--contour-length", 9, "--n-images", 20, "--seed", 4,
               "--workers", 1, "--no-progress") == 0
    assert calls == dict(resolution=32, contour_length=9, n_images=20, seed=4, workers=1, progress=False)
    assert "n_images=20" in capsys.readouterr().out
    data = prepare("pathfinder", tmp_path, options=["contour_length=9", "workers=1"], cache_dir=tmp_path / "c",
                   progress=False)
    assert sum(data.manifest["result"]["splits"][s]["n"] for s in ("train", "val", "test")) == 20


def test_real_pathfinder_generator_output_loads(tmp_path):
    from zoo.data.generators import pathfinder as gen

    task_dir = gen.generate_pathfinder(tmp_path, n_images=20, seed=1, workers=1, progress=False)
    data = prepare("pathfinder", tmp_path, options=["workers=1"], cache_dir=tmp_path / "c", progress=False)
    assert data.manifest["source_dir"] == str(task_dir)
    ds = data.dataset("train")
    assert len(ds) == 16 and ds[0][0].shape == (1024,) and int(ds[0][0].max()) > 0
    assert data.manifest["result"]["skipped_images"] == 0


def test_strict_and_errors_through_cli(tmp_path):
    base = tmp_path / "d" / "listops-1000"
    write_listops_tsv(base / "basic_train.tsv", [("( ( ( [MAX 2 ) 9 ) ] )", "9"), ("( ( ( [MAX 2 ) 9 ) ] )", "nine")])
    for s in ("val", "test"):
        write_listops_tsv(base / f"basic_{s}.tsv", [("( ( ( [MAX 2 ) 9 ) ] )", "9")])
    with pytest.raises(MalformedRowError, match=r"basic_train\.tsv:3: label 'nine'"):
        run("prepare", "listops", "--root", tmp_path / "d", "--cache-dir", tmp_path / "c", "--no-progress", "--strict")
    with pytest.warns(DataWarning, match=r"basic_train\.tsv:3"):
        assert run("prepare", "listops", "--root", tmp_path / "d", "--cache-dir", tmp_path / "c", "--no-progress") == 0
    (tmp_path / "e").mkdir()
    with pytest.raises(TaskNotFoundError, match="retrieval: no task folder found"):
        run("prepare", "retrieval", "--root", tmp_path / "e", "--cache-dir", tmp_path / "c", "--no-progress")
    with pytest.raises(ValueError, match="Valid keys: max_len, file_prefix"):
        run("prepare", "listops", "maxlen=3", "--root", tmp_path / "d", "--cache-dir", tmp_path / "c")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert run("prepare", "listops", "max_len=3", "--root", tmp_path / "d", "--cache-dir", tmp_path / "c",
                   "--no-progress") == 0
    assert len(list((tmp_path / "c").glob("listops-*"))) == 2  # max_len=3 is its own entry


def test_main_zoo_cli_exposes_data(tmp_path, capsys):
    import zoo.cli as cli
    (tmp_path / "e").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli.main(["data", "prepare", "listops", "--root", str(tmp_path / "e"), "--cache-dir", str(tmp_path / "c")])
    assert rc == 2 and "listops-1000/basic_train.tsv" in capsys.readouterr().err
