"""Flow conventions, synthetic and affine flows, composition, inversion and Middlebury ``.flo`` IO.

Conventions (DESIGN.md section 1): arrays are channels-last; pixel ``(i, j)`` is the unit square
``[j, j+1] x [i, i+1]`` with centre ``p = (j + 0.5, i + 0.5)``; ``x`` grows to the right and ``y``
downwards; a flow vector is ``(dx, dy)``. Every flow built here is the **backward flow** of frame
``t+1``: ``flow[i, j] = (dx, dy)`` means the point at pixel ``(i, j)``'s centre in frame ``t+1`` came
from ``p + (dx, dy)`` in frame ``t``. The backward map ``psi(p) = p + flow(p)`` maps frame ``t+1``
into frame ``t``; between pixel centres the flow is interpolated bilinearly, clamped to the edge.

The geometric constructors (:func:`rotation`, :func:`zoom`, :func:`shear`, :func:`vortex`) are
parametrised by what the *content* does between frame ``t`` and frame ``t+1``; the flow they return
is the inverse of that motion. NaN flow pixels mean "disoccluded" everywhere in irwarp: such a new
pixel gets fresh noise.

Camera helpers (:func:`camera_flow` and friends) turn a depth map, pinhole intrinsics and a
relative camera pose into a flow, so that camera-controlled warping needs no optical flow. Camera
coordinates follow OpenCV: ``x`` right, ``y`` down, ``z`` forward (the optical axis), so image and
camera ``y`` agree. With the depth of frame ``t`` and the pose ``t -> t+1`` the result is the
*forward* flow of frame ``t`` (for :func:`irwarp.warp_forward`); with the depth of frame ``t+1`` and
the pose ``t+1 -> t`` it is the backward flow of frame ``t+1`` (for :func:`irwarp.warp`).

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212). Baker et al., A Database and Evaluation Methodology for Optical Flow,
  IJCV 2011 (the Middlebury ``.flo`` format).
"""

from __future__ import annotations

import math
import numbers
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from irwarp._sampling import pixel_centres, sample_flow

__all__ = [
    "DEGENERATE",
    "camera_flow",
    "intrinsics",
    "intrinsics_from_fov",
    "look_at",
    "plane_depth",
    "relative_pose",
    "terrain_depth",
    "visibility_mask",
    "FLO_MAGIC",
    "affine",
    "backward_from_forward",
    "collapse",
    "compose",
    "flow_to_map",
    "fold_over",
    "forward_from_backward",
    "identity",
    "leave_frame",
    "map_to_flow",
    "mask_flow",
    "nan_patch",
    "read_flo",
    "rotation",
    "shear",
    "shear_waves",
    "translation",
    "vortex",
    "write_flo",
    "zoo",
    "zoom",
]

FLO_MAGIC = 202021.25
"""Magic number opening a Middlebury ``.flo`` file (the bytes ``b"PIEH"`` as a little-endian float32)."""

_UNKNOWN_FLOW = 1e9  # Middlebury marks unknown flow with components above this value.

DEGENERATE: frozenset[str] = frozenset({"fold_over", "collapse", "leave_frame", "nan_patch"})
"""Names of the :func:`zoo` entries whose backward map is not injective, or not defined everywhere."""


# --------------------------------------------------------------------------------------------------
# Validation helpers.


def _check_size(h, w) -> tuple[int, int]:
    ok = all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and int(s) > 0 for s in (h, w)
    )
    if not ok:
        raise ValueError(f"expected positive integer sizes (h, w); got ({h!r}, {w!r})")
    return int(h), int(w)


def _check_flow(flow: ArrayLike, name: str = "flow", *, batched: bool = False) -> jax.Array:
    shape = jnp.shape(flow)
    if batched:
        if len(shape) < 3 or shape[-1] != 2:
            raise ValueError(f"{name} must have shape (..., H, W, 2); got {shape}")
    elif len(shape) != 3 or shape[-1] != 2:
        raise ValueError(f"{name} must have shape (H, W, 2); got {shape}")
    if not jnp.issubdtype(jnp.result_type(flow), jnp.floating) and not jnp.issubdtype(
        jnp.result_type(flow), jnp.integer
    ):
        raise ValueError(f"{name} must be a real-valued array; got dtype {jnp.result_type(flow)}")
    return jnp.asarray(flow, jnp.float32)


