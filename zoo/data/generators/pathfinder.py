"""Offline Pathfinder / Path-X generator (the "snakes2" task of Linsley et al. 2018, as LRA used it).

Writes the layout of the official release, so one loader reads generated and downloaded data::

    out_dir/pathfinder{R}/curv_contour_length_{C}/imgs/<k>/sample_<j>.png     8-bit grayscale
    out_dir/pathfinder{R}/curv_contour_length_{C}/metadata/<k>.npy            TEXT, one line per image

A metadata line holds the 11 columns of the official generator, in its order, then extra columns
of ours (readers of the official files only use fields 0, 1 and 3)::

    imgs/<k> sample_<j>.png <j> <label> <continuity> <contour_length> <distractor_length>
        <paddle_length> <paddle_thickness> <paddle_margin> <n_paddle_contrasts>
        <n_distractors_placed> <marker0_y> <marker0_x> <marker1_y> <marker1_x>

The algorithm follows the official ``snakes2.py`` (re-implemented, vectorised with numpy):

* A *paddle* is a short anti-aliased bar (``paddle_length`` long, ``paddle_thickness`` thick).
  A snake is a dashed chain of paddles. After each paddle a *pivot* lies ``margin`` beyond its
  end; the next paddle occupies ``[margin, margin + paddle_length]`` along a new direction from
  the pivot (so consecutive paddles are separated by about ``2 * margin``). The turn ``d``
  between directions has weight ``cos(min(continuity * |d|, pi/2)) ** 2`` (turns beyond
  ``pi / (2 * continuity)`` are impossible); candidate turns are stratified-jittered angles,
  candidates that collide or leave the image get weight zero, one is drawn by weight.
* Collisions are checked against an analytic occupancy map: the distance between the centre
  line of a new paddle and every paddle already placed (except the snake's own previous paddle,
  which it is joined to) must be at least ``paddle_thickness + 2 * margin``, i.e. the two
  paddles' margin-dilated footprints may not overlap (the official rasterised test).
* Two *target* snakes of ``contour_length`` paddles: the first starts in the central box that
  lies ``2 * seed_distance`` away from the borders, the second ``seed_distance`` away from the
  first; they grow alternately. If either cannot be completed the image is regenerated from a
  new sub-seed. ``n_distractors`` shorter snakes (``contour_length // 3`` paddles) are then
  seeded uniformly in free space, each tried a bounded number of times and skipped if it cannot
  be placed (as in the official ``allow_incomplete=True``).
* One circle marker at the start of one target snake; the other at the far end of the SAME
  snake (label 1) or of the OTHER snake (label 0). Both snakes start close together, so the
  marker distance barely predicts the label (docs/pathfinder.md gives the measured numbers).

Image ``i`` depends only on ``(seed, i)`` and the parameters: results do not depend on the
number of workers or on chunking. Labels are balanced exactly within each pair of indices
``(2p, 2p + 1)``.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = [
    "PATHFINDER_PARAMS",
    "PathfinderParams",
    "PathfinderSample",
    "generate_pathfinder",
    "generate_sample",
    "pathfinder_params",
    "read_metadata",
    "render_coverage",
    "render_sample_grid",
    "segment_distance",
]


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathfinderParams:
    """All knobs of one Pathfinder variant. Lengths are in pixels of the final image.

    The per-resolution defaults (``PATHFINDER_PARAMS``) are those LRA documented for its release
    (the customised arguments of the official ``snakes2_wrapper.py``).
    """

    resolution: int
    contour_length: int = 14
    paddle_length: int = 2
    paddle_thickness: float = 0.5
    marker_radius: float = 1.5
    seed_distance: float = 7.0
    continuity: float = 1.0
    paddle_margins: tuple[int, ...] = (1,)  # official paddle_margin_list: one drawn per image
    antialias_scale: int = 2  # supersampling factor per axis
    distractor_budget: int = 20  # n_distractors = distractor_budget // distractor_length
    padding: int = 1  # border band (pixels) that no paddle enters
    snake_contrast: float = 2.0  # official snake_contrast_list[0]
    paddle_contrast: float = 0.75  # official paddle_contrast_list[0]
    max_distractor_retrial: int = 4  # official max_distractor_contour_retrial
    n_turn_candidates: int = 16  # stratified turn angles tried per extension step
    n_seed_candidates: int = 16  # random seed positions tried per snake seeding
    target_batch: int = 8  # target-pair attempts grown in lock-step by the first sub-seed ...
    max_target_batch: int = 128  # ... doubling per further sub-seed up to this many
    max_target_batches: int = 1000  # sub-seeds tried before giving up on one image

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {self.resolution}")
        if self.contour_length < 1:
            raise ValueError(f"contour_length must be >= 1, got {self.contour_length}")
        if self.paddle_length <= 0 or self.paddle_thickness <= 0 or self.marker_radius <= 0:
            raise ValueError("paddle_length, paddle_thickness and marker_radius must be > 0")
        if self.continuity < 0.5:
            raise ValueError("continuity must be >= 0.5 (the maximum turn is pi / (2 * continuity))")
        if not self.paddle_margins or min(self.paddle_margins) < 0:
            raise ValueError("paddle_margins must be a non-empty tuple of non-negative numbers")
        if min(self.antialias_scale, self.n_turn_candidates, self.n_seed_candidates,
               self.target_batch, self.max_target_batch, self.max_target_batches) < 1:
            raise ValueError("antialias_scale, n_turn_candidates, n_seed_candidates, target_batch "
                             "and max_target_batches must be >= 1")

    @property
    def distractor_length(self) -> int:
        return max(1, self.contour_length // 3)

    @property
    def n_distractors(self) -> int:
        return self.distractor_budget // self.distractor_length

    @property
    def max_turn(self) -> float:
        return min(math.pi, math.pi / (2.0 * self.continuity))

    def clearance(self, margin: float) -> float:
        """Minimum centre-line distance between two paddles that are not joined."""
        return self.paddle_thickness + 2.0 * margin


#: Per-resolution defaults (hard set: contour length 14). 32 and 128 are LRA's Pathfinder and
#: Path-X; 64 and 256 are the other variants LRA's TFDS builders document.
PATHFINDER_PARAMS: dict[int, PathfinderParams] = {
    32: PathfinderParams(
        resolution=32, paddle_length=2, paddle_thickness=0.5, marker_radius=1.5, seed_distance=7,
        continuity=1.0, paddle_margins=(1,), antialias_scale=2, distractor_budget=20, padding=1,
        snake_contrast=2.0, paddle_contrast=0.75,
    ),
    64: PathfinderParams(
        resolution=64, paddle_length=5, paddle_thickness=1.0, marker_radius=2.5, seed_distance=12,
        continuity=1.8, paddle_margins=(1,), antialias_scale=2, distractor_budget=22, padding=1,
        snake_contrast=0.8, paddle_contrast=1.0,
    ),
    128: PathfinderParams(
        resolution=128, paddle_length=5, paddle_thickness=1.5, marker_radius=3.0, seed_distance=20,
        continuity=1.8, paddle_margins=(2, 3), antialias_scale=2, distractor_budget=35, padding=1,
        snake_contrast=0.9, paddle_contrast=1.0,
    ),
    256: PathfinderParams(
        resolution=256, paddle_length=5, paddle_thickness=2.0, marker_radius=5.0, seed_distance=27,
        continuity=1.8, paddle_margins=(3,), antialias_scale=2, distractor_budget=30, padding=22,
        snake_contrast=1.0, paddle_contrast=1.0,
    ),
}


def pathfinder_params(resolution: int = 32, contour_length: int = 14, **overrides) -> PathfinderParams:
    """The defaults for ``resolution`` with ``contour_length`` (6 / 9 / 14 = easy / medium / hard)
    and any field overridden."""
    if resolution not in PATHFINDER_PARAMS:
        raise ValueError(f"no Pathfinder defaults for resolution {resolution}; "
                         f"known: {sorted(PATHFINDER_PARAMS)}")
    return dataclasses.replace(PATHFINDER_PARAMS[resolution], contour_length=contour_length, **overrides)


# --------------------------------------------------------------------------------------------
# geometry (points are complex numbers x + 1j * y; pixel (row y, col x) has its centre at x+1jy)
# --------------------------------------------------------------------------------------------


def _point_segment_distance(p: np.ndarray, a: np.ndarray, ab: np.ndarray, inv_len2) -> np.ndarray:
    """Distance from points ``p`` to segments ``[a, a + ab]`` (all broadcast)."""
    ap = p - a
    t = np.clip((ap * np.conj(ab)).real * inv_len2, 0.0, 1.0)
    return np.abs(ap - t * ab)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.conj(u) * v).imag


def segment_distance(a1, b1, a2, b2) -> np.ndarray:
    """Exact distance between segments ``[a1, b1]`` and ``[a2, b2]`` (complex, broadcast)."""
    a1, b1, a2, b2 = (np.asarray(v, dtype=np.complex128) for v in (a1, b1, a2, b2))
    ab1, ab2 = b1 - a1, b2 - a2
    inv1 = 1.0 / np.maximum((ab1 * np.conj(ab1)).real, 1e-300)
    inv2 = 1.0 / np.maximum((ab2 * np.conj(ab2)).real, 1e-300)
    d = np.minimum(
        np.minimum(_point_segment_distance(a1, a2, ab2, inv2), _point_segment_distance(b1, a2, ab2, inv2)),
        np.minimum(_point_segment_distance(a2, a1, ab1, inv1), _point_segment_distance(b2, a1, ab1, inv1)),
    )
    d1, d2 = _cross(ab1, a2 - a1), _cross(ab1, b2 - a1)
    d3, d4 = _cross(ab2, a1 - a2), _cross(ab2, b1 - a2)
    crossing = (d1 * d2 < 0) & (d3 * d4 < 0)
    return np.where(crossing, 0.0, d)


_PRESELECT_MIN = 4


def _clip01(t: np.ndarray) -> np.ndarray:
    np.maximum(t, 0.0, out=t)
    return np.minimum(t, 1.0, out=t)


class _Scenes:
    """``B`` independent scenes grown in lock-step (row ``b`` = one attempt at an image).

    All rows hold the same number ``n`` of paddles (every alive row places the same paddle of
    the same snake at each step), so per-snake paddle indices are shared and every test is one
    vectorised numpy pass over (rows, candidates, placed paddles).
    """

    def __init__(self, p: PathfinderParams, margins: np.ndarray, capacity: int) -> None:
        self.p = p
        self.L = float(p.paddle_length)
        self.inv_len2 = 1.0 / (self.L * self.L)
        self.m = np.asarray(margins, np.float64)  # (B,)
        self.clear = p.paddle_thickness + 2.0 * self.m  # (B,) see PathfinderParams.clearance
        lo, hi = float(p.padding), float(p.resolution - 1 - p.padding)
        self.box_c = 0.5 * (lo + hi) * (1 + 1j)
        self.box_h = 0.5 * (hi - lo)
        # With clearance > L / 2, two crossing paddles always have an endpoint within L / 2 of
        # the other one, so the endpoint distances alone detect crossings; else test explicitly.
        self.cross_test = bool(np.any(self.clear <= 0.5 * self.L + 1e-9))
        B = self.m.shape[0]
        self.a = np.zeros((B, capacity), np.complex128)  # paddle start
        self.ab = np.zeros((B, capacity), np.complex128)  # paddle vector (length L)
        self.ends = np.zeros((B, capacity, 2), np.complex128)  # (start, end)
        self.n = 0

    @property
    def rows(self) -> int:
        return self.m.shape[0]

    def keep(self, rows: np.ndarray) -> None:
        self.m, self.clear = self.m[rows], self.clear[rows]
        self.a, self.ab, self.ends = self.a[rows], self.ab[rows], self.ends[rows]

    def add(self, a: np.ndarray, ab: np.ndarray) -> int:
        n = self.n
        self.a[:, n] = a
        self.ab[:, n] = ab
        self.ends[:, n, 0] = a
        self.ends[:, n, 1] = a + ab
        self.n = n + 1
        return n

    def free(self, ca: np.ndarray, cab: np.ndarray, skip: int = -1, pivot: np.ndarray | None = None) -> np.ndarray:
        """(B, K) bool: candidate paddles ``[ca, ca + cab]`` (shape (B, K)) that lie inside the
        image box and keep the clearance from every placed paddle except number ``skip``.

        With ``pivot`` (B,) given, every candidate must lie within ``L + m`` of it; then only the
        placed paddles within reach of the pivot are tested (an exact pre-selection).
        """
        ends = np.empty(ca.shape + (2,), np.complex128)  # (B, K, 2)
        ends[..., 0] = ca
        np.add(ca, cab, out=ends[..., 1])
        e = ends - self.box_c
        e = np.maximum(np.abs(e.real), np.abs(e.imag))
        inside = np.maximum(e[..., 0], e[..., 1]) <= self.box_h
        n = self.n
        if n == 0 or (n == 1 and skip == 0):
            return inside
        ea, eab, pe = self.a[:, :n], self.ab[:, :n], self.ends[:, :n]
        if pivot is not None and n > _PRESELECT_MIN:
            ap = pivot[:, None] - ea
            t = _clip01((ap * np.conj(eab)).real * self.inv_len2)
            dp = np.abs(ap - t * eab)  # (B, n) pivot -> placed paddle
            if 0 <= skip < n:
                dp[:, skip] = np.inf
            kk = int((dp < (self.L + self.m + self.clear + 1e-6)[:, None]).sum(axis=1).max())
            if kk == 0:
                return inside
            # the kk nearest paddles of every row include all those within reach (not `skip`)
            sel = np.argpartition(dp, kk - 1, axis=1)[:, :kk] if kk < n else None
            if sel is not None:
                rows = np.arange(sel.shape[0])[:, None]
                ea, eab, pe = ea[rows, sel], eab[rows, sel], pe[rows, sel]
            skip = -1
        # candidate endpoints -> placed paddles (B, K, 2, n'); placed endpoints -> candidates (B, K, n', 2)
        ea4, eab4 = ea[:, None, None, :], eab[:, None, None, :]
        ap = ends[..., None] - ea4
        t = _clip01((ap * np.conj(eab4)).real * self.inv_len2)
        d2 = np.abs(ap - t * eab4)
        d = np.minimum(d2[:, :, 0], d2[:, :, 1])
        aq = pe[:, None, :, :] - ca[..., None, None]
        t = _clip01((aq * np.conj(cab)[..., None, None]).real * self.inv_len2)
        d2 = np.abs(aq - t * cab[..., None, None])
        np.minimum(d, d2[..., 0], out=d)
        np.minimum(d, d2[..., 1], out=d)
        if self.cross_test:
            ea3, eab3 = ea[:, None, :], eab[:, None, :]  # (B, 1, n')
            cb, cab2, ca2 = (ca + cab)[..., None], cab[..., None], ca[..., None]
            c1 = _cross(cab2, ea3 - ca2)
            c2 = _cross(cab2, ea3 + eab3 - ca2)
            c3 = _cross(eab3, ca2 - ea3)
            c4 = _cross(eab3, cb - ea3)
            d[(c1 * c2 < 0) & (c3 * c4 < 0)] = 0.0
        if 0 <= skip < n:
            d[..., skip] = np.inf
        return inside & (d.min(axis=-1) >= self.clear[:, None])


def _choose_rows(rng: np.random.Generator, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``w`` (B, K) an index drawn proportionally to the weights, and whether the row
    had any weight at all."""
    c = np.cumsum(w, axis=1)
    total = c[:, -1]
    r = rng.random(w.shape[0]) * total
    k = np.minimum((c <= r[:, None]).sum(axis=1), w.shape[1] - 1)
    return k, total > 0


