"""Lagrangian warping on a key-addressed virtual Brownian sheet (beyond the paper).

Chained warps (grid, particle, splat) resample the noise at every frame and forget its sub-pixel
structure, so under sustained sub-pixel motion the noise drifts away from where it should be.
Here every frame integrates the *same* white-noise field ``W`` of the keyframe plane instead:
``Y_d = W(R_d) / sqrt(|R_d|)`` with ``R_d`` the pre-image ``psi_t(cell_d)`` of pixel ``d`` under the
composed backward map to the keyframe (frame 0), so rigid motion is reproduced exactly and every
frame is still exactly white.

The sheet. Each keyframe pixel ``(i, j)`` (also outside the frame: there its value is a fresh N(0,
1)) is the root of a quadtree. A node of level ``l`` (side ``2^-l``, area ``A = 4^-l``) with value
``V`` splits into 4 children by a Brownian bridge with areas ``1/4`` each, drawn as two nested
halvings: ``top = V/2 + (2^-l / 2) g_0``, ``bottom = V - top``, then each half ``h`` into
``left = h/2 + (2^-l / (2 sqrt 2)) g``, ``right = h - left`` (the law of the 4-way bridge:
conditional covariance ``A (delta_kl / 4 - 1/16)``; children sum to the parent up to one float
rounding per halving). In float32 the second-level halvings use ``(2^-l / 4) q`` with
``q = sqrt(2) g`` rounded once, so every product is by a power of 2 and a node has the same bits in
every compiled context, whatever XLA contracts into fused multiply-adds. Keys are threefry key
pairs: a root's key is ``fold_in(fold_in(k_tree, i), j)``, child ``c = 2 row_bit + col_bit`` has key
``fold_in(node_key, c)`` (threefry of the counter ``(0, c)``), and the 3 normals per feature of a
node's own split are the threefry words of counters ``(4, j)`` under its key (inverse normal CDF of
23 bits each; normal ``s F + f`` drives halving ``s`` of feature ``f``, and normal
``j < ceil(3F / 2)`` is the first word of counter ``(4, j)``, the others the second words). So a
node's value depends only on ``(key, keyframe noise, node address)``, never on which other nodes
were evaluated or in what order: it is the 2D analogue of diffrax's ``VirtualBrownianTree``, and no
upsampled field is ever stored.

Quadrature. ``R_d`` is approximated by the leaves of depth ``L`` (side ``2^-L``) whose centres lie in
the polygon through ``psi_t`` of the pixel's corners and edge midpoints (the grid variant's octagon),
with a winding-number test whose half-open crossing rule is evaluated identically for an edge shared
by two neighbouring polygons. Polygons of an injective map tile the plane, so every leaf goes to at
most one pixel: the pieces of different pixels are disjoint pieces of one white field, which makes
every frame exactly i.i.d. N(0, 1) (``Y_d = sum of its leaves / sqrt(count 4^-L)``, fresh noise for a
pixel that covers no leaf centre or has a non-finite flow). This is Chang et al.'s sub-pixel rule with
``N = 2^L``, but the leaves are never enumerated: a node whose leaf-centre square (the node shrunk by
half a leaf) no polygon edge touches is wholly inside or outside, and an inside node enters with its
value at once. Only nodes crossed by the boundary are split, so a pixel costs
``O(perimeter x 2^L)`` node splits instead of ``O(4^L)`` leaves. The frontier of boundary nodes of all
pixels of a block is one flat list of static length per level (``capacity`` times ``2^l + 1`` per
pixel, node values stored feature-major); each level processes only the shortest prefix of it
that holds its nodes, ``_FAST = (3/4,)`` of it (also ``3/5`` at the last level) or the whole
list (``lax.switch``), so the work follows the nodes present and the values are bit-identical
either way (under ``vmap`` the switch runs every branch). Nodes beyond the whole list are
dropped, the affected pixels are renormalised by the leaves they kept (still white, less
coherent) and the drop is reported by :func:`lagrangian_frame` with ``return_info=True``. A
frame's cost is driven by its splits (``3 F`` normals each, reported as ``split_nodes``): a node
on an edge shared by two pixels is split once for each of them (each pixel's frontier is its own;
a frontier shared between pixels would split about 2.3x fewer nodes at ``L = 4`` but is not
implemented: finding the shared nodes by a sort of the frame's split-node ids costs more on CPU
than the normals it would save; README).

Keyframes. The keyframe plane extends beyond the frame (virtual roots), so content entering the
frame is coherent too. What the sheet cannot follow is a pre-image that stops being a valid region
of the keyframe: non-finite flow (fresh noise), folds and collapses of the composed map (a leaf
then serves several pixels, as in Chang et al.), and growing distortion of the composed map (zoom
makes pre-images tiny or large). :func:`lagrangian_sequence` therefore restarts every
``keyframe_every`` frames: frame ``t = m K`` becomes the root noise of a new sheet with key
``fold_in(key, m)`` and the composed flow restarts from zero (a static schedule, so the scan keeps
static shapes).

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212); Chang et al., How I Warped Your Noise, ICLR 2024 (sub-pixel rule);
  Li et al., Scalable Gradients for Stochastic Differential Equations, AISTATS 2020 (virtual
  Brownian tree); docs/DESIGN.md section 2 (Brownian bridges).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from irwarp import _layout, _sampling, _schedule
from irwarp import methods as methods_lib
from irwarp._random import threefry_words as _threefry_words
from irwarp._random import u32 as _u32
from irwarp._random import uniform_normal as _uniform_normal
from irwarp.records import flow_at_offsets, polygon_offsets

__all__ = [
    "node_values",
    "polygon_integrals",
    "lagrangian_frame",
    "lagrangian_sequence",
    "DEFAULT_DEPTH",
    "DEFAULT_CAPACITY",
]

DEFAULT_DEPTH = 4
DEFAULT_CAPACITY = 4.0
# High words of the threefry counters under a node key: 0 gives the children's keys (fold_in).
_SPLIT = 4  # the normals of the node's own split
_EXTERIOR = 5  # the value of a root outside the keyframe
# Margin (pixels) around a node's leaf-centre square inside which an edge makes it "partial". It
# covers float32 rounding of the crossing test for coordinates up to a few thousand pixels, so a
# node classified whole agrees with the leaf-by-leaf test of every leaf in it.
_EPS = 1e-3
# Side (keyframe pixels) of the window of roots searched for each pixel's pre-image.
_WINDOW = 3
# Target number of float32 child values per block of pixels (about 4 MiB: small blocks stay in
# cache; measured faster than 8 or 32 MiB on a 2-core CPU).
_BLOCK_FLOATS = 1 << 20
MAX_DEPTH = 12
# Fractions of the frontier capacity offered at each level besides the full capacity; the level
# processes the shortest one that holds its nodes (lax.switch), so the work follows the nodes
# present, not the worst case. Typical use at L = 4 is 50-70% of the capacity per level.
# (0.5, 0.625, 0.75) ran a frame about 10 % faster than (0.75,) but more than doubled compile time
# (13.9 s against 5.7 s for a depth-4 sequence at 12x12; the sheet tests 196 s against 124 s).
_FAST = (0.75,)
# One more fraction for the last level only: it holds the most nodes (typical use 50-55 % at
# L = 4: the boundary's leaf-centre squares are smallest there) and its body, without compaction,
# is the cheapest to compile. Measured 5-6 % faster per frame at F = 16 (3 % at F = 4) for 2-10 %
# more compile time; the same for level 0 gained 2 % for another 12 %.
_FAST_LAST = (0.6,)


# --------------------------------------------------------------------------------------------------
# Input checks and small helpers.


def _check_depth(depth, name: str = "depth") -> int:
    return methods_lib.integer(0, MAX_DEPTH)(name, depth)


def _check_capacity(capacity) -> float:
    return methods_lib.positive_real("capacity", capacity)


def _check_noise(noise) -> jax.Array:
    noise = jnp.asarray(noise)
    if noise.ndim < 3:
        raise ValueError(f"noise0 must have shape (..., H, W, C); got {noise.shape}")
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise ValueError(f"noise0 must be a floating-point array; got dtype {noise.dtype}")
    return noise


def _check_flow(flow, h: int, w: int, name: str) -> jax.Array:
    flow = jnp.asarray(flow)
    if flow.shape != (h, w, 2):
        raise ValueError(f"{name} must have shape (H, W, 2) = {(h, w, 2)}; got {flow.shape}")
    if not (jnp.issubdtype(flow.dtype, jnp.floating) or jnp.issubdtype(flow.dtype, jnp.integer)):
        raise ValueError(f"{name} must be real-valued; got dtype {flow.dtype}")
    return flow


def _typed_key(key) -> jax.Array:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key; got shape {key.shape}")
        return key
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise ValueError(
            f"key must be a typed PRNG key or a legacy uint32[2] key; got {key.dtype}{key.shape}"
        )
    return jax.random.wrap_key_data(key)


def _normals(
    k1: jax.Array, k2: jax.Array, role: int, num: int, scale=None, probe=None
) -> jax.Array:
    """``(num, K)`` i.i.d. N(0, 1) from key words ``k1, k2`` ``(K,)``: threefry at ``(role, j)``.

    Normal ``j < ceil(num / 2)`` is the first word of counter ``(role, j)``, normal
    ``ceil(num / 2) + j`` the second word, each by the inverse CDF of its top 23 bits,
    ``sqrt(2) erfinv((2 k + 1) 2^-23 - 1)``. Planar layout: counters on the leading axis and keys
    on the minor one, so the hash runs over long contiguous rows, which XLA's CPU backend
    vectorises (a short minor axis, or a transpose after the hash, runs several times slower).
    With ``scale`` (``num`` static floats), normal ``j`` is multiplied by ``scale[j]`` (rounded once).

    With a ``probe`` (a float the caller guarantees finite), the words and then the normals are
    computed into buffers of their own (:func:`irwarp._layout.in_buffer`; computing them first and
    materialising them after added a copy each, 4 % of a frame): each counter is hashed once for
    both of its words, and the consumers read the normals from a buffer instead of recomputing
    them. The bits are the same either way: ``sqrt(2) erfinv`` is rounded before the ``scale``
    product in both.
    """
    half = -(-num // 2)
    j = jax.lax.broadcasted_iota(jnp.uint32, (half, 1), 0)

    def hash_words(k1, k2):
        return _threefry_words(k1[None], k2[None], role, j)

    def to_normals(words):
        return jnp.concatenate([_uniform_normal(b) for b in words], axis=0)[:num]

    if probe is None:
        g = to_normals(hash_words(k1, k2))
    else:
        # Both words of a counter from one hash: stored as the bit patterns of a complex64, so
        # that one fusion with one output computes them (two outputs hash everything twice).
        # Each stage runs as a conditional's branch, straight into a buffer of its own.
        def pair_fn(k1, k2):
            words = hash_words(k1, k2)
            return jax.lax.complex(*(jax.lax.bitcast_convert_type(b, jnp.float32) for b in words))

        def normals_fn(pair):
            return to_normals(
                [jax.lax.bitcast_convert_type(p, jnp.uint32) for p in (pair.real, pair.imag)]
            )

        always = probe == probe
        pair = _layout.in_buffer(pair_fn, k1, k2, always=always)
        g = _layout.in_buffer(normals_fn, pair, always=always)
    if scale is not None:
        g = g * jnp.asarray(scale, jnp.float32)[:, None]
    # The barrier keeps XLA from fusing (and so recomputing) the hash into every consumer.
    return jax.lax.optimization_barrier(g)


def _tree_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Raw threefry key data ``(2,)`` of the sheet's tree and the key of the fresh noise."""
    k_tree, k_fresh = jax.random.split(key)
    return jax.random.bits(k_tree, (2,), jnp.uint32), k_fresh


