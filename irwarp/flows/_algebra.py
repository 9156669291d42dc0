"""Flow algebra: positions, composition, inversion, masking, and sampling between cell centres.

Between cell centres a flow is interpolated bilinearly (trilinearly for volumes), clamped to the
edge (docs/DESIGN.md section 1).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from irwarp._sampling import pixel_centres, sample_flow
from irwarp.flows._common import check_flow, check_size

__all__ = [
    "backward_from_forward",
    "compose",
    "flow_to_map",
    "forward_from_backward",
    "map_to_flow",
    "mask_flow",
    "sample_trilinear",
    "voxel_centres",
]


# --------------------------------------------------------------------------------------------------
# Volumes: cell centres and trilinear sampling.


def voxel_centres(d: int, h: int, w: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Centres ``(x, y, z)`` of a ``D x H x W`` volume, each ``(D, H, W)`` float32.

    Args:
      d: depth ``D``.
      h: height ``H``.
      w: width ``W``.

    Returns:
      ``(x, y, z)`` with ``x[k, i, j] = j + 0.5``, ``y = i + 0.5``, ``z = k + 0.5``.

    Raises:
      ValueError: if a size is not a positive integer.
    """
    d, h, w = check_size(d, h, w)
    z, y, x = jnp.meshgrid(
        jnp.arange(d, dtype=jnp.float32) + 0.5,
        jnp.arange(h, dtype=jnp.float32) + 0.5,
        jnp.arange(w, dtype=jnp.float32) + 0.5,
        indexing="ij",
    )
    return x, y, z