class _Snakes:
    """Growth state of one snake in every row."""

    def __init__(self, idx: int, a: np.ndarray, ab: np.ndarray, m: np.ndarray, L: float) -> None:
        u = ab / L
        self.idx = [idx]  # paddle numbers (shared by all rows)
        self.tip = a  # free end of the first paddle (a marker may go here)
        self.head = a + ab  # free end of the last paddle
        self.pivot = self.head + m * u
        self.theta = np.angle(u)

    def keep(self, rows: np.ndarray) -> None:
        self.tip, self.head = self.tip[rows], self.head[rows]
        self.pivot, self.theta = self.pivot[rows], self.theta[rows]


class _Grower:
    """Seeding and extension of snakes, vectorised over the rows of a :class:`_Scenes`."""

    def __init__(self, p: PathfinderParams, scenes: _Scenes, rng: np.random.Generator) -> None:
        self.p, self.s, self.rng = p, scenes, rng
        K = p.n_turn_candidates
        self.turn_grid = -p.max_turn + np.arange(K) * (2.0 * p.max_turn / K)
        self.turn_step = 2.0 * p.max_turn / K

    def seed(self, tails: np.ndarray) -> tuple[_Snakes, np.ndarray]:
        """First paddle of a snake per row at the first free candidate tail ``tails`` (B, M),
        random orientation. Returns the snakes and which rows found a place."""
        s = self.s
        ab = s.L * np.exp(1j * self.rng.uniform(-math.pi, math.pi, tails.shape))
        ok = s.free(tails, ab)
        k = ok.argmax(axis=1)
        r = np.arange(tails.shape[0])
        a, ab = tails[r, k], ab[r, k]
        idx = s.add(a, ab)
        return _Snakes(idx, a, ab, s.m, s.L), ok[r, k]

    def extend(self, sn: _Snakes) -> np.ndarray:
        """Add one paddle to ``sn`` in every row; returns which rows succeeded (the others hold
        garbage and must be dropped)."""
        p, s, rng = self.p, self.s, self.rng
        B = s.rows
        delta = self.turn_grid + rng.random((B, self.turn_grid.shape[0])) * self.turn_step
        w = np.cos(delta * p.continuity) ** 2  # |delta| * continuity <= pi / 2 by construction
        phi = sn.theta[:, None] + delta
        u = np.exp(1j * phi)
        ca = sn.pivot[:, None] + s.m[:, None] * u
        cab = s.L * u
        k, ok = _choose_rows(rng, w * s.free(ca, cab, skip=sn.idx[-1], pivot=sn.pivot))
        r = np.arange(B)
        a, ab, uk = ca[r, k], cab[r, k], u[r, k]
        sn.idx.append(s.add(a, ab))
        sn.head = a + ab
        sn.pivot = sn.head + s.m * uk
        sn.theta = phi[r, k]
        return ok


