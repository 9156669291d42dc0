"""Baselines: fresh, fixed, nearest, bilinear, and Chang et al.'s conditional upsampling.

These functions take folded float32 noise ``(H, W, F)`` and one flow ``(H, W, 2)``; the public entry
point is :func:`irwarp.warp` with ``method=...``, which validates and folds the inputs.

References:
  Chang, Tang, Gross, Azevedo. How I Warped Your Noise: a Temporally-Correlated Noise Prior for
  Diffusion Models. ICLR 2024 (arXiv:2504.03072), "integral noise" algorithm.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from irwarp import _sampling
from irwarp._checks import check_int_option as _check_int_option
from irwarp.records import flow_at_offsets, polygon_offsets

__all__ = [
    "fresh_warp",
    "fixed_warp",
    "nearest_warp",
    "bilinear_warp",
    "chang_warp",
]


def fresh_warp(key: jax.Array, x: jax.Array, flow: jax.Array) -> jax.Array:
    """New i.i.d. N(0, 1) noise every frame: ``(H, W, F)`` ignoring ``x`` and ``flow``."""
    del flow
    return jax.random.normal(key, x.shape, jnp.float32)


def fixed_warp(key: jax.Array, x: jax.Array, flow: jax.Array) -> jax.Array:
    """The same noise every frame: returns ``x`` ``(H, W, F)`` unchanged."""
    del key, flow
    return x


def _targets(flow: jax.Array):
    h, w = flow.shape[:2]
    flow = _sampling.sanitize_flow(flow, h, w)
    cx, cy = _sampling.pixel_centres(h, w)
    px, py = cx + flow[..., 0], cy + flow[..., 1]
    inside = jnp.isfinite(px) & jnp.isfinite(py) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    return jnp.where(inside, px, 0.5), jnp.where(inside, py, 0.5), inside


def nearest_warp(key: jax.Array, x: jax.Array, flow: jax.Array) -> jax.Array:
    """``Y_d = X`` of the cell containing ``psi(centre_d)``; fresh noise outside the frame.

    Not white: one old value may be copied to several new pixels. ``(H, W, F)``.
    """
    px, py, inside = _targets(flow)
    i = jnp.floor(py).astype(jnp.int32)
    j = jnp.floor(px).astype(jnp.int32)
    fresh = jax.random.normal(key, x.shape, jnp.float32)
    return jnp.where(inside[..., None], x[i, j], fresh)


def bilinear_warp(key: jax.Array, x: jax.Array, flow: jax.Array) -> jax.Array:
    """``Y_d`` = bilinear resample of ``X`` at ``psi(centre_d)``; fresh noise outside the frame.

    Not white: interpolation lowers the variance and correlates neighbours. ``(H, W, F)``.
    """
    px, py, inside = _targets(flow)
    fresh = jax.random.normal(key, x.shape, jnp.float32)
    return jnp.where(inside[..., None], _sampling.sample_bilinear(x, px, py), fresh)


def _edge(ax, ay, bx, by, px, py):
    """Edge function ``cross(b - a, p - a)`` (positive to the right of a->b on screen)."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def _inside_triangle(tri, px, py):
    """Point-in-triangle for either orientation, with a top-left tie rule (no double counting)."""
    (ax, ay), (bx, by), (cx, cy) = tri
    area = _edge(ax, ay, bx, by, cx, cy)
    flip = jnp.where(area < 0, -1.0, 1.0)
    ok = area != 0
    for (ux, uy), (vx, vy) in (((ax, ay), (bx, by)), ((bx, by), (cx, cy)), ((cx, cy), (ax, ay))):
        e = flip * _edge(ux, uy, vx, vy, px, py)
        ex, ey = flip * (vx - ux), flip * (vy - uy)
        top_left = (ey < 0) | ((ey == 0) & (ex > 0))
        ok = ok & ((e > 0) | ((e == 0) & top_left))
    return ok


