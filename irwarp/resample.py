"""Exact integral downsampling of noise and block-averaging of flows (e.g. to a latent grid).

Integral noise is the integral of a white-noise field over each pixel (DESIGN.md section 2). The
integral over a ``k x k`` block of pixels is the sum of their values, of variance ``k^2``, so
``sum / k`` is again exactly N(0, 1), and distinct blocks are independent: downsampling i.i.d.
N(0, 1) noise this way gives i.i.d. N(0, 1) noise at ``1/k`` the resolution. It is the noise an
``H/k x W/k`` grid of cells of side ``k`` would have seen, so it commutes with warping wherever the
warp moves whole blocks (integer translations by multiples of ``k``).

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212); Chang et al., How I Warped Your Noise, ICLR 2024 (integral noise).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

__all__ = ["downsample", "downsample_flow"]


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
      ``(..., H/k, W/k, C)`` noise.

    Raises:
      ValueError: if ``k`` is not a positive integer, ``noise`` has rank < 3 or is not floating
        point, or ``H`` or ``W`` is not divisible by ``k``.

    References:
      Deng et al. 2025 (arXiv:2411.01212); DESIGN.md section 2.
    """
    k = _check_factor(k)
    noise = jnp.asarray(noise)
    _check_grid(noise.shape, k, "noise", "C")
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise ValueError(f"noise must be a floating-point array; got dtype {noise.dtype}")
    if k == 1:
        return noise
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