def _is_concrete_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _centre(h: int, w: int, centre) -> jax.Array:
    if centre is None:
        return jnp.array([w / 2.0, h / 2.0], jnp.float32)
    c = jnp.asarray(centre, jnp.float32)
    if c.shape != (2,):
        raise ValueError(f"centre must have shape (2,) as (x, y); got {c.shape}")
    return c


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


# --------------------------------------------------------------------------------------------------
# Rigid and affine flows.


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
    h, w = _check_size(h, w)
    return jnp.zeros((h, w, 2), jnp.float32)


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
    h, w = _check_size(h, w)
    vec = jnp.stack([jnp.asarray(dx, jnp.float32), jnp.asarray(dy, jnp.float32)])
    if vec.shape != (2,):
        raise ValueError(
            f"dx and dy must be scalars; got shapes {jnp.shape(dx)} and {jnp.shape(dy)}"
        )
    return jnp.broadcast_to(vec, (h, w, 2))


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
    h, w = _check_size(h, w)
    a = jnp.asarray(matrix, jnp.float32)
    if a.shape != (2, 2):
        raise ValueError(f"matrix must have shape (2, 2); got {a.shape}")
    o = jnp.asarray(offset, jnp.float32)
    if o.shape != (2,):
        raise ValueError(f"offset must have shape (2,) as (ox, oy); got {o.shape}")
    return _affine_flow(h, w, a, o, _centre(h, w, centre))


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
    h, w = _check_size(h, w)
    r = _rotation_matrix(degrees)
    return _affine_flow(h, w, r.T, jnp.zeros(2, jnp.float32), _centre(h, w, centre))


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
    h, w = _check_size(h, w)
    if _is_concrete_number(factor) and factor == 0:
        raise ValueError(f"zoom factor must be non-zero; got {factor!r}")
    inv = 1.0 / jnp.asarray(factor, jnp.float32)
    a = inv * jnp.eye(2, dtype=jnp.float32)
    return _affine_flow(h, w, a, jnp.zeros(2, jnp.float32), _centre(h, w, centre))


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
    h, w = _check_size(h, w)
    if _is_concrete_number(sx) and _is_concrete_number(sy) and 1.0 - sx * sy == 0.0:
        raise ValueError(f"shear is singular (sx * sy == 1); got sx={sx!r}, sy={sy!r}")
    sx = jnp.asarray(sx, jnp.float32)
    sy = jnp.asarray(sy, jnp.float32)
    det = 1.0 - sx * sy
    inv = jnp.stack([jnp.stack([1.0 / det, -sx / det]), jnp.stack([-sy / det, 1.0 / det])])
    return _affine_flow(h, w, inv, jnp.zeros(2, jnp.float32), _centre(h, w, centre))


# --------------------------------------------------------------------------------------------------
# Smooth and degenerate synthetic flows.


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
    h, w = _check_size(h, w)
    if radius is None:
        radius = min(h, w) / 4.0
    if _is_concrete_number(radius) and radius <= 0:
        raise ValueError(f"radius must be positive; got {radius!r}")
    c = _centre(h, w, centre)
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
    h, w = _check_size(h, w)
    if _is_concrete_number(wavelength) and wavelength <= 0:
        raise ValueError(f"wavelength must be positive; got {wavelength!r}")
    x, y = pixel_centres(h, w)
    k = 2.0 * jnp.pi / jnp.asarray(wavelength, jnp.float32)
    a = jnp.asarray(amplitude, jnp.float32)
    return jnp.stack([a * jnp.sin(k * y), a * jnp.sin(k * x)], axis=-1).astype(jnp.float32)


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
    h, w = _check_size(h, w)
    line = jnp.asarray(w / 2.0 if line is None else line, jnp.float32)
    x, _ = pixel_centres(h, w)
    dx = jnp.where(x > line, 2.0 * (line - x), 0.0)
    return jnp.stack([dx, jnp.zeros_like(dx)], axis=-1).astype(jnp.float32)


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
    h, w = _check_size(h, w)
    x_line = jnp.asarray(w / 2.0 if x_line is None else x_line, jnp.float32)
    x, _ = pixel_centres(h, w)
    return jnp.stack([x_line - x, jnp.zeros_like(x)], axis=-1).astype(jnp.float32)


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
    h, w = _check_size(h, w)
    return translation(h, w, 1.5 * w, 1.5 * h)


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
    flow = _check_flow(flow)
    h, w = flow.shape[:2]
    rows = jnp.arange(h)[:, None]
    cols = jnp.arange(w)[None, :]
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
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
    h, w = _check_size(h, w)
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


