"""Slow, obviously-correct numpy reference for the warp geometry (docs/DESIGN.md sections 1-3).

Independent of irwarp: nothing here imports the library. Everything is float64 and written with
plain loops, for images of about 10 x 10 pixels at most.

Conventions (docs/DESIGN.md section 1): pixel ``(i, j)`` is the unit square ``[j, j+1] x [i, i+1]`` in
``(x, y)``; its flat index is ``i * W + j``; a flow vector is ``(dx, dy)``. The backward map is
``psi(p) = p + flow(p)``, the flow being interpolated bilinearly between pixel centres and clamped to
the edge outside the centre lattice.

All area matrices are dense ``(HW, HW)`` arrays indexed ``[d, s]``: new (destination) pixel ``d``,
old (source) cell ``s``.
"""

from __future__ import annotations

import math

import numpy as np

# The 8 boundary points of a pixel, as offsets (x, y) from its top-left corner, in the order
# top-left, top midpoint, top-right, right midpoint, bottom-right, bottom midpoint, bottom-left,
# left midpoint.
OCTAGON = (
    (0.0, 0.0),
    (0.5, 0.0),
    (1.0, 0.0),
    (1.0, 0.5),
    (1.0, 1.0),
    (0.5, 1.0),
    (0.0, 1.0),
    (0.0, 0.5),
)


