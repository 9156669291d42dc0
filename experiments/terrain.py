"""A synthetic scene for camera warps: the depth of a hilly height field, by ray casting.

The 3D camera experiment (:mod:`experiments.warp3d`) flies a pinhole camera over this terrain and
warps noise with :func:`irwarp.flows.camera_flow`; the renderer is part of the experiment, not of
the library. World and camera axes follow :mod:`irwarp.flows` (OpenCV: ``x`` right, ``y`` down,
``z`` forward).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from irwarp import flows

__all__ = ["terrain_depth"]


def terrain_depth(
    h: int,
    w: int,
    intrinsics: ArrayLike,
    world_to_cam: ArrayLike,
    *,
    ground: float = 1.0,
    amplitude: float = 0.3,
    wavelength: float = 2.0,
    far: float = 50.0,
    steps: int = 96,
    bisections: int = 24,
) -> jax.Array:
    """Depth map of a hilly height field, by ray casting (a synthetic scene for camera warps).

    The world ``y`` axis points down (as the camera's); the ground is the surface
    ``y = g(x, z) = ground - amplitude sin(2 pi x / L) sin(2 pi z / L)`` (hills of height
    ``amplitude`` on a plane ``ground`` below the origin). The ray of pixel ``p`` is
    ``P(Z) = eye + Z R^T K^-1 (p, 1)``, parametrised by its z-depth ``Z``; the depth is the first
    ``Z`` in ``(0, far]`` with ``P_y(Z) >= g(P_x, P_z)``, bracketed on ``steps`` geometrically
    spaced samples and refined by ``bisections`` bisection steps. Rays that do not hit the ground
    before ``far`` (the sky) are NaN. Hills can hide valleys, so successive views have occlusions.

    Args:
      h: image height ``H``.
      w: image width ``W``.
      intrinsics: ``(3, 3)`` intrinsic matrix.
      world_to_cam: ``(4, 4)`` or ``(3, 4)`` extrinsic matrix ``[R | t]`` (see
        :func:`irwarp.flows.look_at`).
      ground: ``y`` of the mean ground plane (positive: below the origin).
      amplitude: height of the hills.
      wavelength: ``L``, period of the hills.
      far: largest depth searched.
      steps: static number of bracketing samples (>= 2).
      bisections: static number of bisection steps.

    Returns:
      ``(H, W)`` float32 z-depth, NaN for the sky.

    Raises:
      ValueError: for non-positive sizes, bad matrix shapes, ``steps < 2`` or a non-positive
        ``wavelength`` or ``far``.
    """
    rays = flows.camera_rays(h, w, intrinsics)  # checks the sizes and K
    h, w = rays.shape[:2]
    pose = jnp.asarray(world_to_cam, jnp.float32)
    if pose.shape not in ((4, 4), (3, 4)):
        raise ValueError(
            f"world_to_cam must be a (4, 4) or (3, 4) matrix [R | t]; got {pose.shape}"
        )
    r, t = pose[:3, :3], pose[:3, 3]
    if not isinstance(steps, numbers.Integral) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2; got {steps!r}")
    if not isinstance(bisections, numbers.Integral) or bisections < 0:
        raise ValueError(f"bisections must be a non-negative integer; got {bisections!r}")
    if wavelength <= 0 or far <= 0:
        raise ValueError(f"wavelength and far must be positive; got {wavelength!r} and {far!r}")
    eye = -r.T @ t
    dirs = rays @ r  # (H, W, 3): R^T K^-1 p per pixel
    kk = 2.0 * math.pi / wavelength

    def below(z):  # z: (H, W, S) depths -> P_y - g(P_x, P_z) >= 0 means at or under the ground
        p = eye + z[..., None] * dirs[..., None, :]
        g = ground - amplitude * jnp.sin(kk * p[..., 0]) * jnp.sin(kk * p[..., 2])
        return p[..., 1] - g

    near = far * 1e-4
    zs = near * (far / near) ** (jnp.arange(steps, dtype=jnp.float32) / (steps - 1))
    f = below(jnp.broadcast_to(zs, (h, w, steps)))
    hit = f >= 0
    first = jnp.argmax(hit, axis=-1)
    any_hit = hit.any(-1)
    hi = zs[first]
    lo = jnp.where(first > 0, zs[jnp.maximum(first - 1, 0)], 0.0)

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        under = below(mid[..., None])[..., 0] >= 0
        return jnp.where(under, lo, mid), jnp.where(under, mid, hi)

    lo, hi = jax.lax.fori_loop(0, int(bisections), step, (lo, hi))
    z = 0.5 * (lo + hi)
    return jnp.where(any_hit & (first > 0), z, jnp.nan).astype(jnp.float32)