# --------------------------------------------------------------------------------------------------
# Conversions, composition and inversion.


def flow_to_map(flow: ArrayLike) -> jax.Array:
    """Absolute positions ``psi(p) = p + flow(p)`` at the pixel centres.

    Args:
      flow: ``(..., H, W, 2)`` backward flow.

    Returns:
      ``(..., H, W, 2)`` float32 positions ``(x, y)`` in frame ``t``.

    Raises:
      ValueError: if ``flow`` is not ``(..., H, W, 2)``.
    """
    flow = _check_flow(flow, batched=True)
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
    positions = _check_flow(positions, "positions", batched=True)
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
    fa = _check_flow(flow_a, "flow_a")
    fb = _check_flow(flow_b, "flow_b")
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
    flow = _check_flow(forward_flow, "forward_flow")
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
    flow = _check_flow(backward_flow, "backward_flow")
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
    flow = _check_flow(flow, batched=True)
    if jnp.shape(valid) != flow.shape[:-1]:
        raise ValueError(
            f"valid must have shape {flow.shape[:-1]} (flow.shape[:-1]); got {jnp.shape(valid)}"
        )
    return jnp.where(jnp.asarray(valid, bool)[..., None], flow, jnp.nan)


# --------------------------------------------------------------------------------------------------
# Middlebury .flo IO (numpy, not traceable).


def write_flo(path: str | os.PathLike, flow: ArrayLike) -> None:
    """Write a flow to a Middlebury ``.flo`` file.

    Layout (little-endian): float32 magic ``202021.25`` (``b"PIEH"``), int32 width ``W``, int32
    height ``H``, then ``H * W * 2`` float32 values, row-major, ``(u, v) = (dx, dy)`` interleaved.

    Args:
      path: file to write (overwritten).
      flow: ``(H, W, 2)`` flow; written as float32 (NaN is written as is).

    Raises:
      ValueError: if ``flow`` is not ``(H, W, 2)`` with ``H, W > 0``.
    """
    arr = np.asarray(flow)
    if arr.ndim != 3 or arr.shape[-1] != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"flow must have shape (H, W, 2) with H, W > 0; got {arr.shape}")
    h, w = arr.shape[:2]
    with open(path, "wb") as f:
        f.write(np.array([FLO_MAGIC], "<f4").tobytes())
        f.write(np.array([w, h], "<i4").tobytes())
        f.write(np.ascontiguousarray(arr, "<f4").tobytes())