def _uniform_points(rng: np.random.Generator, shape, lo: float, hi: float) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape) + 1j * rng.uniform(lo, hi, size=shape)


def _keep(rows_ok: np.ndarray, scenes: _Scenes, snakes: list[_Snakes], orig: np.ndarray) -> np.ndarray:
    if rows_ok.all():
        return orig
    rows = np.flatnonzero(rows_ok)
    scenes.keep(rows)
    for sn in snakes:
        sn.keep(rows)
    return orig[rows]


def _place_targets(p: PathfinderParams, rng: np.random.Generator, batch: int, margin: float):
    """Try ``batch`` independent target-snake pairs in lock-step; return the scene, the two
    snakes and the batch row of the first pair (in batch order) that completed, or None."""
    cap = 2 * p.contour_length + p.n_distractors * p.distractor_length + 2
    s = _Scenes(p, np.full(batch, float(margin)), cap)
    g = _Grower(p, s, rng)
    orig = np.arange(batch)
    res, M = p.resolution, p.n_seed_candidates
    lo, hi = 2.0 * p.seed_distance, res - 1 - 2.0 * p.seed_distance
    if lo > hi:
        lo = hi = 0.5 * (res - 1)
    first, ok = g.seed(_uniform_points(rng, (batch, M), lo, hi))
    orig = _keep(ok, s, [first], orig)
    if orig.size == 0:
        return None
    ring = p.seed_distance * np.exp(1j * rng.uniform(-math.pi, math.pi, (orig.size, M)))
    second, ok = g.seed(first.tip[:, None] + ring)
    snakes = [first, second]
    orig = _keep(ok, s, snakes, orig)
    for _ in range(p.contour_length - 1):
        for sn in snakes:
            if orig.size == 0:
                return None
            orig = _keep(g.extend(sn), s, snakes, orig)
    if orig.size == 0:
        return None
    # the winner: the first surviving row (rows stay in batch order)
    s.keep(np.array([0]))
    for sn in snakes:
        sn.keep(np.array([0]))
    return s, snakes, int(orig[0])


