"""Leading dims folded into one feature axis.

The batch-wide flags and the values computed apart that used to live here (``batch_max``,
``in_buffer``, ``materialize``) are CPU scheduling devices, now in :mod:`irwarp._schedule`; they
are re-exported under their old names.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from irwarp._schedule import batch_max, in_buffer, materialize  # noqa: F401 (old names)


def fold(noise: jax.Array, nd: int = 2) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """``(..., *G, C)`` -> float32 ``(*G, L*C)`` and the inverse map back to the input dtype.

    ``G`` is the grid: ``(H, W)`` for ``nd = 2``, ``(D, H, W)`` for ``nd = 3``; features are ordered
    (leading index, channel). The inverse takes ``(*S, L*C)`` for any spatial shape ``S`` (the grid,
    or e.g. ``(P,)`` polygons) and returns ``(..., *S, C)`` in the input dtype.
    """
    shape, dtype = noise.shape, noise.dtype
    lead = shape[: -nd - 1]
    grid, c = shape[-nd - 1 : -1], shape[-1]
    x = noise.astype(jnp.float32).reshape((-1,) + grid + (c,))
    x = jnp.moveaxis(x, 0, nd).reshape(grid + (-1,))

    def unfold(y: jax.Array) -> jax.Array:
        y = jnp.moveaxis(y.reshape(y.shape[:-1] + (-1, c)), -2, 0)
        return y.reshape(lead + y.shape[1:-1] + (c,)).astype(dtype)

    return x, unfold
