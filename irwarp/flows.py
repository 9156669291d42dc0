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

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212). Baker et al., A Database and Evaluation Methodology for Optical Flow,
  IJCV 2011 (the Middlebury ``.flo`` format).
"""

from __future__ import annotations

import numbers
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from irwarp._sampling import pixel_centres, sample_flow

__all__ = [
    "DEGENERATE",
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
