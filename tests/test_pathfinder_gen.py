"""Tests of the offline Pathfinder generator (zoo.data.generators.pathfinder): layout, PNG format,
reproducibility, label balance, no marker-distance shortcut, snake geometry."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from PIL import Image

from zoo.data.generators.pathfinder import (
    PATHFINDER_PARAMS,
    PathfinderParams,
    generate_pathfinder,
    generate_sample,
    pathfinder_params,
    read_metadata,
    render_coverage,
    render_sample_grid,
    segment_distance,
)

N_MAIN = 400  # the shared 32 px hard set (about 3 s on 2 cores)
PER_FOLDER = 128  # -> folders 0..3, the last one partly filled


@pytest.fixture(scope="module")
def task32(tmp_path_factory):
    out = tmp_path_factory.mktemp("pf32")
    task = generate_pathfinder(out, resolution=32, contour_length=14, n_images=N_MAIN, seed=0,
                               workers=2, progress=False, images_per_folder=PER_FOLDER)
    return out, task


def _png_bytes(task):
    return {p.relative_to(task).as_posix(): p.read_bytes() for p in sorted(task.rglob("*.png"))}


def _meta_text(task):
    return {p.name: p.read_text() for p in sorted((task / "metadata").glob("*.npy"))}


def _complex(snake):  # (n, 2, 2) (y, x) endpoints -> complex starts, ends
    z = snake[..., 1] + 1j * snake[..., 0]
    return z[:, 0], z[:, 1]


# ----------------------------------------------------------------------------------- layout


def test_layout_and_metadata_format(task32):
    out, task = task32
    assert task == out / "pathfinder32" / "curv_contour_length_14"
    n_folders = math.ceil(N_MAIN / PER_FOLDER)
    assert sorted(int(p.name) for p in (task / "imgs").iterdir()) == list(range(n_folders))
    assert sorted(p.name for p in (task / "metadata").iterdir()) == [f"{k}.npy" for k in range(n_folders)]
    seen = 0
    for k in range(n_folders):
        raw = (task / "metadata" / f"{k}.npy").read_bytes()
        # TEXT despite the extension (not the binary .npy format), newline-terminated lines,
        # single spaces (LRA's reader splits on "\n" and " ")
        assert not raw.startswith(b"\x93NUMPY")
        text = raw.decode("ascii")
        assert text.endswith("\n") and "\r" not in text and "  " not in text
        lines = text.split("\n")[:-1]
        expected = min(PER_FOLDER, N_MAIN - k * PER_FOLDER)
        assert len(lines) == expected
        assert len(list((task / "imgs" / str(k)).glob("*.png"))) == expected
        for j, line in enumerate(lines):
            f = line.split(" ")
            assert len(f) == 16
            # official columns: subpath, file, index in folder, label, continuity, contour
            # length, distractor length, paddle length, thickness, margin, #contrasts
            assert f[0] == f"imgs/{k}" and f[1] == f"sample_{j}.png" and f[2] == str(j)
            assert f[3] in ("0", "1")
            assert f[4:11] == ["1.0", "14", "4", "2", "0.5", "1", "1"]
            # ours: distractors placed, marker (y, x) origin then terminal
            assert 0 <= int(f[11]) <= PATHFINDER_PARAMS[32].distractor_budget // 4
            assert all(0.0 <= float(v) <= 31.0 for v in f[12:16])
            assert (task / f[0] / f[1]).is_file()
            seen += 1
    assert seen == N_MAIN
    rows = read_metadata(task)
    assert len(rows) == N_MAIN and rows[PER_FOLDER][:3] == ["imgs/1", "sample_0.png", "0"]


def test_pngs_are_8bit_grayscale_and_full_range(task32):
    _, task = task32
    pngs = sorted(task.rglob("*.png"))
    assert len(pngs) == N_MAIN
    for path in pngs[:: max(1, len(pngs) // 60)]:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (32, 32)
            a = np.asarray(im)
        assert a.dtype == np.uint8
        assert a.min() == 0 and a.max() == 255  # scaled explicitly to 0..255
        assert (a > 0).sum() > 60  # two snakes, distractors, markers: not an empty canvas


def test_refuses_to_overwrite_unless_asked(task32, tmp_path):
    task = generate_pathfinder(tmp_path, n_images=4, seed=1, workers=1, progress=False)
    with pytest.raises(FileExistsError):
        generate_pathfinder(tmp_path, n_images=2, seed=1, workers=1, progress=False)
    generate_pathfinder(tmp_path, n_images=2, seed=1, workers=1, progress=False, images_per_folder=1,
                        overwrite=True)
    assert sorted(p.name for p in (task / "metadata").iterdir()) == ["0.npy", "1.npy"]
    assert len(list(task.rglob("*.png"))) == 2


# ---------------------------------------------------------------------------- reproducibility


def test_reproducible_and_independent_of_workers(task32, tmp_path):
    _, task = task32
    kw = dict(resolution=32, contour_length=14, n_images=24, progress=False, images_per_folder=PER_FOLDER)
    a = generate_pathfinder(tmp_path / "a", seed=0, workers=1, **kw)
    b = generate_pathfinder(tmp_path / "b", seed=0, workers=2, chunk_size=5, **kw)
    c = generate_pathfinder(tmp_path / "c", seed=1, workers=1, **kw)
    pa, pb, pc = _png_bytes(a), _png_bytes(b), _png_bytes(c)
    assert len(pa) == 24 and pa == pb
    assert _meta_text(a) == _meta_text(b)
    # the 400-image set (2 workers, other chunks) starts with the same 24 images
    big = _png_bytes(task)
    assert all(big[name] == data for name, data in pa.items())
    assert _meta_text(task)["0.npy"].splitlines()[:24] == _meta_text(a)["0.npy"].splitlines()
    # another seed gives other images
    assert sum(pa[name] != pc[name] for name in pa) >= 20
    # the in-process API gives the same pixels as the files
    s = generate_sample(pathfinder_params(32, 14), 0, 5)
    np.testing.assert_array_equal(np.asarray(Image.open(a / "imgs/0/sample_5.png")), s.image)


# --------------------------------------------------------------------------------- labels


def test_labels_balanced(task32):
    _, task = task32
    labels = np.array([int(r[3]) for r in read_metadata(task)])
    assert set(labels.tolist()) == {0, 1}
    assert abs(labels[:200].mean() - 0.5) <= 0.1
    # by construction every pair of indices (2p, 2p+1) holds one of each label
    assert (labels[0::2] + labels[1::2] == 1).all()


def test_marker_distance_does_not_predict_label(task32):
    _, task = task32
    rows = read_metadata(task)
    y = np.array([int(r[3]) for r in rows])
    m = np.array([[float(v) for v in r[12:16]] for r in rows])
    d = np.hypot(m[:, 0] - m[:, 2], m[:, 1] - m[:, 3])
    # the metadata columns are the markers of the internal API
    s = generate_sample(pathfinder_params(32, 14), 0, 3)
    np.testing.assert_allclose(m[3].reshape(2, 2), s.markers, atol=1e-3)
    assert s.label == y[3]

    # trivial classifier: best threshold (either direction) on the first half, scored on the
    # held-out second half
    n = len(d) // 2
    dtr, ytr, dte, yte = d[:n], y[:n], d[n:], y[n:]
    best = (-1.0, 0.0, 1)
    for t in np.unique(dtr):
        for sign in (1, -1):
            acc = float(((sign * (dtr - t) > 0) == ytr).mean())
            if acc > best[0]:
                best = (acc, t, sign)
    _, t, sign = best
    acc = float(((sign * (dte - t) > 0) == yte).mean())
    # Bound: with 200 held-out images the standard error of an accuracy near 0.5 is
    # sqrt(0.25 / 200) = 0.035, so 0.62 is 3.4 SE above chance: a classifier at chance (or at
    # the small edge measured on 4000 images, at most 0.53, see docs/pathfinder.md) passes with
    # probability > 99.5 %, while a real shortcut (>= 0.70, i.e. 5.7 SE above 0.5) fails.
    assert acc < 0.62, acc


# ------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("resolution,contour_length,n", [(32, 6, 20), (32, 9, 20), (32, 14, 40), (128, 14, 6)])
def test_snake_lengths_and_no_touching(resolution, contour_length, n):
    p = pathfinder_params(resolution, contour_length)
    for i in range(n):
        s = generate_sample(p, 7, i)
        assert s.image.shape == (resolution, resolution) and s.image.dtype == np.uint8
        assert len(s.snakes[0]) == contour_length and len(s.snakes[1]) == contour_length
        assert 0 <= s.n_distractors <= p.n_distractors
        assert all(len(sn) == p.distractor_length for sn in s.snakes[2:])
        assert s.margin in p.paddle_margins
        # markers: start of one target snake, far end of the same (1) or the other (0) one
        o = s.origin_snake
        t = o if s.label == 1 else 1 - o
        np.testing.assert_allclose(s.markers[0], s.snakes[o][0, 0])
        np.testing.assert_allclose(s.markers[1], s.snakes[t][-1, 1])
        # paddles have the paddle length; consecutive ones are ~2 margins apart (dashes)
        for sn in s.snakes:
            a, b = _complex(sn)
            np.testing.assert_allclose(np.abs(b - a), p.paddle_length)
            gaps = np.abs(a[1:] - b[:-1])
            assert np.all(gaps > 2 * s.margin * math.cos(p.max_turn / 2) - 1e-9)
            assert np.all(gaps <= 2 * s.margin + 1e-9)
        clear = p.clearance(s.margin)
        # the two targets keep the clearance (and so never touch or cross) ...
        a0, b0 = _complex(s.snakes[0])
        a1, b1 = _complex(s.snakes[1])
        assert segment_distance(a0[:, None], b0[:, None], a1[None], b1[None]).min() >= clear - 1e-9
        # ... and share no inked pixel
        c0 = render_coverage(p, a0, b0 - a0)
        c1 = render_coverage(p, a1, b1 - a1)
        assert c0.max() > 0 and c1.max() > 0
        assert not np.any((c0 > 0) & (c1 > 0))
        # every snake keeps the clearance from every other, and from its own non-adjacent paddles
        ends = [_complex(sn) for sn in s.snakes]
        for u, (au, bu) in enumerate(ends):
            dd = segment_distance(au[:, None], bu[:, None], au[None], bu[None])
            far = np.abs(np.subtract.outer(np.arange(len(au)), np.arange(len(au)))) >= 2
            assert np.all(dd[far] >= clear - 1e-9)
            for av, bv in ends[u + 1:]:
                assert segment_distance(au[:, None], bu[:, None], av[None], bv[None]).min() >= clear - 1e-9
        # everything stays inside the padded image
        allpts = np.concatenate([sn.reshape(-1, 2) for sn in s.snakes])
        assert allpts.min() >= p.padding - 1e-9 and allpts.max() <= resolution - 1 - p.padding + 1e-9


def test_segment_distance():
    assert segment_distance(0, 2, 1 + 1j, 1 - 1j) == 0.0  # crossing
    assert segment_distance(0, 2, 3 + 1j, 5 + 1j) == pytest.approx(math.sqrt(2))
    assert segment_distance(0, 2, 1 + 3j, 1 + 5j) == pytest.approx(3.0)


# ---------------------------------------------------------------------------- parameters


def test_parameters():
    p32, p128 = PATHFINDER_PARAMS[32], PATHFINDER_PARAMS[128]
    assert (p32.paddle_length, p32.paddle_thickness, p32.marker_radius, p32.seed_distance,
            p32.continuity, p32.paddle_margins, p32.antialias_scale) == (2, 0.5, 1.5, 7, 1.0, (1,), 2)
    assert (p128.paddle_length, p128.paddle_thickness, p128.marker_radius, p128.seed_distance,
            p128.continuity, p128.paddle_margins, p128.antialias_scale) == (5, 1.5, 3.0, 20, 1.8, (2, 3), 2)
    for cl, dl in ((6, 2), (9, 3), (14, 4)):
        assert pathfinder_params(32, cl).distractor_length == dl
        assert pathfinder_params(32, cl).n_distractors == 20 // dl
        assert pathfinder_params(128, cl).n_distractors == 35 // dl
    with pytest.raises(dataclasses.FrozenInstanceError):
        p32.continuity = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        pathfinder_params(48)
    assert isinstance(pathfinder_params(32, 9, distractor_budget=0), PathfinderParams)


def test_128px_and_options(tmp_path):
    task = generate_pathfinder(tmp_path, resolution=128, contour_length=14, n_images=3, seed=0, workers=1,
                               progress=False, overrides={"distractor_budget": 0})
    assert task.name == "curv_contour_length_14" and task.parent.name == "pathfinder128"
    rows = read_metadata(task)
    assert [r[1] for r in rows] == ["sample_0.png", "sample_1.png", "sample_2.png"]
    assert all(r[4:9] == ["1.8", "14", "4", "5", "1.5"] and r[9] in ("2", "3") and r[11] == "0" for r in rows)
    with Image.open(task / "imgs/0/sample_0.png") as im:
        assert im.mode == "L" and im.size == (128, 128)


def test_render_sample_grid(task32, tmp_path):
    _, task = task32
    out = render_sample_grid(task, tmp_path / "grid.png", n=8)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100