def read_flo(path: str | os.PathLike, *, unknown_as_nan: bool = False) -> np.ndarray:
    """Read a Middlebury ``.flo`` file (layout in :func:`write_flo`).

    Args:
      path: file to read.
      unknown_as_nan: replace components with magnitude above ``1e9`` (Middlebury's "unknown
        flow" marker) by NaN, irwarp's marker for disoccluded pixels.

    Returns:
      ``(H, W, 2)`` float32 numpy array of ``(dx, dy)``.

    Raises:
      ValueError: on a wrong magic number, non-positive sizes, or a file whose length does not
        match its header (truncated or with trailing bytes).
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12:
        raise ValueError(
            f"{os.fspath(path)!r}: expected a 12-byte .flo header; got a file of {len(data)} bytes"
        )
    magic = np.frombuffer(data, "<f4", count=1)[0]
    if magic != np.float32(FLO_MAGIC):
        raise ValueError(
            f"{os.fspath(path)!r}: expected .flo magic {FLO_MAGIC} (b'PIEH'); "
            f"got {float(magic)!r} ({data[:4]!r})"
        )
    w, h = (int(v) for v in np.frombuffer(data, "<i4", count=2, offset=4))
    if w < 1 or h < 1:
        raise ValueError(f"{os.fspath(path)!r}: expected positive width and height; got {w}x{h}")
    expected = 12 + 8 * h * w
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing bytes"
        raise ValueError(
            f"{os.fspath(path)!r}: expected {expected} bytes for a {w}x{h} (W x H) flow; "
            f"got {len(data)} ({kind})"
        )
    flow = np.frombuffer(data, "<f4", offset=12).reshape(h, w, 2).astype(np.float32)
    if unknown_as_nan:
        flow = np.where(np.abs(flow) > _UNKNOWN_FLOW, np.float32(np.nan), flow)
    return flow


# --------------------------------------------------------------------------------------------------
# Cameras: depth + intrinsics + relative pose -> flow.


def _check_matrix(value: ArrayLike, shape: tuple[int, ...], name: str) -> jax.Array:
    arr = jnp.asarray(value, jnp.float32)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {arr.shape}")
    return arr


def _check_depth(depth: ArrayLike, name: str = "depth") -> jax.Array:
    shape = jnp.shape(depth)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{name} must have shape (H, W) with H, W > 0; got {shape}")
    return jnp.asarray(depth, jnp.float32)


def intrinsics(fx: ArrayLike, fy: ArrayLike, cx: ArrayLike, cy: ArrayLike) -> jax.Array:
    """Pinhole intrinsic matrix ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.

    A camera-space point ``(X, Y, Z)`` projects to ``(u, v) = (fx X / Z + cx, fy Y / Z + cy)`` in
    the continuous pixel coordinates of DESIGN.md section 1 (pixel ``(i, j)`` has its centre at
    ``(j + 0.5, i + 0.5)``), so the image centre of an ``H x W`` image is ``(W / 2, H / 2)``.

    Args:
      fx: horizontal focal length in pixels.
      fy: vertical focal length in pixels.
      cx: ``x`` of the principal point in pixels.
      cy: ``y`` of the principal point in pixels.

    Returns:
      ``(3, 3)`` float32 matrix.

    Raises:
      ValueError: if a concrete focal length is not positive, or an argument is not a scalar.
    """
    for name, f in (("fx", fx), ("fy", fy)):
        if _is_concrete_number(f) and f <= 0:
            raise ValueError(f"{name} must be positive; got {f!r}")
    vals = [jnp.asarray(v, jnp.float32) for v in (fx, fy, cx, cy)]
    if any(v.shape != () for v in vals):
        raise ValueError(f"fx, fy, cx, cy must be scalars; got shapes {[v.shape for v in vals]}")
    fx_, fy_, cx_, cy_ = vals
    zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
    return jnp.stack(
        [jnp.stack([fx_, zero, cx_]), jnp.stack([zero, fy_, cy_]), jnp.stack([zero, zero, one])]
    )


def intrinsics_from_fov(h: int, w: int, fov_deg: ArrayLike) -> jax.Array:
    """Intrinsics of an ``H x W`` camera with horizontal field of view ``fov_deg``.

    Square pixels and the principal point at the image centre:
    ``fx = fy = (W / 2) / tan(fov / 2)``, ``(cx, cy) = (W / 2, H / 2)``.

    Args:
      h: image height ``H``.
      w: image width ``W``.
      fov_deg: horizontal field of view in degrees, in ``(0, 180)``.

    Returns:
      ``(3, 3)`` float32 intrinsic matrix (see :func:`intrinsics`).

    Raises:
      ValueError: for non-positive sizes or a concrete field of view outside ``(0, 180)``.
    """
    h, w = _check_size(h, w)
    if _is_concrete_number(fov_deg) and not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must lie in (0, 180) degrees; got {fov_deg!r}")
    f = (w / 2.0) / jnp.tan(jnp.deg2rad(jnp.asarray(fov_deg, jnp.float32)) / 2.0)
    return intrinsics(f, f, w / 2.0, h / 2.0)


def _pose_rt(pose: ArrayLike, name: str) -> tuple[jax.Array, jax.Array]:
    p = jnp.asarray(pose, jnp.float32)
    if p.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"{name} must be a (4, 4) or (3, 4) matrix [R | t]; got {p.shape}")
    return p[:3, :3], p[:3, 3]


def look_at(eye: ArrayLike, target: ArrayLike, up: ArrayLike = (0.0, -1.0, 0.0)) -> jax.Array:
    """World-to-camera matrix of a camera at ``eye`` looking at ``target`` (OpenCV axes).

    The camera's ``z`` axis points from ``eye`` to ``target``, its ``x`` axis to the right
    (``forward x up``, normalised) and its ``y`` axis down (``forward x right``), so that a
    world point ``P`` has camera coordinates ``R (P - eye)``. The default ``up = (0, -1, 0)``
    suits a world whose ``y`` axis points down, like the camera's.

    Args:
      eye: ``(3,)`` camera centre in world coordinates.
      target: ``(3,)`` point the optical axis passes through.
      up: ``(3,)`` world direction that appears up in the image (not parallel to the view).

    Returns:
      ``(4, 4)`` float32 matrix ``[[R, -R eye], [0, 0, 0, 1]]``.

    Raises:
      ValueError: if an argument is not a 3-vector.
    """
    eye = _check_matrix(eye, (3,), "eye")
    target = _check_matrix(target, (3,), "target")
    up = _check_matrix(up, (3,), "up")
    fwd = target - eye
    fwd = fwd / jnp.linalg.norm(fwd)
    right = jnp.cross(fwd, up)
    right = right / jnp.linalg.norm(right)
    down = jnp.cross(fwd, right)
    r = jnp.stack([right, down, fwd])
    top = jnp.concatenate([r, (-r @ eye)[:, None]], axis=1)
    return jnp.concatenate([top, jnp.array([[0.0, 0.0, 0.0, 1.0]], jnp.float32)], axis=0)


def relative_pose(
    world_to_cam_a: ArrayLike, world_to_cam_b: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """Rotation and translation taking camera-``a`` coordinates to camera-``b`` coordinates.

    With ``X_a = R_a P + t_a`` and ``X_b = R_b P + t_b`` for a world point ``P``:
    ``X_b = R X_a + t`` with ``R = R_b R_a^T`` and ``t = t_b - R t_a``.

    Args:
      world_to_cam_a: ``(4, 4)`` or ``(3, 4)`` extrinsic matrix ``[R_a | t_a]`` of camera ``a``.
      world_to_cam_b: the same for camera ``b``.

    Returns:
      ``(R, t)``: ``(3, 3)`` and ``(3,)`` float32, the arguments of :func:`camera_flow`.

    Raises:
      ValueError: if a matrix is not ``(4, 4)`` or ``(3, 4)``.
    """
    ra, ta = _pose_rt(world_to_cam_a, "world_to_cam_a")
    rb, tb = _pose_rt(world_to_cam_b, "world_to_cam_b")
    r = rb @ ra.T
    return r, tb - r @ ta


def _rays(h: int, w: int, k_mat: jax.Array) -> jax.Array:
    """``K^-1 (u, v, 1)`` at the pixel centres: ``(H, W, 3)`` camera rays with ``z = 1``."""
    x, y = pixel_centres(h, w)
    rx = (x - k_mat[0, 2] - k_mat[0, 1] * (y - k_mat[1, 2]) / k_mat[1, 1]) / k_mat[0, 0]
    ry = (y - k_mat[1, 2]) / k_mat[1, 1]
    return jnp.stack([rx, ry, jnp.ones_like(rx)], axis=-1)


def camera_flow(
    depth: ArrayLike,
    intrinsics: ArrayLike,
    rotation: ArrayLike,
    translation: ArrayLike,
    *,
    min_depth: float = 1e-3,
    return_depth: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Flow of a rigid scene seen by a moving pinhole camera: depth + intrinsics + pose -> flow.

    Pixel centre ``p = (j + 0.5, i + 0.5)`` with z-depth ``Z = depth[i, j]`` (distance along the
    optical axis) is lifted to ``X = Z K^-1 (p, 1)``, moved into the other camera by
    ``X' = R X + t`` and projected, ``p' = (K X')_{xy} / X'_z``; the flow is ``p' - p``.

    - With the depth of frame ``t`` and the pose ``t -> t+1`` (``relative_pose(E_t, E_{t+1})``) it
      is the **forward** flow of frame ``t``: splat with :func:`irwarp.warp_forward`.
    - With the depth of frame ``t+1`` and the pose ``t+1 -> t`` it is the **backward** flow of
      frame ``t+1``: warp with :func:`irwarp.warp`.

    A camera translating by ``c`` (so ``t = -c``) parallel to a fronto-parallel plane at depth
    ``Z`` gives the uniform flow ``(fx t_x / Z, fy t_y / Z) = -f c / Z``: the picture moves
    against the camera. A pure rotation (``t = 0``) gives a flow that does not depend on the depth.
    Pixels with a non-finite or non-positive depth, and points that end up behind the other camera
    (``X'_z <= min_depth``), get NaN flow (irwarp gives those pixels fresh noise). Occlusions are
    not detected here; see :func:`visibility_mask`.

    Args:
      depth: ``(H, W)`` z-depth of the pixel centres (any positive unit; ``t`` in the same unit).
      intrinsics: ``(3, 3)`` intrinsic matrix ``K`` (see :func:`intrinsics`), shared by both views.
      rotation: ``(3, 3)`` rotation ``R`` from this camera's coordinates to the other's.
      translation: ``(3,)`` translation ``t`` (``X' = R X + t``).
      min_depth: points with ``X'_z <= min_depth`` are behind the other camera (NaN flow).
      return_depth: also return ``X'_z``, the depth of each point in the other camera.

    Returns:
      ``(H, W, 2)`` float32 flow ``(dx, dy)``; with ``return_depth``, ``(flow, depth_other)`` where
      ``depth_other`` is ``(H, W)`` float32 (NaN where the flow is NaN).

    Raises:
      ValueError: if ``depth`` is not ``(H, W)``, ``intrinsics`` or ``rotation`` not ``(3, 3)``, or
        ``translation`` not ``(3,)``.

    References:
      Hartley and Zisserman, Multiple View Geometry, 2nd ed. (2004), chapter 6 (pinhole camera);
      Deng et al. 2025 (arXiv:2411.01212) for the warp.
    """
    depth = _check_depth(depth)
    k_mat = _check_matrix(intrinsics, (3, 3), "intrinsics")
    r = _check_matrix(rotation, (3, 3), "rotation")
    t = _check_matrix(translation, (3,), "translation")
    h, w = depth.shape
    ok = jnp.isfinite(depth) & (depth > 0)
    z = jnp.where(ok, depth, 1.0)
    pts = z[..., None] * _rays(h, w, k_mat)  # (H, W, 3) in this camera
    moved = pts @ r.T + t  # (H, W, 3) in the other camera
    zp = moved[..., 2]
    ok = ok & (zp > min_depth)
    zs = jnp.where(ok, zp, 1.0)
    proj = moved @ k_mat.T
    u, v = proj[..., 0] / zs, proj[..., 1] / zs
    x, y = pixel_centres(h, w)
    flow = jnp.stack([u - x, v - y], axis=-1)
    flow = jnp.where(ok[..., None], flow, jnp.nan).astype(jnp.float32)
    if return_depth:
        return flow, jnp.where(ok, zp, jnp.nan).astype(jnp.float32)
    return flow


