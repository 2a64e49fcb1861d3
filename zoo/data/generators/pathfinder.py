"""Offline Pathfinder / Path-X generator: the "snakes2" task of Linsley, Kim, Veerabadran, Windolf
and Serre (2018), "Learning long-range spatial dependencies with horizontal gated recurrent units"
(NeurIPS), with the settings the Long Range Arena release used.

Writes the layout of the official release, so one loader reads generated and downloaded data::

    out_dir/pathfinder{R}/<difficulty>/imgs/<k>/sample_<j>.png     8-bit grayscale
    out_dir/pathfinder{R}/<difficulty>/metadata/<k>.npy            TEXT, one line per image

with ``<difficulty>`` = ``curv_baseline`` (contour length 6, the release's name),
``curv_contour_length_9`` or ``curv_contour_length_14``. A metadata line holds the 11 columns of
the official generator, in its order, then extra columns of ours (readers of the official files
only use fields 0, 1 and 3)::

    imgs/<k> sample_<j>.png <j> <label> <continuity> <contour_length> <distractor_length>
        <paddle_length> <paddle_thickness> <paddle_margin> <n_paddle_contrasts>
        <n_distractors_placed> <marker0_y> <marker0_x> <marker1_y> <marker1_x>

The process is the one of the official ``snakes2.py`` / ``snakes.py`` (github.com/drewlinsley/
pathfinder, commit ab9c130), re-implemented here with numpy and vectorised over many attempts at
once; docs/pathfinder.md gives the measured comparison with images of the official code.

* **Grid.** Everything lives on the integer pixel grid of the final image. A *paddle* is drawn
  from an integer start pixel in a direction ``phi``: a 1-px (32 px) or 3-px (128 px) wide line
  of ``paddle_length * antialias_scale`` pixels on a local canvas ``antialias_scale`` times finer
  (Bresenham / the filled quad of Pillow's ``ImageDraw.line``), reduced with Pillow's Lanczos
  resampling (fixed-point, horizontal pass first) by a factor of about 1.9 (the official local
  canvas is ``2 P aa + 1`` pixels reduced to ``2 P + 1``, ``P = length + ceil(thickness) +
  margin``). Its *mask* is the same line dilated by a disc of radius ``margin * aa`` and reduced
  the same way. Both are computed once per direction and cached.
* **Occupancy.** A float mask (max of the masks of the placed paddles, 1 on the ``padding``
  border) decides where paddles may go: a new paddle is accepted when ``max(mask + its mask) <
  1.8``; a snake's previous paddle is merged into the mask only after the next one is placed (so
  a snake never collides with its own neighbour), the two targets see each other's latest paddle
  only one step late, and the first target's final paddle is never merged (as in the official).
* **Growth.** From the previous *pivot* and direction ``theta`` the new pivot is
  ``ceil(pivot + (length + 2 margin) * (sin, cos) theta)``; candidate heads are the distinct
  integer points (truncated) of a circle of radius ``length + margin`` around it, one sample per
  pixel of arc; the weight of a candidate is ``cos(min(continuity * |turn|, pi/2))^2`` times
  ``1 - (mask dilated by a disc of radius margin)`` at the candidate; one is drawn by weight, the
  paddle is drawn back from it towards the pivot, and up to ``max_paddle_retrial + 1`` draws are
  tested for the collision rule above; none passes, or total weight < 1e-4: the snake fails.
* **Seeds.** A snake's first paddle starts at a pixel drawn uniformly among those where the
  paddle's mask (its fully covered pixels, shifted by one pixel as the official's structuring
  element is) touches no mask value > 0.3, direction a whole number of degrees; its pivot lies
  ``margin`` behind its start. Where that structuring element lies wholly outside the image at
  some pixel, OpenCV's dilation writes -DBL_MAX and the official search finds no coordinate at
  all: seeds in such directions always fail (330 of 360 directions at 32 px). The first target
  seeds in the central box ``2 * seed_distance`` away from the borders; the second one
  ``round(seed_distance * (sin, cos) a)`` from the first one's start (``a`` a whole number of
  degrees), unchecked against the first. The two targets of ``contour_length`` paddles grow
  alternately; if either fails the pair is discarded and a new one is tried, until one
  completes (at 32 px, contour length 14, about 1 pair in 330 completes).
* **Distractors.** ``n_distractors`` snakes of ``contour_length // 3`` paddles, each seeded
  uniformly in free space and grown the same way, ``max_distractor_retrial + 1`` tries each, then
  skipped (official ``allow_incomplete``); seeding stops when less than 1 % of the image is free.
  Few fit at 32 px (about 1.1 of 5 at contour length 14): the official images are mostly targets.
* **Ink.** Target paddles are drawn with contrast ``snake_contrast * paddle_contrast``,
  distractor paddles with ``snake_contrast`` (1.5 and 2.0 at 32 px: distractors are brighter);
  markers are discs of ``marker_radius`` drawn on the fine grid centred on the fine pixel
  ``aa * (y, x)`` and Lanczos-reduced, one at the start of a target snake, the other at the end
  of the SAME snake (label 1) or of the OTHER one (label 0). The image is the maximum of paddles
  and markers, stretched so that its maximum is 255 (``scipy.misc.imsave``'s ``bytescale``).

Ours: image ``i`` depends only on ``(seed, i)`` and the parameters (not on workers or chunking),
and labels are balanced exactly within each pair of indices ``(2p, 2p + 1)``. Target attempts
run as the rows of one array, and the first row (in order) that completes is kept, which is the
same distribution as trying them one after another; so are the tries of a distractor.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import multiprocessing
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from zoo._io import atomic_write_text

__all__ = [
    "PATHFINDER_PARAMS",
    "PathfinderParams",
    "PathfinderSample",
    "difficulty_dir_name",
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

    The per-resolution defaults (``PATHFINDER_PARAMS``) are the arguments LRA's TFDS builders
    list as customised in the official ``snakes2_wrapper.py``, the wrapper's own values elsewhere.
    """

    resolution: int
    contour_length: int = 14
    paddle_length: int = 2
    paddle_thickness: float = 0.5
    marker_radius: float = 1.5
    seed_distance: int = 7
    continuity: float = 1.0
    paddle_margins: tuple[int, ...] = (1,)  # official paddle_margin_list: one drawn per image
    antialias_scale: int = 2  # the fine grid of paddles and markers, per axis
    distractor_budget: int = 20  # n_distractors = distractor_budget // distractor_length
    padding: int = 1  # border band (pixels) that is occupied from the start
    snake_contrast: float = 2.0  # official snake_contrast_list[0]
    paddle_contrast: float = 0.75  # official paddle_contrast_list[0]
    max_paddle_retrial: int = 2  # official max_paddle_retrial: extra draws / seed tries
    max_distractor_retrial: int = 4  # official max_distractor_contour_retrial
    min_free_fraction: float = 0.01  # official stop_with_availability (distractor seeding)
    target_batch: int = 32  # target-pair attempts grown in lock-step by the first sub-seed ...
    max_target_batch: int = 512  # ... doubling per further sub-seed up to this many
    max_target_batches: int = 1000  # sub-seeds tried before giving up on one image

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {self.resolution}")
        if self.contour_length < 1:
            raise ValueError(f"contour_length must be >= 1, got {self.contour_length}")
        if self.paddle_length < 1 or self.paddle_thickness <= 0 or self.marker_radius <= 0:
            raise ValueError("paddle_length must be >= 1, paddle_thickness and marker_radius > 0")
        if int(self.paddle_length) != self.paddle_length or int(self.seed_distance) != self.seed_distance:
            raise ValueError("paddle_length and seed_distance are whole pixels")
        if self.antialias_scale < 1 or (self.paddle_thickness * self.antialias_scale) % 1:
            raise ValueError("antialias_scale must be >= 1 and paddle_thickness * antialias_scale "
                             "a whole number (as the official draw_line_n_mask requires)")
        if self.continuity <= 0:
            raise ValueError("continuity must be > 0")
        if not self.paddle_margins or min(self.paddle_margins) < 0 or any(int(m) != m for m in self.paddle_margins):
            raise ValueError("paddle_margins must be a non-empty tuple of whole non-negative pixels")
        if min(self.target_batch, self.max_target_batch, self.max_target_batches) < 1:
            raise ValueError("target_batch, max_target_batch and max_target_batches must be >= 1")
        if self.max_paddle_retrial < 0 or self.max_distractor_retrial < 0:
            raise ValueError("retrial counts must be >= 0")

    @property
    def distractor_length(self) -> int:
        return max(1, self.contour_length // 3)

    @property
    def n_distractors(self) -> int:
        return self.distractor_budget // self.distractor_length

    @property
    def max_turn(self) -> float:
        """Largest turn with non-zero weight, ``pi / (2 continuity)`` (before pixel rounding)."""
        return min(math.pi, math.pi / (2.0 * self.continuity))

    @property
    def target_contrast(self) -> float:
        return self.snake_contrast * self.paddle_contrast

    @property
    def distractor_contrast(self) -> float:
        return self.snake_contrast  # the official passes snake_contrast_list alone to distractors

    @property
    def difficulty_dir(self) -> str:
        return difficulty_dir_name(self.contour_length)


def difficulty_dir_name(contour_length: int) -> str:
    """Folder of one difficulty, as in the release: ``curv_baseline`` for contour length 6."""
    return "curv_baseline" if contour_length == 6 else f"curv_contour_length_{contour_length}"


#: Per-resolution defaults (hard set: contour length 14). 32 and 128 are LRA's Pathfinder and
#: Path-X; 64 and 256 are the other variants LRA's TFDS builders document.
PATHFINDER_PARAMS: dict[int, PathfinderParams] = {
    32: PathfinderParams(
        resolution=32, paddle_length=2, paddle_thickness=0.5, marker_radius=1.5, seed_distance=7,
        continuity=1.0, paddle_margins=(1,), antialias_scale=2, distractor_budget=20, padding=1,
        snake_contrast=2.0, paddle_contrast=0.75, target_batch=512, max_target_batch=4096,
    ),
    64: PathfinderParams(
        resolution=64, paddle_length=5, paddle_thickness=1.0, marker_radius=2.5, seed_distance=12,
        continuity=1.8, paddle_margins=(1,), antialias_scale=2, distractor_budget=22, padding=1,
        snake_contrast=0.8, paddle_contrast=1.0,
    ),
    128: PathfinderParams(
        resolution=128, paddle_length=5, paddle_thickness=1.5, marker_radius=3.0, seed_distance=20,
        continuity=1.8, paddle_margins=(2, 3), antialias_scale=2, distractor_budget=35, padding=1,
        snake_contrast=0.9, paddle_contrast=1.0, target_batch=64, max_target_batch=256,
    ),
    256: PathfinderParams(
        resolution=256, paddle_length=5, paddle_thickness=2.0, marker_radius=5.0, seed_distance=27,
        continuity=1.8, paddle_margins=(3,), antialias_scale=2, distractor_budget=30, padding=22,
        snake_contrast=1.0, paddle_contrast=1.0, target_batch=16, max_target_batch=128,
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
# geometry helpers
# --------------------------------------------------------------------------------------------


def _point_segment_distance(p: np.ndarray, a: np.ndarray, ab: np.ndarray, inv_len2) -> np.ndarray:
    """Distance from points ``p`` to segments ``[a, a + ab]`` (all broadcast)."""
    ap = p - a
    t = np.clip((ap * np.conj(ab)).real * inv_len2, 0.0, 1.0)
    return np.abs(ap - t * ab)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.conj(u) * v).imag


def segment_distance(a1, b1, a2, b2) -> np.ndarray:
    """Exact distance between segments ``[a1, b1]`` and ``[a2, b2]`` (complex ``x + iy``, broadcast)."""
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


def _flip(phi: np.ndarray) -> np.ndarray:
    """The official ``flip_by_pi``."""
    return np.where(phi < 0, phi + math.pi, phi - math.pi)


def _translate(yx: np.ndarray, phi: np.ndarray, dist: float) -> np.ndarray:
    """The official ``translate_coord``: ``ceil`` of ``yx + dist * (sin, cos) phi``; (..., 2) int."""
    out = np.empty(np.shape(yx), np.int64)
    out[..., 0] = np.ceil(yx[..., 0] + dist * np.sin(phi))
    out[..., 1] = np.ceil(yx[..., 1] + dist * np.cos(phi))
    return out


# --------------------------------------------------------------------------------------------
# Pillow-equivalent rasterising (numpy): what the official draws with ImageDraw and resizes
# with scipy.misc.imresize(..., 'lanczos') = Pillow's Lanczos resampling of 8-bit images
# --------------------------------------------------------------------------------------------

_PRECISION_BITS = 22  # Pillow's fixed point for 8-bit resampling (32 - 8 - 2)


def _lanczos3(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    px = np.pi * np.where(x == 0.0, 1.0, x)
    v = np.where(x == 0.0, 1.0, (np.sin(px) / px) * (np.sin(px / 3.0) / (px / 3.0)))
    return np.where((x >= -3.0) & (x < 3.0), v, 0.0)


@functools.lru_cache(maxsize=64)
def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) int64: Pillow's fixed-point Lanczos-3 coefficients for one axis."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 3.0 * fscale
    K = np.zeros((n_out, n_in), np.int64)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        w = _lanczos3((np.arange(lo, hi) - center + 0.5) / fscale)
        if w.sum() != 0.0:
            w = w / w.sum()
        w = w * (1 << _PRECISION_BITS)
        K[xx, lo:hi] = np.where(w < 0, w - 0.5, w + 0.5).astype(np.int64)
    K.setflags(write=False)
    return K


def _resize_u8(img: np.ndarray, n_out: int) -> np.ndarray:
    """Pillow ``Image.resize((n_out, n_out), LANCZOS)`` of square 8-bit images (..., n, n):
    horizontal pass, rounding and clipping to 8 bits, then the vertical pass."""
    K = _resize_matrix(img.shape[-1], n_out)
    half = 1 << (_PRECISION_BITS - 1)
    t = np.clip((img.astype(np.int64) @ K.T + half) >> _PRECISION_BITS, 0, 255)  # (..., n, n_out)
    return np.clip((K @ t + half) >> _PRECISION_BITS, 0, 255).astype(np.uint8)  # (..., n_out, n_out)


def _bresenham(canvas: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    """Pillow's 1-px ``ImageDraw.line`` (its Bresenham, plus the end point) into bool ``canvas``."""
    dx, dy = abs(x1 - x0), abs(y1 - y0)
    xs, ys = (1 if x1 >= x0 else -1), (1 if y1 >= y0 else -1)
    x, y = x0, y0
    pts = [(x1, y1)]
    if dx == 0 or dy == 0:
        for _ in range(max(dx, dy)):
            pts.append((x, y))
            x, y = (x + xs, y) if dy == 0 else (x, y + ys)
    elif dx > dy:
        e = 2 * dy - dx
        for _ in range(dx):
            pts.append((x, y))
            if e >= 0:
                y += ys
                e -= 2 * dx
            e += 2 * dy
            x += xs
    else:
        e = 2 * dx - dy
        for _ in range(dy):
            pts.append((x, y))
            if e >= 0:
                x += xs
                e -= 2 * dy
            e += 2 * dx
            y += ys
    for px, py in pts:
        if 0 <= py < canvas.shape[0] and 0 <= px < canvas.shape[1]:
            canvas[py, px] = True


def _round_up(f: float) -> int:
    return int(math.floor(f + 0.5)) if f >= 0 else -int(math.floor(abs(f) + 0.5))


def _round_down(f: float) -> int:
    return int(math.ceil(f - 0.5)) if f >= 0 else -int(math.ceil(abs(f) - 0.5))


def _wide_line(canvas: np.ndarray, x0: int, y0: int, x1: int, y1: int, width: int) -> None:
    """Pillow's ``ImageDraw.line`` of ``width`` > 1: a quad with integer corners, filled by
    scanlines (per row, the pixels whose centres lie within half a pixel of the span)."""
    dx, dy = x1 - x0, y1 - y0
    if dx == 0 and dy == 0:
        canvas[y0, x0] = True
        return
    big, small = math.hypot(dx, dy), (width - 1) / 2.0
    rmax, rmin = _round_up(small) / big, _round_down(small) / big
    dxmin, dxmax = _round_down(rmin * dy), _round_down(rmax * dy)
    dymin, dymax = _round_down(rmin * dx), _round_down(rmax * dx)
    v = [(x0 - dxmin, y0 + dymax), (x1 - dxmin, y1 + dymax), (x1 + dxmax, y1 - dymin), (x0 + dxmax, y0 - dymin)]
    edges = [(v[i], v[(i + 1) % 4]) for i in range(4)]
    H, W = canvas.shape
    for (ax, ay), (bx, by) in edges:
        if ay == by and 0 <= ay < H:
            canvas[ay, max(min(ax, bx), 0):max(ax, bx) + 1] = True
    for y in range(max(min(p[1] for p in v), 0), min(max(p[1] for p in v), H - 1) + 1):
        xs = [ax + (y - ay) * (bx - ax) / (by - ay) for (ax, ay), (bx, by) in edges
              if ay != by and min(ay, by) <= y <= max(ay, by)]
        if len(xs) >= 2:
            lo, hi = math.floor(min(xs) + 0.5), math.ceil(max(xs) - 0.5)
            if hi >= lo:
                canvas[y, max(lo, 0):hi + 1] = True


def _disc_offsets(radius: float) -> np.ndarray:
    """(n, 2) integer (dy, dx) with dy^2 + dx^2 <= radius^2 (the official dilation structs)."""
    r = int(math.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dy ** 2 + dx ** 2 <= radius ** 2
    return np.stack((dy[keep], dx[keep]), axis=1)


class _Geometry:
    """Everything that depends on the parameters and the margin only: paddle patches per
    direction (line ink and mask, (S, S) with the paddle's start at the centre), the seed
    footprints, the candidate circle, the resize matrices. One per process and (params, margin)."""

    def __init__(self, p: PathfinderParams, margin: int) -> None:
        self.p, self.m = p, int(margin)
        L, aa, m = int(p.paddle_length), int(p.antialias_scale), self.m
        self.L, self.aa, self.res = L, aa, int(p.resolution)
        self.P = L + int(math.ceil(p.paddle_thickness)) + m  # patch half-size (official)
        self.S = 2 * self.P + 1
        self.q = self.P + 2  # zero frame of the padded mask arrays
        self.Hp = self.res + 2 * self.q
        self.big_disc = _disc_offsets(m * aa)
        self.small_disc = _disc_offsets(m)  # (D, 2) official small_dilation_structs
        self.small_disc_flat = self.small_disc[:, 0] * self.Hp + self.small_disc[:, 1]  # (D,)
        ky, kx = np.mgrid[-self.P:self.P + 1, -self.P:self.P + 1]
        self.win_flat = (ky * self.Hp + kx).reshape(-1)  # (S*S,) window offsets in padded arrays
        # candidate circle of the official get_coords_cmf: one sample per pixel of arc, truncated
        # to pixels; around an integer pivot p that is p + floor(r (sin, cos) a) (checked below
        # for every pivot of the image), so the distinct candidate offsets are fixed
        self.r = L + m
        ang = np.arange(0.0, 360.0, 360.0 / (2 * self.r * math.pi)) * math.pi / 180.0  # (A,)
        for v in (np.sin(ang), np.cos(ang)):
            x = np.arange(self.res)[:, None] + self.r * v  # (res, A) every pivot coordinate
            inb = (x >= 0) & (x < self.res)
            if not np.array_equal(x.astype(np.int64)[inb], (np.arange(self.res)[:, None] + np.floor(self.r * v))[inb]):
                raise NotImplementedError("candidate circle not translation invariant for these parameters")
        off = np.unique(np.stack((np.floor(self.r * np.sin(ang)), np.floor(self.r * np.cos(ang))), axis=1), axis=0)
        self.cand_off = off.astype(np.int64)  # (U, 2) distinct candidate heads relative to the pivot
        self.cand_flat = self.cand_off[:, 0] * self.Hp + self.cand_off[:, 1]  # (U,) the same, flat
        # seeds: directions -180..179 degrees (ids 0..359); extensions: every displacement
        # (dy, dx) of a candidate from its pivot (ids 360 + ...), drawn back towards the pivot
        seed_phi = np.arange(-180, 180) * math.pi / 180.0
        ext_theta = np.arctan2(off[:, 0], off[:, 1])  # (U,) direction pivot -> head
        ext_phi = _flip(ext_theta)
        self.cand_sid = 360 + np.arange(len(off))  # (U,) shape id of the paddle ending at each candidate
        # direction of travel after a paddle of each shape, and the continuity weight of each
        # candidate after it: cos(min(continuity * |turn|, pi / 2))^2
        self.theta = np.concatenate((seed_phi, ext_theta))  # (n_shapes,)
        self.sincos = np.stack((np.sin(self.theta), np.cos(self.theta)), axis=1)  # (n_shapes, 2)
        turn = np.abs(ext_theta[None, :] - self.theta[:, None])  # (n_shapes, U)
        turn = np.minimum(np.minimum(turn, 2 * math.pi - turn) * p.continuity, 0.5 * math.pi)
        self.turn_weight = np.maximum(np.cos(turn), 0.0) ** 2  # (n_shapes, U)
        self.phi = np.concatenate((seed_phi, ext_phi))  # (n_shapes,) drawing direction
        ink, mask = self._patches(self.phi)
        self.ink = ink.astype(np.float64) / 255.0  # (n_shapes, S, S)
        self.mask = (mask.astype(np.float64) / 255.0).astype(np.float32)  # (n_shapes, S, S)
        self.mask_flat = self.mask.reshape(len(self.phi), -1)  # (n_shapes, S*S)
        self.mask_cols = np.ascontiguousarray(self.mask_flat.T)  # (S*S, n_shapes)
        inside = np.zeros((self.Hp, self.Hp), np.float32)  # 1 on the image, 0 on the frame
        inside[self.q:self.q + self.res, self.q:self.q + self.res] = 1.0
        self.in_image = inside.reshape(-1)  # (Hp*Hp,)
        # seed footprints: the fully covered pixels of the mask, as the official structuring
        # element holds them (head-centric struct of side 2 (L + m) + 1, centred one pixel off)
        h = L + m
        self.footprints = []
        for s in range(360):
            k = np.argwhere(mask[s] == 255) - self.P + 1  # (F, 2) offsets from the start
            k = k[(np.abs(k) <= h).all(axis=1)]
            self.footprints.append(k)
        self.fp_lo = np.array([k.min(axis=0) if len(k) else (0, 0) for k in self.footprints])  # (360, 2)
        self.fp_hi = np.array([k.max(axis=0) if len(k) else (-1, -1) for k in self.footprints])
        # cv2.dilate gives -DBL_MAX where the whole element falls outside the image, and then
        # the official find_available_coordinates returns no coordinate at all: a seed in such
        # a direction always fails. That happens when, for some corner of the image, every
        # offset of the footprint points out of it (corners are the weakest case).
        def dead(k):
            if len(k) == 0:
                return True
            y, x = k[:, 0], k[:, 1]
            return bool(((y >= 1) | (x >= 1)).all() or ((y >= 1) | (x <= -1)).all()
                        or ((y <= -1) | (x >= 1)).all() or ((y <= -1) | (x <= -1)).all())

        self.fp_dead = np.array([dead(k) for k in self.footprints])  # (360,)
        # markers: the official draw_circle on the fine grid, then Lanczos-reduced
        self.marker_matrix = _resize_matrix(self.res * aa, self.res)

    def _patches(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Official draw_line_n_mask for each direction: (n, S, S) uint8 ink and mask."""
        L, aa, P = self.L, self.aa, self.P
        Sb, cb = 2 * P * aa + 1, P * aa
        width = int(round(self.p.paddle_thickness * aa))
        lines = np.zeros((len(phi), Sb, Sb), bool)  # (n, Sb, Sb) fine-grid line
        head = _translate(np.full((len(phi), 2), float(cb)), phi, L * aa)  # (n, 2) fine head (y, x)
        for i, (hy, hx) in enumerate(head.tolist()):
            if width <= 1:
                _bresenham(lines[i], cb, cb, hx, hy)
            else:
                _wide_line(lines[i], cb, cb, hx, hy, width)
        masks = np.zeros_like(lines)  # (n, Sb, Sb) line dilated by the disc of radius m * aa
        for dy, dx in self.big_disc.tolist():
            src = lines[:, max(0, -dy):Sb - max(0, dy), max(0, -dx):Sb - max(0, dx)]
            masks[:, max(0, dy):Sb - max(0, -dy), max(0, dx):Sb - max(0, -dx)] |= src
        ink = _resize_u8(lines.astype(np.uint8) * 255, self.S)
        mask = _resize_u8(masks.astype(np.uint8) * 255, self.S)
        return ink, mask

    def marker(self, yx) -> np.ndarray:
        """(res, res) float: the official draw_circle at integer (y, x), / 255."""
        aa, res = self.aa, self.res
        R = self.p.marker_radius * aa
        cy, cx = int(yx[0]) * aa, int(yx[1]) * aa
        r = int(math.floor(R))
        rows = np.arange(max(cy - r, 0), min(cy + r, res * aa - 1) + 1)
        cols = np.arange(max(cx - r, 0), min(cx + r, res * aa - 1) + 1)
        if rows.size == 0 or cols.size == 0:
            return np.zeros((res, res))
        disc = ((rows[:, None] - cy) ** 2 + (cols[None, :] - cx) ** 2 <= R * R).astype(np.int64) * 255
        K = self.marker_matrix
        half = 1 << (_PRECISION_BITS - 1)
        t = np.clip((disc @ K[:, cols].T + half) >> _PRECISION_BITS, 0, 255)  # (rows, res)
        full = np.zeros((res * aa, res), np.int64)
        full[rows] = t
        out = np.clip((K @ full + half) >> _PRECISION_BITS, 0, 255)  # (res, res)
        return out.astype(np.float64) / 255.0


@functools.lru_cache(maxsize=16)
def _geometry_of(key: PathfinderParams, margin: int) -> _Geometry:
    return _Geometry(key, margin)


def _geometry(p: PathfinderParams, margin: int) -> _Geometry:
    """The cached geometry of ``p`` (shared by all contour lengths), carrying ``p`` itself."""
    key = dataclasses.replace(p, contour_length=1, distractor_budget=0, max_distractor_retrial=0,
                              target_batch=1, max_target_batch=1, max_target_batches=1)
    g = copy.copy(_geometry_of(key, int(margin)))
    g.p = p
    return g


# --------------------------------------------------------------------------------------------
# growth, vectorised over rows (each row = one independent attempt at the same stage)
# --------------------------------------------------------------------------------------------


class _Snake:
    """One snake in every row: its pivot and the paddles placed so far (drawing start pixel and
    shape id; the shape of the last one also gives the direction of travel; the last paddle is
    not yet in the mask)."""

    def __init__(self, tail: np.ndarray, pivot: np.ndarray, sid: np.ndarray, capacity: int) -> None:
        B = len(sid)
        self.pivot = pivot  # (B, 2)
        self.pos = np.zeros((B, capacity, 2), np.int64)  # (B, capacity, 2) drawing starts (y, x)
        self.sid = np.zeros((B, capacity), np.int64)  # (B, capacity) shape ids
        self.pos[:, 0], self.sid[:, 0] = tail, sid
        self.n = 1

    @property
    def tail(self) -> np.ndarray:
        return self.pos[:, 0]  # (B, 2) start of the first paddle

    @property
    def head(self) -> np.ndarray:
        return self.pos[:, self.n - 1]  # (B, 2) free end of the last paddle

    @property
    def last_sid(self) -> np.ndarray:
        return self.sid[:, self.n - 1]  # (B,)

    def add(self, pos: np.ndarray, sid: np.ndarray) -> None:
        self.pos[:, self.n], self.sid[:, self.n] = pos, sid
        self.n += 1

    def keep(self, rows: np.ndarray) -> None:
        self.pivot, self.pos, self.sid = self.pivot[rows], self.pos[rows], self.sid[rows]


class _Rows:
    """The masks of ``B`` rows, padded by a zero frame of ``g.q`` pixels. Row ``b`` lives in
    ``store[slot[b]]`` ((n_slots, Hp, Hp) float32), so dropping rows costs no copy until fewer
    than half the slots are in use."""

    def __init__(self, g: _Geometry, store: np.ndarray) -> None:
        self.g, self.store = g, store
        self.slot = np.arange(store.shape[0])  # (B,)

    @classmethod
    def empty(cls, g: _Geometry, B: int) -> "_Rows":
        q, res, pad = g.q, g.res, int(g.p.padding)
        store = np.zeros((B, g.Hp, g.Hp), np.float32)  # (B, Hp, Hp)
        img = store[:, q:q + res, q:q + res]
        if pad > 0:
            img[:, :pad, :] = 1.0
            img[:, -pad:, :] = 1.0
            img[:, :, :pad] = 1.0
            img[:, :, -pad:] = 1.0
        return cls(g, store)

    @property
    def rows(self) -> int:
        return self.slot.shape[0]

    def image_mask(self, b: int) -> np.ndarray:
        """(res, res) view of row ``b``'s mask on the image."""
        q, res = self.g.q, self.g.res
        return self.store[self.slot[b], q:q + res, q:q + res]

    def copies(self, b: int, n: int) -> "_Rows":
        """``n`` fresh rows, each a copy of row ``b``."""
        return _Rows(self.g, np.repeat(self.store[self.slot[b]][None], n, axis=0))

    def keep(self, rows: np.ndarray) -> None:
        self.slot = self.slot[rows]
        if 2 * self.slot.shape[0] < self.store.shape[0]:
            self.store = self.store[self.slot]
            self.slot = np.arange(self.store.shape[0])

    def base(self) -> np.ndarray:
        """(B, 1) flat offset of each row's mask in ``store``."""
        return self.slot[:, None] * (self.g.Hp * self.g.Hp)

    def merge(self, yx: np.ndarray, sid: np.ndarray) -> None:
        """mask = max(mask, paddle mask of shape ``sid`` drawn at ``yx``), clipped to the image."""
        g = self.g
        local = ((yx[:, 0] + g.q) * g.Hp + yx[:, 1] + g.q)[:, None] + g.win_flat  # (B, S*S)
        idx = self.base() + local  # (B, S*S)
        flat = self.store.reshape(-1)
        flat[idx] = np.maximum(flat[idx], g.mask_flat[sid] * g.in_image[local])


def _keep_all(ok: np.ndarray, rows: _Rows, snakes: list[_Snake], orig: np.ndarray) -> np.ndarray:
    if ok.all():
        return orig
    keep = np.flatnonzero(ok)
    rows.keep(keep)
    for sn in snakes:
        sn.keep(keep)
    return orig[keep]


def _extend(rows: _Rows, sn: _Snake, rng: np.random.Generator) -> np.ndarray:
    """Official extend_snake in every row; returns which rows succeeded (the others hold
    garbage and must be dropped). The snake's previous paddle is merged into the mask."""
    g, p = rows.g, rows.g.p
    B, res, Hp, q = rows.rows, g.res, g.Hp, g.q
    tid = sn.last_sid  # (B,) the last paddle's shape = the direction of travel
    pivot = np.ceil(sn.pivot + (g.L + 2 * g.m) * g.sincos[tid]).astype(np.int64)  # (B, 2) new pivot
    head = pivot[:, None, :] + g.cand_off  # (B, U, 2) candidate heads
    inside = ((head >= 0) & (head < res)).all(axis=2)  # (B, U)
    flat = rows.store.reshape(-1)
    # flat index of each candidate; off-image ones may point anywhere (clipped gathers): they
    # get no weight
    base = rows.base() + ((pivot[:, 0:1] + q) * Hp + pivot[:, 1:2] + q) + g.cand_flat  # (B, U)
    dil = flat.take(base + g.small_disc_flat[0], mode="clip")  # (B, U) mask dilated by the disc
    for o in g.small_disc_flat[1:]:
        np.maximum(dil, flat.take(base + o, mode="clip"), out=dil)
    pmf = np.where(inside, (1.0 - dil) * g.turn_weight[tid], 0.0)  # (B, U)
    cum = np.cumsum(pmf, axis=1)
    total = cum[:, -1]
    alive = total >= 1e-4
    # up to max_paddle_retrial + 1 draws by weight, each tested against the official rule
    # max(mask + new mask) < 1.8; a row draws again only while its draws fail
    r1 = np.arange(B)
    kj = np.minimum((cum <= (rng.random(B) * total)[:, None]).sum(axis=1), pmf.shape[1] - 1)  # (B,)
    win = flat.take(base[r1, kj][None, :] + g.win_flat[:, None], mode="clip")  # (S*S, B) mask under it
    win += g.mask_cols[:, g.cand_sid[kj]]
    ok = alive & (win.max(axis=0) < 1.8) & (pmf[r1, kj] > 0)  # (B,)
    todo = np.flatnonzero(alive & ~ok)
    for _ in range(p.max_paddle_retrial):
        if todo.size == 0:
            break
        u = rng.random(todo.size) * total[todo]  # (n,)
        k = np.minimum((cum[todo] <= u[:, None]).sum(axis=1), pmf.shape[1] - 1)  # (n,) drawn candidate
        win = flat.take(base[todo, k][None, :] + g.win_flat[:, None], mode="clip")  # (S*S, n)
        win += g.mask_cols[:, g.cand_sid[k]]
        good = (win.max(axis=0) < 1.8) & (pmf[todo, k] > 0)  # (n,)
        kj[todo[good]], ok[todo[good]] = k[good], True
        todo = todo[~good]
    rows.merge(sn.head, sn.last_sid)  # the previous paddle joins the mask now
    sn.pivot = pivot
    sn.add(head[r1, kj], g.cand_sid[kj])
    return ok


def _seed_tail(g: _Geometry, deg: np.ndarray, tail: np.ndarray):
    """Pivot of seed paddles from ``tail`` (B, 2) in whole-degree directions ``deg`` (B,), and
    whether head and pivot stay inside the image (the official seed check)."""
    phi = deg * math.pi / 180.0
    head = _translate(tail.astype(np.float64), phi, g.L)  # (B, 2)
    pivot = _translate(head.astype(np.float64), _flip(phi), g.L + g.m)  # (B, 2)
    inside = ((head >= 0) & (head < g.res) & (pivot >= 0) & (pivot < g.res)).all(axis=1)
    return pivot, inside


def _seed_targets(g: _Geometry, B: int, rng: np.random.Generator):
    """The official initialize_two_seeds in ``B`` rows: (snake A, snake B, ok). Needs no mask:
    the first seed only sees the central box, the second one is not checked."""
    p = g.p
    T = p.max_paddle_retrial + 1
    sd = int(p.seed_distance)
    pad = int(p.padding)
    lo, hi = max(2 * sd, pad), g.res - 1 - max(2 * sd, pad)  # the free central box of lined_mask
    out = []
    ok = np.ones(B, bool)
    for which in range(2):
        tail = np.zeros((B, 2), np.int64)
        pivot = np.zeros((B, 2), np.int64)
        deg_k = np.zeros(B, np.int64)
        todo = ok.copy()
        for _ in range(T):
            if not todo.any():
                break
            deg = rng.integers(-180, 180, size=B)  # (B,)
            s = deg + 180
            if which == 0:
                a = lo - g.fp_lo[s]  # (B, 2) smallest tail whose footprint stays in the box
                b = hi - g.fp_hi[s]
                none = g.fp_dead[s] | (a > b).any(axis=1)
                ok &= ~(todo & none)  # no available coordinate: the official gives up at once
                todo &= ~none
                t = a + np.floor(rng.random((B, 2)) * (np.maximum(b - a, 0) + 1)).astype(np.int64)
            else:
                ang = rng.integers(0, 360, size=B) * math.pi / 180.0
                t = np.stack((np.round(out[0].tail[:, 0] + sd * np.sin(ang)),
                              np.round(out[0].tail[:, 1] + sd * np.cos(ang))), axis=1).astype(np.int64)
            pv, inside = _seed_tail(g, deg, t)
            take = todo & inside
            tail[take], pivot[take], deg_k[take] = t[take], pv[take], s[take]
            todo &= ~inside
        ok &= ~todo  # rows whose T tries all left the image
        out.append(_Snake(tail, pivot, deg_k, p.contour_length))
    return out[0], out[1], ok


def _place_targets(g: _Geometry, rng: np.random.Generator, batch: int):
    """``batch`` independent target pairs in lock-step (the official two_snakes); the scene,
    the two snakes and the batch row of the first pair (in batch order) that completed, or None."""
    p = g.p
    a, b, ok = _seed_targets(g, batch, rng)
    snakes = [a, b]
    orig = np.flatnonzero(ok)
    for sn in snakes:
        sn.keep(orig)
    rows = _Rows.empty(g, orig.size)  # masks only for the pairs whose seeds succeeded
    for _ in range(p.contour_length - 1):
        for sn in snakes:
            if orig.size == 0:
                return None
            orig = _keep_all(_extend(rows, sn, rng), rows, snakes, orig)
    if orig.size == 0:
        return None
    first = np.array([0])
    rows.keep(first)
    for sn in snakes:
        sn.keep(first)
    rows.merge(b.head, b.last_sid)  # the official merges only the second target's last paddle
    return rows, snakes, int(orig[0])


def _place_distractors(g: _Geometry, rows: _Rows, rng: np.random.Generator) -> list[_Snake]:
    """Official make_many_snakes with allow_incomplete: distractors one after another in the
    single-row scene ``rows``; the tries of one snake run side by side (the scene copied into
    one row per try) and the first that completes is kept, as if they had run in sequence."""
    p, res, q = g.p, g.res, g.q
    placed = []
    tries = p.max_distractor_retrial + 1
    T = p.max_paddle_retrial + 1
    for _ in range(p.n_distractors):
        img = rows.image_mask(0)  # (res, res)
        if (img <= 0.3).sum() < p.min_free_fraction * res * res:
            break  # official stop_with_availability: every later seeding fails too
        occ = np.zeros((g.Hp, g.Hp), bool)  # (Hp, Hp) lined mask > 0.3, False outside the image
        occ[q:q + res, q:q + res] = img > 0.3
        occ[q, q:q + res] = occ[q + res - 1, q:q + res] = True
        occ[q:q + res, q] = occ[q:q + res, q + res - 1] = True
        tail = np.zeros((tries, 2), np.int64)
        pivot = np.zeros((tries, 2), np.int64)
        sid = np.zeros(tries, np.int64)
        todo = np.ones(tries, bool)
        ok = np.ones(tries, bool)
        for _ in range(T):
            if not todo.any():
                break
            deg = rng.integers(-180, 180, size=tries)
            t = np.zeros((tries, 2), np.int64)
            for i in np.flatnonzero(todo):
                blocked = np.zeros((res, res), bool)
                for fy, fx in g.footprints[deg[i] + 180].tolist():
                    blocked |= occ[q + fy:q + fy + res, q + fx:q + fx + res]
                free = np.flatnonzero(~blocked)
                if free.size == 0 or g.fp_dead[deg[i] + 180]:
                    ok[i] = todo[i] = False  # no available coordinate: this try fails
                    continue
                t[i] = divmod(int(free[rng.integers(free.size)]), res)
            pv, inside = _seed_tail(g, deg, t)
            take = todo & inside
            tail[take], pivot[take], sid[take] = t[take], pv[take], deg[take] + 180
            todo &= ~inside
        ok &= ~todo
        if not ok.any():
            continue
        trial = rows.copies(0, tries)
        sn = _Snake(tail, pivot, sid, p.distractor_length)
        orig = _keep_all(ok, trial, [sn], np.arange(tries))
        for _ in range(p.distractor_length - 1):
            if orig.size == 0:
                break
            orig = _keep_all(_extend(trial, sn, rng), trial, [sn], orig)
        if orig.size == 0:
            continue
        first = np.array([0])
        trial.keep(first)
        sn.keep(first)
        trial.merge(sn.head, sn.last_sid)
        rows = trial
        placed.append(sn)
    return placed


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


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


def _bytescale(img: np.ndarray) -> np.ndarray:
    """scipy.misc.imsave of a float image: (v - min) * 255 / (max - min), + 0.5, truncated."""
    lo, hi = float(img.min()), float(img.max())
    scale = 255.0 / ((hi - lo) or 1.0)
    return (np.clip((img - lo) * scale, 0, 255) + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# one image
# --------------------------------------------------------------------------------------------


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
    atomic_write_text(path, "".join(line + "\n" for _, line in rows))


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
    ``out_dir/pathfinder{resolution}/<difficulty>``, where ``<difficulty>`` is the release's name
    (``curv_baseline`` for contour length 6, else ``curv_contour_length_{contour_length}``).

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
    task_dir = Path(out_dir) / f"pathfinder{resolution}" / difficulty_dir_name(contour_length)
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