def _place_distractors(p: PathfinderParams, s: _Scenes, rng: np.random.Generator) -> list[_Snakes]:
    """Distractor snakes, one after the other, in the single-row scene ``s``. The bounded
    retries of one snake run side by side (the scene copied into one row per try); the first
    try that completes is kept, as if they had run in sequence. A snake whose tries all fail
    is skipped."""
    g = _Grower(p, s, rng)
    placed = []
    tries = p.max_distractor_retrial + 1
    lo, hi = float(p.padding), float(p.resolution - 1 - p.padding)
    for _ in range(p.n_distractors):
        mark = s.n
        s.keep(np.zeros(tries, np.int64))
        sn, ok = g.seed(_uniform_points(rng, (tries, p.n_seed_candidates), lo, hi))
        for _ in range(p.distractor_length - 1):
            ok &= g.extend(sn)
        win = int(ok.argmax())
        s.keep(np.array([win]))
        if ok[win]:
            sn.keep(np.array([win]))
            placed.append(sn)
        else:
            s.n = mark  # roll the failed snake back
    return placed


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


def _stamp(canvas: np.ndarray, pad: int, centres: np.ndarray, radius: float, aa: int, coverage) -> None:
    """Max-composite local windows into ``canvas`` (which has ``pad`` extra pixels per side).

    ``coverage(z, i)`` gets the sub-pixel centres ``z`` (shape (n, W*aa, W*aa), complex) and
    returns their coverage in [0, 1]; it is box-averaged down to pixels.
    """
    if centres.size == 0:
        return
    r = int(math.ceil(radius))
    W = 2 * r + 1
    ox = np.rint(centres.real).astype(np.int64) - r
    oy = np.rint(centres.imag).astype(np.int64) - r
    sub = (np.arange(W * aa) + 0.5) / aa - 0.5  # sub-pixel centre offsets from window origin
    z = (ox[:, None, None] + sub[None, None, :]) + 1j * (oy[:, None, None] + sub[None, :, None])
    cov = coverage(z).reshape(len(centres), W, aa, W, aa).mean(axis=(2, 4))
    jj = np.arange(W)
    stride = canvas.shape[1]
    flat = ((oy[:, None, None] + pad + jj[None, :, None]) * stride
            + (ox[:, None, None] + pad + jj[None, None, :]))
    np.maximum.at(canvas.reshape(-1), flat.reshape(-1), cov.reshape(-1))