def visibility_mask(
    flow: ArrayLike, depth_moved: ArrayLike, depth_other: ArrayLike, rtol: float = 0.02
) -> jax.Array:
    """Depth test for a :func:`camera_flow`: is each point the visible surface in the other view?

    Point ``d`` lands at ``q = centre_d + flow[d]`` in the other view with depth
    ``depth_moved[d]`` (the ``depth_other`` output of :func:`camera_flow`). It is visible there
    when the other view's depth at ``q`` (value of the cell containing ``q``) is not smaller:
    ``depth_other(q) >= (1 - rtol) depth_moved[d]``. Points landing outside the other frame, or
    where its depth is not finite, count as visible (the warpers treat them on their own).
    For a backward flow (depth of frame ``t+1``, pose ``t+1 -> t``) an invisible point was hidden
    in frame ``t``: it is disoccluded and should get fresh noise, e.g.
    ``mask_flow(flow, visibility_mask(...))``. For a forward flow an invisible source is occluded
    in frame ``t+1`` and should not be splatted (NaN forward flow sends nothing).

    Args:
      flow: ``(H, W, 2)`` flow from :func:`camera_flow`.
      depth_moved: ``(H, W)`` depth of each point in the other camera.
      depth_other: ``(H, W)`` depth map of the other view.
      rtol: relative depth tolerance.

    Returns:
      ``(H, W)`` boolean mask, False where the point is hidden or the flow is NaN.

    Raises:
      ValueError: on shape mismatches.
    """
    flow = _check_flow(flow)
    h, w = flow.shape[:2]
    zm = _check_depth(depth_moved, "depth_moved")
    zo = _check_depth(depth_other, "depth_other")
    if zm.shape != (h, w) or zo.shape != (h, w):
        raise ValueError(
            f"depth_moved and depth_other must have shape (H, W) = {(h, w)} to match flow "
            f"{flow.shape}; got {zm.shape} and {zo.shape}"
        )
    x, y = pixel_centres(h, w)
    finite = jnp.all(jnp.isfinite(flow), -1) & jnp.isfinite(zm)
    qx = jnp.where(finite, x + flow[..., 0], -1.0)
    qy = jnp.where(finite, y + flow[..., 1], -1.0)
    inside = (qx >= 0) & (qx < w) & (qy >= 0) & (qy < h)
    cols = jnp.clip(jnp.floor(qx).astype(jnp.int32), 0, w - 1)
    rows = jnp.clip(jnp.floor(qy).astype(jnp.int32), 0, h - 1)
    there = zo[rows, cols]
    hidden = inside & jnp.isfinite(there) & (there < (1.0 - rtol) * zm)
    return finite & ~hidden