def chang_warp(
    key: jax.Array, x: jax.Array, flow: jax.Array, *, upsample: int = 4, capacity: int = 3
) -> jax.Array:
    """Chang et al.'s integral noise warping with ``N x N`` conditional upsampling.

    Every old cell is upsampled to ``N^2`` sub-pixels conditioned on its value,
    ``u = z - mean(z) + X / N^2`` with ``z ~ N(0, 1/N^2)``. New pixel ``d`` sums the sub-pixels whose
    centres lie in the union of the 8 triangles fanned from ``psi(centre_d)`` through ``psi`` of the
    pixel's corners and edge midpoints (a sub-pixel counts once), divided by ``sqrt(count / N^2)``;
    a pixel that covers no sub-pixel centre gets fresh noise. Memory and random numbers grow as
    ``N^2``. Sub-pixels are searched in a window of ``(capacity - 1) N + 1`` per side, which covers
    polygons up to ``capacity - 1`` pixels wide.

    Args:
      key: PRNG key.
      x: ``(H, W, F)`` float32 noise.
      flow: ``(H, W, 2)`` backward flow.
      upsample: ``N >= 1``.
      capacity: window size in pixels (``>= 2``).

    Returns:
      ``(H, W, F)`` warped noise.

    References:
      Chang et al., ICLR 2024, integral noise warping; docs/DESIGN.md section 3.
    """
    n = _check_int_option("upsample", upsample, 1)
    cap = _check_int_option("capacity", capacity, 2)
    h, w, f = x.shape
    k_sub, k_fresh = jax.random.split(key)
    z = jax.random.normal(k_sub, (h, n, w, n, f), jnp.float32) / n
    u = z - z.mean(axis=(1, 3), keepdims=True) + x[:, None, :, None, :] / (n * n)
    u = u.reshape(h * n, w * n, f)

    flow = _sampling.sanitize_flow(flow, h, w)
    offs = np.concatenate([polygon_offsets(2), np.array([[0.5, 0.5]], np.float32)], 0)
    rel = jnp.asarray(offs) + flow_at_offsets(flow, offs)  # (H, W, 9, 2)
    valid = jnp.all(jnp.isfinite(rel), axis=(-2, -1)) & jnp.all(jnp.isfinite(flow), -1)
    rel = jnp.where(valid[..., None, None], rel, jnp.asarray(offs))
    side = (cap - 1) * n + 1
    # First sub-pixel index whose centre (k + 0.5) / N is >= the polygon's minimum, per axis.
    start = jnp.ceil(jnp.min(rel[..., :8, :], axis=-2) * n - 0.5)  # (H, W, 2), relative
    ar = jnp.arange(side, dtype=jnp.float32)
    # Sub-pixel centres relative to the pixel's corner, in pixels: (H, W, side)
    sx = (start[..., 0:1] + ar + 0.5) / n
    sy = (start[..., 1:2] + ar + 0.5) / n
    ctr = (rel[..., 8, 0], rel[..., 8, 1])
    ring = [(rel[..., k, 0], rel[..., k, 1]) for k in range(8)]
    inside = jnp.zeros(sx.shape[:2] + (side, side), bool)
    px = sx[..., None, :]
    py = sy[..., :, None]

    def expand(v):
        return v[..., None, None]

    for k in range(8):
        a, b = ring[k], ring[(k + 1) % 8]
        tri = ((expand(ctr[0]), expand(ctr[1])), (expand(a[0]), expand(a[1])))
        tri = tri + ((expand(b[0]), expand(b[1])),)
        inside = inside | _inside_triangle(tri, px, py)
    ii, jj = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    gy = (ii * n)[..., None] + start[..., 1].astype(jnp.int32)[..., None] + jnp.arange(side)
    gx = (jj * n)[..., None] + start[..., 0].astype(jnp.int32)[..., None] + jnp.arange(side)
    in_img = ((gy >= 0) & (gy < h * n))[..., :, None] & ((gx >= 0) & (gx < w * n))[..., None, :]
    mask = inside & in_img & valid[..., None, None]
    gyc = jnp.clip(gy, 0, h * n - 1)
    gxc = jnp.clip(gx, 0, w * n - 1)

    def row(args):
        gy_r, gx_r, m_r = args  # (W, side), (W, side), (W, side, side)
        vals = u[gy_r[:, :, None], gx_r[:, None, :]]  # (W, side, side, F)
        return jnp.einsum("wab,wabf->wf", m_r.astype(jnp.float32), vals)

    total = jax.lax.map(row, (gyc, gxc, mask))  # (H, W, F), one image row at a time
    count = mask.sum((-2, -1)).astype(jnp.float32)
    fresh = jax.random.normal(k_fresh, x.shape, jnp.float32)
    ok = (count > 0)[..., None]
    scale = jnp.sqrt(jnp.where(ok, count[..., None], 1.0)) / n
    return jnp.where(ok, total / scale, fresh)