def interp_flow(flow: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """Flow at the continuous point ``(x, y)``: bilinear between pixel centres, clamped to the edge.

    The flow sample of pixel ``(i, j)`` sits at ``(j + 0.5, i + 0.5)``. Outside the lattice of
    centres the point is first clamped onto it (so the flow is constant along the normal of the
    border strip).
    """
    h, w = flow.shape[:2]
    u = min(max(x - 0.5, 0.0), w - 1.0)  # continuous column index of the centre lattice
    v = min(max(y - 0.5, 0.0), h - 1.0)  # continuous row index
    j0 = min(int(math.floor(u)), max(w - 2, 0))
    i0 = min(int(math.floor(v)), max(h - 2, 0))
    j1 = min(j0 + 1, w - 1)
    i1 = min(i0 + 1, h - 1)
    tx = u - j0
    ty = v - i0
    out = []
    for c in range(2):
        f00 = float(flow[i0, j0, c])
        f01 = float(flow[i0, j1, c])
        f10 = float(flow[i1, j0, c])
        f11 = float(flow[i1, j1, c])
        top = (1.0 - tx) * f00 + tx * f01
        bottom = (1.0 - tx) * f10 + tx * f11
        out.append((1.0 - ty) * top + ty * bottom)
    return out[0], out[1]


def psi(flow: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """Backward map ``psi(p) = p + flow(p)`` at the continuous point ``p = (x, y)``."""
    dx, dy = interp_flow(flow, x, y)
    return x + dx, y + dy


def boundary_offsets(edge_points: int) -> list[tuple[float, float]]:
    """``4 n`` points on the unit pixel's boundary, offsets ``(x, y)`` from its top-left corner.

    Walks the top edge left to right, then the right edge down, the bottom edge right to left and
    the left edge up; each edge gives its first corner and ``n - 1`` equally spaced interior
    points. ``n = 2`` is :data:`OCTAGON`.
    """
    n = edge_points
    pts = [(k / n, 0.0) for k in range(n)]
    pts += [(1.0, k / n) for k in range(n)]
    pts += [(1.0 - k / n, 1.0) for k in range(n)]
    pts += [(0.0, 1.0 - k / n) for k in range(n)]
    return pts


def octagon(flow: np.ndarray, i: int, j: int, edge_points: int = 2) -> list[tuple[float, float]]:
    """``psi`` of pixel ``(i, j)``'s boundary points (default: :data:`OCTAGON`, in that order)."""
    offsets = OCTAGON if edge_points == 2 else boundary_offsets(edge_points)
    return [psi(flow, j + ox, i + oy) for ox, oy in offsets]


def shoelace(poly) -> float:
    """Unsigned area of a simple (non-self-intersecting) polygon given as a list of ``(x, y)``."""
    n = len(poly)
    if n < 3:
        return 0.0
    twice = 0.0
    for k in range(n):
        x0, y0 = poly[k]
        x1, y1 = poly[(k + 1) % n]
        twice += x0 * y1 - x1 * y0
    return abs(twice) / 2.0


def _clip_half_plane(poly, axis: int, bound: float, keep_above: bool):
    """One Sutherland-Hodgman pass: keep the part with ``p[axis] >= bound`` (or ``<=``)."""

    def inside(p):
        return p[axis] >= bound if keep_above else p[axis] <= bound

    def crossing(a, b):
        t = (bound - a[axis]) / (b[axis] - a[axis])
        q = [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]
        q[axis] = bound
        return (q[0], q[1])

    out = []
    n = len(poly)
    for k in range(n):
        cur = poly[k]
        prev = poly[k - 1]
        if inside(cur):
            if not inside(prev):
                out.append(crossing(prev, cur))
            out.append(cur)
        elif inside(prev):
            out.append(crossing(prev, cur))
    return out


def clip_to_cell(poly, i: int, j: int):
    """Sutherland-Hodgman clip of ``poly`` against the unit cell ``[j, j+1] x [i, i+1]``."""
    for axis, bound, keep_above in (
        (0, j, True),
        (0, j + 1, False),
        (1, i, True),
        (1, i + 1, False),
    ):
        if not poly:
            return []
        poly = _clip_half_plane(poly, axis, float(bound), keep_above)
    return poly


def overlap_area(poly, i: int, j: int) -> float:
    """Area of ``poly`` (simple polygon) intersected with cell ``(i, j)``."""
    return shoelace(clip_to_cell(poly, i, j))


def _failsafe(areas: np.ndarray) -> np.ndarray:
    """Divide a source's areas by their sum where that sum exceeds 1 (columns of ``[d, s]``)."""
    use = areas.sum(axis=0)
    return areas / np.maximum(use, 1.0)[None, :]


def grid_areas(flow: np.ndarray, *, edge_points: int = 2, failsafe: bool = True) -> np.ndarray:
    """Dense ``(HW, HW)`` areas ``a_ds = |octagon(psi(cell_d)) cap cell_s|`` for in-image cells.

    Every in-image cell that meets the polygon's bounding box is clipped against it (no capacity
    window), so nothing is missed. With ``failsafe`` a source whose areas sum to more than 1 has
    them divided by their sum. ``edge_points`` points per pixel edge (2: the octagon). Exact only
    when every polygon is simple (non-self-intersecting).
    """
    flow = np.asarray(flow, np.float64)
    h, w = flow.shape[:2]
    a = np.zeros((h * w, h * w))
    for i in range(h):
        for j in range(w):
            poly = octagon(flow, i, j, edge_points)
            xs = [p[0] for p in poly]
            ys = [p[1] for p in poly]
            for si in range(max(0, int(math.floor(min(ys)))), min(h, int(math.ceil(max(ys))))):
                for sj in range(max(0, int(math.floor(min(xs)))), min(w, int(math.ceil(max(xs))))):
                    a[i * w + j, si * w + sj] = overlap_area(poly, si, sj)
    return _failsafe(a) if failsafe else a


def _interval_overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def square_overlap(cx: float, cy: float, i: int, j: int) -> float:
    """Overlap of the unit square centred at ``(cx, cy)`` with cell ``(i, j)``."""
    ox = _interval_overlap(cx - 0.5, cx + 0.5, float(j), float(j + 1))
    oy = _interval_overlap(cy - 0.5, cy + 0.5, float(i), float(i + 1))
    return ox * oy


def particle_areas(flow: np.ndarray) -> np.ndarray:
    """Dense ``[d, s]`` particle areas: ``w_ds / sum_d' w_d's`` per source (0 for unused sources).

    ``w_ds`` is the overlap of the unit square centred at ``centre_d + flow[d]`` with cell ``s``.
    """
    flow = np.asarray(flow, np.float64)
    h, w = flow.shape[:2]
    wts = np.zeros((h * w, h * w))
    for i in range(h):
        for j in range(w):
            cx = j + 0.5 + flow[i, j, 0]
            cy = i + 0.5 + flow[i, j, 1]
            for si in range(h):
                for sj in range(w):
                    wts[i * w + j, si * w + sj] = square_overlap(cx, cy, si, sj)
    use = wts.sum(axis=0)
    return wts / np.where(use > 0, use, 1.0)[None, :]


def splat_areas(forward_flow: np.ndarray) -> np.ndarray:
    """Dense ``[d, s]`` splat areas from a forward flow.

    Old pixel ``s`` is the unit square centred at ``centre_s + forward_flow[s]``; its overlaps with
    the in-image new cells ``d`` are divided by their sum (a source that lands fully outside sends
    nothing).
    """
    flow = np.asarray(forward_flow, np.float64)
    h, w = flow.shape[:2]
    a = np.zeros((h * w, h * w))
    for si in range(h):
        for sj in range(w):
            cx = sj + 0.5 + flow[si, sj, 0]
            cy = si + 0.5 + flow[si, sj, 1]
            col = np.zeros(h * w)
            for di in range(h):
                for dj in range(w):
                    col[di * w + dj] = square_overlap(cx, cy, di, dj)
            tot = col.sum()
            if tot > 0:
                a[:, si * w + sj] = col / tot
    return a


def cross_covariance(areas: np.ndarray) -> np.ndarray:
    """``E[Y_d X_s] = a_ds / sqrt(A_d)`` with ``A_d = sum_s a_ds``; rows with ``A_d = 0`` are 0."""
    total = areas.sum(axis=1)
    scale = np.where(total > 0, 1.0 / np.sqrt(np.where(total > 0, total, 1.0)), 0.0)
    return areas * scale[:, None]