def _paddle_coverage(a: np.ndarray, ab: np.ndarray, thickness: float, aa: int):
    """Sub-pixel coverage of flat-ended bars ``[a, a + ab]`` of width ``thickness`` (PIL's
    ``ImageDraw.line`` shape, which the official generator drew): the product of the overlaps of
    each sub-pixel's box profile (width 1/aa) with the bar along and across its axis."""
    hw, h = 0.5 * thickness, 0.5 / aa
    length = np.abs(ab)
    u = np.conj(ab / np.maximum(length, 1e-300))[:, None, None]  # rotates the bar onto +x
    length = length[:, None, None]

    def coverage(z):
        w = (z - a[:, None, None]) * u
        s, q = w.real, np.abs(w.imag)  # along the bar from its start, distance from its axis
        along = np.clip(np.minimum(s + h, length) - np.maximum(s - h, 0.0), 0.0, None)
        across = np.clip(np.minimum(q + h, hw) - np.maximum(q - h, -hw), 0.0, None)
        return along * across * (aa * aa)

    return coverage


def _disk_coverage(c: np.ndarray, radius: float, aa: int):
    def coverage(z):
        return np.clip(0.5 - (np.abs(z - c[:, None, None]) - radius) * aa, 0.0, 1.0)

    return coverage


