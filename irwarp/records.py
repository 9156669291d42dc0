"""Partition records: the geometry of a warp as flat ``(src, dst, area)`` triples. No randomness.

A record depends only on the flow, so one record serves every channel, every batch element and
every diffusion step of a frame (docs/DESIGN.md section 2). Its arrays have static length ``M``; padding
pieces have area 0. One :class:`PartitionRecord` serves images ``(H, W)`` and volumes
``(D, H, W)``. Builders:

* :func:`grid_record`: exact overlap areas of the deformed pixel polygon ``psi(cell_d)`` with the
  old cells (Deng et al., grid-based algorithm), computed by edge integrals (Green's theorem).
* :func:`particle_record` (images) and :func:`particle3d_record` (volumes): the new cell is a unit
  square (cube) centred at ``psi(centre_d)``; bilinear (trilinear) overlaps, divided per source by
  their sum (Deng et al., particle-based algorithm).
* :func:`splat_record` and :func:`splat3d_record`: forward splat of old cells onto the new grid
  with bilinear (trilinear) overlaps.

The particle and splat builders share one rank-generic overlap of unit cells (``2**nd`` pieces per
cell). Volumes follow docs/DESIGN.md section 1 extended by ``z``: voxel ``(k, i, j)`` is the unit cube
``[j, j+1] x [i, i+1] x [k, k+1]``, its flat index is ``(k * H + i) * W + j`` and a 3D flow vector
is ``(dx, dy, dz)``. There is no 3D grid (exact-volume) record; the README explains why.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212), algorithms "grid-based" and "particle-based".
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from irwarp import _sampling, _schedule
from irwarp._checks import check_int_option as _check_int_option

__all__ = [
    "PartitionRecord",
    "PartitionRecord3D",
    "grid_record",
    "particle_record",
    "particle3d_record",
    "splat_record",
    "splat3d_record",
    "sanitize_flow3d",
    "polygon_offsets",
    "flow_at_offsets",
]

# Pieces smaller than this are set to exactly 0: they are float noise from the edge integrals.
_GRID_AREA_EPS = 1e-6
_BILINEAR_AREA_EPS = 1e-12
# The grid record's tail is processed in blocks of ceil(H * W / this) pixels (times the tail
# cells per pixel): a smooth flow (rotation, zoom by a few percent) needs one block.
_TAIL_BLOCK_DIVISOR = 8
# Below this many pixels (a 64x64 grid) the tail is one block, with no lax.switch in the record or
# the apply: the prefixes save little there, and their branches cost compile time (a 24x20 grid
# warp compiled in 2.8 s with them, 1.6 s without). A 60x90 video latent keeps them: 1.6 ms per
# frame with, 2.6 ms without.
_TAIL_SWITCH_MIN_PIXELS = 1 << 12


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["src", "dst", "area", "overflow", "source_use", "tail_count"],
    meta_fields=["shape", "layout", "fanout", "normalized", "tail_block"],
)
@dataclasses.dataclass(frozen=True)
class PartitionRecord:
    """Flat list of pieces ``(src, dst, area)`` of static length ``M``, plus diagnostics.

    The same class serves images and volumes: its static ``shape`` is ``(H, W)`` or ``(D, H, W)``
    and the diagnostics reduce over that many trailing axes. :func:`irwarp.apply_record` and the
    order-free Brownian bridge treat both the same way, over ``prod(shape)`` flat cells.

    Attributes:
      src: ``(M,)`` int32 flat raster index of the old (source) cell of each piece: ``i * W + j``
        for images, ``(k * H + i) * W + j`` for volumes.
      dst: ``(M,)`` int32 flat index of the new (destination) cell of each piece.
      area: ``(M,)`` float32 area (volume) of each piece after the fail-safe normalisation;
        padding is 0.
      overflow: ``shape`` float32 area of each destination's pre-image that did not fit the
        capacity window. It is dropped from that cell's integral and the cell is renormalised by
        the area that was kept, so the output stays N(0, 1); only its covariance with the old
        frame is reduced. Always 0 for particle and splat records.
      source_use: ``shape`` float32 total area (or bilinear / trilinear weight) requested from
        each old cell before normalisation. Values above 1 mark where the non-injective fail-safe
        fired.
      shape: static ``(H, W)`` of the grid, or ``(D, H, W)`` of a volume.
      layout: static; for the head, the first ``n * fanout`` pieces (``n`` cells): ``"dst"`` when
        piece ``m`` belongs to destination ``m // fanout``, ``"dst_slot"`` when it belongs to
        destination ``m % n`` (slot-major), ``"src"`` when it belongs to source ``m // fanout``;
        ``"free"`` when there is no such structure (then there is no head).
      fanout: static number of head pieces per destination (``"dst"``, ``"dst_slot"``) or source
        (``"src"``).
      normalized: static; True when every source's areas sum to 0 or 1, so no bridge remainder.
      tail_count: ``()`` int32 or None. When set, the pieces after the head are a packed tail:
        only its first ``tail_count`` pieces can have a non-zero area (the rest are padding with
        area 0), which lets :func:`irwarp.apply_record` process a short prefix of the tail.
      tail_block: static granularity of the tail prefixes that :func:`irwarp.apply_record` may
        process (a multiple of it, or the whole tail).
    """

    src: jax.Array
    dst: jax.Array
    area: jax.Array
    overflow: jax.Array
    source_use: jax.Array
    shape: tuple[int, ...]
    layout: str = "free"
    fanout: int = 0
    normalized: bool = False
    tail_count: jax.Array | None = None
    tail_block: int = 0

    @property
    def num_pieces(self) -> int:
        """Static number of pieces ``M`` (padding included)."""
        return self.area.shape[-1]

    @property
    def num_head(self) -> int:
        """Static number of pieces in the structured head (``n * fanout``, 0 for ``"free"``)."""
        if self.layout == "free":
            return 0
        return math.prod(self.shape) * self.fanout

    @property
    def _cell_axes(self) -> tuple[int, ...]:
        """The trailing axes of ``overflow`` and ``source_use`` that index cells."""
        return tuple(range(-len(self.shape), 0))

    def num_overflow(self) -> jax.Array:
        """Number of destination cells whose pre-image did not fit the capacity (int32)."""
        return jnp.sum(self.overflow > 0, axis=self._cell_axes, dtype=jnp.int32)

    def overflow_area(self) -> jax.Array:
        """Total area (volume), in cells, that did not fit the capacity (float32)."""
        return jnp.sum(self.overflow, axis=self._cell_axes)

    def num_failsafe(self, tol: float = 1e-4) -> jax.Array:
        """Number of old cells whose requested area exceeded ``1 + tol`` (fail-safe fired)."""
        return jnp.sum(self.source_use > 1.0 + tol, axis=self._cell_axes, dtype=jnp.int32)

    def dst_area(self) -> jax.Array:
        """``shape`` sampled area ``A_d`` of each destination cell (0 means disoccluded)."""
        n = math.prod(self.shape)
        return jax.ops.segment_sum(self.area, self.dst, num_segments=n).reshape(self.shape)


PartitionRecord3D = PartitionRecord
"""Deprecated alias of :class:`PartitionRecord` (kept for compatibility): the same class, with
``shape == (D, H, W)`` for volumes."""


_FLOW_SHAPES = {2: "(H, W, 2)", 3: "(D, H, W, 3) with (dx, dy, dz)"}


def _check_flow(flow: jax.Array, name: str = "flow", ndim: int = 2) -> jax.Array:
    """Validates a real ``(H, W, 2)`` (``ndim`` 2) or ``(D, H, W, 3)`` (``ndim`` 3) flow."""
    flow = jnp.asarray(flow)
    if flow.ndim != ndim + 1 or flow.shape[-1] != ndim:
        raise ValueError(f"{name} must have shape {_FLOW_SHAPES[ndim]}; got {flow.shape}")
    if not (jnp.issubdtype(flow.dtype, jnp.floating) or jnp.issubdtype(flow.dtype, jnp.integer)):
        raise ValueError(f"{name} must be a real-valued array; got dtype {flow.dtype}")
    return flow


def polygon_offsets(edge_points: int) -> np.ndarray:
    """Boundary points of the unit pixel, ``(4 n, 2)`` offsets ``(x, y)`` from its top-left corner.

    Clockwise on screen (``y`` down): the top edge left to right, then right, bottom, left; each
    edge contributes its start corner and ``n - 1`` equally spaced interior points. ``n = 2`` is the
    octagon through the 4 corners and 4 edge midpoints used by the paper and by Chang et al.
    """
    t = np.arange(edge_points, dtype=np.float64) / edge_points
    zeros, ones = np.zeros_like(t), np.ones_like(t)
    top = np.stack([t, zeros], -1)
    right = np.stack([ones, t], -1)
    bottom = np.stack([1 - t, ones], -1)
    left = np.stack([zeros, 1 - t], -1)
    return np.concatenate([top, right, bottom, left], 0).astype(np.float32)


def _lattice_weights(t: float) -> tuple[float, float, float]:
    """Weights of pixels ``j - 1, j, j + 1`` for bilinear flow at ``x = j + t`` (``0 <= t <= 1``)."""
    if t < 0.5:
        return (0.5 - t, 0.5 + t, 0.0)
    return (0.0, 1.5 - t, t - 0.5)


def _padded_flow(flow: jax.Array):
    """Edge-padded planes ``(H + 2, W + 2)``: dx and dy (0 where non-finite) and the finite mask."""
    finite = jnp.all(jnp.isfinite(flow), -1)
    pad = ((1, 1), (1, 1))
    fx = jnp.pad(jnp.where(finite, flow[..., 0], 0.0), pad, mode="edge")
    fy = jnp.pad(jnp.where(finite, flow[..., 1], 0.0), pad, mode="edge")
    m = jnp.pad(finite.astype(flow.dtype), pad, mode="edge")
    return fx, fy, m


def _stencil(padded, ox: float, oy: float, rows: int, cols: int) -> tuple[jax.Array, jax.Array]:
    """Flow at ``(j + ox, i + oy)`` for ``i < rows``, ``j < cols``: planes ``(rows, cols)``.

    Bilinear between pixel centres with the static weights of :func:`_lattice_weights`, on the
    edge-padded planes of :func:`_padded_flow` (``rows <= H + 1``, ``cols <= W + 1``). Non-finite
    samples are left out and the weights renormalised; NaN where none is finite.
    """
    fx, fy, m = padded
    wx, wy = _lattice_weights(float(ox)), _lattice_weights(float(oy))
    num_x = num_y = den = 0.0
    for db, cy in enumerate(wy):
        for da, cx in enumerate(wx):
            c = cx * cy
            if c == 0.0:
                continue
            sl = (slice(db, db + rows), slice(da, da + cols))
            num_x = num_x + c * fx[sl]
            num_y = num_y + c * fy[sl]
            den = den + c * m[sl]
    ok = den > 0
    safe = jnp.where(ok, den, 1.0)
    return jnp.where(ok, num_x / safe, jnp.nan), jnp.where(ok, num_y / safe, jnp.nan)


def _flow_planes(flow: jax.Array, offsets: np.ndarray) -> tuple[list, list]:
    """Planar core of :func:`flow_at_offsets`: lists of ``P`` planes ``(H, W)`` for dx and dy.

    Planes (rather than ``(H, W, P, 2)``) keep XLA's CPU loops on long rows: a minor axis of 2
    or 8 vectorises several times worse.
    """
    h, w = flow.shape[:2]
    padded = _padded_flow(flow)
    planes = [_stencil(padded, ox, oy, h, w) for ox, oy in np.asarray(offsets, np.float64)]
    return [p[0] for p in planes], [p[1] for p in planes]


def _polygon_vertices(flow: jax.Array, edge_points: int) -> tuple[list, list]:
    """Flow at the :func:`polygon_offsets` points of every pixel, from grids shared by neighbours.

    A pixel's corner or edge point is also a point of the pixels next to it, so the flow is
    evaluated once per lattice point: the corners ``(H + 1, W + 1)``, and for each interior edge
    fraction ``t`` the points ``(j + t, I)`` on horizontal edges ``(H + 1, W)`` and ``(J, i + t)``
    on vertical edges ``(H, W + 1)``; each pixel's points are shifted slices of those grids. The
    weights are those of :func:`_flow_planes`, term by term, so the values are the same.

    Returns:
      Two lists of ``4 * edge_points`` planes ``(H, W)``: dx and dy at the polygon's points, in
      the order of :func:`polygon_offsets`.
    """
    return _grid_points(_vertex_grids(flow, edge_points), edge_points, flow.shape[:2])


def _vertex_grids(flow: jax.Array, edge_points: int) -> dict:
    """The lattice grids of :func:`_polygon_vertices`: ``{"corner": (dx, dy), "h1": ..., ...}``."""
    h, w = flow.shape[:2]
    n = edge_points
    padded = _padded_flow(flow)
    frac = [float(np.float32(k / n)) for k in range(n)]
    grids = {"corner": _stencil(padded, 0.0, 0.0, h + 1, w + 1)}
    for k in range(1, n):
        grids[f"h{k}"] = _stencil(padded, frac[k], 0.0, h + 1, w)
        grids[f"v{k}"] = _stencil(padded, 0.0, frac[k], h, w + 1)
    return grids


def _grid_points(
    grids: dict, edge_points: int, shape: tuple[int, int], at: tuple | None = None
) -> tuple[list, list]:
    """Each pixel's polygon points as shifted slices of :func:`_vertex_grids`.

    With ``at = (i, j)`` (int arrays of one shape ``S``), only pixels ``(i, j)``: gathers, ``S``.
    """
    h, w = shape
    n = edge_points

    def cut(name, i0, j0):
        if at is not None:
            return tuple(g[at[0] + i0, at[1] + j0] for g in grids[name])
        return tuple(g[i0 : i0 + h, j0 : j0 + w] for g in grids[name])

    points = []
    for k in range(n):  # top edge, left to right
        points.append(cut("corner", 0, 0) if k == 0 else cut(f"h{k}", 0, 0))
    for k in range(n):  # right edge, top to bottom
        points.append(cut("corner", 0, 1) if k == 0 else cut(f"v{k}", 0, 1))
    for k in range(n):  # bottom edge, right to left
        points.append(cut("corner", 1, 1) if k == 0 else cut(f"h{n - k}", 1, 0))
    for k in range(n):  # left edge, bottom to top
        points.append(cut("corner", 1, 0) if k == 0 else cut(f"v{n - k}", 0, 0))
    return [p[0] for p in points], [p[1] for p in points]


def flow_at_offsets(flow: jax.Array, offsets: np.ndarray) -> jax.Array:
    """Backward flow at ``(j + ox, i + oy)`` for every pixel and every static offset.

    Bilinear interpolation between pixel centres, clamped to the edge (docs/DESIGN.md section 1),
    evaluated with static stencils on an edge-padded copy, so it costs a few fused adds. Non-finite
    flow samples are ignored and the remaining weights renormalised; a point with no finite sample
    is NaN.

    Args:
      flow: ``(H, W, 2)`` float32 flow.
      offsets: ``(P, 2)`` static numpy offsets in ``[0, 1]``.

    Returns:
      ``(H, W, P, 2)`` flow at the offset points.
    """
    xs, ys = _flow_planes(flow, offsets)
    return jnp.stack([jnp.stack(xs, -1), jnp.stack(ys, -1)], -1)


def _window_cells(xs: list, ys: list, cols: np.ndarray, rows: np.ndarray) -> jax.Array:
    """Signed overlaps of closed polygons with the window cells ``(rows[k], cols[k])``.

    Green's theorem with each cell's lower edge as reference: for the winding number ``w`` of the
    polygon, ``int_cell w dA = sum_e sign(dx_e) int_{x in e, x in column} J(y_e(x)) dx`` with
    ``J(y) = clamp(b + 1 - y, 0, 1)`` for the cell's row ``b``. Each edge is clipped to the cell's
    column; over a clipped piece ``J`` is exactly 1 (piece above the row) or 0 (below), and only a
    piece that straddles the row needs ``1 - I(b) + I(b + 1)`` with ``I(c) = mean relu(y - c)``,
    which is ``mean(y) - c`` or ``(y_max - c)^2 / (2 |dy|)``. Rows a piece does not straddle thus
    get exact 0 and 1, so cells the polygon misses get exact zeros up to the telescoping of edge
    widths.

    The cells form the leading axis of every intermediate (``(K, *S)`` with long rows), so XLA's
    CPU backend vectorises the whole computation and writes the result without a concatenation.

    Args:
      xs, ys: ``P`` arrays of one shape ``S`` (e.g. ``(N,)`` or ``(H, W)``): the polygons'
        vertices in window coordinates (cell ``(b, a)`` is ``[a, a+1] x [b, b+1]``), in order.
      cols, rows: static ``(K,)`` integer cell coordinates ``a`` and ``b``.

    Returns:
      ``(K, *S)`` signed areas.
    """
    lead = (len(cols),) + (1,) * xs[0].ndim
    a = jnp.asarray(np.asarray(cols, np.float32)).reshape(lead)
    b = jnp.asarray(np.asarray(rows, np.float32)).reshape(lead)
    p = len(xs)
    out = 0.0
    for k in range(p):
        x0, y0 = xs[k][None], ys[k][None]
        x1, y1 = xs[(k + 1) % p][None], ys[(k + 1) % p][None]
        dx, dy = x1 - x0, y1 - y0
        inv_dx = 1.0 / jnp.where(dx == 0, 1.0, dx)
        lo = jnp.minimum(x0, x1)
        hi = jnp.maximum(x0, x1)
        xa = jnp.clip(lo, a, a + 1.0)
        xb = jnp.clip(hi, a, a + 1.0)
        # sign(dx) (xb - xa), written so that its derivative is right at dx = 0 as well.
        width = jnp.clip(x1, a, a + 1.0) - jnp.clip(x0, a, a + 1.0)
        ya = y0 + jnp.clip((xa - x0) * inv_dx, 0.0, 1.0) * dy
        # A vertical edge (width 0) spans its whole height once tilted: the limit of the clipped
        # piece, which only its derivative sees.
        tb = jnp.where(dx == 0, 1.0, jnp.clip((xb - x0) * inv_dx, 0.0, 1.0))
        yb = y0 + tb * dy
        y_min = jnp.minimum(ya, yb)
        y_max = jnp.maximum(ya, yb)
        y_mean = 0.5 * (ya + yb)
        # 0.5 / max(span, 1e-30), with a finite gradient: 1 / span^2 overflows float32 below
        # 4e-20 (and times a zero cotangent gave NaN), so below 1e-18 the span is held constant.
        span = y_max - y_min
        steep = span > 1e-18
        flat = 0.5 / jnp.maximum(jax.lax.stop_gradient(span), 1e-30)
        half_inv_span = jnp.where(steep, 0.5 / jnp.where(steep, span, 1.0), flat)

        def mean_relu(c, y_min=y_min, y_max=y_max, y_mean=y_mean, h=half_inv_span):
            above = jnp.maximum(y_max - c, 0.0)
            return jnp.where(y_min >= c, y_mean - c, above * above * h)

        straddle = 1.0 - mean_relu(b) + mean_relu(b + 1.0)
        frac = jnp.where(y_max <= b, 1.0, jnp.where(y_min >= b + 1.0, 0.0, straddle))
        out = out + width * frac
    return out


def _flat_index(rows: jax.Array, cols: jax.Array, h: int, w: int):
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    idx = jnp.clip(rows, 0, h - 1) * w + jnp.clip(cols, 0, w - 1)
    return idx.astype(jnp.int32), inside


def _normalise_sources(area: jax.Array, src: jax.Array, n: int, always: bool):
    """Per-source normalisation: always (particle, splat) or only where the sum exceeds 1 (grid)."""
    use = _schedule.segment_sum(area, src, n)
    denom = jnp.where(use > 0, use, 1.0) if always else jnp.maximum(use, 1.0)
    return area / denom[src], use


def _pack(need: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pixels flagged by ``need`` ``(H, W)``, packed to the front in raster order.

    Returns ``(ids, count)``: ``ids`` ``(H W,)`` int32 flat pixel of each slot (0 in the unused
    slots ``>= count``) and ``count`` the number of flagged pixels.
    """
    n = need.size
    flags = need.reshape(n).astype(jnp.int32)
    rank = jnp.cumsum(flags) - 1
    count = rank[-1] + 1
    slot = jnp.where(flags > 0, rank, n)
    ids = jnp.zeros((n,), jnp.int32).at[slot].set(jnp.arange(n, dtype=jnp.int32), mode="drop")
    return ids, count