def plane_depth(
    h: int,
    w: int,
    intrinsics: ArrayLike,
    normal: ArrayLike = (0.0, 0.0, 1.0),
    offset: ArrayLike = 1.0,
) -> jax.Array:
    """Depth map of the plane ``{X : n . X = offset}`` given in camera coordinates.

    The ray through pixel centre ``p`` is ``Z K^-1 (p, 1)``; it meets the plane at
    ``Z = offset / (n . K^-1 (p, 1))``. The default is the fronto-parallel plane ``Z = offset``.
    Pixels whose ray misses the plane (``Z`` not positive and finite) are NaN.

    Args:
      h: image height ``H``.
      w: image width ``W``.
      intrinsics: ``(3, 3)`` intrinsic matrix.
      normal: ``(3,)`` plane normal ``n`` in camera coordinates (need not be unit length).
      offset: plane offset (``n . X = offset``).

    Returns:
      ``(H, W)`` float32 z-depth.

    Raises:
      ValueError: for non-positive sizes or wrongly shaped ``intrinsics`` or ``normal``.
    """
    h, w = _check_size(h, w)
    k_mat = _check_matrix(intrinsics, (3, 3), "intrinsics")
    n = _check_matrix(normal, (3,), "normal")
    denom = _rays(h, w, k_mat) @ n
    z = jnp.asarray(offset, jnp.float32) / jnp.where(denom != 0, denom, jnp.nan)
    return jnp.where(jnp.isfinite(z) & (z > 0), z, jnp.nan).astype(jnp.float32)


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
      world_to_cam: ``(4, 4)`` or ``(3, 4)`` extrinsic matrix ``[R | t]`` (see :func:`look_at`).
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
    h, w = _check_size(h, w)
    k_mat = _check_matrix(intrinsics, (3, 3), "intrinsics")
    r, t = _pose_rt(world_to_cam, "world_to_cam")
    if not isinstance(steps, numbers.Integral) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2; got {steps!r}")
    if not isinstance(bisections, numbers.Integral) or bisections < 0:
        raise ValueError(f"bisections must be a non-negative integer; got {bisections!r}")
    if wavelength <= 0 or far <= 0:
        raise ValueError(f"wavelength and far must be positive; got {wavelength!r} and {far!r}")
    eye = -r.T @ t
    dirs = _rays(h, w, k_mat) @ r  # (H, W, 3): R^T K^-1 p per pixel
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
