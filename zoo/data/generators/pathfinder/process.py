"""The official process, vectorised over rows (each row = one independent attempt at the same
stage): snakes, their occupancy masks, growth, the target pair and the distractors."""

from __future__ import annotations

import numpy as np

from .geometry import _Geometry, _windows

_YX = np.arange(2)


class _Snake:
    """One snake in every row: its pivot and the paddles placed so far (drawing start pixel and
    shape id; the shape of the last one also gives the direction of travel; the last paddle is
    not yet in the mask), all in one (B, 2 + 3 capacity) array: pivot (y, x), the paddles'
    starts (y, x), their shape ids."""

    def __init__(self, tail: np.ndarray, pivot: np.ndarray, sid: np.ndarray, capacity: int) -> None:
        self.cap, self.n = capacity, 1
        self.a = np.zeros((len(sid), 2 + 3 * capacity), np.int64)
        self.a[:, 0:2], self.a[:, 2:4], self.a[:, 2 + 2 * capacity] = pivot, tail, sid

    @property
    def pivot(self) -> np.ndarray:
        return self.a[:, 0:2]  # (B, 2)

    @pivot.setter
    def pivot(self, yx: np.ndarray) -> None:
        self.a[:, 0:2] = yx

    @property
    def pos(self) -> np.ndarray:
        return self.a[:, 2:2 + 2 * self.cap].reshape(-1, self.cap, 2)  # (B, capacity, 2) drawing starts

    @property
    def sid(self) -> np.ndarray:
        return self.a[:, 2 + 2 * self.cap:]  # (B, capacity) shape ids

    @property
    def tail(self) -> np.ndarray:
        return self.a[:, 2:4]  # (B, 2) start of the first paddle

    @property
    def head(self) -> np.ndarray:
        return self.a[:, 2 * self.n:2 * self.n + 2]  # (B, 2) free end of the last paddle

    @property
    def last_sid(self) -> np.ndarray:
        return self.a[:, 1 + 2 * self.cap + self.n]  # (B,)

    def previous(self) -> tuple[np.ndarray, np.ndarray]:
        """Start pixel (B, 2) and shape id (B,) of the paddle before the last one."""
        return self.a[:, 2 * self.n - 2:2 * self.n], self.a[:, 2 * self.cap + self.n]

    def add(self, pos: np.ndarray, sid: np.ndarray) -> None:
        self.a[:, 2 + 2 * self.n:4 + 2 * self.n], self.a[:, 2 + 2 * self.cap + self.n] = pos, sid
        self.n += 1

    def keep(self, rows: np.ndarray) -> None:
        self.a = self.a[rows]


class _Rows:
    """The masks of ``B`` rows (8-bit levels, ``g.planes`` padded (Hp, Hp) arrays each: see
    ``_Geometry._growth_tables``). Row ``b`` lives in ``store[slot[b]]``, so dropping rows costs
    no copy until fewer than half the slots are in use; ``base[b]`` is its flat offset."""

    def __init__(self, g: _Geometry, store: np.ndarray) -> None:
        self.g = g
        self._set(store, np.arange(store.shape[0]))

    def _set(self, store: np.ndarray, slot: np.ndarray) -> None:
        g, flat = self.g, store.reshape(-1)
        self.store, self.slot, self.base = store, slot, slot * g.row_size
        if g.merge_windowed:
            self.win = _windows(flat, g.S + 2 * g.m, g.Hp, g.planes)  # the windows a paddle is merged into

    @classmethod
    def empty(cls, g: _Geometry, B: int) -> "_Rows":
        store = np.empty((B,) + g.template.shape, np.uint8)  # (B, planes, Hp, Hp)
        store[:] = g.template
        return cls(g, store)

    @property
    def rows(self) -> int:
        return self.slot.shape[0]

    def image_mask(self, b: int) -> np.ndarray:
        """(res, res) view of row ``b``'s mask levels on the image."""
        q, res = self.g.q, self.g.res
        return self.store[self.slot[b], 0, q:q + res, q:q + res]

    def copies(self, b: int, n: int) -> "_Rows":
        """``n`` fresh rows, each a copy of row ``b``."""
        return _Rows(self.g, np.repeat(self.store[self.slot[b]][None], n, axis=0))

    def keep(self, rows: np.ndarray) -> None:
        slot = self.slot[rows]
        if 2 * slot.shape[0] < self.store.shape[0]:
            self._set(self.store[slot], np.arange(slot.shape[0]))
        else:
            self.slot, self.base = slot, slot * self.g.row_size

    def merge(self, yx: np.ndarray, sid: np.ndarray) -> None:
        """mask = max(mask, paddle mask of shape ``sid`` drawn at ``yx``), clipped to the image;
        the same for the dilated mask (not clipped: see ``_Geometry._growth_tables``)."""
        g = self.g
        corner = yx.dot(g.yx_flat) + g.merge_corner  # (B,)
        if g.merge_windowed:
            win = self.base + corner
            patch = self.win[win]  # (B, planes, S2, S2)
            np.maximum(patch, g.merge_patch[sid] * g.merge_clip[corner], out=patch)
            self.win[win] = patch
        else:
            local = corner[:, None] + g.merge_off[sid]  # (B, M)
            idx = self.base[:, None] + local
            flat = self.store.reshape(-1)
            flat[idx] = np.maximum(flat[idx], g.merge_val[sid] * g.merge_clip[local])


