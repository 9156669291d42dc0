"""Synthetic flows of images and volumes: rigid, affine, smooth, degenerate, and the zoos.

Every flow here is a backward flow (docs/DESIGN.md section 1): ``(H, W, 2)`` with vectors ``(dx, dy)``
for images, ``(D, H, W, 3)`` with ``(dx, dy, dz)`` for volumes. The geometric constructors are
parametrised by what the *content* does between frame ``t`` and frame ``t+1``; the flow they return
is the inverse of that motion. Each 3D constructor sits next to its 2D counterpart.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212). Dombre et al., Chaotic streamlines in the ABC flows, J. Fluid Mech. 167
  (1986) (the Arnold-Beltrami-Childress velocity field of :func:`abc_velocity`).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from irwarp._sampling import pixel_centres
from irwarp.flows._algebra import sample_trilinear, voxel_centres
from irwarp.flows._common import (
    check_flow,
    check_size,
    check_vector,
    default_centre,
    is_concrete_number,
)

__all__ = [
    "DEGENERATE",
    "DEGENERATE3D",
    "abc_velocity",
    "advection3d",
    "affine",
    "affine3d",
    "collapse",
    "collapse3d",
    "fold3d",
    "fold_over",
    "identity",
    "identity3d",
    "leave_frame",
    "leave_volume3d",
    "nan_patch",
    "nan_patch3d",
    "rotation",
    "rotation3d",
    "shear",
    "shear_waves",
    "translation",
    "translation3d",
    "vortex",
    "zoo",
    "zoo3d",
    "zoom",
    "zoom3d",
]

DEGENERATE: frozenset[str] = frozenset({"fold_over", "collapse", "leave_frame", "nan_patch"})
"""Names of the :func:`zoo` entries whose backward map is not injective, or not defined everywhere."""

DEGENERATE3D: frozenset[str] = frozenset(
    {"fold", "collapse", "collapse_point", "leave_volume", "nan_patch"}
)
"""Names of the :func:`zoo3d` entries whose backward map is not injective or not defined everywhere."""


# --------------------------------------------------------------------------------------------------
# Affine maps (2D and 3D).


def _rotation_matrix(degrees) -> jax.Array:
    """Matrix (acting on ``(x, y)``, ``y`` down) turning content counter-clockwise on screen."""
    theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    # (1, 0) (right) -> (cos, -sin): towards the top of the screen for a positive angle.
    return jnp.stack([jnp.stack([cos, sin]), jnp.stack([-sin, cos])])


def _affine_flow(h: int, w: int, matrix: jax.Array, offset: jax.Array, c: jax.Array) -> jax.Array:
    # psi(p) - p = (A - I)(p - c) + offset, written without the cancellation of c + ... - p.
    x, y = pixel_centres(h, w)
    px, py = x - c[0], y - c[1]
    dx = (matrix[0, 0] - 1.0) * px + matrix[0, 1] * py + offset[0]
    dy = matrix[1, 0] * px + (matrix[1, 1] - 1.0) * py + offset[1]
    return jnp.stack([dx, dy], axis=-1).astype(jnp.float32)


def _affine_flow3d(d: int, h: int, w: int, a: jax.Array, offset: jax.Array, c: jax.Array):
    # psi(p) - p = (A - I)(p - c) + offset, written without the cancellation of c + ... - p.
    x, y, z = voxel_centres(d, h, w)
    rel = (x - c[0], y - c[1], z - c[2])
    comps = []
    for r in range(3):
        comp = offset[r] + (a[r, r] - 1.0) * rel[r]
        for q in range(3):
            if q != r:
                comp = comp + a[r, q] * rel[q]
        comps.append(comp)
    return jnp.stack(comps, axis=-1).astype(jnp.float32)


def _rotation_matrix3d(axis: jax.Array, degrees) -> jax.Array:
    """Right-hand rotation by ``degrees`` about ``axis`` (Rodrigues), acting on ``(x, y, z)``."""
    u = axis / jnp.linalg.norm(axis)
    theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
    cross = jnp.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]], jnp.float32)
    return (
        jnp.cos(theta) * jnp.eye(3, dtype=jnp.float32)
        + jnp.sin(theta) * cross
        + (1.0 - jnp.cos(theta)) * jnp.outer(u, u)
    )


# --------------------------------------------------------------------------------------------------
# Rigid, affine, smooth and degenerate flows; each 3D one next to its 2D one.


def identity(h: int, w: int) -> jax.Array:
    """Zero backward flow: frame ``t+1`` equals frame ``t``.

    Args:
      h: image height ``H`` (pixels, positive).
      w: image width ``W`` (pixels, positive).

    Returns:
      ``(H, W, 2)`` float32 zeros.

    Raises:
      ValueError: if ``h`` or ``w`` is not a positive integer.
    """
    h, w = check_size(h, w)
    return jnp.zeros((h, w, 2), jnp.float32)


def identity3d(d: int, h: int, w: int) -> jax.Array:
    """Zero 3D backward flow: frame ``t+1`` equals frame ``t``.

    Args:
      d: depth ``D``.
      h: height ``H``.
      w: width ``W``.

    Returns:
      ``(D, H, W, 3)`` float32 zeros.

    Raises:
      ValueError: if a size is not a positive integer.
    """
    d, h, w = check_size(d, h, w)
    return jnp.zeros((d, h, w, 3), jnp.float32)


def translation(h: int, w: int, dx: ArrayLike, dy: ArrayLike) -> jax.Array:
    """Constant backward flow ``(dx, dy)``.

    Frame ``t+1`` at ``p`` shows frame ``t`` at ``p + (dx, dy)``, so the content moves by
    ``(-dx, -dy)``: ``translation(h, w, 1, 0)`` shifts the picture one pixel to the *left*.

    Args:
      h: image height ``H``.
      w: image width ``W``.
      dx: horizontal component (pixels, may be fractional; a scalar or a traced scalar).
      dy: vertical component (pixels, ``y`` grows downwards).

    Returns:
      ``(H, W, 2)`` float32 flow, equal to ``(dx, dy)`` everywhere.

    Raises:
      ValueError: if ``h`` or ``w`` is not a positive integer.
    """
    h, w = check_size(h, w)
    vec = jnp.stack([jnp.asarray(dx, jnp.float32), jnp.asarray(dy, jnp.float32)])
    if vec.shape != (2,):
        raise ValueError(
            f"dx and dy must be scalars; got shapes {jnp.shape(dx)} and {jnp.shape(dy)}"
        )
    return jnp.broadcast_to(vec, (h, w, 2))


def translation3d(d: int, h: int, w: int, dx: ArrayLike, dy: ArrayLike, dz: ArrayLike) -> jax.Array:
    """Constant 3D backward flow ``(dx, dy, dz)``: the content moves by ``(-dx, -dy, -dz)``.

    Args:
      d: depth ``D``.
      h: height ``H``.
      w: width ``W``.
      dx: ``x`` component in voxels (scalar, may be fractional or traced).
      dy: ``y`` component.
      dz: ``z`` component.

    Returns:
      ``(D, H, W, 3)`` float32 flow, ``(dx, dy, dz)`` everywhere.

    Raises:
      ValueError: if a size is not a positive integer or a component is not a scalar.
    """
    d, h, w = check_size(d, h, w)
    comps = [jnp.asarray(c, jnp.float32) for c in (dx, dy, dz)]
    if any(c.shape != () for c in comps):
        raise ValueError(f"dx, dy, dz must be scalars; got shapes {[c.shape for c in comps]}")
    return jnp.broadcast_to(jnp.stack(comps), (d, h, w, 3))


def affine(
    h: int,
    w: int,
    matrix: ArrayLike,
    offset: ArrayLike = (0.0, 0.0),
    centre: ArrayLike | None = None,
) -> jax.Array:
    """Backward flow of the affine backward map ``psi(p) = c + A (p - c) + offset``.

    ``A`` acts on column vectors ``(x, y)``. The flow is ``psi(p) - p`` at the pixel centres; since
    it is affine, its bilinear interpolation reproduces ``psi`` exactly inside the centre lattice.
    Note that ``A`` is the *backward* map: content that moves by ``M`` needs ``A = M^-1``
    (see :func:`rotation`, :func:`zoom`, :func:`shear`).

    Args:
      h: image height ``H``.
      w: image width ``W``.
      matrix: ``(2, 2)`` matrix ``A`` acting on ``(x, y)``.
      offset: ``(2,)`` offset ``(ox, oy)`` added after the linear part.
      centre: ``(2,)`` point ``c = (cx, cy)``; defaults to the image centre ``(W/2, H/2)``.

    Returns:
      ``(H, W, 2)`` float32 backward flow.

    Raises:
      ValueError: for non-positive sizes or wrongly shaped ``matrix``, ``offset`` or ``centre``.
    """
    h, w = check_size(h, w)
    a = jnp.asarray(matrix, jnp.float32)
    if a.shape != (2, 2):
        raise ValueError(f"matrix must have shape (2, 2); got {a.shape}")
    o = jnp.asarray(offset, jnp.float32)
    if o.shape != (2,):
        raise ValueError(f"offset must have shape (2,) as (ox, oy); got {o.shape}")
    return _affine_flow(h, w, a, o, default_centre((h, w), centre))


def affine3d(
    d: int,
    h: int,
    w: int,
    matrix: ArrayLike,
    offset: ArrayLike = (0.0, 0.0, 0.0),
    centre: ArrayLike | None = None,
) -> jax.Array:
    """3D backward flow of the affine backward map ``psi(p) = c + A (p - c) + offset``.

    ``A`` acts on column vectors ``(x, y, z)``; the flow is ``psi(p) - p`` at the voxel centres,
    which trilinear interpolation reproduces exactly inside the lattice of centres. ``A`` is the
    *backward* map: content that moves by ``M`` needs ``A = M^-1``.

    Args:
      d: depth ``D``.
      h: height ``H``.
      w: width ``W``.
      matrix: ``(3, 3)`` matrix ``A`` (may be singular: a collapsing map).
      offset: ``(3,)`` offset added after the linear part.
      centre: ``(3,)`` point ``c = (cx, cy, cz)``; defaults to the volume centre.

    Returns:
      ``(D, H, W, 3)`` float32 backward flow.

    Raises:
      ValueError: for bad sizes or wrongly shaped ``matrix``, ``offset`` or ``centre``.
    """
    d, h, w = check_size(d, h, w)
    a = jnp.asarray(matrix, jnp.float32)
    if a.shape != (3, 3):
        raise ValueError(f"matrix must have shape (3, 3); got {a.shape}")
    o = check_vector(offset, "offset", "(ox, oy, oz)")
    return _affine_flow3d(d, h, w, a, o, default_centre((d, h, w), centre))


def rotation(h: int, w: int, degrees: ArrayLike, centre: ArrayLike | None = None) -> jax.Array:
    """Backward flow for content that rotates by ``degrees`` about ``centre``.

    Positive ``degrees`` turn the content counter-clockwise *as seen on screen* (``y`` down): with
    ``+90``, what was to the right of the centre in frame ``t`` is above it in frame ``t+1``. The
    content moves by ``q -> c + R (q - c)`` with ``R = [[cos, sin], [-sin, cos]]`` on ``(x, y)``;
    the returned flow is that of the inverse, ``psi(p) = c + R^T (p - c)``.

    Args:
      h: image height ``H``.
      w: image width ``W``.
      degrees: rotation angle of the content, in degrees (scalar, may be traced).
      centre: ``(2,)`` centre of rotation ``(cx, cy)``; defaults to ``(W/2, H/2)``.

    Returns:
      ``(H, W, 2)`` float32 backward flow.

    Raises:
      ValueError: for non-positive sizes or a wrongly shaped ``centre``.
    """
    h, w = check_size(h, w)
    r = _rotation_matrix(degrees)
    return _affine_flow(h, w, r.T, jnp.zeros(2, jnp.float32), default_centre((h, w), centre))


def rotation3d(
    d: int,
    h: int,
    w: int,
    axis: ArrayLike,
    degrees: ArrayLike,
    centre: ArrayLike | None = None,
) -> jax.Array:
    """Backward flow for content that rotates by ``degrees`` about ``axis`` through ``centre``.

    The content moves by ``q -> c + R (q - c)`` with ``R`` the right-hand rotation about ``axis``
    in ``(x, y, z)`` coordinates; the flow is that of ``psi(p) = c + R^T (p - c)``. Since ``y``
    points down and ``z`` into the screen, ``axis = (0, 0, -1)`` (towards the viewer) turns every
    depth slice exactly like the 2D :func:`irwarp.flows.rotation` (counter-clockwise on screen).

    Args:
      d: depth ``D``.
      h: height ``H``.
      w: width ``W``.
      axis: ``(3,)`` rotation axis ``(ax, ay, az)`` (need not be normalised; non-zero).
      degrees: rotation angle of the content (scalar, may be traced).
      centre: ``(3,)`` point on the axis; defaults to the volume centre ``(W/2, H/2, D/2)``.

    Returns:
      ``(D, H, W, 3)`` float32 backward flow.

    Raises:
      ValueError: for bad sizes, a wrongly shaped or (concrete) zero ``axis``, or a bad ``centre``.
    """
    d, h, w = check_size(d, h, w)
    ax = check_vector(axis, "axis", "(ax, ay, az)")
    try:
        is_zero = not np.any(np.asarray(axis) != 0)
    except jax.errors.TracerArrayConversionError:  # a traced axis cannot be checked
        is_zero = False
    if is_zero:
        raise ValueError("axis must be a non-zero vector; got (0, 0, 0)")
    r = _rotation_matrix3d(ax, degrees)
    return _affine_flow3d(
        d, h, w, r.T, jnp.zeros(3, jnp.float32), default_centre((d, h, w), centre)
    )


def zoom(h: int, w: int, factor: ArrayLike, centre: ArrayLike | None = None) -> jax.Array:
    """Backward flow for content magnified by ``factor`` about ``centre``.

    ``factor > 1`` zooms in (the content grows, each new pixel's pre-image is ``1/factor`` pixels
    wide); ``factor < 1`` zooms out (pre-images are wider than a pixel, and the border pulls from
    outside the frame). ``psi(p) = c + (p - c) / factor``.

    Args:
      h: image height ``H``.
      w: image width ``W``.
      factor: magnification of the content (scalar, non-zero, may be traced).
      centre: ``(2,)`` fixed point ``(cx, cy)``; defaults to ``(W/2, H/2)``.

    Returns:
      ``(H, W, 2)`` float32 backward flow.

    Raises:
      ValueError: for non-positive sizes, a concrete ``factor`` equal to 0, or a bad ``centre``.
    """
    h, w = check_size(h, w)
    if is_concrete_number(factor) and factor == 0:
        raise ValueError(f"zoom factor must be non-zero; got {factor!r}")
    inv = 1.0 / jnp.asarray(factor, jnp.float32)
    a = inv * jnp.eye(2, dtype=jnp.float32)
    return _affine_flow(h, w, a, jnp.zeros(2, jnp.float32), default_centre((h, w), centre))


def zoom3d(d: int, h: int, w: int, factor: ArrayLike, centre: ArrayLike | None = None) -> jax.Array:
    """Backward flow for content magnified by ``factor`` about ``centre``: ``psi(p) = c + (p - c) / f``.

    ``factor > 1`` zooms in (each new voxel's pre-image is ``1/factor`` voxels wide); ``factor < 1``
    zooms out (the border pulls from outside the volume).

    Args:
      d: depth ``D``.
      h: height ``H``.
      w: width ``W``.
      factor: magnification (scalar, non-zero, may be traced).
      centre: ``(3,)`` fixed point; defaults to the volume centre.

    Returns:
      ``(D, H, W, 3)`` float32 backward flow.

    Raises:
      ValueError: for bad sizes, a concrete ``factor`` equal to 0, or a bad ``centre``.
    """
    d, h, w = check_size(d, h, w)
    if isinstance(factor, numbers.Real) and not isinstance(factor, bool) and factor == 0:
        raise ValueError(f"zoom factor must be non-zero; got {factor!r}")
    a = jnp.eye(3, dtype=jnp.float32) / jnp.asarray(factor, jnp.float32)
    return _affine_flow3d(d, h, w, a, jnp.zeros(3, jnp.float32), default_centre((d, h, w), centre))


def shear(
    h: int, w: int, sx: ArrayLike, sy: ArrayLike = 0.0, centre: ArrayLike | None = None
) -> jax.Array:
    """Backward flow for content sheared about ``centre``.

    Relative to ``c``, the content point ``(x, y)`` moves to ``(x + sx y, y + sy x)``: with
    ``sx > 0`` whatever lies below the centre slides to the right. The returned flow is that of the
    inverse map ``psi(p) = c + S^-1 (p - c)`` with ``S = [[1, sx], [sy, 1]]``.

    Args:
      h: image height ``H``.
      w: image width ``W``.
      sx: horizontal shear (x moves by ``sx`` per pixel of ``y``).
      sy: vertical shear (y moves by ``sy`` per pixel of ``x``).
      centre: ``(2,)`` fixed point ``(cx, cy)``; defaults to ``(W/2, H/2)``.

    Returns:
      ``(H, W, 2)`` float32 backward flow.

    Raises:
      ValueError: for non-positive sizes, a bad ``centre``, or concrete ``sx sy == 1`` (singular).
    """
    h, w = check_size(h, w)
    if is_concrete_number(sx) and is_concrete_number(sy) and 1.0 - sx * sy == 0.0:
        raise ValueError(f"shear is singular (sx * sy == 1); got sx={sx!r}, sy={sy!r}")
    sx = jnp.asarray(sx, jnp.float32)
    sy = jnp.asarray(sy, jnp.float32)
    det = 1.0 - sx * sy
    inv = jnp.stack([jnp.stack([1.0 / det, -sx / det]), jnp.stack([-sy / det, 1.0 / det])])
    return _affine_flow(h, w, inv, jnp.zeros(2, jnp.float32), default_centre((h, w), centre))


def vortex(
    h: int,
    w: int,
    strength: ArrayLike = 30.0,
    radius: ArrayLike | None = None,
    centre: ArrayLike | None = None,
) -> jax.Array:
    """Backward flow of a smooth swirl that fades away from the centre.

    Content at distance ``r`` from ``c`` turns counter-clockwise on screen (as in :func:`rotation`)
    by ``theta(r) = strength * exp(-r^2 / (2 radius^2))`` degrees; ``psi`` turns it back. Each circle
    about ``c`` is mapped onto itself, so the continuous map is a bijection and area-preserving for
    any ``strength``; the pixel-centre discretisation stays orientation-preserving as long as the
    twist between neighbouring pixels is small, which holds for the defaults.

    Args:
      h: image height ``H``.
      w: image width ``W``.
      strength: rotation at the centre, in degrees.
      radius: Gaussian fall-off radius in pixels; defaults to ``min(H, W) / 4``.
      centre: ``(2,)`` centre ``(cx, cy)``; defaults to ``(W/2, H/2)``.

    Returns:
      ``(H, W, 2)`` float32 backward flow.

    Raises:
      ValueError: for non-positive sizes, a concrete non-positive ``radius`` or a bad ``centre``.
    """
    h, w = check_size(h, w)
    if radius is None:
        radius = min(h, w) / 4.0
    if is_concrete_number(radius) and radius <= 0:
        raise ValueError(f"radius must be positive; got {radius!r}")
    c = default_centre((h, w), centre)
    x, y = pixel_centres(h, w)
    px, py = x - c[0], y - c[1]
    sigma = jnp.asarray(radius, jnp.float32)
    theta = jnp.deg2rad(jnp.asarray(strength, jnp.float32)) * jnp.exp(
        -(px * px + py * py) / (2.0 * sigma * sigma)
    )
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    # psi(p) = c + R(theta)^T (p - c), with R as in _rotation_matrix.
    dx = (cos - 1.0) * px - sin * py
    dy = sin * px + (cos - 1.0) * py
    return jnp.stack([dx, dy], axis=-1).astype(jnp.float32)


def shear_waves(
    h: int, w: int, amplitude: ArrayLike = 1.5, wavelength: ArrayLike = 16.0
) -> jax.Array:
    """Sinusoidal shear: ``flow(x, y) = a (sin(2 pi y / L), sin(2 pi x / L))``.

    Rows slide sideways and columns slide up and down, by up to ``amplitude`` pixels. The map is
    injective whenever ``2 pi amplitude / wavelength < 1`` (then ``psi - id`` is a contraction), which
    holds for the defaults (0.59); pre-image areas lie in ``1 +- (2 pi a / L)^2``.

    Args:
      h: image height ``H``.
      w: image width ``W``.
      amplitude: ``a``, peak displacement in pixels.
      wavelength: ``L``, period in pixels.

    Returns:
      ``(H, W, 2)`` float32 backward flow.

    Raises:
      ValueError: for non-positive sizes or a concrete non-positive ``wavelength``.
    """
    h, w = check_size(h, w)
    if is_concrete_number(wavelength) and wavelength <= 0:
        raise ValueError(f"wavelength must be positive; got {wavelength!r}")
    x, y = pixel_centres(h, w)
    k = 2.0 * jnp.pi / jnp.asarray(wavelength, jnp.float32)
    a = jnp.asarray(amplitude, jnp.float32)
    return jnp.stack([a * jnp.sin(k * y), a * jnp.sin(k * x)], axis=-1).astype(jnp.float32)


def abc_velocity(
    d: int,
    h: int,
    w: int,
    amplitude: float = 0.5,
    coefficients: tuple[float, float, float] = (1.0, math.sqrt(2.0 / 3.0), math.sqrt(1.0 / 3.0)),
    period: float | None = None,
) -> jax.Array:
    """Arnold-Beltrami-Childress velocity at the voxel centres: smooth and divergence-free.

    With ``k = 2 pi / period`` and coefficients ``(A, B, C)``:
    ``v = s (A sin kz + C cos ky, B sin kx + A cos kz, C sin ky + B cos kx)``, where
    ``s = amplitude / (A + C)`` so that ``|v_x| <= amplitude``. Each component does not depend on its
    own coordinate, so ``div v = 0`` exactly: the flow it generates preserves volume.

    Args:
      d: depth ``D``.
      h: height ``H``.
      w: width ``W``.
      amplitude: largest ``x`` speed in voxels per unit time.
      coefficients: ``(A, B, C)``; the default is the classic chaotic ``(1, sqrt(2/3), sqrt(1/3))``.
      period: spatial period in voxels; defaults to ``max(D, H, W)``.

    Returns:
      ``(D, H, W, 3)`` float32 velocity ``(vx, vy, vz)`` in voxels per unit time.

    Raises:
      ValueError: for bad sizes or a non-positive period.
    """
    d, h, w = check_size(d, h, w)
    period = float(max(d, h, w) if period is None else period)
    if not period > 0:
        raise ValueError(f"period must be positive; got {period!r}")
    a, b, c = (float(v) for v in coefficients)
    k = 2.0 * math.pi / period
    s = float(amplitude) / max(abs(a) + abs(c), 1e-12)
    x, y, z = voxel_centres(d, h, w)
    vx = a * jnp.sin(k * z) + c * jnp.cos(k * y)
    vy = b * jnp.sin(k * x) + a * jnp.cos(k * z)
    vz = c * jnp.sin(k * y) + b * jnp.cos(k * x)
    return (s * jnp.stack([vx, vy, vz], axis=-1)).astype(jnp.float32)


def advection3d(velocity: ArrayLike, dt: ArrayLike = 1.0, steps: int = 4) -> jax.Array:
    """Backward flow of content carried by a steady velocity field for a time ``dt``.

    The content moves along ``dX/dt = v(X)``; the backward map traces each voxel centre back,
    ``psi(p) = X(-dt)`` with ``X(0) = p``, integrated by ``steps`` classical Runge-Kutta (RK4)
    steps with ``v`` interpolated trilinearly (:func:`sample_trilinear`). The forward flow of the
    same motion is ``advection3d(velocity, -dt, steps)``.

    Args:
      velocity: ``(D, H, W, 3)`` velocity ``(vx, vy, vz)`` at voxel centres, in voxels per unit
        time (e.g. :func:`abc_velocity`).
      dt: time step (scalar, may be traced; negative gives the forward flow).
      steps: static number of RK4 substeps (>= 1).

    Returns:
      ``(D, H, W, 3)`` float32 backward flow ``psi(p) - p``.

    Raises:
      ValueError: if ``velocity`` is not ``(D, H, W, 3)`` or ``steps`` is not a positive int.
    """
    v = check_flow(velocity, "velocity", ndim=3)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    d, h, w = v.shape[:3]
    x, y, z = voxel_centres(d, h, w)
    p0 = jnp.stack([x, y, z], -1)
    hstep = -jnp.asarray(dt, jnp.float32) / int(steps)

    def vel(p):
        return sample_trilinear(v, p[..., 0], p[..., 1], p[..., 2])

    def rk4(p, _):
        k1 = vel(p)
        k2 = vel(p + 0.5 * hstep * k1)
        k3 = vel(p + 0.5 * hstep * k2)
        k4 = vel(p + hstep * k3)
        return p + (hstep / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4), None

    p, _ = jax.lax.scan(rk4, p0, None, length=int(steps))
    return (p - p0).astype(jnp.float32)


def fold_over(h: int, w: int, line: ArrayLike | None = None) -> jax.Array:
    """A folding (non-injective) flow: the right part mirrors the left part.

    ``psi(x, y) = (x, y)`` for ``x <= line`` and ``(2 line - x, y)`` for ``x > line``, so two new
    pixels pull the same old region: a degenerate case for warpers (their fail-safe must keep the
    output finite and white where sources are used twice).

    Args:
      h: image height ``H``.
      w: image width ``W``.
      line: ``x`` of the vertical mirror line; defaults to ``W / 2``.

    Returns:
      ``(H, W, 2)`` float32 backward flow.

    Raises:
      ValueError: if ``h`` or ``w`` is not a positive integer.
    """
    h, w = check_size(h, w)
    line = jnp.asarray(w / 2.0 if line is None else line, jnp.float32)
    x, _ = pixel_centres(h, w)
    dx = jnp.where(x > line, 2.0 * (line - x), 0.0)
    return jnp.stack([dx, jnp.zeros_like(dx)], axis=-1).astype(jnp.float32)


def fold3d(d: int, h: int, w: int, plane: ArrayLike | None = None) -> jax.Array:
    """A folding (non-injective) flow: the part beyond ``x = plane`` mirrors the part before it.

    ``psi(x, y, z) = (x, y, z)`` for ``x <= plane`` and ``(2 plane - x, y, z)`` beyond, so two new
    voxels pull the same old region.

    Args:
      d: depth ``D``.
      h: height ``H``.
      w: width ``W``.
      plane: ``x`` of the mirror plane; defaults to ``W / 2``.

    Returns:
      ``(D, H, W, 3)`` float32 backward flow.

    Raises:
      ValueError: if a size is not a positive integer.
    """
    d, h, w = check_size(d, h, w)
    plane = jnp.asarray(w / 2.0 if plane is None else plane, jnp.float32)
    x, _, _ = voxel_centres(d, h, w)
    dx = jnp.where(x > plane, 2.0 * (plane - x), 0.0)
    zero = jnp.zeros_like(dx)
    return jnp.stack([dx, zero, zero], axis=-1).astype(jnp.float32)


def collapse(h: int, w: int, x_line: ArrayLike | None = None) -> jax.Array:
    """A collapsing flow: every new pixel pulls from the single vertical line ``x = x_line``.

    ``psi(x, y) = (x_line, y)``; pre-images have zero area (degenerate case).

    Args:
      h: image height ``H``.
      w: image width ``W``.
      x_line: ``x`` of the line everything is pulled from; defaults to ``W / 2``.

    Returns:
      ``(H, W, 2)`` float32 backward flow.

    Raises:
      ValueError: if ``h`` or ``w`` is not a positive integer.
    """
    h, w = check_size(h, w)
    x_line = jnp.asarray(w / 2.0 if x_line is None else x_line, jnp.float32)
    x, _ = pixel_centres(h, w)
    return jnp.stack([x_line - x, jnp.zeros_like(x)], axis=-1).astype(jnp.float32)


def collapse3d(d: int, h: int, w: int, x_plane: ArrayLike | None = None) -> jax.Array:
    """A collapsing flow: every new voxel pulls from the plane ``x = x_plane``.

    ``psi(x, y, z) = (x_plane, y, z)``: pre-images have zero volume (degenerate case).

    Args:
      d: depth ``D``.
      h: height ``H``.
      w: width ``W``.
      x_plane: ``x`` of the plane; defaults to ``W / 2``.

    Returns:
      ``(D, H, W, 3)`` float32 backward flow.

    Raises:
      ValueError: if a size is not a positive integer.
    """
    d, h, w = check_size(d, h, w)
    x_plane = jnp.asarray(w / 2.0 if x_plane is None else x_plane, jnp.float32)
    x, _, _ = voxel_centres(d, h, w)
    zero = jnp.zeros_like(x)
    return jnp.stack([x_plane - x, zero, zero], axis=-1).astype(jnp.float32)


def leave_frame(h: int, w: int) -> jax.Array:
    """A translation by ``(1.5 W, 1.5 H)``: every new pixel pulls from outside the old frame.

    The pre-image of every cell lies in ``[1.5 W, 2.5 W] x [1.5 H, 2.5 H]``, disjoint from the
    frame ``[0, W] x [0, H]``, so every pixel is disoccluded (degenerate case).

    Args:
      h: image height ``H``.
      w: image width ``W``.

    Returns:
      ``(H, W, 2)`` float32 backward flow.

    Raises:
      ValueError: if ``h`` or ``w`` is not a positive integer.
    """
    h, w = check_size(h, w)
    return translation(h, w, 1.5 * w, 1.5 * h)


def leave_volume3d(d: int, h: int, w: int) -> jax.Array:
    """A translation by ``1.5 (W, H, D)``: every new voxel pulls from outside the old volume.

    Args:
      d: depth ``D``.
      h: height ``H``.
      w: width ``W``.

    Returns:
      ``(D, H, W, 3)`` float32 backward flow (every voxel disoccluded).

    Raises:
      ValueError: if a size is not a positive integer.
    """
    d, h, w = check_size(d, h, w)
    return translation3d(d, h, w, 1.5 * w, 1.5 * h, 1.5 * d)


def nan_patch(
    flow: ArrayLike, top: ArrayLike, left: ArrayLike, height: ArrayLike, width: ArrayLike
) -> jax.Array:
    """Copy of ``flow`` with NaN in the rows ``[top, top+height)`` and columns ``[left, left+width)``.

    NaN flow marks disoccluded pixels (fresh noise). The rectangle is clipped to the image; the
    bounds may be traced integers.

    Args:
      flow: ``(H, W, 2)`` backward flow.
      top: first row of the patch.
      left: first column of the patch.
      height: number of rows.
      width: number of columns.

    Returns:
      ``(H, W, 2)`` float32 flow.

    Raises:
      ValueError: if ``flow`` is not ``(H, W, 2)``.
    """
    flow = check_flow(flow)
    h, w = flow.shape[:2]
    rows = jnp.arange(h)[:, None]
    cols = jnp.arange(w)[None, :]
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    return jnp.where(inside[..., None], jnp.nan, flow)


def nan_patch3d(flow: ArrayLike, start: tuple[int, int, int], size: tuple[int, int, int]):
    """Copy of ``flow`` with NaN in the box of voxels ``start <= (k, i, j) < start + size``.

    NaN flow marks disoccluded voxels (fresh noise). The box is clipped to the volume.

    Args:
      flow: ``(D, H, W, 3)`` backward flow.
      start: ``(k0, i0, j0)`` first depth, row and column of the box.
      size: ``(dk, di, dj)`` extent of the box in voxels.

    Returns:
      ``(D, H, W, 3)`` float32 flow.

    Raises:
      ValueError: if ``flow`` is not ``(D, H, W, 3)`` or ``start`` / ``size`` are not triples.
    """
    flow = check_flow(flow, ndim=3)
    if len(tuple(start)) != 3 or len(tuple(size)) != 3:
        raise ValueError(f"start and size must be (k, i, j) triples; got {start!r}, {size!r}")
    d, h, w = flow.shape[:3]
    inside = True
    for ax, (lo, n, ext) in enumerate(zip(start, size, (d, h, w), strict=True)):
        idx = jnp.arange(ext).reshape([-1 if a == ax else 1 for a in range(3)])
        inside = inside & (idx >= lo) & (idx < lo + n)
    return jnp.where(inside[..., None], jnp.nan, flow)


def zoo(h: int, w: int) -> dict[str, jax.Array]:
    """A named collection of test flows of one size.

    Keys: ``identity``, ``translation`` (0.37, -0.61), ``rotation`` (10 degrees), ``zoom_in`` (1.3),
    ``zoom_out`` (0.7), ``shear`` (sx=0.2), ``vortex``, ``shear_waves`` (defaults), then the
    degenerate ones listed in :data:`DEGENERATE`: ``fold_over``, ``collapse``, ``leave_frame`` and
    ``nan_patch`` (the translation with NaN over the central quarter-size rectangle).

    Args:
      h: image height ``H``.
      w: image width ``W``.

    Returns:
      dict of name -> ``(H, W, 2)`` float32 backward flow.

    Raises:
      ValueError: if ``h`` or ``w`` is not a positive integer.
    """
    h, w = check_size(h, w)
    trans = translation(h, w, 0.37, -0.61)
    ph, pw = max(1, h // 4), max(1, w // 4)
    return {
        "identity": identity(h, w),
        "translation": trans,
        "rotation": rotation(h, w, 10.0),
        "zoom_in": zoom(h, w, 1.3),
        "zoom_out": zoom(h, w, 0.7),
        "shear": shear(h, w, 0.2),
        "vortex": vortex(h, w),
        "shear_waves": shear_waves(h, w),
        "fold_over": fold_over(h, w),
        "collapse": collapse(h, w),
        "leave_frame": leave_frame(h, w),
        "nan_patch": nan_patch(trans, (h - ph) // 2, (w - pw) // 2, ph, pw),
    }


def zoo3d(d: int, h: int, w: int) -> dict[str, jax.Array]:
    """A named collection of 3D test flows of one size.

    Keys: ``identity``, ``translation`` (0.37, -0.61, 0.23), ``rotation`` (content turned 10
    degrees about the axis (1, 2, 2)), ``zoom_in`` (1.3), ``zoom_out`` (0.7), ``shear``,
    ``advection`` (one unit of time of :func:`abc_velocity`), then the degenerate ones listed in
    :data:`DEGENERATE3D`: ``fold`` (:func:`fold3d`), ``collapse`` (onto the plane ``x = W/2``),
    ``collapse_point`` (every voxel pulls from the volume centre), ``leave_volume`` and
    ``nan_patch`` (the translation with NaN over a central box).

    Args:
      d: depth ``D``.
      h: height ``H``.
      w: width ``W``.

    Returns:
      dict of name -> ``(D, H, W, 3)`` float32 backward flow.

    Raises:
      ValueError: if a size is not a positive integer.
    """
    d, h, w = check_size(d, h, w)
    trans = translation3d(d, h, w, 0.37, -0.61, 0.23)
    box = (max(1, d // 4), max(1, h // 4), max(1, w // 4))
    start = ((d - box[0]) // 2, (h - box[1]) // 2, (w - box[2]) // 2)
    shear = ((1.0, 0.2, 0.1), (0.0, 1.0, 0.0), (0.0, 0.15, 1.0))
    return {
        "identity": identity3d(d, h, w),
        "translation": trans,
        "rotation": rotation3d(d, h, w, (1.0, 2.0, 2.0), 10.0),
        "zoom_in": zoom3d(d, h, w, 1.3),
        "zoom_out": zoom3d(d, h, w, 0.7),
        "shear": affine3d(d, h, w, shear, (0.1, 0.0, -0.2)),
        "advection": advection3d(abc_velocity(d, h, w)),
        "fold": fold3d(d, h, w),
        "collapse": collapse3d(d, h, w),
        "collapse_point": affine3d(d, h, w, jnp.zeros((3, 3))),
        "leave_volume": leave_volume3d(d, h, w),
        "nan_patch": nan_patch3d(trans, start, box),
    }
