"""Integral resampling of noise in space (down and up) and in time, and of flows.

Integral noise is the integral of a white-noise field over each pixel (docs/DESIGN.md section 2). The
integral over a ``k x k`` block of pixels is the sum of their values, of variance ``k^2``, so
``sum / k`` is again exactly N(0, 1), and distinct blocks are independent: downsampling i.i.d.
N(0, 1) noise this way gives i.i.d. N(0, 1) noise at ``1/k`` the resolution. It is the noise an
``H/k x W/k`` grid of cells of side ``k`` would have seen, so it commutes with warping wherever the
warp moves whole blocks (integer translations by multiples of ``k``).

:func:`upsample` is its conditional inverse: given the coarse values it samples the ``k x k``
children from their conditional law, so that downsampling returns the input (up to float32
rounding, see :func:`upsample`) and the children of N(0, 1) input are i.i.d. N(0, 1). Warping at
``k`` times the resolution and downsampling is then a refinement of warping at the coarse one
(:func:`upsample_flow` gives the matching fine flow).

:func:`temporal_compress` turns ``T`` frames into ``T / k`` (the temporal compression of latent
video models): ``"subsample"`` keeps every ``k``-th frame, ``"integral"`` sums ``k`` frames and
divides by ``sqrt(k)``, ``"mean"`` divides by ``k`` (the variance-shrinking baseline). With
``causal=True`` it takes the ``T = 1 + k m`` layout of causal video VAEs (49 frames -> 13 for
``k = 4``): frame 0 alone, then groups of ``k``.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212); Chang et al., How I Warped Your Noise, ICLR 2024 (integral noise).
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp

from irwarp._inputs import check_key
from irwarp._sampling import pixel_centres, sample_flow

__all__ = [
    "TEMPORAL_MODES",
    "downsample",
    "downsample_flow",
    "temporal_compress",
    "upsample",
    "upsample_flow",
]


def _check_factor(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"the downsampling factor k must be a positive integer; got {k!r}")
    return int(k)


def _check_grid(shape: tuple[int, ...], k: int, name: str, last: str) -> tuple[int, int]:
    if len(shape) < 3:
        raise ValueError(f"{name} must have shape (..., H, W, {last}); got {shape}")
    h, w = shape[-3], shape[-2]
    if h % k or w % k:
        raise ValueError(
            f"{name} (..., H, W, {last}) = {shape} cannot be downsampled by k = {k}: H and W must "
            f"be multiples of {k} (got H % k = {h % k}, W % k = {w % k})"
        )
    return h, w


def _block_sum(x: jax.Array, k: int) -> jax.Array:
    """``(..., H, W, F)`` -> ``(..., H/k, W/k, F)`` sums over ``k x k`` blocks (float32)."""
    *lead, h, w, f = x.shape
    x = x.astype(jnp.float32).reshape((*lead, h // k, k, w // k, k, f))
    return x.sum(axis=(-4, -2))


def downsample(noise: jax.Array, k: int) -> jax.Array:
    """Exact integral downsampling: sum each ``k x k`` block of pixels and divide by ``k``.

    ``Y[..., a, b, c] = (1 / k) sum_{0 <= u, v < k} X[..., k a + u, k b + v, c]``. For i.i.d.
    N(0, 1) input the output is i.i.d. N(0, 1): the block integral of white noise over an area
    ``k^2`` has variance ``k^2``.

    Args:
      noise: ``(..., H, W, C)`` floating noise; ``H`` and ``W`` multiples of ``k``. Computed in
        float32 and returned in its dtype.
      k: static positive integer factor (``k = 1`` returns the input unchanged).

    Returns:
      ``(..., H/k, W/k, C)`` noise (compiled on first use for each shape and ``k``).

    Raises:
      ValueError: if ``k`` is not a positive integer, ``noise`` has rank < 3 or is not floating
        point, or ``H`` or ``W`` is not divisible by ``k``.

    References:
      Deng et al. 2025 (arXiv:2411.01212); docs/DESIGN.md section 2.
    """
    k = _check_factor(k)
    noise = jnp.asarray(noise)
    _check_grid(noise.shape, k, "noise", "C")
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise ValueError(f"noise must be a floating-point array; got dtype {noise.dtype}")
    if k == 1:
        return noise
    return _downsample(noise, k)


@functools.partial(jax.jit, static_argnums=1)
def _downsample(noise, k):
    return (_block_sum(noise, k) / k).astype(noise.dtype)


def downsample_flow(flow: jax.Array, k: int) -> jax.Array:
    """Backward flow on the ``k``-times coarser grid: the block mean of the flow, divided by ``k``.

    ``F[..., a, b] = mean_{k x k block (a, b)} flow / k`` (vectors ``(dx, dy)`` in coarse pixels).
    A block with any non-finite (disoccluded) pixel is NaN, so it stays disoccluded.

    Args:
      flow: ``(..., H, W, 2)`` backward flow in pixels; ``H`` and ``W`` multiples of ``k``.
      k: static positive integer factor.

    Returns:
      ``(..., H/k, W/k, 2)`` float32 flow.

    Raises:
      ValueError: if ``k`` is not a positive integer, ``flow`` is not ``(..., H, W, 2)``, or ``H``
        or ``W`` is not divisible by ``k``.
    """
    k = _check_factor(k)
    flow = jnp.asarray(flow)
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow must have shape (..., H, W, 2); got {flow.shape}")
    _check_grid(flow.shape, k, "flow", "2")
    return _block_sum(flow, k) / float(k * k * k)


def upsample(key: jax.Array, noise: jax.Array, k: int) -> jax.Array:
    """Conditional integral upsampling: ``k x k`` children per pixel whose block sum is ``k X``.

    Each coarse value ``X`` is the integral of white noise over a cell of ``k x k`` fine cells
    divided by ``k`` (the convention of :func:`downsample`), so the fine values ``u`` (each
    N(0, 1) unconditionally) satisfy ``sum(u) = k X``. Given ``X`` they are Gaussian with mean
    ``X / k`` and covariance ``I - 11^T / k^2``, sampled as ``u = z - mean(z) + X / k`` with
    ``z ~ N(0, I)`` i.i.d. over the ``k^2`` children. Hence, for i.i.d. N(0, 1) input, the output
    is i.i.d. N(0, 1) at the fine scale, and ``downsample(upsample(key, x, k), k) == x``.

    Exactness in float32. The last child of each block (bottom-right) is computed as the remainder
    ``k X - (sum of the other children)``, the same value in exact arithmetic, so the children's
    exact sum is ``k X`` up to the float32 rounding of that sum and of the remainder (a few ulps of
    ``sum |u|``). Bit-exact round trips cannot be guaranteed for every input: :func:`downsample`
    adds ``k^2`` float32 values of size ``O(1)``; its last addition has an operand of size
    ``O(1)`` (the sum of all other children, generically), so its result is a multiple of that
    operand's ulp (about ``2^-23``), while ``k X`` for ``|X| << 1`` has nonzero bits below it.
    In practice about three quarters of the values come back bit-exact, and the rest within
    ``2^-21`` absolute (measured for ``k = 2 .. 8``); see the tests for the bound.

    Args:
      key: PRNG key (typed or legacy); the same key gives the same children.
      noise: ``(..., H, W, C)`` floating noise; computed in float32 and returned in its dtype.
      k: static positive integer factor (``k = 1`` returns the input unchanged).

    Returns:
      ``(..., k H, k W, C)`` noise; fine pixel ``(k a + u, k b + v)`` is a child of ``(a, b)``.

    Raises:
      ValueError: if ``k`` is not a positive integer, or ``noise`` has rank < 3 or is not floating
        point.

    References:
      Chang et al., How I Warped Your Noise, ICLR 2024 (conditional upsampling of integral noise);
      Deng et al. 2025 (arXiv:2411.01212); docs/DESIGN.md section 2.
    """
    k = _check_factor(k)
    noise = jnp.asarray(noise)
    if noise.ndim < 3:
        raise ValueError(f"noise must have shape (..., H, W, C); got {noise.shape}")
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise ValueError(f"noise must be a floating-point array; got dtype {noise.dtype}")
    if k == 1:
        return noise
    return _upsample(check_key(key), noise, k)


@functools.partial(jax.jit, static_argnums=2)
def _upsample(key, noise, k):
    *lead, h, w, c = noise.shape
    x = noise.astype(jnp.float32)
    z = jax.random.normal(key, (*lead, h, w, k * k, c), jnp.float32)
    u = z - z.mean(axis=-2, keepdims=True) + (x / k)[..., None, :]
    # The last child is the remainder, so that the children add up to k X (in exact arithmetic
    # this is the same value; in float32 it removes the rounding of the mean and of X / k).
    last = k * x - u[..., :-1, :].sum(axis=-2)
    u = jnp.concatenate([u[..., :-1, :], last[..., None, :]], axis=-2)
    u = u.reshape((*lead, h, w, k, k, c))
    u = jnp.swapaxes(u, -4, -3).reshape((*lead, h * k, w * k, c))
    return u.astype(noise.dtype)


def upsample_flow(flow: jax.Array, k: int) -> jax.Array:
    """Backward flow on the ``k``-times finer grid that describes the same continuous motion.

    The coarse backward map ``psi`` is defined everywhere by bilinear interpolation of the flow
    between coarse pixel centres (clamped to the edge; docs/DESIGN.md section 1). In fine pixel units
    the same map is ``psi_k(p) = k psi(p / k)``, so the fine flow at fine centre ``p`` is
    ``k flow(p / k)``. NaN (disoccluded) coarse pixels are ignored in the interpolation; a fine
    pixel whose four coarse samples are all NaN is NaN. :func:`downsample_flow` of the result
    returns the input exactly for affine flows away from the border.

    Args:
      flow: ``(H, W, 2)`` or ``(..., H, W, 2)`` backward flow in coarse pixels.
      k: static positive integer factor.

    Returns:
      ``(..., k H, k W, 2)`` float32 backward flow in fine pixels.

    Raises:
      ValueError: if ``k`` is not a positive integer or ``flow`` is not ``(..., H, W, 2)``.
    """
    k = _check_factor(k)
    flow = jnp.asarray(flow)
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow must have shape (..., H, W, 2); got {flow.shape}")
    flow = flow.astype(jnp.float32)
    if k == 1:
        return flow
    *lead, h, w, _ = flow.shape
    fx, fy = pixel_centres(h * k, w * k)
    f = jnp.moveaxis(flow.reshape((-1, h, w, 2)), 0, 2).reshape(h, w, -1)
    up = sample_flow(f, fx / k, fy / k) * k  # (kH, kW, L*2)
    up = jnp.moveaxis(up.reshape(h * k, w * k, -1, 2), 2, 0)
    return up.reshape((*lead, h * k, w * k, 2))


TEMPORAL_MODES: tuple[str, ...] = ("subsample", "integral", "mean")
"""Modes of :func:`temporal_compress`."""


def temporal_compress(
    noise: jax.Array, k: int, *, mode: str = "subsample", axis: int = 0, causal: bool = False
) -> jax.Array:
    """Compress ``T`` noise frames into ``T / k`` (e.g. for a latent video model).

    Groups ``g = 0 .. T/k - 1`` of ``k`` consecutive frames along ``axis``:

    - ``"subsample"``: ``Z_g = X_{k g}`` (the first frame of each group). Every output frame is an
      input frame, so it is exactly i.i.d. N(0, 1) over pixels whenever the input frames are (any
      warped video); consecutive outputs are related by the ``k``-frame motion.
    - ``"integral"``: ``Z_g = (1 / sqrt(k)) sum_{i < k} X_{k g + i}``, the integral of space-time
      white noise over ``k`` frames. It is N(0, 1) and white only when the frames are independent
      (fresh noise). For warped (temporally coherent) noise the per-pixel variance is
      ``1 + (2 / k) sum_{i < j} corr(X_i, X_j)`` (``k`` for a static scene), and the sum of
      shifted copies is correlated between neighbouring pixels along the motion.
    - ``"mean"``: ``Z_g = (1 / k) sum_{i < k} X_{k g + i}``, the frame average some pipelines use:
      variance ``1 / k`` for independent frames, 1 only for a static scene; not N(0, 1) in general
      (a baseline, not a recommendation).

    Causal layout (``causal=True``), for video VAEs whose latent frame 0 encodes video frame 0
    alone and each further latent frame the next ``k`` video frames: ``T = 1 + k m`` frames give
    ``1 + m`` (49 -> 13 for ``k = 4``). Group 0 is frame 0 alone (every mode returns ``X_0``);
    group ``j >= 1`` is frames ``k (j - 1) + 1 .. k j``, reduced as above: ``"subsample"`` keeps
    ``Z_j = X_{k j}`` (the last frame of the group, the one aligned with latent frame ``j``; the
    same formula as the plain layout), ``"integral"`` and ``"mean"`` sum that group over ``k``
    frames and divide by ``sqrt(k)`` or ``k``. The layout is never guessed from ``T``: the
    default ``causal=False`` asks for a multiple of ``k`` and its outputs are unchanged.

    Args:
      noise: ``(T, ..., H, W, C)`` floating noise (time on ``axis``); computed in float32 and
        returned in its dtype.
      k: static positive integer factor; ``T`` must be a multiple of ``k`` (trim or pad the video
        first: which frames to drop is the caller's decision), or ``1 + k m`` with ``causal``.
      mode: static, one of :data:`TEMPORAL_MODES`.
      axis: static time axis (default 0; negative values count from the end).
      causal: static bool: the ``1 + k m`` layout (frame 0 alone, then groups of ``k``).

    Returns:
      ``(T / k, ..., H, W, C)`` noise, or ``(1 + (T - 1) / k, ...)`` with ``causal`` (the time
      axis stays at ``axis``).

    Raises:
      ValueError: if ``k`` is not a positive integer, ``mode`` is unknown, ``axis`` is out of range,
        ``causal`` is not a bool, ``noise`` is not floating point, or ``T`` is not a multiple of
        ``k`` (with ``causal``: not ``1 + k m``).

    References:
      Deng et al. 2025 (arXiv:2411.01212) (integral noise); Burgert et al., Go-with-the-Flow,
      CVPR 2025 (warped noise for latent video models).
    """
    k = _check_factor(k)
    if mode not in TEMPORAL_MODES:
        raise ValueError(f"mode must be one of {TEMPORAL_MODES}; got {mode!r}")
    noise = jnp.asarray(noise)
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise ValueError(f"noise must be a floating-point array; got dtype {noise.dtype}")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"axis must be a static integer; got {axis!r}")
    if not -noise.ndim <= axis < noise.ndim:
        raise ValueError(f"axis {axis} is out of range for noise of shape {noise.shape}")
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be a static bool; got {causal!r}")
    axis = int(axis) % noise.ndim
    t = noise.shape[axis]
    if causal:
        if t < 1 or (t - 1) % k:
            r = (t - 1) % k if t >= 1 else 0
            raise ValueError(
                f"causal=True needs T = 1 + k m frames (frame 0, then groups of k = {k}); got "
                f"T = {t} (axis {axis} of noise {noise.shape}); trim or pad the video to "
                f"{max(t - r, 1)} or {max(t - r, 1) + k} frames"
            )
        x = jnp.moveaxis(noise, axis, 0)
        if mode == "subsample":  # Z_j = X_{k j}: frame 0, then the last frame of each group
            out = x[::k]
        else:  # frame 0 alone, then the plain layout on frames 1 .. T - 1
            out = jnp.concatenate([x[:1], temporal_compress(x[1:], k, mode=mode)], axis=0)
        return jnp.moveaxis(out, 0, axis)
    if t % k:
        hint = " (or pass causal=True for the 1 + k m layout)" if t % k == 1 else ""
        raise ValueError(
            f"the number of frames T = {t} (axis {axis} of noise {noise.shape}) must be a multiple "
            f"of k = {k}; got T % k = {t % k} (trim or pad the video to {t - t % k} or "
            f"{t - t % k + k} frames){hint}"
        )
    x = jnp.moveaxis(noise, axis, 0)
    x = x.reshape((t // k, k) + x.shape[1:])
    if mode == "subsample":
        out = x[:, 0]
    else:
        total = x.astype(jnp.float32).sum(axis=1)
        out = total / (math.sqrt(k) if mode == "integral" else float(k))
    return jnp.moveaxis(out.astype(noise.dtype), 0, axis)
