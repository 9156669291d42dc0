"""3D flows: conventions, rigid and affine flows, advection by a velocity field, degenerate cases.

Conventions (DESIGN.md section 1, extended by ``z``): volumes are channels-last
``(..., D, H, W, C)``; voxel ``(k, i, j)`` (depth ``k``, row ``i``, column ``j``) is the unit cube
``[j, j+1] x [i, i+1] x [k, k+1]`` in continuous ``(x, y, z)``, with centre
``p = (j + 0.5, i + 0.5, k + 0.5)``; ``x`` grows to the right, ``y`` downwards and ``z`` with depth
(so ``(x, y, z)`` is right-handed). A 3D flow vector is ``(dx, dy, dz)``. Every flow built here is
the **backward flow** of frame ``t+1``, ``(D, H, W, 3)``: the point at voxel ``(k, i, j)``'s centre
in frame ``t+1`` came from ``p + (dx, dy, dz)`` in frame ``t``. The backward map is
``psi(p) = p + flow(p)``, the flow being interpolated trilinearly between voxel centres and
clamped to the edge. The geometric constructors are parametrised by what the *content* does; the
flow they return is the inverse of that motion. NaN flow voxels mean "disoccluded" (fresh noise).

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

__all__ = [
    "DEGENERATE3D",
    "abc_velocity",
    "advection3d",
    "affine3d",
    "collapse3d",
    "fold3d",
    "identity3d",
    "leave_volume3d",
    "nan_patch3d",
    "rotation3d",
    "sample_trilinear",
    "translation3d",
    "voxel_centres",
    "zoo3d",
    "zoom3d",
]

DEGENERATE3D: frozenset[str] = frozenset(
    {"fold", "collapse", "collapse_point", "leave_volume", "nan_patch"}
)
"""Names of the :func:`zoo3d` entries whose backward map is not injective or not defined everywhere."""


# --------------------------------------------------------------------------------------------------
# Validation and sampling helpers.


def _check_size(d, h, w) -> tuple[int, int, int]:
    ok = all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and int(s) > 0
        for s in (d, h, w)
    )
    if not ok:
        raise ValueError(f"expected positive integer sizes (d, h, w); got ({d!r}, {h!r}, {w!r})")
    return int(d), int(h), int(w)


def _check_flow(flow: ArrayLike, name: str = "flow") -> jax.Array:
    shape = jnp.shape(flow)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{name} must have shape (D, H, W, 3); got {shape}")
    dtype = jnp.result_type(flow)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"{name} must be a real-valued array; got dtype {dtype}")
    return jnp.asarray(flow, jnp.float32)


def _vector(value: ArrayLike, name: str, what: str = "(x, y, z)") -> jax.Array:
    v = jnp.asarray(value, jnp.float32)
    if v.shape != (3,):
        raise ValueError(f"{name} must have shape (3,) as {what}; got {v.shape}")
    return v


def _centre(d: int, h: int, w: int, centre) -> jax.Array:
    if centre is None:
        return jnp.array([w / 2.0, h / 2.0, d / 2.0], jnp.float32)
    return _vector(centre, "centre")


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
    d, h, w = _check_size(d, h, w)
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
    ``p`` onto the lattice of centres), the 3D form of DESIGN.md section 1's bilinear rule.

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


def _affine_flow(d: int, h: int, w: int, a: jax.Array, offset: jax.Array, c: jax.Array):
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


def _rotation_matrix(axis: jax.Array, degrees) -> jax.Array:
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
# Rigid and affine flows.


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
    d, h, w = _check_size(d, h, w)
    return jnp.zeros((d, h, w, 3), jnp.float32)


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
    d, h, w = _check_size(d, h, w)
    comps = [jnp.asarray(c, jnp.float32) for c in (dx, dy, dz)]
    if any(c.shape != () for c in comps):
        raise ValueError(f"dx, dy, dz must be scalars; got shapes {[c.shape for c in comps]}")
    return jnp.broadcast_to(jnp.stack(comps), (d, h, w, 3))


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
    d, h, w = _check_size(d, h, w)
    a = jnp.asarray(matrix, jnp.float32)
    if a.shape != (3, 3):
        raise ValueError(f"matrix must have shape (3, 3); got {a.shape}")
    o = _vector(offset, "offset", "(ox, oy, oz)")
    return _affine_flow(d, h, w, a, o, _centre(d, h, w, centre))


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
    d, h, w = _check_size(d, h, w)
    ax = _vector(axis, "axis", "(ax, ay, az)")
    try:
        is_zero = not np.any(np.asarray(axis) != 0)
    except jax.errors.TracerArrayConversionError:  # a traced axis cannot be checked
        is_zero = False
    if is_zero:
        raise ValueError("axis must be a non-zero vector; got (0, 0, 0)")
    r = _rotation_matrix(ax, degrees)
    return _affine_flow(d, h, w, r.T, jnp.zeros(3, jnp.float32), _centre(d, h, w, centre))


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
    d, h, w = _check_size(d, h, w)
    if isinstance(factor, numbers.Real) and not isinstance(factor, bool) and factor == 0:
        raise ValueError(f"zoom factor must be non-zero; got {factor!r}")
    a = jnp.eye(3, dtype=jnp.float32) / jnp.asarray(factor, jnp.float32)
    return _affine_flow(d, h, w, a, jnp.zeros(3, jnp.float32), _centre(d, h, w, centre))


# --------------------------------------------------------------------------------------------------
# Advection by a velocity field.


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
    d, h, w = _check_size(d, h, w)
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
    v = _check_flow(velocity, "velocity")
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


# --------------------------------------------------------------------------------------------------
# Degenerate flows.


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
    d, h, w = _check_size(d, h, w)
    plane = jnp.asarray(w / 2.0 if plane is None else plane, jnp.float32)
    x, _, _ = voxel_centres(d, h, w)
    dx = jnp.where(x > plane, 2.0 * (plane - x), 0.0)
    zero = jnp.zeros_like(dx)
    return jnp.stack([dx, zero, zero], axis=-1).astype(jnp.float32)


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
    d, h, w = _check_size(d, h, w)
    x_plane = jnp.asarray(w / 2.0 if x_plane is None else x_plane, jnp.float32)
    x, _, _ = voxel_centres(d, h, w)
    zero = jnp.zeros_like(x)
    return jnp.stack([x_plane - x, zero, zero], axis=-1).astype(jnp.float32)


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
    d, h, w = _check_size(d, h, w)
    return translation3d(d, h, w, 1.5 * w, 1.5 * h, 1.5 * d)


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
    flow = _check_flow(flow)
    if len(tuple(start)) != 3 or len(tuple(size)) != 3:
        raise ValueError(f"start and size must be (k, i, j) triples; got {start!r}, {size!r}")
    d, h, w = flow.shape[:3]
    inside = True
    for ax, (lo, n, ext) in enumerate(zip(start, size, (d, h, w), strict=True)):
        idx = jnp.arange(ext).reshape([-1 if a == ax else 1 for a in range(3)])
        inside = inside & (idx >= lo) & (idx < lo + n)
    return jnp.where(inside[..., None], jnp.nan, flow)


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
    d, h, w = _check_size(d, h, w)
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