def _axis_weights(coord: jax.Array, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Lower index, upper index and upper weight of linear interpolation between cell centres."""
    u = jnp.clip(coord - 0.5, 0.0, n - 1.0)
    i0 = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, max(n - 2, 0))
    i1 = jnp.minimum(i0 + 1, n - 1)
    return i0, i1, u - i0


def sample_trilinear(field: ArrayLike, x: ArrayLike, y: ArrayLike, z: ArrayLike) -> jax.Array:
    """Trilinear interpolation of ``field`` between voxel centres, clamped to the edge.

    ``f(p) = sum_corners w_corner f[k, i, j]`` over the 8 centres around ``p`` (after clamping
    ``p`` onto the lattice of centres), the 3D form of docs/DESIGN.md section 1's bilinear rule.

    Args:
      field: ``(D, H, W, F)`` values at voxel centres.
      x: continuous ``x`` coordinates, any shape ``S``.
      y: ``y`` coordinates, shape ``S``.
      z: ``z`` coordinates, shape ``S``.

    Returns:
      ``(S..., F)`` float32 interpolated values.

    Raises:
      ValueError: if ``field`` is not 4-dimensional.
    """
    field = jnp.asarray(field, jnp.float32)
    if field.ndim != 4:
        raise ValueError(f"field must have shape (D, H, W, F); got {field.shape}")
    d, h, w = field.shape[:3]
    j0, j1, tx = _axis_weights(jnp.asarray(x, jnp.float32), w)
    i0, i1, ty = _axis_weights(jnp.asarray(y, jnp.float32), h)
    k0, k1, tz = _axis_weights(jnp.asarray(z, jnp.float32), d)
    tx, ty, tz = tx[..., None], ty[..., None], tz[..., None]
    out = 0.0
    for kk, wz in ((k0, 1.0 - tz), (k1, tz)):
        for ii, wy in ((i0, 1.0 - ty), (i1, ty)):
            for jj, wx in ((j0, 1.0 - tx), (j1, tx)):
                out = out + field[kk, ii, jj] * (wx * wy * wz)
    return out


# --------------------------------------------------------------------------------------------------
# Conversions, composition, inversion and masking.


def flow_to_map(flow: ArrayLike) -> jax.Array:
    """Absolute positions ``psi(p) = p + flow(p)`` at the pixel centres.

    Args:
      flow: ``(..., H, W, 2)`` backward flow.

    Returns:
      ``(..., H, W, 2)`` float32 positions ``(x, y)`` in frame ``t``.

    Raises:
      ValueError: if ``flow`` is not ``(..., H, W, 2)``.
    """
    flow = check_flow(flow, batched=True)
    x, y = pixel_centres(flow.shape[-3], flow.shape[-2])
    return flow + jnp.stack([x, y], axis=-1)


def map_to_flow(positions: ArrayLike) -> jax.Array:
    """Inverse of :func:`flow_to_map`: ``flow(p) = psi(p) - p`` at the pixel centres.

    Args:
      positions: ``(..., H, W, 2)`` absolute positions ``(x, y)`` in frame ``t``.

    Returns:
      ``(..., H, W, 2)`` float32 backward flow.

    Raises:
      ValueError: if ``positions`` is not ``(..., H, W, 2)``.
    """
    positions = check_flow(positions, "positions", batched=True)
    x, y = pixel_centres(positions.shape[-3], positions.shape[-2])
    return positions - jnp.stack([x, y], axis=-1)


def compose(flow_a: ArrayLike, flow_b: ArrayLike) -> jax.Array:
    """Chain two backward flows: frame ``t+2 -> t+1 -> t``.

    ``flow(p) = fb(p) + fa(p + fb(p))``, i.e. ``psi = psi_a o psi_b``, with ``fa`` sampled
    bilinearly between pixel centres (clamped to the edge, so points pulled from outside the frame
    reuse the border flow). NaN in ``fb`` gives NaN; NaN samples of ``fa`` are ignored and the rest
    renormalised, and a point whose four ``fa`` samples are all NaN gets NaN.

    Args:
      flow_a: ``(H, W, 2)`` backward flow of frame ``t+1`` (to frame ``t``).
      flow_b: ``(H, W, 2)`` backward flow of frame ``t+2`` (to frame ``t+1``).

    Returns:
      ``(H, W, 2)`` float32 backward flow of frame ``t+2`` to frame ``t``.

    Raises:
      ValueError: if either flow is not ``(H, W, 2)`` or their shapes differ.
    """
    fa = check_flow(flow_a, "flow_a")
    fb = check_flow(flow_b, "flow_b")
    if fa.shape != fb.shape:
        raise ValueError(
            f"flow_a and flow_b must have the same shape (H, W, 2); got {fa.shape} and {fb.shape}"
        )
    x, y = pixel_centres(fb.shape[0], fb.shape[1])
    return fb + sample_flow(fa, x + fb[..., 0], y + fb[..., 1])


def _invert(flow: jax.Array, iterations: int) -> jax.Array:
    x, y = pixel_centres(flow.shape[0], flow.shape[1])

    def step(_, inv):
        return -sample_flow(flow, x + inv[..., 0], y + inv[..., 1])

    return jax.lax.fori_loop(0, iterations, step, -flow)


def _check_iterations(iterations) -> int:
    if (
        not isinstance(iterations, numbers.Integral)
        or isinstance(iterations, bool)
        or iterations < 0
    ):
        raise ValueError(f"iterations must be a non-negative integer; got {iterations!r}")
    return int(iterations)


def backward_from_forward(forward_flow: ArrayLike, iterations: int = 20) -> jax.Array:
    """Approximate backward flow of frame ``t+1`` from the forward flow of frame ``t``.

    Solves ``b(p) = -f(p + b(p))`` by fixed-point iteration from ``b = -f``, with ``f`` sampled
    bilinearly between pixel centres (clamped to the edge). This is an approximation: it converges
    (geometrically) where ``f`` is a contraction, i.e. the forward motion changes by less than one
    pixel per pixel; otherwise it may oscillate. It never detects disocclusions: where no old pixel
    lands (a region uncovered in frame ``t+1``) the interpolated forward flow still gives a
    solution, so the hole is filled with a blend of the surrounding motion instead of being
    flagged. Mask such pixels yourself (e.g. with a forward-backward consistency check and
    :func:`mask_flow`). Iterates that land in NaN forward flow stay NaN.

    Args:
      forward_flow: ``(H, W, 2)`` forward flow of frame ``t``: pixel ``(i, j)`` of frame ``t``
        goes to ``p + forward_flow[i, j]`` in frame ``t+1``.
      iterations: number of fixed-point steps (static non-negative integer).

    Returns:
      ``(H, W, 2)`` float32 backward flow of frame ``t+1``.

    Raises:
      ValueError: if ``forward_flow`` is not ``(H, W, 2)`` or ``iterations`` is negative.
    """
    flow = check_flow(forward_flow, "forward_flow")
    return _invert(flow, _check_iterations(iterations))


def forward_from_backward(backward_flow: ArrayLike, iterations: int = 20) -> jax.Array:
    """Approximate forward flow of frame ``t`` from the backward flow of frame ``t+1``.

    The same fixed-point iteration as :func:`backward_from_forward` with the roles swapped:
    ``f(q) = -b(q + f(q))``. It is approximate in the same way: old pixels that are not seen in
    frame ``t+1`` (occluded, or pulled by no new pixel) still get a forward vector blended from
    their surroundings, and where ``b`` folds (several new pixels pull the same old point) only
    one of the possible images is found.

    Args:
      backward_flow: ``(H, W, 2)`` backward flow of frame ``t+1``.
      iterations: number of fixed-point steps (static non-negative integer).

    Returns:
      ``(H, W, 2)`` float32 forward flow of frame ``t``.

    Raises:
      ValueError: if ``backward_flow`` is not ``(H, W, 2)`` or ``iterations`` is negative.
    """
    flow = check_flow(backward_flow, "backward_flow")
    return _invert(flow, _check_iterations(iterations))


def mask_flow(flow: ArrayLike, valid: ArrayLike) -> jax.Array:
    """Set the flow to NaN where ``valid`` is False (irwarp gives those pixels fresh noise).

    Args:
      flow: ``(..., H, W, 2)`` backward flow.
      valid: ``(..., H, W)`` boolean mask, True where the flow is trusted.

    Returns:
      ``(..., H, W, 2)`` float32 flow with NaN at the invalid pixels.

    Raises:
      ValueError: if ``flow`` is not ``(..., H, W, 2)`` or ``valid`` is not ``flow.shape[:-1]``.
    """
    flow = check_flow(flow, batched=True)
    if jnp.shape(valid) != flow.shape[:-1]:
        raise ValueError(
            f"valid must have shape {flow.shape[:-1]} (flow.shape[:-1]); got {jnp.shape(valid)}"
        )
    return jnp.where(jnp.asarray(valid, bool)[..., None], flow, jnp.nan)