def _tail_sources(sel, org, cells, shape, *, transpose: bool):
    """Flat sources and in-image flags of the ``cells`` of the windows of pixels ``sel`` ``(T,)``.

    ``(K, T)``, or pixel-major flattened ``(T * K,)`` with ``transpose``.
    """
    h, w = shape
    i, j = sel // w, sel % w
    ox, oy = org[0][sel].astype(jnp.int32), org[1][sel].astype(jnp.int32)
    rows = jnp.asarray(np.array([c[0] for c in cells]), jnp.int32)[:, None]
    cols = jnp.asarray(np.array([c[1] for c in cells]), jnp.int32)[:, None]
    src, inside = _flat_index((i + oy)[None] + rows, (j + ox)[None] + cols, h, w)
    if transpose:
        return src.T.reshape(-1), inside.T.reshape(-1)
    return src, inside


def _overflow(lx: list, ly: list, kept: jax.Array, capacity: int) -> jax.Array:
    """Area of polygons (vertices ``lx, ly`` in window coordinates) beyond their window.

    0 where the polygon's bounding box fits the ``capacity x capacity`` window, else its area
    (shoelace) minus ``kept``, the overlaps with the window's cells; never negative.
    """
    p = len(lx)
    fits = functools.reduce(jnp.maximum, lx) <= capacity
    fits = fits & (functools.reduce(jnp.maximum, ly) <= capacity)
    shoelace = 0.5 * sum(lx[k] * ly[(k + 1) % p] - lx[(k + 1) % p] * ly[k] for k in range(p))
    return jnp.where(fits, 0.0, jnp.maximum(jnp.abs(shoelace) - kept, 0.0))


