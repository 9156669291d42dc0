"""Leading (batch) dims: folding them into one feature axis (warp, sheet), batch-wide flags."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


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


@jax.custom_batching.custom_vmap
def batch_max(value: jax.Array) -> jax.Array:
    """Identity on a scalar; under ``vmap`` the maximum over the batch, returned unbatched.

    Lets a data-dependent ``lax.switch`` / ``lax.cond`` stay one branch for a whole batch instead of
    becoming a ``select`` over every branch (what ``vmap`` does with a batched index). Callers use
    it only where every branch gives the same values, so it changes the cost, not the result.
    """
    return value


@batch_max.def_vmap
def _batch_max_vmap(axis_size, in_batched, value):
    del axis_size
    return (jnp.max(value) if in_batched[0] else value), False
