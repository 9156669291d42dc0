"""Leading dims folded into one feature axis; batch-wide flags; values computed apart (XLA CPU)."""

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
    if not in_batched[0]:
        return value, False
    # An empty batch (vmap over zero examples) has no maximum; any value serves it.
    return jnp.max(value, initial=_lowest(value.dtype)), False


def _lowest(dtype):
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.iinfo(dtype).min
    if jnp.issubdtype(dtype, jnp.floating):
        return -jnp.inf
    return False


def in_buffer(fn: Callable, *args, always: jax.Array):
    """``fn(*args)`` computed apart, into result buffers of its own.

    XLA's CPU pipeline drops ``optimization_barrier`` before fusion, so a large elementwise
    producer gets fused into each of its consumers and recomputed there (into a scatter, that is
    its scalar loop: measured 6x slower than computing the values first; a hash fused into its
    consumers, 4x). A conditional's branch is a computation of its own, so ``fn`` runs as the
    branch of a ``lax.cond`` on ``always``: a boolean scalar the caller guarantees true but XLA
    cannot prove true (e.g. ``probe == probe`` for a float ``probe`` known to be finite). The other
    branch, never taken, gives zeros. Under ``vmap`` the flag is one for the whole batch
    (:func:`batch_max`), so the cond stays a cond.
    """
    keep = batch_max(jnp.logical_not(always).astype(jnp.int32)) == 0

    def zeros(*a):
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *a))

    return jax.lax.cond(keep, fn, zeros, *args)


def materialize(tree, probe: jax.Array):
    """``tree`` (already computed) in buffers of its own; ``probe`` a float known to be finite.

    See :func:`in_buffer`: the identity as the branch, on ``probe == probe``.
    """
    return in_buffer(lambda t: t, tree, always=probe == probe)