def _grid_tail(head_use, *, cells, grids, edge_points, org, ids, count, head_raw, capacity, slots):
    """The tail cells of :func:`grid_record` for the first ``slots`` packed pixels.

    Recomputes those pixels' polygons from the lattice grids (gathers), their overlaps with the
    ``cells`` beyond the 2 x 2 head, their overflow (pixels outside the packed list fit in the
    head, so they have none) and the sources' total use.

    Returns ``(use, overflow, area)``: ``(N,)`` use of every source (head and tail), ``(N,)``
    overflow, and ``(N * len(cells),)`` areas of the tail pieces (pixel-major, zero past the
    packed pixels) after the fail-safe; their sources are :func:`_tail_sources`.
    """
    h, w = grids["corner"][0].shape[0] - 1, grids["corner"][0].shape[1] - 1
    n = h * w
    nt = len(cells)
    sel = ids[:slots]
    used = jnp.arange(slots) < count
    i, j = sel // w, sel % w
    fxs, fys = _grid_points(grids, edge_points, (h, w), at=(i, j))
    ox, oy = org[0][sel], org[1][sel]
    offs = polygon_offsets(edge_points)
    # Packed pixels are valid (finite points); the unused slots get the identity's polygon.
    lx = [
        jnp.where(used, float(o[0]) + f - ox, float(o[0])) for o, f in zip(offs, fxs, strict=True)
    ]
    ly = [
        jnp.where(used, float(o[1]) + f - oy, float(o[1])) for o, f in zip(offs, fys, strict=True)
    ]
    rows = np.array([c[0] for c in cells])
    cols = np.array([c[1] for c in cells])
    raw = jnp.clip(jnp.abs(_window_cells(lx, ly, cols, rows)), 0.0, 1.0)  # (nt, slots)
    raw = jnp.where(raw < _GRID_AREA_EPS, 0.0, raw)
    src, inside = _tail_sources(sel, org, cells, (h, w), transpose=False)
    # In buffers before the transposes below (fused into them, the cells are not vectorised).
    src, inside, raw = _schedule.materialize((src, inside, raw), ox[0])
    pieces = jnp.where(inside & used[None], raw, 0.0)
    use = head_use + _schedule.segment_sum(pieces.reshape(-1), src.reshape(-1), n)

    kept = sum(raw[c] for c in range(nt)) + sum(head_raw[c][sel] for c in range(head_raw.shape[0]))
    over = jnp.where(used, _overflow(lx, ly, kept, capacity), 0.0)
    overflow = jnp.zeros((n,), jnp.float32).at[jnp.where(used, sel, n)].set(over, mode="drop")

    # The fail-safe (see grid_record), then pixel-major inside the tail, so that a prefix of the
    # tail is a prefix of its pixels. (Sources and destinations are computed outside the switch:
    # padding them here would write 2 more full-length arrays.)
    area = pieces / jnp.maximum(use, 1.0)[src]
    area = jnp.pad(area.T.reshape(-1), (0, (n - slots) * nt))
    return use, overflow, area


