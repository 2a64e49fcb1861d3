"""Pillow-equivalent rasterising in numpy: what the official generator draws with ``ImageDraw.line``
and resizes with ``scipy.misc.imresize(..., 'lanczos')`` (= Pillow's fixed-point Lanczos resampling
of 8-bit images), and the ``bytescale`` of ``scipy.misc.imsave``."""

from __future__ import annotations

import functools
import math

import numpy as np

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


def _fixed_to_u8(acc: np.ndarray) -> np.ndarray:
    """Pillow's end of one fixed-point pass: round, shift, clip to 0..255 (int64)."""
    return np.minimum(np.maximum((acc + (1 << (_PRECISION_BITS - 1))) >> _PRECISION_BITS, 0), 255)


def _resize_u8(img: np.ndarray, n_out: int) -> np.ndarray:
    """Pillow ``Image.resize((n_out, n_out), LANCZOS)`` of square 8-bit images (..., n, n):
    horizontal pass, rounding and clipping to 8 bits, then the vertical pass."""
    K = _resize_matrix(img.shape[-1], n_out)
    t = _fixed_to_u8(img.astype(np.int64) @ K.T)  # (..., n, n_out)
    return _fixed_to_u8(K @ t).astype(np.uint8)  # (..., n_out, n_out)


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


def _bytescale(img: np.ndarray) -> np.ndarray:
    """scipy.misc.imsave of a float image: (v - min) * 255 / (max - min), + 0.5, truncated."""
    lo, hi = float(img.min()), float(img.max())
    scale = 255.0 / ((hi - lo) or 1.0)
    return (np.minimum(np.maximum((img - lo) * scale, 0), 255) + 0.5).astype(np.uint8)