def _root_keys(kd_tree: jax.Array, rows: jax.Array, cols: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Key words of ``fold_in(fold_in(k_tree, i), j)`` for integer roots ``(i, j)`` (any shape)."""
    a1, a2 = _threefry_words(kd_tree[0], kd_tree[1], 0, _u32(rows))
    return _threefry_words(a1, a2, 0, _u32(cols))


def _root_values(x: jax.Array, k1, k2, rows: jax.Array, cols: jax.Array, probe=None) -> jax.Array:
    """Planar root values ``(F, K)``: keyframe noise inside the frame, fresh N(0, 1) outside.

    ``probe``: as in :func:`_normals` (materialises the normals and the result).
    """
    h, w, f = x.shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    own = x[jnp.clip(rows, 0, h - 1), jnp.clip(cols, 0, w - 1)].T
    value = jnp.where(inside, own, _normals(k1, k2, _EXTERIOR, f, probe=probe))
    if probe is not None:
        return _layout.materialize(value, probe)
    # Materialised once: fused into its consumers the select with the gather is measured slow.
    return jax.lax.optimization_barrier(value)


def _SPLIT_SCALE(f: int) -> list[float]:
    """Static scales of the ``3 F`` split normals: ``(g_0, sqrt(2) g_1, sqrt(2) g_2)``."""
    return [1.0] * f + [math.sqrt(2.0)] * (2 * f)


def _children(value: jax.Array, q: jax.Array, level: int) -> list[jax.Array]:
    """Children ``[tl, tr, bl, br]``, each ``(F, K)``, of level-``l`` nodes ``value`` ``(F, K)``.

    ``q`` ``(3, F, K)``: the scaled normals ``(g_0, sqrt(2) g_1, sqrt(2) g_2)`` of the nodes' splits.
    Nested halvings of the 4-way Brownian bridge with areas 1/4 (module docstring): every product
    is by a power of 2 (exact), so each child has one rounding per halving whatever XLA contracts
    into fused multiply-adds, and the same bits in every compiled context.
    """
    side = 2.0**-level
    top = 0.5 * value + (0.5 * side) * q[0]
    bottom = value - top
    tl = 0.5 * top + (0.25 * side) * q[1]  # (side / (2 sqrt 2)) g_1
    bl = 0.5 * bottom + (0.25 * side) * q[2]
    return [tl, top - tl, bl, bottom - bl]


def _split(value: jax.Array, k1: jax.Array, k2: jax.Array, level: int, probe=None) -> jax.Array:
    """Children ``(4, F, K)`` (top-left, top-right, bottom-left, bottom-right) of level-``l`` nodes.

    ``value`` ``(F, K)`` (planar), key words ``k1, k2`` ``(K,)``. Nested halvings of the 4-way
    Brownian bridge with areas 1/4 (module docstring); normal ``s F + f`` of the node's split
    drives halving ``s`` of feature ``f``. ``probe``: as in :func:`_normals`.
    """
    f = value.shape[0]
    q = _normals(k1, k2, _SPLIT, 3 * f, _SPLIT_SCALE(f), probe).reshape(3, f, -1)
    return jnp.stack(_children(value, q, level))


# --------------------------------------------------------------------------------------------------
# Node values by address.


def node_values(
    key: jax.Array,
    noise0: jax.Array,
    rows: jax.Array,
    cols: jax.Array,
    sub_rows: jax.Array,
    sub_cols: jax.Array,
    *,
    level: int,
) -> jax.Array:
    """Integrals of the sheet's white noise over quadtree nodes, addressed by key and position.

    The node of level ``l`` with root pixel ``(i, j)`` and sub-position ``(a, b)``, ``0 <= a, b <
    2^l``, is the square ``[j + b 2^-l, j + (b+1) 2^-l] x [i + a 2^-l, i + (a+1) 2^-l]`` of the
    keyframe plane. Its value is found by descending ``l`` bridge splits from the root value
    ``noise0[i, j]`` (a fresh N(0, 1) for a root outside the frame); it depends only on ``key``,
    ``noise0[i, j]`` and the address, never on the other queries, their order or number. The same
    nodes are used by :func:`lagrangian_frame` with the same ``key``.

    Args:
      key: PRNG key of the sheet.
      noise0: ``(..., H, W, C)`` keyframe noise; every leading element and channel is an
        independent sheet.
      rows, cols: integer root pixels, any shape ``S`` (may lie outside ``[0, H) x [0, W)``).
      sub_rows, sub_cols: integer sub-positions in ``[0, 2^level)``, shape ``S``.
      level: static level ``l >= 0``; ``l = 0`` gives the root values.

    Returns:
      ``(*S, ..., C)`` float32 node values, each ``N(0, 4^-l)`` unconditionally.

    Raises:
      ValueError: on a bad level, noise or index shapes.

    References:
      Li et al. 2020 (virtual Brownian tree); docs/DESIGN.md section 2.
    """
    level = _check_depth(level, "level")
    noise0 = _check_noise(noise0)
    idx = [jnp.asarray(a) for a in (rows, cols, sub_rows, sub_cols)]
    if any(not jnp.issubdtype(a.dtype, jnp.integer) for a in idx):
        raise ValueError(
            "rows, cols, sub_rows and sub_cols must be integer arrays; got dtypes "
            f"{[str(a.dtype) for a in idx]}"
        )
    shape = idx[0].shape
    if any(a.shape != shape for a in idx):
        raise ValueError(
            f"rows, cols, sub_rows and sub_cols must share one shape; got {[a.shape for a in idx]}"
        )
    flat = [a.reshape(-1).astype(jnp.int32) for a in idx]
    value = _node_values(_typed_key(key), noise0, *flat, level=level)
    # Features are ordered (leading, channel), as folded by _layout.fold.
    return value.reshape(shape + noise0.shape[:-3] + noise0.shape[-1:])


@functools.partial(jax.jit, static_argnames=("level",))
def _node_values(key, noise0, rows, cols, sub_rows, sub_cols, *, level: int):
    x, _ = _layout.fold(noise0)
    k_tree, _ = _tree_key(key)
    k1, k2 = _root_keys(k_tree, rows, cols)
    value = _root_values(x, k1, k2, rows, cols)  # (F, K)
    for m in range(level):
        shift = level - 1 - m
        child = 2 * ((sub_rows >> shift) & 1) + ((sub_cols >> shift) & 1)
        children = _split(value, k1, k2, m)  # (4, F, K)
        value = jnp.take_along_axis(children, child[None, None, :], axis=0)[0]
        k1, k2 = _threefry_words(k1, k2, 0, _u32(child))
    return value.T


# --------------------------------------------------------------------------------------------------
# Polygon geometry: edge tables, winding numbers, node classification.


def _edge_table(verts: jax.Array) -> dict[str, jax.Array]:
    """Per-edge data ``(..., V)`` of closed polygons ``(..., V, 2)``, in canonical orientation.

    Each edge is stored from its endpoint with the smaller ``(y, x)`` to the other, so that two
    polygons sharing an edge compute bit-identical crossings; ``dir`` is +1 when the polygon
    traverses it downwards and -1 upwards.
    """
    ax, ay = verts[..., 0], verts[..., 1]
    bx, by = jnp.roll(ax, -1, axis=-1), jnp.roll(ay, -1, axis=-1)
    swap = (by < ay) | ((by == ay) & (bx < ax))
    ux, uy = jnp.where(swap, bx, ax), jnp.where(swap, by, ay)
    vx, vy = jnp.where(swap, ax, bx), jnp.where(swap, ay, by)
    dy = vy - uy
    slope = (vx - ux) / jnp.where(dy > 0, dy, 1.0)
    ex, ey = vx - ux, dy
    return dict(
        ux=ux,
        uy=uy,
        vy=vy,
        slope=slope,
        dir=jnp.where(swap, -1.0, 1.0),
        ex=ex,
        ey=ey,
        xmin=jnp.minimum(ux, vx),
        xmax=jnp.maximum(ux, vx),
        norm=jnp.abs(ex) + ey,
    )


_EDGE_FIELDS = ("ux", "uy", "vy", "slope", "dir", "ex", "ey", "xmin", "xmax", "norm")


def _edges(table: dict, axis: int = -1) -> list[dict]:
    """The ``V`` edges of ``table`` (fields ``(m, V)``) as field dicts ``(m,)`` with a unit ``axis``."""
    v = table["ux"].shape[-1]
    return [{name: jnp.expand_dims(f[:, i], axis) for name, f in table.items()} for i in range(v)]


def _edge_planes(table: dict) -> jax.Array:
    """The fields of ``table`` ``(m, V)`` stacked planar: ``(len(_EDGE_FIELDS), V, m)``."""
    return jnp.stack([table[name].T for name in _EDGE_FIELDS])


def _winding(edges: list, px: jax.Array, py: jax.Array) -> jax.Array:
    """Winding number of points ``(px, py)`` about polygons with ``edges`` (broadcasting).

    Half-open crossing rule: an edge counts when ``uy <= py < vy`` and the point lies strictly left
    of the crossing. Shared edges give the same bit for both polygons, so for polygons that tile
    the plane every point has winding 1 in exactly one of them. The sum over the edges is written
    out (XLA's CPU reductions over a short axis are not vectorised).
    """
    total = None
    for e in edges:
        crosses = (e["uy"] <= py) & (py < e["vy"])
        xint = e["ux"] + (py - e["uy"]) * e["slope"]
        term = jnp.where(crosses & (px < xint), e["dir"], 0.0)
        total = term if total is None else total + term
    return total


def _touches(edges: list, cx: jax.Array, cy: jax.Array, r: float) -> jax.Array:
    """Whether any edge meets the closed square of centre ``(cx, cy)`` and half-side ``r``.

    Separating-axis test of a segment against an axis-aligned square (axes x, y and the segment's
    normal).
    """
    out = None
    for e in edges:
        box = (e["xmin"] <= cx + r) & (e["xmax"] >= cx - r)
        box = box & (e["uy"] <= cy + r) & (e["vy"] >= cy - r)
        line = jnp.abs(e["ex"] * (cy - e["uy"]) - e["ey"] * (cx - e["ux"])) <= r * e["norm"]
        hit = box & line
        out = hit if out is None else out | hit
    return out


def _classify(edges: list, cx, cy, level: int, depth: int):
    """``(inside, partial)`` of level-``l`` nodes with centres ``(cx, cy)`` against their polygon.

    ``inside``: every leaf centre of the node is in the polygon (a leaf: its centre is);
    ``partial``: an edge passes within ``_EPS`` of the node's leaf-centre square, so it is split.
    """
    wind = _winding(edges, cx, cy) != 0
    if level == depth:
        return wind, jnp.zeros_like(wind)
    r = 0.5 * 2.0**-level - 0.5 * 2.0**-depth + _EPS
    partial = _touches(edges, cx, cy, r)
    return wind & ~partial, partial


def _compact(flags: jax.Array, k: int):
    """Indices ``(k,)`` of the first ``k`` True entries of ``flags`` ``(M,)``, a mask and the count."""
    pos = jnp.cumsum(flags.astype(jnp.int32)) - 1
    total = pos[-1] + 1
    slot = jnp.where(flags & (pos < k), pos, k)
    sel = (
        jnp.zeros((k,), jnp.int32)
        .at[slot]
        .set(jnp.arange(flags.shape[0], dtype=jnp.int32), mode="drop")
    )
    act = jnp.arange(k) < total
    return sel, act, total


def _level_capacity(m: int, capacity: float, level: int) -> int:
    """Static frontier length at ``level`` for a block of ``m`` pixels."""
    return max(1, int(math.ceil(m * capacity * (2**level + 1))))


# --------------------------------------------------------------------------------------------------
# Region integrals over a block of polygons.


def _level(front, n, planes, *, k: int, k_next: int | None, level: int, depth: int, m: int):
    """Split the first ``k`` frontier nodes of ``level`` (``n`` of them active) and classify.

    ``front`` is ``(d, gi, gj, value, k1, k2)``: pixel ``(K,)``, node row and column at the level
    ``(K,)``, planar values ``(F, K)`` and key words ``(K,)``; only the first ``k <= K`` slots are
    read. Returns the leaf sums ``(m, F)`` and counts ``(m,)`` of the children that are
    wholly inside, and (unless the children are leaves) the next frontier of length ``k_next`` and
    its number of nodes.
    """
    d, gi, gj, value, k1, k2 = (a[..., :k] for a in front)
    act = jnp.arange(k) < n
    probe = planes[0, 0, 0]  # finite: a vertex coordinate
    side = 2.0 ** -(level + 1)

    def classify(d, gi, gj, act):
        # All 4 children of a node in one elementwise pass (the node's edges are gathered once),
        # packed as bits: inside at bit c, partial at bit 4 + c.
        edges = [
            {name: planes[a, i][d] for a, name in enumerate(_EDGE_FIELDS)}
            for i in range(planes.shape[1])
        ]
        code = jnp.zeros_like(d)
        for c in range(4):
            cy = (2 * gi + (c >> 1) + 0.5) * side
            cx = (2 * gj + (c & 1) + 0.5) * side
            c_in, c_part = _classify(edges, cx, cy, level + 1, depth)
            code = code | ((c_in & act).astype(jnp.int32) << c)
            code = code | ((c_part & act).astype(jnp.int32) << (4 + c))
        return code

    code = _schedule.in_buffer(classify, d, gi, gj, act, always=probe == probe)  # (k,)
    children = _split(value, k1, k2, level, probe)  # (4, F, k)
    # Sums over the 4 children written out: XLA's CPU reductions over a short axis are many times
    # slower than the same adds fused elementwise.
    c_in = [((code >> c) & 1) != 0 for c in range(4)]
    contrib = functools.reduce(jnp.add, [jnp.where(c_in[c], children[c], 0.0) for c in range(4)])
    num = functools.reduce(jnp.add, [(code >> c) & 1 for c in range(4)])  # (k,)
    contrib = _schedule.materialize(contrib, probe)
    acc = _schedule.segment_sum(contrib.T, d, m)
    cnt = jax.ops.segment_sum(num * 4 ** (depth - level - 1), d, num_segments=m)
    # Materialise the level's sums, so that XLA cannot merge them into the caller's running sum
    # (a scatter-add into it changes the order of the float additions with the call site).
    acc = jax.lax.optimization_barrier(acc)
    if k_next is None:
        return acc, cnt
    # Next frontier in (parent, child) order, so it stays sorted by pixel.
    flags = ((code[:, None] >> jnp.arange(4, 8, dtype=jnp.int32)) & 1) != 0  # (k, 4)
    sel, _, total = _compact(flags.reshape(-1), k_next)
    parent, child = sel // 4, sel % 4
    n1, n2 = _threefry_words(k1[parent], k2[parent], 0, _u32(child))
    # One scalar gather per feature from the flat (4, F, k) children: the values come out planar
    # (a gather of (F,)-columns, what children[child, :, parent] lowers to, came out transposed and
    # was copied back: about a tenth of a frame at F = 16).
    f = children.shape[1]
    flat, base = children.reshape(-1), child * (f * k) + parent
    nval = jnp.stack([flat[base + i * k] for i in range(f)])
    nxt = (d[parent], 2 * gi[parent] + (child >> 1), 2 * gj[parent] + (child & 1), nval, n1, n2)
    return acc, cnt, nxt, total


def _block(k_tree, x, verts, valid, *, depth: int, capacity: float):
    """Leaf sums ``(m, F)`` and leaf counts ``(m,)`` of ``m`` polygons, and their node counts.

    The counts: ``(L,)`` roots read then frontier lengths of levels ``1 .. L-1``, pixels beyond the
    window of roots, and the level-0 frontier length (the split roots).

    ``verts`` ``(m, V, 2)`` in keyframe coordinates, ``valid`` ``(m,)``. Level ``l`` of the
    frontier has ``_level_capacity(m, capacity, l)`` slots; only the shortest prefix
    ``_level_capacity(m, frac * capacity, l)``, ``frac`` in ``_FAST`` (and ``_FAST_LAST`` at the
    last level) or 1, that holds its nodes is processed (``lax.switch``), with bit-identical
    results.
    """
    m = verts.shape[0]
    table = _edge_table(verts)  # fields (m, V)
    planes = _edge_planes(table)  # (fields, V, m)
    lo = jnp.floor(jnp.min(verts, axis=1)).astype(jnp.int32)  # (m, 2) window origin (x, y)
    hi = jnp.max(verts, axis=1)
    beyond = jnp.any(hi > (lo + _WINDOW).astype(jnp.float32), axis=-1) & valid
    ar = jnp.arange(_WINDOW * _WINDOW, dtype=jnp.int32)
    rows = lo[:, 1, None] + ar // _WINDOW  # (m, 9)
    cols = lo[:, 0, None] + ar % _WINDOW
    inside, partial = _classify(_edges(table, axis=1), cols + 0.5, rows + 0.5, 0, depth)
    inside = (inside & valid[:, None]).reshape(-1)  # (m 9), pixel-major
    partial = (partial & valid[:, None]).reshape(-1)

    # Roots that are whole or split: their values are needed.
    k0 = _level_capacity(m, capacity, 0)
    sel, act, total = _compact(inside | partial, k0)
    totals = [total]
    d, r = sel // (_WINDOW * _WINDOW), sel % (_WINDOW * _WINDOW)
    gi, gj = lo[d, 1] + r // _WINDOW, lo[d, 0] + r % _WINDOW
    # Materialised (a cond XLA cannot fold; barriers are dropped before fusion on CPU): fused into
    # their consumers, the two chained key hashes were recomputed per feature and per use, in a
    # loop XLA does not vectorise (measured 10x slower than computing them once).
    probe = verts[0, 0, 0]  # finite: invalid polygons were zeroed by the callers
    k1, k2 = _schedule.materialize(_root_keys(k_tree, gi, gj), probe)
    value = _root_values(x, k1, k2, gi, gj, probe)  # (F, k0)
    whole = inside[sel] & act
    acc = _schedule.segment_sum(jnp.where(whole, value, 0.0).T, d, m)
    cnt = jax.ops.segment_sum(whole.astype(jnp.int32) * 4**depth, d, num_segments=m)
    # The split roots, compacted: the frontier of level 0.
    sel, _, n0 = _compact(partial[sel] & act, k0)
    n = n0
    front = (d[sel], gi[sel], gj[sel], value[:, sel], k1[sel], k2[sel])
    for level in range(depth):
        last = level + 1 == depth
        k_next = None if last else _level_capacity(m, capacity, level + 1)
        sizes = sorted(
            {
                _level_capacity(m, frac * capacity, level)
                for frac in _FAST + (_FAST_LAST if last else ())
            }
            | {_level_capacity(m, capacity, level)}
        )
        branch = functools.partial(
            _level, planes=planes, k_next=k_next, level=level, depth=depth, m=m
        )
        out = _schedule.prefix_switch(
            n, sizes, lambda k, branch=branch: functools.partial(branch, k=k), front, n
        )
        acc += out[0]
        cnt += out[1]
        if not last:
            front, n = out[2], out[3]
            totals.append(n)
    return acc, cnt, jnp.stack(totals), jnp.sum(beyond), n0


@_schedule.scheduled
def _blocks(k_tree, x, verts, valid, *, depth: int, capacity: float):
    """:func:`_block` over all ``n`` polygons in blocks of static size (``lax.map``).

    Returns leaf sums ``(n, F)``, leaf counts ``(n,)`` and a dict of diagnostics: ``dropped_nodes``
    (nodes beyond the frontier capacity), ``frontier_use`` ``(L,)`` (largest fraction of a level's
    capacity that a block needed; above 1 means nodes were dropped), ``beyond_window`` (pixels
    whose pre-image leaves the ``3 x 3`` window of roots) and ``split_nodes`` (nodes of levels
    ``0 .. L-1`` the polygons asked to split, counted once per polygon, dropped ones included).
    """
    n = verts.shape[0]
    f = x.shape[-1]
    per_pixel = 4 * capacity * (2 ** max(depth - 1, 0) + 1) * max(f, 1)
    nb = -(-n // int(max(64, _BLOCK_FLOATS // per_pixel)))
    m = -(-n // nb)
    pad = nb * m - n
    verts = jnp.pad(verts, ((0, pad), (0, 0), (0, 0)))
    valid = jnp.pad(valid, (0, pad))
    caps = jnp.asarray([_level_capacity(m, capacity, lv) for lv in range(max(depth, 1))])

    def fn(args):
        return _block(k_tree, x, *args, depth=depth, capacity=capacity)

    if nb == 1:
        acc, cnt, totals, beyond, n0 = fn((verts, valid))
        totals, beyond, n0 = totals[None], beyond[None], n0[None]
    else:
        acc, cnt, totals, beyond, n0 = jax.lax.map(
            fn, (verts.reshape(nb, m, -1, 2), valid.reshape(nb, m))
        )
    info = dict(
        dropped_nodes=jnp.sum(jnp.maximum(totals - caps, 0)),
        frontier_use=jnp.max(totals, axis=0) / caps,
        beyond_window=jnp.sum(beyond),
        # Level 0 splits the partial roots (n0); totals[:, 0] counts all the roots read.
        split_nodes=jnp.sum(n0) + jnp.sum(totals[:, 1:]),
    )
    return acc.reshape(nb * m, f)[:n], cnt.reshape(-1)[:n], info


def polygon_integrals(
    key: jax.Array,
    noise0: jax.Array,
    polygons: jax.Array,
    *,
    depth: int = DEFAULT_DEPTH,
    capacity: float = DEFAULT_CAPACITY,
) -> tuple[jax.Array, jax.Array]:
    """Integrals of the sheet's white noise over polygons of the keyframe plane, by leaf centres.

    ``S_p = sum of the depth-``L`` leaves whose centres lie in polygon p`` (winding number != 0,
    half-open crossing rule), evaluated hierarchically: whole nodes enter with their value, only
    nodes crossed by an edge are split.

    Args:
      key: PRNG key of the sheet.
      noise0: ``(..., H, W, C)`` keyframe noise.
      polygons: ``(P, V, 2)`` closed polygons, vertices ``(x, y)`` in keyframe pixels; each must
        fit a ``3 x 3``-pixel window from the floor of its bounding box (leaves beyond are left
        out).
      depth: static leaf level ``L`` (leaves of side ``2^-L``).
      capacity: frontier budget, split nodes per polygon per level in units of ``2^l + 1``.

    Returns:
      ``(sums, counts)``: ``(..., P, C)`` float32 leaf sums (each ``N(0, count 4^-L)``) and
      ``(P,)`` int32 numbers of leaves.

    References:
      Chang et al. 2024 (sub-pixel rule); Li et al. 2020 (virtual Brownian tree).
    """
    depth = _check_depth(depth)
    capacity = _check_capacity(capacity)
    noise0 = _check_noise(noise0)
    polygons = jnp.asarray(polygons, jnp.float32)
    if polygons.ndim != 3 or polygons.shape[-1] != 2 or polygons.shape[1] < 3:
        raise ValueError(f"polygons must have shape (P, V, 2) with V >= 3; got {polygons.shape}")
    return _polygon_integrals(_typed_key(key), noise0, polygons, depth=depth, capacity=capacity)


@functools.partial(jax.jit, static_argnames=("depth", "capacity"))
def _polygon_integrals(key, noise0, polygons, *, depth: int, capacity: float):
    x, unfold = _layout.fold(noise0)
    k_tree, _ = _tree_key(key)
    valid = jnp.all(jnp.isfinite(polygons), axis=(-2, -1))
    verts = jnp.where(valid[:, None, None], polygons, 0.0)
    acc, cnt, _ = _blocks(k_tree, x, verts, valid, depth=depth, capacity=capacity)
    return unfold(acc), cnt


# --------------------------------------------------------------------------------------------------
# Frames and sequences.


# Public diagnostics for cost harnesses (experiments/coherence.py): the geometry a frame splits and
# the normals its splits draw, each without running a frame.

# Side (keyframe pixels) of the window of roots searched for each pixel's pre-image.
ROOT_WINDOW = _WINDOW
# Margin (pixels) around a node's leaf-centre square within which an edge makes the node split.
SPLIT_MARGIN = _EPS


def frame_octagons(total_flow: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The pre-image polygons a frame integrates over: ``psi`` of each pixel's 4 corners and 4 edge
    midpoints under the composed backward flow, in keyframe pixels.

    Args:
      total_flow: ``(H, W, 2)`` backward flow from the frame to its keyframe (NaN: occluded).

    Returns:
      ``(verts, valid)``: ``(H W, 8, 2)`` float32 vertices ``(x, y)`` (an invalid pixel's own
      square) and ``(H W,)`` bool, False where the flow is not finite.

    Raises:
      ValueError: if ``total_flow`` is not ``(H, W, 2)``.
    """
    total_flow = jnp.asarray(total_flow, jnp.float32)
    if total_flow.ndim != 3 or total_flow.shape[-1] != 2:
        raise ValueError(f"total_flow must have shape (H, W, 2); got {total_flow.shape}")
    return _octagons(total_flow)


def split_normals(k1: jax.Array, k2: jax.Array, features: int, probe=None) -> jax.Array:
    """The ``3 F`` scaled normals that splitting each of ``K`` nodes draws, as a frame draws them.

    Args:
      k1, k2: ``(K,)`` uint32 key words of the nodes.
      features: ``F``, the noise's features per pixel (batch times channels).
      probe: a traced finite float, or None; as in a frame, it materialises the normals in
        buffers of their own (so that XLA cannot fold the work away in a timing harness).

    Returns:
      ``(3 F, K)`` float32: ``g_0`` and ``sqrt(2) g_1, sqrt(2) g_2`` for every node.

    Raises:
      ValueError: if ``features`` is not a positive integer or the key words differ in shape.
    """
    if isinstance(features, bool) or not isinstance(features, int) or features < 1:
        raise ValueError(f"features must be a positive integer; got {features!r}")
    if jnp.shape(k1) != jnp.shape(k2) or jnp.ndim(k1) != 1:
        raise ValueError(f"k1 and k2 must both be (K,); got {jnp.shape(k1)} and {jnp.shape(k2)}")
    return _normals(k1, k2, _SPLIT, 3 * features, _SPLIT_SCALE(features), probe)


def _octagons(total_flow: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Absolute octagons ``(H W, 8, 2)`` through ``psi`` of corners and midpoints, and validity."""
    h, w = total_flow.shape[:2]
    flow = _sampling.sanitize_flow(total_flow, h, w)
    offs = polygon_offsets(2)
    fl = flow_at_offsets(flow, offs)  # (H, W, 8, 2)
    ii, jj = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    # (j + ox) is exact, so a vertex shared by two neighbouring pixels gets the same bits in both.
    base = jnp.stack([jj[..., None] + offs[:, 0], ii[..., None] + offs[:, 1]], axis=-1)
    verts = base + fl
    valid = jnp.all(jnp.isfinite(verts), axis=(-2, -1)) & jnp.all(jnp.isfinite(flow), -1)
    verts = jnp.where(valid[..., None, None], verts, base)
    return verts.reshape(h * w, 8, 2), valid.reshape(-1)


def _frame_flat(key, x, total_flow, frame, *, depth: int, capacity: float):
    """Float32 ``(H, W, F)`` frame from keyframe noise ``x`` and the composed flow; info dict."""
    h, w, f = x.shape
    k_tree, k_fresh = _tree_key(key)
    verts, valid = _octagons(total_flow)
    acc, cnt, info = _blocks(k_tree, x, verts, valid, depth=depth, capacity=capacity)
    ok = cnt > 0
    area = cnt.astype(jnp.float32) * 4.0**-depth
    fresh = jax.random.normal(jax.random.fold_in(k_fresh, frame), (h * w, f), jnp.float32)
    y = jnp.where(ok[:, None], acc / jnp.sqrt(jnp.where(ok, area, 1.0))[:, None], fresh)
    info = dict(info, leaves=cnt.reshape(h, w), fresh=jnp.sum(~ok))
    return y.reshape(h, w, f), info


def lagrangian_frame(
    key: jax.Array,
    noise0: jax.Array,
    total_flow: jax.Array,
    *,
    depth: int = DEFAULT_DEPTH,
    capacity: float = DEFAULT_CAPACITY,
    frame: int | jax.Array = 0,
    return_info: bool = False,
):
    """Noise of frame ``t`` as integrals of the keyframe's virtual Brownian sheet.

    ``Y_d = W(R_d) / sqrt(|R_d|)`` where ``R_d`` is the union of depth-``L`` leaves of the keyframe
    plane whose centres lie in ``psi_t(cell_d)`` (the octagon through ``psi_t`` of the pixel's
    corners and edge midpoints), ``psi_t(p) = p + total_flow(p)`` the composed backward map from
    frame ``t`` to the keyframe; fresh N(0, 1) where ``R_d`` is empty or the flow is non-finite.
    Exactly i.i.d. N(0, 1) for an injective map; the same ``key`` gives the same sheet, so frames
    evaluated with one key are coherent through the keyframe.

    Args:
      key: PRNG key of the sheet (shared by all frames of one keyframe segment).
      noise0: ``(..., H, W, C)`` keyframe noise; leading elements and channels are independent
        sheets.
      total_flow: ``(H, W, 2)`` composed backward flow from frame ``t`` to the keyframe (use
        :func:`irwarp.flows.compose`).
      depth: static leaf level ``L`` (Chang et al.'s ``N = 2^L``); cost grows as ``2^L``.
      capacity: static frontier budget: split nodes kept per pixel per level, in units of
        ``2^l + 1`` (about 2 for a translation along an axis, 4 for a generic unit square).
      frame: integer (may be traced) frame index; the fresh noise uses ``fold_in(., frame)``.
      return_info: static; also return a dict with ``leaves`` ``(H, W)`` (leaf counts),
        ``dropped_nodes`` (split nodes beyond the capacity; 0 means the quadrature is exact),
        ``split_nodes`` (bridge splits asked for by the pixels, one per pixel and node: the
        frame's cost driver, ``3 F`` normals each), ``beyond_window`` and ``fresh`` (number of
        pixels given fresh noise).

    Returns:
      ``(..., H, W, C)`` noise in ``noise0``'s dtype (and the info dict with ``return_info``).

    Raises:
      ValueError: on a bad depth or capacity, non-float noise or a flow that is not ``(H, W, 2)``.

    References:
      Chang et al. 2024 (sub-pixel rule); Deng et al. 2025 (arXiv:2411.01212); module docstring.
    """
    depth = _check_depth(depth)
    capacity = _check_capacity(capacity)
    noise0 = _check_noise(noise0)
    h, w = noise0.shape[-3:-1]
    total_flow = _check_flow(total_flow, h, w, "total_flow")
    y, info = _frame(_typed_key(key), noise0, total_flow, frame, depth=depth, capacity=capacity)
    return (y, info) if return_info else y


@functools.partial(jax.jit, static_argnames=("depth", "capacity"))
def _frame(key, noise0, total_flow, frame, *, depth: int, capacity: float):
    x, unfold = _layout.fold(noise0)
    y, info = _frame_flat(
        key, x, total_flow.astype(jnp.float32), frame, depth=depth, capacity=capacity
    )
    return unfold(y), info


def lagrangian_sequence(
    key: jax.Array,
    noise0: jax.Array,
    flows: jax.Array,
    *,
    depth: int = DEFAULT_DEPTH,
    capacity: float = DEFAULT_CAPACITY,
    keyframe_every: int | None = None,
) -> jax.Array:
    """Warp a sequence by integrating one virtual Brownian sheet per keyframe segment.

    The same as ``irwarp.warp_sequence(key, noise0, flows, method="lagrangian", ...)``: frame ``t``
    is :func:`lagrangian_frame` of the keyframe noise with the backward flows composed from frame
    ``t`` back to the keyframe (the noise stream, :mod:`irwarp.stream`). Keyframes are
    frame 0 and, with ``keyframe_every=K``, every frame ``t = m K``: the frame's own noise becomes
    the roots of sheet ``m`` with key ``fold_in(key, m)`` and the composed flow restarts. Rigid
    motion is exact (no drift) within a segment; every frame is exactly white for injective maps.

    Args:
      key: PRNG key.
      noise0: ``(..., H, W, C)`` noise of frame 0.
      flows: ``(T, H, W, 2)`` backward flows; ``flows[t-1]`` maps frame ``t`` into frame ``t-1``.
      depth: static leaf level ``L``.
      capacity: static frontier budget (see :func:`lagrangian_frame`).
      keyframe_every: static ``K >= 1`` or None (one sheet for the whole sequence).

    Returns:
      ``(T + 1, ..., H, W, C)`` noise; frame 0 is ``noise0``.

    Raises:
      ValueError: on bad options, non-float noise, or flows that are not ``(T, H, W, 2)``.

    References:
      Module docstring; Deng et al. 2025 (arXiv:2411.01212); Chang et al. 2024.
    """
    # The keyframe schedule and its keying live in the noise stream (irwarp.stream), once.
    from irwarp import stream  # noqa: PLC0415 (irwarp.stream imports this module)

    return stream.warp_sequence(
        key,
        noise0,
        flows,
        method="lagrangian",
        depth=depth,
        capacity=capacity,
        keyframe_every=keyframe_every,
    )