def grid_record(flow: jax.Array, *, capacity: int = 3, edge_points: int = 2) -> PartitionRecord:
    """Exact-area partition record of a backward flow (Deng et al., grid-based algorithm).

    New pixel ``d`` pulls the region ``psi(cell_d)``, approximated by the polygon through ``psi``
    of ``4 * edge_points`` boundary points (default: the octagon of corners and edge midpoints).
    ``a_ds = |psi(cell_d) cap cell_s|`` is computed exactly by edge integrals for every cell ``s``
    of a ``capacity x capacity`` window anchored at the polygon's bounding box.

    Rules:
      * Cells outside the image contribute nothing; the pixel is renormalised by the area kept.
      * Area beyond the window is dropped from the pixel and reported in ``record.overflow``.
      * A folded (self-intersecting or mirrored) polygon enters with the absolute value of its
        signed overlap with each cell, clipped to ``[0, 1]``: never negative.
      * Non-injective maps: a source whose areas sum to more than 1 has them divided by their sum
        (the fail-safe, docs/DESIGN.md section 3); ``record.source_use`` shows where.
      * A pixel with a non-finite flow at any of its polygon points (NaN/Inf flow) gets no pieces,
        so it is disoccluded and receives fresh noise.

    Layout. The window's top-left ``2 x 2`` cells of every pixel form the head, slot by slot
    (layout ``"dst_slot"``: piece ``m`` of the head belongs to pixel ``m % (H W)``,
    ``fanout = min(capacity, 2)**2``); a pixel whose polygon spans at most 2 x 2 cells (most
    pixels of a smooth flow) has all its pieces there. The other ``capacity**2 - fanout`` cells of
    the pixels whose polygon reaches them form the packed tail: pixel by pixel in raster order,
    ``tail_count`` pieces in use, the rest zero padding. Pieces and areas are those of the full
    ``capacity x capacity`` window; :func:`irwarp.apply_record` only touches the part of the tail
    in use.

    Differentiability. The areas are piecewise smooth functions of the flow (exact edge integrals,
    with derivatives that are right at axis-aligned edges too), so ``jax.grad`` of a loss of
    ``grid_record(flow).area`` or of ``warp(key, noise, flow)`` with respect to ``flow`` is finite
    and matches central finite differences where the map is smooth (tested). Piecewise constant
    parts have a zero gradient: the window origin, the in-image and validity masks, pieces below
    ``1e-6`` (set to 0) and the pixels that get fresh noise; a piece of area exactly 0 has a zero
    (stopped) derivative in the bridge, where ``sqrt`` has none. At a kink (a vertex on a cell
    line, a source used exactly once by the fail-safe ``max(use, 1)``, a remainder at its ``1e-5``
    threshold) one of the one-sided derivatives is returned. Never NaN for a finite flow.

    Args:
      flow: ``(H, W, 2)`` backward flow ``(dx, dy)`` in pixels.
      capacity: static window side in cells, at most ``capacity**2`` pieces per pixel. The default
        3 covers an axis-aligned 2x zoom-out.
      edge_points: static number of polygon points per pixel edge (2 gives the octagon).

    Returns:
      A :class:`PartitionRecord` with ``M = H * W * capacity**2`` pieces: a head of
      ``H * W * fanout`` (layout ``"dst_slot"``) and a packed tail of the rest.

    References:
      Deng et al. 2025 (arXiv:2411.01212), grid-based algorithm; docs/DESIGN.md section 3.
    """
    flow = _check_flow(flow)
    cap = _check_int_option("capacity", capacity, 1)
    npts = _check_int_option("edge_points", edge_points, 1)
    return _grid_record(flow, cap, npts)