def render_coverage(p: PathfinderParams, a: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """Float coverage in [0, 1] (resolution x resolution) of paddles ``[a, a + ab]`` (complex)."""
    res, aa = p.resolution, p.antialias_scale
    a = np.asarray(a, np.complex128).reshape(-1)
    ab = np.asarray(ab, np.complex128).reshape(-1)
    radius = 0.5 * float(np.abs(ab).max(initial=0.0)) + 0.5 * p.paddle_thickness + 1.0
    pad = int(math.ceil(radius)) + 2
    canvas = np.zeros((res + 2 * pad, res + 2 * pad))
    _stamp(canvas, pad, a + 0.5 * ab, radius, aa, _paddle_coverage(a, ab, p.paddle_thickness, aa))
    return canvas[pad:pad + res, pad:pad + res]


def _render_image(p: PathfinderParams, a: np.ndarray, ab: np.ndarray, markers: np.ndarray) -> np.ndarray:
    res, aa = p.resolution, p.antialias_scale
    radius = 0.5 * p.paddle_length + 0.5 * p.paddle_thickness + 1.0
    mradius = p.marker_radius + 1.0
    pad = int(math.ceil(max(radius, mradius))) + 2
    canvas = np.zeros((res + 2 * pad, res + 2 * pad))
    _stamp(canvas, pad, a + 0.5 * ab, radius, aa, _paddle_coverage(a, ab, p.paddle_thickness, aa))
    img = np.minimum(canvas[pad:pad + res, pad:pad + res] * (p.snake_contrast * p.paddle_contrast), 1.0)
    canvas[:] = 0.0
    _stamp(canvas, pad, markers, mradius, aa, _disk_coverage(markers, p.marker_radius, aa))
    img = np.maximum(img, canvas[pad:pad + res, pad:pad + res])
    # explicit 0-255 scaling (the official imsave stretched each float image to its max)
    return np.rint(img * (255.0 / img.max())).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# one image
# --------------------------------------------------------------------------------------------


@dataclass
class PathfinderSample:
    """One generated image and its ground truth (points are (y, x) = (row, col) in pixels)."""

    image: np.ndarray  # (R, R) uint8
    label: int  # 1 = both markers on the same snake
    markers: np.ndarray  # (2, 2) float: origin marker, terminal marker
    snakes: list[np.ndarray]  # each (n_paddles, 2, 2): paddle endpoints; [0], [1] = targets
    origin_snake: int  # which target snake (0 / 1) carries the origin marker
    margin: float
    attempts: int  # sub-seeds used (1 = the first worked)

    @property
    def n_distractors(self) -> int:
        return len(self.snakes) - 2


def _label(seed: int, index: int) -> int:
    # exact balance within each pair of indices, still a function of (seed, index) only
    flip = int(np.random.default_rng([seed, 0x5A17, index // 2]).integers(2))
    return flip ^ (index & 1)


def _margin(p: PathfinderParams, seed: int, index: int) -> float:
    # drawn once per image, before any retry (as the official does), so that the retries do
    # not favour the margins that are easier to place
    if len(p.paddle_margins) == 1:
        return float(p.paddle_margins[0])
    k = int(np.random.default_rng([seed, 0x3A26, index]).integers(len(p.paddle_margins)))
    return float(p.paddle_margins[k])


def generate_sample(p: PathfinderParams, seed: int, index: int) -> PathfinderSample:
    """Generate image ``index`` of the data set with ``seed`` (depends on nothing else)."""
    label = _label(seed, index)
    margin = _margin(p, seed, index)
    tried = 0
    for batch in range(p.max_target_batches):
        B = min(p.target_batch << min(batch, 30), max(p.max_target_batch, p.target_batch))
        rng = np.random.default_rng([seed, index, batch])
        found = _place_targets(p, rng, B, margin)
        if found is None:
            tried += B
            continue
        scenes, targets, row = found
        rng = np.random.default_rng([seed, index, batch, 1])
        distractors = _place_distractors(p, scenes, rng)
        origin = int(rng.integers(2))
        terminal = origin if label == 1 else 1 - origin
        mk = np.array([targets[origin].tip[0], targets[terminal].head[0]])
        n = scenes.n
        image = _render_image(p, scenes.a[0, :n], scenes.ab[0, :n], mk)
        snakes = []
        for sn in targets + distractors:
            e = scenes.ends[0, sn.idx]  # (n_paddles, 2) complex
            snakes.append(np.stack((e.imag, e.real), axis=-1))
        return PathfinderSample(
            image=image, label=label, markers=np.stack((mk.imag, mk.real), axis=-1),
            snakes=snakes, origin_snake=origin, margin=float(scenes.m[0]),
            attempts=tried + row + 1,
        )
    raise RuntimeError(f"Pathfinder image {index} (seed {seed}): no target pair could be placed in "
                       f"{tried} attempts; parameters too crowded? {p}")


def _metadata_line(p: PathfinderParams, k: int, j: int, s: PathfinderSample) -> str:
    margin = int(s.margin) if float(s.margin).is_integer() else s.margin
    (y0, x0), (y1, x1) = s.markers
    return (f"imgs/{k} sample_{j}.png {j} {s.label} {float(p.continuity)!r} {p.contour_length} "
            f"{p.distractor_length} {p.paddle_length} {float(p.paddle_thickness)!r} {margin} 1 "
            f"{s.n_distractors} {y0:.3f} {x0:.3f} {y1:.3f} {x1:.3f}")


# --------------------------------------------------------------------------------------------
# the data set
# --------------------------------------------------------------------------------------------


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG")


def _work(job: tuple) -> list[tuple[int, int, str]]:
    p, seed, task_dir, start, stop, per_folder = job
    task_dir = Path(task_dir)
    out = []
    for i in range(start, stop):
        k, j = divmod(i, per_folder)
        s = generate_sample(p, seed, i)
        _save_png(task_dir / "imgs" / str(k) / f"sample_{j}.png", s.image)
        out.append((k, j, _metadata_line(p, k, j, s)))
    return out


def _write_metadata(task_dir: Path, k: int, rows: list[tuple[int, str]]) -> None:
    rows.sort()
    path = task_dir / "metadata" / f"{k}.npy"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for _, line in rows))
    os.replace(tmp, path)


def generate_pathfinder(
    out_dir,
    *,
    resolution: int = 32,
    contour_length: int = 14,
    n_images: int = 200_000,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    images_per_folder: int = 1000,
    overrides: Mapping | None = None,
    chunk_size: int | None = None,
    mp_context: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate a Pathfinder data set in the official on-disk layout; returns the task folder
    ``out_dir/pathfinder{resolution}/curv_contour_length_{contour_length}``.

    Image ``i`` goes to ``imgs/{i // images_per_folder}/sample_{i % images_per_folder}.png`` and
    depends only on ``(seed, i)``. Work is spread over ``workers`` processes (default
    ``os.cpu_count()``) in chunks of ``chunk_size`` indices. ``overrides`` replaces fields of
    :class:`PathfinderParams` (e.g. ``{"distractor_budget": 0}``). A task folder that already
    holds metadata is refused unless ``overwrite=True``, which first deletes its ``imgs/`` and
    ``metadata/`` (stale metadata files would otherwise be read as part of the new set).
    """
    overrides = dict(overrides or {})
    if {"resolution", "contour_length"} & overrides.keys():
        raise ValueError("pass resolution and contour_length as arguments, not in overrides")
    p = pathfinder_params(resolution, contour_length, **overrides)
    if n_images < 0 or images_per_folder < 1:
        raise ValueError("n_images must be >= 0 and images_per_folder >= 1")
    task_dir = Path(out_dir) / f"pathfinder{resolution}" / f"curv_contour_length_{contour_length}"
    old = sorted((task_dir / "metadata").glob("*.npy")) if (task_dir / "metadata").is_dir() else []
    if old:
        if not overwrite:
            raise FileExistsError(f"{task_dir} already holds a data set ({len(old)} metadata files); "
                                  "pass overwrite=True to replace it")
        for sub in ("metadata", "imgs"):
            shutil.rmtree(task_dir / sub, ignore_errors=True)
    n_folders = -(-n_images // images_per_folder)
    (task_dir / "metadata").mkdir(parents=True, exist_ok=True)
    for k in range(n_folders):
        (task_dir / "imgs" / str(k)).mkdir(parents=True, exist_ok=True)

    workers = max(1, int(workers if workers is not None else (os.cpu_count() or 1)))
    if chunk_size is None:
        chunk_size = int(min(256, max(8, -(-n_images // (8 * workers)))))
    jobs, remaining, rows = [], {}, {}
    for k in range(n_folders):
        lo, hi = k * images_per_folder, min(n_images, (k + 1) * images_per_folder)
        remaining[k], rows[k] = 0, []
        for start in range(lo, hi, chunk_size):
            jobs.append((p, seed, str(task_dir), start, min(hi, start + chunk_size), images_per_folder))
            remaining[k] += 1

    from tqdm.auto import tqdm

    bar = tqdm(total=n_images, disable=not progress, unit="img",
               desc=f"pathfinder{resolution} cl{contour_length}")

    def collect(result: list[tuple[int, int, str]], k: int) -> None:
        rows[k].extend((j, line) for _, j, line in result)
        remaining[k] -= 1
        if remaining[k] == 0:
            _write_metadata(task_dir, k, rows.pop(k))
        bar.update(len(result))

    try:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                collect(_work(job), job[3] // images_per_folder)
        else:
            if mp_context is None and "fork" in multiprocessing.get_all_start_methods():
                mp_context = "fork"  # workers need only numpy + PIL; avoids re-importing torch
            ctx = multiprocessing.get_context(mp_context)
            ex = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx)
            try:
                pending = {ex.submit(_work, job): job[3] // images_per_folder for job in jobs}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        collect(fut.result(), pending.pop(fut))
            except BaseException:
                ex.shutdown(wait=False, cancel_futures=True)
                raise
            ex.shutdown(wait=True)
    finally:
        bar.close()
    return task_dir


# --------------------------------------------------------------------------------------------
# reading back + a picture
# --------------------------------------------------------------------------------------------


def read_metadata(task_dir) -> list[list[str]]:
    """All metadata rows (whitespace-split fields) of a task folder, files in numeric order."""
    files = sorted((Path(task_dir) / "metadata").glob("*.npy"),
                   key=lambda f: (0, int(f.stem), "") if f.stem.isdigit() else (1, 0, f.stem))
    rows = []
    for f in files:
        rows.extend(line.split() for line in f.read_text().splitlines() if line.strip())
    return rows


def render_sample_grid(task_dir, out_png, n: int = 16, *, ncols: int = 8, title: str | None = None) -> Path:
    """Write a PNG grid of the first ``n`` samples of ``task_dir``, each titled with its label.

    ``task_dir`` may also be a list of task folders: each gets its own block of rows (e.g. a
    32 px and a 128 px set in one picture). Drawn with matplotlib's Agg canvas (no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    dirs = [task_dir] if isinstance(task_dir, (str, os.PathLike)) else list(task_dir)
    blocks = []  # per task folder: [(image, caption)], name
    for d in map(Path, dirs):
        items = []
        for row in read_metadata(d)[:n]:
            img = np.asarray(Image.open(d / row[0] / row[1]).convert("L"))
            same = "same" if int(row[3]) == 1 else "different"
            items.append((img, f"{row[0][5:]}/{row[1]}\nlabel {row[3]} ({same})"))
        blocks.append((items, f"{d.parent.name}/{d.name}"))
    ncols = max(1, min(ncols, max((len(items) for items, _ in blocks), default=1)))
    rows_of = [max(1, -(-len(items) // ncols)) for items, _ in blocks]
    nrows = sum(rows_of)
    fig = Figure(figsize=(1.55 * ncols, 1.85 * nrows + (0.4 if title else 0.0)), dpi=110)
    FigureCanvasAgg(fig)
    r0 = 0
    for (items, name), nr in zip(blocks, rows_of):
        for i, (img, cap) in enumerate(items):
            ax = fig.add_subplot(nrows, ncols, (r0 + i // ncols) * ncols + i % ncols + 1)
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(cap, fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            if i % ncols == 0:
                ax.set_ylabel(f"{name}\n{img.shape[0]} px", fontsize=6)
        r0 += nr
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png
