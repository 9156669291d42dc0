"""Brownian-bridge increments: the randomness of integral noise warping, with no geometry.

Given the integral ``X`` of white noise over a unit cell, the integrals over disjoint pieces of the
cell with areas ``a_1 .. a_K`` (``sum a <= 1``) are the increments of a Brownian bridge on ``[0, 1]``
from 0 to ``X`` over consecutive intervals of those lengths (docs/DESIGN.md section 2). We sample them
order-free: ``Z_k ~ N(0, a_k)``, ``Z_rest ~ N(0, 1 - sum a)``, ``S = sum Z + Z_rest`` and
``inc_k = a_k X + (Z_k - a_k S)``. Every permutation of the pieces gives the same law, so the result
never depends on the order in which pieces were found (or on thread order).

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212), section 3 (Brownian-bridge increments).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["bridge_increments", "bridge_from_normals"]


def bridge_from_normals(
    total: jnp.ndarray,
    areas: jnp.ndarray,
    piece_normals: jnp.ndarray,
    rest_normal: jnp.ndarray,
) -> jnp.ndarray:
    """Deterministic core of :func:`bridge_increments` given the standard normal draws.

    Args:
      total: ``(...)`` value of the bridge at time 1.
      areas: ``(..., K)`` interval lengths, non-negative, summing to at most 1.
      piece_normals: ``(..., K)`` i.i.d. N(0, 1) draws, one per piece.
      rest_normal: ``(...)`` an N(0, 1) draw for the unused remainder of the cell.

    Returns:
      ``(..., K)`` increments ``a_k X + (Z_k - a_k S)`` with ``Z_k = sqrt(a_k) g_k``.
    """
    areas = jnp.maximum(areas, 0.0)
    z = jnp.sqrt(areas) * piece_normals
    rest = jnp.sqrt(jnp.maximum(1.0 - areas.sum(-1), 0.0)) * rest_normal
    s = z.sum(-1) + rest
    return areas * total[..., None] + (z - areas * s[..., None])


def bridge_increments(key: jax.Array, total: jnp.ndarray, areas: jnp.ndarray) -> jnp.ndarray:
    """Increments of a standard Brownian bridge from 0 to ``total`` over intervals ``areas``.

    ``inc_k`` has conditional mean ``a_k X`` and covariance ``a_k delta_kl - a_k a_l``; when the
    areas sum to 1 the increments add up to ``total`` (to float rounding).

    Args:
      key: a PRNG key (typed ``jax.random.key`` or legacy ``PRNGKey``).
      total: ``(...)`` the bridge's end value ``X``.
      areas: ``(..., K)`` non-negative lengths, summing to at most 1 along the last axis.

    Returns:
      ``(..., K)`` float array of increments, in the result dtype of ``total`` and ``areas``.

    References:
      Deng et al. 2025 (arXiv:2411.01212), section 3; docs/DESIGN.md section 2.
    """
    total = jnp.asarray(total)
    areas = jnp.asarray(areas)
    if areas.ndim < 1:
        raise ValueError(f"areas must have shape (..., K); got a scalar of shape {areas.shape}")
    if areas.shape[:-1] != total.shape:
        raise ValueError(
            "areas must have shape total.shape + (K,); "
            f"got total {total.shape} and areas {areas.shape}"
        )
    dtype = jnp.result_type(total.dtype, areas.dtype, jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"total and areas must be floating point; got {dtype}")
    k_pieces, k_rest = jax.random.split(key)
    g = jax.random.normal(k_pieces, areas.shape, dtype)
    r = jax.random.normal(k_rest, total.shape, dtype)
    return bridge_from_normals(total.astype(dtype), areas.astype(dtype), g, r)
