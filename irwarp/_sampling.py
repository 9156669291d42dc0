"""Private sampling helpers shared by records, baselines, flows and stats.

Conventions (docs/DESIGN.md section 1): pixel ``(i, j)`` is the unit square ``[j, j+1] x [i, i+1]``, its
centre is ``(j + 0.5, i + 0.5)``; fields are sampled between pixel centres by bilinear interpolation,
clamped to the edge outside the centre lattice.
"""

from __future__ import annotations

import jax.numpy as jnp


def bilinear_weights(field: jnp.ndarray, x: jnp.ndarray, y: jnp.ndarray, *, ignore_nonfinite: bool):
    """Bilinear interpolation of ``field`` ``(H, W, F)`` at continuous points ``(x, y)`` (any shape S).

    Samples sit at pixel centres; points outside the centre lattice are clamped to the edge.
    With ``ignore_nonfinite`` the non-finite samples get weight 0 and the rest are renormalised; a
    point whose samples are all non-finite gets NaN.

    Returns:
      ``(S..., F)`` interpolated values (float32).
    """
    h, w = field.shape[0], field.shape[1]
    u = jnp.clip(x - 0.5, 0.0, w - 1.0)
    v = jnp.clip(y - 0.5, 0.0, h - 1.0)
    j0 = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, max(w - 2, 0))
    i0 = jnp.clip(jnp.floor(v).astype(jnp.int32), 0, max(h - 2, 0))
    j1 = jnp.minimum(j0 + 1, w - 1)
    i1 = jnp.minimum(i0 + 1, h - 1)
    tx = (u - j0)[..., None]
    ty = (v - i0)[..., None]
    corners = (
        (field[i0, j0], (1 - tx) * (1 - ty)),
        (field[i0, j1], tx * (1 - ty)),
        (field[i1, j0], (1 - tx) * ty),
        (field[i1, j1], tx * ty),
    )
    if not ignore_nonfinite:
        return sum(val * wt for val, wt in corners)
    total = 0.0
    norm = 0.0
    for val, wt in corners:
        ok = jnp.isfinite(val)
        wt = jnp.where(ok, wt, 0.0)
        total = total + jnp.where(ok, val, 0.0) * wt
        norm = norm + wt
    return jnp.where(norm > 0, total / jnp.where(norm > 0, norm, 1.0), jnp.nan)


def sample_bilinear(image: jnp.ndarray, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Bilinear sample of ``image`` ``(H, W, F)`` at points ``(x, y)`` of shape S; returns ``(S..., F)``."""
    return bilinear_weights(image, x, y, ignore_nonfinite=False)


def sample_flow(flow: jnp.ndarray, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Flow ``(H, W, 2)`` at points ``(x, y)``, ignoring non-finite flow samples; ``(S..., 2)``."""
    return bilinear_weights(flow, x, y, ignore_nonfinite=True)


def pixel_centres(h: int, w: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Centres ``(x, y)`` of an ``H x W`` grid, each of shape ``(H, W)`` (float32)."""
    y, x = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32) + 0.5,
        jnp.arange(w, dtype=jnp.float32) + 0.5,
        indexing="ij",
    )
    return x, y


def sanitize_flow(flow: jnp.ndarray, h: int, w: int) -> jnp.ndarray:
    """Float32 flow with magnitudes clamped so that later arithmetic stays finite.

    A displacement larger than ``4 (H + W)`` moves a point far outside the frame whatever its
    exact value, so clamping it changes nothing that lands inside the image. NaN stays NaN, and
    +-Inf becomes NaN (both mean "disoccluded", docs/DESIGN.md / issue rule).
    """
    flow = jnp.asarray(flow, jnp.float32)
    bound = 4.0 * (h + w) + 16.0
    flow = jnp.where(jnp.isinf(flow), jnp.nan, flow)
    return jnp.clip(flow, -bound, bound)