# The record builders compile themselves (their checks run first, in Python).
@functools.partial(jax.jit, static_argnums=(1, 2))
@_schedule.scheduled
def _grid_record(flow: jax.Array, cap: int, npts: int) -> PartitionRecord:
    """:func:`grid_record` of a checked flow; one body, scheduled per backend (``_schedule``)."""
    h, w = flow.shape[:2]
    n = h * w
    flow = _sampling.sanitize_flow(flow, h, w)
    offs = polygon_offsets(npts)
    # The flow at every lattice point once (corners and edge points are shared by neighbouring
    # pixels), materialised: XLA would otherwise fuse the stencils into every consumer.
    grids = _vertex_grids(flow, npts)
    corner = flow[0, 0, 0]
    grids = _schedule.materialize(grids, jnp.where(jnp.isnan(corner), 0.0, corner))
    fxs, fys = _grid_points(grids, npts, (h, w))
    # Vertices relative to the pixel's top-left corner, planes (H, W).
    xs = [float(o[0]) + f for o, f in zip(offs, fxs, strict=True)]
    ys = [float(o[1]) + f for o, f in zip(offs, fys, strict=True)]
    # A pixel whose own flow is non-finite is disoccluded even where its polygon's points, which
    # interpolate neighbouring flows, are finite.
    valid = jnp.isfinite(flow[..., 0]) & jnp.isfinite(flow[..., 1])
    for x, y in zip(xs, ys, strict=True):
        valid = valid & jnp.isfinite(x) & jnp.isfinite(y)
    org_x = jnp.floor(functools.reduce(jnp.minimum, xs))  # (H, W) integer offset of the window
    org_y = jnp.floor(functools.reduce(jnp.minimum, ys))
    # An invalid pixel's window and polygon are those of the identity (it gets no pieces anyway).
    org_x = jnp.where(valid, org_x, 0.0)
    org_y = jnp.where(valid, org_y, 0.0)
    # Materialised (3 planes) so that the cells below read them instead of recomputing them.
    org_x, org_y, valid = _schedule.materialize((org_x, org_y, valid), org_x[0, 0])
    lx = [jnp.where(valid, x - org_x, float(o[0])) for o, x in zip(offs, xs, strict=True)]
    ly = [jnp.where(valid, y - org_y, float(o[1])) for o, y in zip(offs, ys, strict=True)]

    side = min(cap, 2)
    head = [(b, a) for b in range(side) for a in range(side)]
    tail = [(b, a) for b in range(cap) for a in range(cap) if (b, a) not in head]
    fanout = len(head)

    # The head: the window's top-left 2 x 2 cells, for every pixel.
    h_rows = np.array([c[0] for c in head])
    h_cols = np.array([c[1] for c in head])
    row_ids = jax.lax.broadcasted_iota(jnp.int32, (h, w), 0) + org_y.astype(jnp.int32)
    col_ids = jax.lax.broadcasted_iota(jnp.int32, (h, w), 1) + org_x.astype(jnp.int32)
    src_rows = row_ids[None] + jnp.asarray(h_rows, jnp.int32)[:, None, None]
    src_cols = col_ids[None] + jnp.asarray(h_cols, jnp.int32)[:, None, None]
    src, inside = _flat_index(src_rows, src_cols, h, w)  # (4, H, W)
    pieces = jnp.clip(jnp.abs(_window_cells(lx, ly, h_cols, h_rows)), 0.0, 1.0)
    pieces = jnp.where(pieces < _GRID_AREA_EPS, 0.0, pieces)
    # org_x is finite: invalid pixels have the origin 0.
    src, inside, raw = _schedule.materialize((src, inside & valid[None], pieces), org_x[0, 0])
    src = src.reshape(fanout, n)
    raw = raw.reshape(fanout, n)  # overlaps with the window's cells, inside the image or not
    pieces = jnp.where(inside.reshape(fanout, n), raw, 0.0)
    head_use = _schedule.segment_sum(pieces.reshape(-1), src.reshape(-1), n)
    rec_dst = jnp.tile(jnp.arange(n, dtype=jnp.int32), fanout)
    tail_count, tail_block = None, 0
    if not tail:
        lx = [v.reshape(n) for v in lx]
        ly = [v.reshape(n) for v in ly]
        kept = sum(raw[c] for c in range(fanout))
        overflow = jnp.where(valid.reshape(n), _overflow(lx, ly, kept, cap), 0.0)
        use = head_use
    else:
        # The tail: the other cells, only for the pixels whose polygon's bounding box leaves the
        # 2 x 2 cells (6.6 % of the pixels for a 2 degree rotation), packed to the front in
        # raster order. They are computed for the shortest static prefix of blocks that holds
        # them all (one lax.switch; the batch-wide count under vmap).
        nt = len(tail)
        reach = functools.reduce(jnp.maximum, lx) > side
        reach = reach | (functools.reduce(jnp.maximum, ly) > side)
        ids, count = _pack(valid & reach)
        org = (org_x.reshape(n), org_y.reshape(n))
        block = max(1, -(-n // _TAIL_BLOCK_DIVISOR)) if n >= _TAIL_SWITCH_MIN_PIXELS else n
        sizes = sorted({min(block, n), min(4 * block, n), n})
        tail_part = functools.partial(
            _grid_tail,
            cells=tail,
            grids=grids,
            edge_points=npts,
            org=org,
            ids=ids,
            count=count,
            head_raw=raw,
            capacity=cap,
        )
        use, overflow, tail_area = _schedule.prefix_switch(
            count, sizes, lambda t: functools.partial(tail_part, slots=t), head_use
        )
        tail_src, _ = _tail_sources(ids, org, tail, (h, w), transpose=True)
        tail_dst = jnp.repeat(ids, nt)
        tail_count = count * nt
        tail_block = nt * block
    # The fail-safe: a source asked for more than its area has its pieces divided by the sum.
    rec_src = src.reshape(-1)
    rec_area = pieces.reshape(-1) / jnp.maximum(use, 1.0)[rec_src]
    if tail:
        rec_src = jnp.concatenate([rec_src, tail_src])
        rec_area = jnp.concatenate([rec_area, tail_area])
        rec_dst = jnp.concatenate([rec_dst, tail_dst])
    overflow = overflow.reshape(h, w)
    return PartitionRecord(
        src=rec_src,
        dst=rec_dst,
        area=rec_area,
        overflow=overflow,
        source_use=use.reshape(h, w),
        shape=(h, w),
        layout="dst_slot",
        fanout=fanout,
        normalized=False,
        tail_count=tail_count,
        tail_block=tail_block,
    )


def sanitize_flow3d(flow: jax.Array) -> jax.Array:
    """Float32 3D flow with +-Inf turned into NaN and huge magnitudes clamped.

    A displacement beyond ``4 (D + H + W) + 16`` voxels lands outside the volume whatever its
    exact value, so the clamp changes nothing inside and keeps later arithmetic finite. NaN (and
    +-Inf) mean "disoccluded" (docs/DESIGN.md section 1).

    Args:
      flow: ``(D, H, W, 3)`` flow, any real dtype.

    Returns:
      ``(D, H, W, 3)`` float32 flow; non-finite entries are NaN.
    """
    return _sanitize_cells(flow)


def _sanitize_cells(flow: jax.Array) -> jax.Array:
    """Rank-generic sanitiser of a flow ``(*S, nd)``: bound ``4 sum(S) + 16``, +-Inf to NaN.

    For images it is :func:`irwarp._sampling.sanitize_flow` (bound ``4 (H + W) + 16``), for
    volumes :func:`sanitize_flow3d`, operation for operation.
    """
    flow = jnp.asarray(flow, jnp.float32)
    bound = 4.0 * sum(flow.shape[:-1]) + 16.0
    flow = jnp.where(jnp.isinf(flow), jnp.nan, flow)
    return jnp.clip(flow, -bound, bound)


def _unit_cell_footprint(flow: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cells and multilinear overlaps of unit cells centred at ``centre + flow``, any rank.

    The cell of index ``(..., i, j)`` spans ``[j + dx, j + dx + 1]`` in ``x`` (likewise ``y`` and,
    for volumes, ``z``), so along each axis it meets the cells ``j + floor(dx)`` and
    ``j + floor(dx) + 1`` with overlaps ``1 - t`` and ``t``, ``t = dx - floor(dx)``; the overlap
    with a cell is the product of the per-axis overlaps, taken in the order ``x``, ``y``, ``z``
    (bilinear for images, trilinear for volumes).

    Args:
      flow: ``(*S, nd)`` sanitised float32 flow, ``S = (H, W)`` with ``(dx, dy)`` or
        ``S = (D, H, W)`` with ``(dx, dy, dz)``; NaN marks a cell with no footprint.

    Returns:
      ``(idx, weight)`` of shape ``(*S, 2**nd)``: flat raster indices of the ``2**nd`` cells the
      footprint touches (clamped into the grid) and their overlaps, 0 outside the grid or for
      non-finite flow. Pieces are in raster order of the ``2 x ... x 2`` block, ``x`` fastest:
      ``(i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1)`` for images.
    """
    shape = flow.shape[:-1]
    nd = len(shape)
    valid = jnp.all(jnp.isfinite(flow), -1)
    f = jnp.where(valid[..., None], flow, 0.0)
    fl = jnp.floor(f)
    t = f - fl
    index = jnp.meshgrid(*(jnp.arange(n) for n in shape), indexing="ij")
    # Component c of the flow (x, y, z) moves along array axis nd - 1 - c.
    size = [shape[nd - 1 - c] for c in range(nd)]
    base = [index[nd - 1 - c] + fl[..., c].astype(jnp.int32) for c in range(nd)]
    frac = [t[..., c] for c in range(nd)]
    idxs, wts = [], []
    for corner in itertools.product((0, 1), repeat=nd):  # outermost axis first, x fastest
        step = corner[::-1]  # per component: (ox, oy[, oz])
        inside = valid
        weight = None
        flat = None
        for c in range(nd):
            coord = base[c] + step[c]
            inside = inside & (coord >= 0) & (coord < size[c])
            wc = frac[c] if step[c] else 1.0 - frac[c]
            weight = wc if weight is None else weight * wc
        for c in reversed(range(nd)):  # outermost axis first
            clipped = jnp.clip(base[c] + step[c], 0, size[c] - 1)
            flat = clipped if flat is None else flat * size[c] + clipped
        idxs.append(flat.astype(jnp.int32))
        wts.append(jnp.where(inside, weight, 0.0))
    return jnp.stack(idxs, -1), jnp.stack(wts, -1)


@jax.jit
def _particle(flow: jax.Array) -> PartitionRecord:
    """:func:`particle_record` / :func:`particle3d_record` of a checked flow ``(*S, nd)``."""
    shape = flow.shape[:-1]
    n = math.prod(shape)
    pieces = 2 ** len(shape)
    idx, wts = _unit_cell_footprint(_sanitize_cells(flow))
    src = idx.reshape(-1)
    area, use = _normalise_sources(wts.reshape(-1), src, n, always=True)
    area = jnp.where(area < _BILINEAR_AREA_EPS, 0.0, area)
    return PartitionRecord(
        src=src,
        dst=jnp.repeat(jnp.arange(n, dtype=jnp.int32), pieces),
        area=area,
        overflow=jnp.zeros(shape, jnp.float32),
        source_use=use.reshape(shape),
        shape=shape,
        layout="dst",
        fanout=pieces,
        normalized=True,
    )


@jax.jit
def _splat(forward_flow: jax.Array) -> PartitionRecord:
    """:func:`splat_record` / :func:`splat3d_record` of a checked flow ``(*S, nd)``."""
    shape = forward_flow.shape[:-1]
    n = math.prod(shape)
    pieces = 2 ** len(shape)
    idx, wts = _unit_cell_footprint(_sanitize_cells(forward_flow))
    tot = wts.sum(-1, keepdims=True)
    area = wts / jnp.where(tot > 0, tot, 1.0)
    area = jnp.where(area < _BILINEAR_AREA_EPS, 0.0, area)
    return PartitionRecord(
        src=jnp.repeat(jnp.arange(n, dtype=jnp.int32), pieces),
        dst=idx.reshape(-1),
        area=area.reshape(-1),
        overflow=jnp.zeros(shape, jnp.float32),
        source_use=tot[..., 0],
        shape=shape,
        layout="src",
        fanout=pieces,
        normalized=True,
    )


def particle_record(flow: jax.Array) -> PartitionRecord:
    """Particle partition record of a backward flow (Deng et al., particle-based algorithm).

    New pixel ``d`` is a unit square centred at ``psi(centre_d) = centre_d + flow[d]``; ``w_ds`` is
    its bilinear overlap with old cell ``s`` (cells outside the image dropped), and each source's
    requests are divided by their sum, ``a_ds = w_ds / sum_d' w_d's``. The output is exactly white
    for any flow, folding and collapsing ones included; NaN/Inf flow pixels are disoccluded.

    Args:
      flow: ``(H, W, 2)`` backward flow.

    Returns:
      A :class:`PartitionRecord` with ``M = 4 H W`` pieces, layout ``"dst"``, normalised.

    Raises:
      ValueError: if ``flow`` is not ``(H, W, 2)`` or not real-valued.

    References:
      Deng et al. 2025 (arXiv:2411.01212), particle-based algorithm; docs/DESIGN.md section 3.
    """
    return _particle(_check_flow(flow))


def particle3d_record(flow: jax.Array) -> PartitionRecord:
    """Particle partition record of a 3D backward flow (the 3D particle-based algorithm).

    New voxel ``d`` is a unit cube centred at ``psi(centre_d) = centre_d + flow[d]``; ``w_ds`` is
    its trilinear overlap with old cell ``s`` (cells outside the volume dropped), and each source's
    requests are divided by their sum: ``a_ds = w_ds / sum_d' w_d's``. The warped volume is exactly
    white for any flow, folding and collapsing ones included; NaN/Inf flow voxels are disoccluded
    (fresh noise). The same code as :func:`particle_record`, one rank up.

    Args:
      flow: ``(D, H, W, 3)`` backward flow ``(dx, dy, dz)`` in voxels.

    Returns:
      A :class:`PartitionRecord` with ``shape == (D, H, W)`` and ``M = 8 D H W`` pieces, layout
      ``"dst"``, normalised.

    Raises:
      ValueError: if ``flow`` is not ``(D, H, W, 3)`` or not real-valued.

    References:
      Deng et al. 2025 (arXiv:2411.01212), particle-based algorithm, with trilinear overlaps.
    """
    return _particle(_check_flow(flow, ndim=3))


def splat_record(forward_flow: jax.Array) -> PartitionRecord:
    """Forward-splat partition record of a forward flow.

    Old pixel ``s`` becomes a unit square centred at ``centre_s + forward_flow[s]``; ``w_sd`` is its
    bilinear overlap with new cell ``d``, and each source's in-image overlaps are divided by their
    sum. The output is exactly white for any flow; new pixels that receive nothing (and sources with
    a NaN/Inf flow send nothing) get fresh noise.

    Args:
      forward_flow: ``(H, W, 2)`` forward flow of the old frame.

    Returns:
      A :class:`PartitionRecord` with ``M = 4 H W`` pieces, layout ``"src"``, normalised.

    Raises:
      ValueError: if ``forward_flow`` is not ``(H, W, 2)`` or not real-valued.

    References:
      docs/DESIGN.md section 3 (forward splat); Deng et al. 2025 (arXiv:2411.01212).
    """
    return _splat(_check_flow(forward_flow, "forward_flow"))


def splat3d_record(forward_flow: jax.Array) -> PartitionRecord:
    """Forward-splat partition record of a 3D forward flow.

    Old voxel ``s`` becomes a unit cube centred at ``centre_s + forward_flow[s]``; ``w_sd`` is its
    trilinear overlap with new cell ``d``, and each source's in-volume overlaps are divided by
    their sum. The output is exactly white for any flow; new voxels that receive nothing (and
    sources with a NaN/Inf flow send nothing) get fresh noise. The same code as
    :func:`splat_record`, one rank up.

    Args:
      forward_flow: ``(D, H, W, 3)`` forward flow of the old volume: where voxel ``(k, i, j)``
        goes, ``(dx, dy, dz)`` in voxels.

    Returns:
      A :class:`PartitionRecord` with ``shape == (D, H, W)`` and ``M = 8 D H W`` pieces, layout
      ``"src"``, normalised.

    Raises:
      ValueError: if ``forward_flow`` is not ``(D, H, W, 3)`` or not real-valued.

    References:
      docs/DESIGN.md section 3 (forward splat), with trilinear overlaps; Deng et al. 2025
      (arXiv:2411.01212).
    """
    return _splat(_check_flow(forward_flow, "forward_flow", ndim=3))