def _keep_all(ok: np.ndarray, rows: _Rows, snakes: list[_Snake], orig: np.ndarray) -> np.ndarray:
    """Drop the rows where ``ok`` is False from ``rows`` and ``snakes``; the kept ``orig``."""
    keep = ok.nonzero()[0]
    if keep.shape[0] == ok.shape[0]:
        return orig
    rows.keep(keep)
    for sn in snakes:
        sn.keep(keep)
    return orig[keep]


def _grow(rows: _Rows, sn: _Snake, snakes: list[_Snake], orig: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One official extend_snake of ``sn`` in every row: the rows where it fails are dropped
    (from ``rows``, ``snakes`` and the batch indices ``orig``, returned), then the paddle before
    the new one joins the mask of the others."""
    orig = _keep_all(_extend(rows, sn, rng), rows, snakes, orig)
    if orig.size:
        rows.merge(*sn.previous())
    return orig


def _fits(g: _Geometry, flat: np.ndarray, at: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The official collision rule max(mask + new mask) < 1.8 for the paddle ending at candidate
    ``k`` (n,) of the pivots at flat indices ``at`` (n,)."""
    hot = g.hot[k]  # (n, 2, H) offsets from the pivot, smallest failing level
    return (flat.take(at[:, None] + hot[:, 0], mode="clip") < hot[:, 1]).all(axis=1)


def _draw(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The candidate drawn by ``u`` (n,) from the cumulated weights ``cum`` (n, U): the number
    of ``cum <= u`` (``cum`` does not decrease), at most U - 1."""
    return np.where(cum[:, -1] > u, (cum > u[:, None]).argmax(axis=1), cum.shape[1] - 1)


def _extend(rows: _Rows, sn: _Snake, rng: np.random.Generator) -> np.ndarray:
    """The new paddle of ``sn`` in every row; returns which rows succeeded (the others hold
    garbage and must be dropped; ``_grow``)."""
    g, p = rows.g, rows.g.p
    B, U = rows.rows, g.cand_flat.shape[0]
    tid = sn.last_sid  # (B,) the last paddle's shape = the direction of travel
    pivot = np.ceil(sn.pivot + g.step[tid]).astype(np.int64)  # (B, 2) new pivot
    flat = rows.store.reshape(-1)
    # flat index of the (clamped) pivot: rows whose pivot was clamped have no candidate on the image
    at = rows.base + np.minimum(np.maximum(pivot, g.pivot_lo), g.pivot_hi).dot(g.yx_flat)  # (B,)
    if g.planes == 2:
        dil = flat.take(at[:, None] + g.cand_dil_flat, mode="clip")  # (B, U) dilated mask, 255 off the image
    else:  # no band: dilate here, on the image only
        dil = flat.take(at[:, None] + g.cand_disc_flat, mode="clip").reshape(B, U, -1).max(axis=2)
        dil[g.off_image[(at - rows.base)[:, None] + g.cand_q0]] = 255
    pmf = g.free[dil] * g.turn_weight[tid]  # (B, U)
    cum = pmf.cumsum(axis=1)
    total = cum[:, -1]
    alive = total >= 1e-4
    # up to max_paddle_retrial + 1 draws by weight, each tested against the collision rule; a
    # row draws again only while its draws fail
    r1 = np.arange(B)
    kj = _draw(cum, rng.random(B) * total)  # (B,)
    ok = alive & _fits(g, flat, at, kj) & (pmf[r1, kj] > 0)  # (B,)
    todo = (alive & ~ok).nonzero()[0]
    for _ in range(p.max_paddle_retrial):
        if todo.size == 0:
            break
        k = _draw(cum[todo], rng.random(todo.size) * total[todo])  # (n,)
        good = _fits(g, flat, at[todo], k) & (pmf[todo, k] > 0)  # (n,)
        kj[todo[good]], ok[todo[good]] = k[good], True
        todo = todo[~good]
    sn.pivot = pivot
    sn.add(pivot + g.cand_off[kj], g.cand_sid[kj])
    return ok


def _seed_tail(g: _Geometry, deg: np.ndarray, tail: np.ndarray):
    """Pivot of seed paddles from ``tail`` (B, 2) in whole-degree directions ``deg`` (B,), and
    whether head and pivot stay inside the image (the official seed check)."""
    s = deg + 180
    head = g.seed_head.take((s * (2 * g.seed_w) + 2 * g.seed_o)[:, None] + 2 * tail + _YX)  # (B, 2)
    pivot = g.seed_pivot.take((s * (2 * g.seed_w2) + 2 * g.seed_o2)[:, None] + 2 * head + _YX)  # (B, 2)
    inside = (head.view(np.uint64) < g.res) & (pivot.view(np.uint64) < g.res)  # 0 <= v < res
    inside = inside[:, 0] & inside[:, 1]
    return pivot, inside


def _seed_targets(g: _Geometry, B: int, rng: np.random.Generator):
    """The official initialize_two_seeds in ``B`` rows: ok (B,) and, per target, (tail, pivot,
    shape id) of its first paddle in every row. Needs no mask: the first seed only sees the
    central box, the second one is not checked."""
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
                t = np.round(out[0][0] + g.seed_step[rng.integers(0, 360, size=B)]).astype(np.int64)
            pv, inside = _seed_tail(g, deg, t)
            take = todo & inside
            tail[take], pivot[take], deg_k[take] = t[take], pv[take], s[take]
            todo &= ~inside
        ok &= ~todo  # rows whose T tries all left the image
        out.append((tail, pivot, deg_k))
    return ok, out


def _place_targets(g: _Geometry, rng: np.random.Generator, batch: int):
    """``batch`` independent target pairs in lock-step (the official two_snakes); the scene,
    the two snakes and the batch row of the first pair (in batch order) that completed, or None."""
    p = g.p
    ok, seeds = _seed_targets(g, batch, rng)
    orig = ok.nonzero()[0]  # snakes and masks only for the pairs whose seeds succeeded
    a, b = snakes = [_Snake(tail[orig], pivot[orig], sid[orig], p.contour_length) for tail, pivot, sid in seeds]
    rows = _Rows.empty(g, orig.size)
    for _ in range(p.contour_length - 1):
        for sn in snakes:
            if orig.size == 0:
                return None
            orig = _grow(rows, sn, snakes, orig, rng)
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
        img = g.level[rows.image_mask(0)]  # (res, res)
        if (img <= 0.3).sum() < p.min_free_fraction * res * res:
            break  # official stop_with_availability: every later seeding fails too
        occ = np.zeros((g.Hp, g.Hp), bool)  # (Hp, Hp) lined mask > 0.3, False outside the image
        occ[q:q + res, q:q + res] = img > 0.3
        occ[q, q:q + res] = occ[q + res - 1, q:q + res] = True
        occ[q:q + res, q] = occ[q:q + res, q + res - 1] = True
        wide = [occ]
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
            dead = todo & g.fp_dead[deg + 180]
            ok[dead] = todo[dead] = False  # no available coordinate: this try fails
            for i in todo.nonzero()[0]:
                blocked = np.zeros((res, res), bool)
                for fy, fx, w in g.fp_runs[deg[i] + 180]:
                    while len(wide) < w:  # wide[w - 1][y, x]: occ at any of (y, x .. x + w - 1)
                        wide.append(wide[-1][:, :-1] | occ[:, len(wide):])
                    blocked |= wide[w - 1][q + fy:q + fy + res, q + fx:q + fx + res]
                free = (~blocked).reshape(-1).nonzero()[0]
                if free.size == 0:
                    ok[i] = todo[i] = False  # no available coordinate either
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
            orig = _grow(trial, sn, [sn], orig, rng)
        if orig.size == 0:
            continue
        first = np.array([0])
        trial.keep(first)
        sn.keep(first)
        trial.merge(sn.head, sn.last_sid)
        rows = trial
        placed.append(sn)
    return placed
