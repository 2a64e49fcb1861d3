"""One image: ink, markers and ground truth (``generate_sample``); its random streams."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import _Geometry, _geometry
from .params import PathfinderParams
from .process import _place_distractors, _place_targets, _Snake
from .raster import _bytescale

__all__ = ["PathfinderSample", "generate_sample", "render_coverage"]


def _ink(g: _Geometry, pos: np.ndarray, sid: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """(res, res) float64: max of the paddles' ink patches times their contrast (the official
    stores each in a float32 image), clipped to the image."""
    res, q = g.res, g.q
    canvas = np.zeros(g.Hp * g.Hp)
    if len(sid):
        idx = ((pos[:, 0] + q) * g.Hp + pos[:, 1] + q)[:, None] + g.win_flat  # (n, S*S)
        val = (g.ink[sid].reshape(len(sid), -1) * contrast[:, None]).astype(np.float32)  # (n, S*S)
        np.maximum.at(canvas, idx.reshape(-1), val.reshape(-1).astype(np.float64))
    return canvas.reshape(g.Hp, g.Hp)[q:q + res, q:q + res]


def render_coverage(p: PathfinderParams, a, ab, margin: int | None = None) -> np.ndarray:
    """Ink in [0, 1] (resolution x resolution) of paddles drawn the official way from the
    pixels ``a`` (complex ``x + iy``, rounded) in the directions of ``ab`` (complex), contrast 1."""
    g = _geometry(p, int(p.paddle_margins[0] if margin is None else margin))
    a = np.asarray(a, np.complex128).reshape(-1)
    phi = np.angle(np.asarray(ab, np.complex128).reshape(-1))
    ink, _ = g._patches(phi)
    res, q = g.res, g.q
    canvas = np.zeros(g.Hp * g.Hp)
    pos = np.stack((np.rint(a.imag), np.rint(a.real)), axis=1).astype(np.int64)
    if len(a):
        idx = ((pos[:, 0] + q) * g.Hp + pos[:, 1] + q)[:, None] + g.win_flat
        np.maximum.at(canvas, idx.reshape(-1), (ink.reshape(len(a), -1) / 255.0).reshape(-1))
    return canvas.reshape(g.Hp, g.Hp)[q:q + res, q:q + res]


@dataclass
class PathfinderSample:
    """One generated image and its ground truth (points are (y, x) = (row, col) in pixels)."""

    image: np.ndarray  # (R, R) uint8
    label: int  # 1 = both markers on the same snake
    markers: np.ndarray  # (2, 2) float: origin marker, terminal marker
    snakes: list[np.ndarray]  # each (n_paddles, 2, 2): paddle endpoints along the snake; [0], [1] = targets
    origin_snake: int  # which target snake (0 / 1) carries the origin marker
    margin: float
    attempts: int  # target pairs tried (1 = the first completed)
    paddles: np.ndarray | None = None  # (n, 4) int: start y, start x, shape id, snake number

    @property
    def n_distractors(self) -> int:
        return len(self.snakes) - 2


# each random stream has its own tag in the second word, so no two streams of any images share
# a seed sequence
_STREAM_LABEL, _STREAM_MARGIN, _STREAM_TARGETS, _STREAM_DISTRACTORS = 1, 2, 3, 4


def _label(seed: int, index: int) -> int:
    # exact balance within each pair of indices, still a function of (seed, index) only
    flip = int(np.random.default_rng([seed, _STREAM_LABEL, index // 2]).integers(2))
    return flip ^ (index & 1)


def _margin(p: PathfinderParams, seed: int, index: int) -> int:
    # drawn once per image, before any retry (as the official does), so that the retries do
    # not favour the margins that are easier to place
    if len(p.paddle_margins) == 1:
        return int(p.paddle_margins[0])
    k = int(np.random.default_rng([seed, _STREAM_MARGIN, index]).integers(len(p.paddle_margins)))
    return int(p.paddle_margins[k])


def _endpoints(g: _Geometry, sn: _Snake) -> np.ndarray:
    """(n, 2, 2) float (y, x) paddle endpoints along the snake: the seed paddle runs from its
    start outwards, the others end at their start (their head) and were drawn backwards."""
    pos = sn.pos[0, :sn.n].astype(np.float64)  # (n, 2)
    phi = g.phi[sn.sid[0, :sn.n]]  # (n,)
    other = pos + g.L * np.stack((np.sin(phi), np.cos(phi)), axis=1)  # (n, 2)
    ends = np.stack((other, pos), axis=1)  # (n, 2, 2)
    ends[0] = (pos[0], other[0])
    return ends


def generate_sample(p: PathfinderParams, seed: int, index: int) -> PathfinderSample:
    """Generate image ``index`` of the data set with ``seed`` (depends on nothing else)."""
    label = _label(seed, index)
    margin = _margin(p, seed, index)
    g = _geometry(p, margin)
    tried = 0
    for batch in range(p.max_target_batches):
        B = min(p.target_batch << min(batch, 30), max(p.max_target_batch, p.target_batch))
        rng = np.random.default_rng([seed, _STREAM_TARGETS, index, batch])
        found = _place_targets(g, rng, B)
        if found is None:
            tried += B
            continue
        rows, targets, row = found
        rng = np.random.default_rng([seed, _STREAM_DISTRACTORS, index, batch])
        distractors = _place_distractors(g, rows, rng)
        origin = int(rng.integers(2))
        terminal = origin if label == 1 else 1 - origin
        mk = np.array([targets[origin].tail[0], targets[terminal].head[0]], np.int64)  # (2, 2)
        snakes = targets + distractors
        pad = []
        for n, sn in enumerate(snakes):
            pad.append(np.column_stack((sn.pos[0, :sn.n], sn.sid[0, :sn.n], np.full(sn.n, n))))
        pad = np.concatenate(pad).astype(np.int64)  # (n_paddles, 4)
        contrast = np.where(pad[:, 3] < 2, p.target_contrast, p.distractor_contrast)
        img = _ink(g, pad[:, :2], pad[:, 2], contrast)
        img = np.maximum(img, np.maximum(g.marker(mk[0]), g.marker(mk[1])))
        return PathfinderSample(
            image=_bytescale(img), label=label, markers=mk.astype(np.float64),
            snakes=[_endpoints(g, sn) for sn in snakes], origin_snake=origin, margin=margin,
            attempts=tried + row + 1, paddles=pad,
        )
    raise RuntimeError(f"Pathfinder image {index} (seed {seed}): no target pair could be placed in "
                       f"{tried} attempts; parameters too crowded? {p}")
