"""Geometry of one (parameters, margin) pair: paddle patches per direction, seed footprints, the
candidate circle and its weights (``_Geometry``, cached per process); segment helpers."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math

import numpy as np

from .params import PathfinderParams
from .raster import _bresenham, _disc_offsets, _fixed_to_u8, _resize_matrix, _resize_u8, _wide_line

__all__ = ["segment_distance"]


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


def _dilate(a: np.ndarray, disc: np.ndarray) -> np.ndarray:
    """Max of ``a`` (..., H, W) over the offsets ``disc`` (D, 2), zero outside (cv2.dilate)."""
    out = np.zeros_like(a)
    H, W = a.shape[-2:]
    for dy, dx in disc.tolist():
        src = a[..., max(0, dy):H + min(0, dy), max(0, dx):W + min(0, dx)]
        dst = out[..., max(0, -dy):H + min(0, -dy), max(0, -dx):W + min(0, -dx)]
        np.maximum(dst, src, out=dst)
    return out


def _windows(flat: np.ndarray, side: int, stride: int, planes: int) -> np.ndarray:
    """Every (planes, side, side) window of the ``planes`` consecutive (stride, stride) arrays in
    ``flat``, as a view indexed by the flat index of its corner: writing a window writes ``flat``."""
    n = max(0, flat.shape[0] - (planes - 1) * stride * stride - (side - 1) * (stride + 1))
    s = flat.strides[0]
    return np.lib.stride_tricks.as_strided(flat, (n, planes, side, side), (s, stride * stride * s, stride * s, s))


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
        self.r = L + m  # radius of the candidate circle
        # frame of the padded mask arrays: holds a dilated patch and every candidate of a clamped pivot
        self.q = max(self.P + 2, self.P + m, 2 * self.r + 1)
        self.Hp = self.res + 2 * self.q
        self.big_disc = _disc_offsets(m * aa)
        self.small_disc = _disc_offsets(m)  # (D, 2) official small_dilation_structs
        self.small_disc_flat = self.small_disc[:, 0] * self.Hp + self.small_disc[:, 1]  # (D,)
        ky, kx = np.mgrid[-self.P:self.P + 1, -self.P:self.P + 1]
        self.win_flat = (ky * self.Hp + kx).reshape(-1)  # (S*S,) window offsets in padded arrays
        # candidate circle of the official get_coords_cmf: one sample per pixel of arc, truncated
        # to pixels; around an integer pivot p that is p + floor(r (sin, cos) a) (checked below
        # for every pivot of the image), so the distinct candidate offsets are fixed
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
        inside = np.zeros((self.Hp, self.Hp), np.uint8)  # 1 on the image, 0 on the frame
        inside[self.q:self.q + self.res, self.q:self.q + self.res] = 1
        self.in_image = inside.reshape(-1)  # (Hp*Hp,)
        self._growth_tables(mask)
        self._seed_tables()
        # seed footprints: the fully covered pixels of the mask, as the official structuring
        # element holds them (head-centric struct of side 2 (L + m) + 1, centred one pixel off)
        h = L + m
        self.footprints = []
        for s in range(360):
            k = np.argwhere(mask[s] == 255) - self.P + 1  # (F, 2) offsets from the start
            k = k[(np.abs(k) <= h).all(axis=1)]
            self.footprints.append(k)
        # ... as runs (dy, dx0, width) along x: a seed's blocked pixels are an OR of run-wide ORs
        self.fp_runs = []
        for k in self.footprints:
            runs = []
            for dy in np.unique(k[:, 0]).tolist():
                xs = np.sort(k[k[:, 0] == dy, 1])
                for run in np.split(xs, np.flatnonzero(np.diff(xs) > 1) + 1):
                    runs.append((dy, int(run[0]), len(run)))
            self.fp_runs.append(runs)
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

    def _growth_tables(self, mask: np.ndarray) -> None:
        """Tables of one growth step (``process._extend``, ``_Rows.merge``). Flat offsets ``o``
        are in a row's padded (Hp, Hp) arrays, from a pixel (y, x) of the image: its neighbour
        is at ``y * Hp + x + o`` (``o`` includes the frame, ``q0``). The masks of the rows hold
        8-bit levels: every mask value is ``level[k]`` (the patches' k / 255 or the band's 1),
        and max commutes with that increasing map."""
        L, m, r, res, Hp, q = self.L, self.m, self.r, self.res, self.Hp, self.q
        q0 = self.q0 = q * Hp + q
        self.cand_q0 = self.cand_flat + q0
        self.yx_flat = np.array([Hp, 1])
        self.level = (np.arange(256) / 255.0).astype(np.float32)  # as self.mask
        self.free = 1.0 - self.level  # (256,) float32: 1 - mask
        self.step = (L + 2 * m) * self.sincos  # (n_shapes, 2) pivot to next pivot after each shape
        # every pixel of the dilation disc around every candidate: (U * D,) offsets from the pivot
        self.cand_disc_flat = (self.cand_q0[:, None] + self.small_disc_flat[None, :]).reshape(-1)
        self.cand_dil_flat = self.cand_q0 + Hp * Hp  # the candidates in the dilated plane
        hy, hx = np.mgrid[-q:res + q, -q:res + q]
        self.off_image = ((hy < 0) | (hy >= res) | (hx < 0) | (hx >= res)).reshape(-1)  # (Hp * Hp,)
        # a pivot is clamped to [-(r + 1), res + r]: one further out has no candidate on the
        # image, nor has the clamped one, whose candidates all lie in the frame
        self.pivot_lo, self.pivot_hi = -(r + 1), res + r
        # the collision rule max(mask + new mask) < 1.8 for the paddle ending at each candidate:
        # per pixel, the smallest mask level that fails (the rule is monotone in the level); only
        # the pixels where some level fails are tested (then others, up to the longest list:
        # they cannot fail), offsets from the pivot
        cand_mask = self.mask_flat[self.cand_sid]  # (U, S*S)
        fine = cand_mask[..., None] + self.level < 1.8  # (U, S*S, 256)
        lim = fine.sum(axis=2)  # (U, S*S): no collision where the level is < lim
        assert (fine == (np.arange(256) < lim[..., None])).all()
        order = np.argsort(lim, axis=1, kind="stable")[:, :(lim < 256).sum(1).max()]  # (U, H)
        lim = np.take_along_axis(lim, order, axis=1)
        self.hot = np.stack((self.cand_q0[:, None] + self.win_flat[order], lim), axis=1)  # (U, 2, H)
        # a row is ``planes`` padded arrays: its mask and, given a padding band, the mask dilated
        # by the disc (kept up to date paddle by paddle, as dilation commutes with max; the parts
        # of a paddle outside the image, which the official clips before dilating, only reach
        # pixels of the image that the band already sets to 1), full off the image, so that
        # candidates there get no weight
        self.planes = 2 if self.p.padding >= 1 else 1
        pad, inside = int(self.p.padding), self.in_image.reshape(Hp, Hp)
        first = np.zeros((Hp, Hp), np.uint8)
        img = first[q:q + res, q:q + res]
        img[:pad], img[res - pad:], img[:, :pad], img[:, res - pad:] = 255, 255, 255, 255
        dil = np.maximum(_dilate(first, self.small_disc) * inside, 255 * (1 - inside))  # off the image: full
        self.template = np.stack([first, dil][:self.planes])  # (planes, Hp, Hp) a fresh row
        # merging a paddle: max of a row's planes and the paddle's patches, (planes, S2, S2) with
        # S2 = S + 2 m around its start: its mask (clipped to the image) and the mask dilated by
        # the disc; ``merge_corner`` is the flat offset of the window's corner from the start.
        # Large windows are copied as blocks (strided views), small ones as their non-zero pixels.
        S2, pl = self.S + 2 * m, self.planes
        grown = _dilate(np.pad(mask, ((0, 0), (m, m), (m, m))), self.small_disc)
        self.merge_patch = np.stack((np.pad(mask, ((0, 0), (m, m), (m, m))), grown), axis=1)[:, :pl]
        self.merge_corner = q0 - (self.P + m) * (Hp + 1)
        clip = np.stack((self.in_image, np.ones_like(self.in_image)))[:pl].reshape(-1)  # (planes * Hp * Hp,)
        self.merge_windowed = pl * S2 * S2 > 400
        if self.merge_windowed:
            self.merge_clip = _windows(clip, S2, Hp, pl)  # by corner: (., planes, S2, S2)
        else:
            dense = self.merge_patch.reshape(len(mask), -1)
            kp, ky, kx = np.mgrid[:pl, :S2, :S2]
            order = np.argsort(dense == 0, axis=1, kind="stable")[:, :(dense > 0).sum(1).max()]
            self.merge_off = (kp * Hp * Hp + ky * Hp + kx).reshape(-1)[order]  # (n_shapes, M) from the corner
            self.merge_val = np.take_along_axis(dense, order, axis=1)  # (n_shapes, M); then zero pixels
            self.merge_clip = clip
        self.row_size = self.planes * Hp * Hp

    def _seed_tables(self) -> None:
        """``process._seed_tail`` by table: per seed direction (id = degrees + 180) and
        coordinate, the official translate_coord from the tail to the head (``seed_head``, from
        tails up to ``seed_distance`` off the image) and from the head back to the pivot
        (``seed_pivot``), the same float operations as ``_translate``."""
        L, m, res = self.L, self.m, self.res
        phi = np.arange(-180, 180) * math.pi / 180.0  # (360,)
        self.seed_o = o = int(self.p.seed_distance) + 1
        self.seed_o2 = o2 = o + L + 1
        self.seed_w, self.seed_w2 = res + 2 * o, res + 2 * o2  # table widths
        for name, off, dist, ang in (("seed_head", o, L, phi), ("seed_pivot", o2, L + m, _flip(phi))):
            c = np.arange(-off, res + off).astype(np.float64)[None, :]  # (1, W)
            yx = np.stack((np.ceil(c + dist * np.sin(ang)[:, None]), np.ceil(c + dist * np.cos(ang)[:, None])), axis=2)
            setattr(self, name, yx.astype(np.int64).reshape(-1))  # (360 * W * 2,): [s, c + off, y / x]
        # the second target's start from the first one's: seed_distance * (sin, cos) a, a = 0..359 degrees
        ang, sd = np.arange(360) * math.pi / 180.0, int(self.p.seed_distance)
        self.seed_step = np.stack((sd * np.sin(ang), sd * np.cos(ang)), axis=1)  # (360, 2)

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
        t = _fixed_to_u8(disc @ K[:, cols].T)  # (rows, res)
        out = _fixed_to_u8(K[:, rows] @ t)  # (res, res); the other fine rows are 0
        return out.astype(np.float64) / 255.0


@functools.lru_cache(maxsize=16)
def _geometry_of(key: PathfinderParams, margin: int) -> _Geometry:
    return _Geometry(key, margin)


@functools.lru_cache(maxsize=64)
def _geometry(p: PathfinderParams, margin: int) -> _Geometry:
    """The cached geometry of ``p`` (shared by all contour lengths), carrying ``p`` itself."""
    key = dataclasses.replace(p, contour_length=1, distractor_budget=0, max_distractor_retrial=0,
                              target_batch=1, max_target_batch=1, max_target_batches=1)
    g = copy.copy(_geometry_of(key, int(margin)))
    g.p = p
    return g
