"""Checks of the arguments every public entry point shares: keys, noise, flows.

They look at shapes and dtypes only, so they cost nothing under ``jit`` and run before any work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_flow_for", "check_flows", "check_key", "check_noise"]


def check_key(key, name: str = "key"):
    """A single PRNG key: typed (``jax.random.key``, shape ``()``) or legacy ``uint32[2]``.

    Raises:
      ValueError: for anything else (an int seed, a batch of keys, a float array).
    """
    if isinstance(key, (int, float, bool, np.integer, np.floating)) or key is None:
        raise ValueError(
            f"{name} must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)); got "
            f"{type(key).__name__} {key!r}"
        )
    if not isinstance(key, jax.Array):
        key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"{name} must be a single PRNG key; got a typed key array of shape {key.shape} "
                "(use jax.vmap over keys for a batch)"
            )
        return key
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise ValueError(
            f"{name} must be a typed PRNG key or a legacy uint32[2] key; got "
            f"{key.dtype}{list(key.shape)}"
        )
    return key


def check_noise(noise, nd: int = 2, name: str = "noise") -> jax.Array:
    """Floating noise with at least ``nd + 1`` axes: ``(..., H, W, C)`` or ``(..., D, H, W, C)``."""
    noise = jnp.asarray(noise)
    if noise.ndim < nd + 1:
        want = "(..., H, W, C)" if nd == 2 else "(..., D, H, W, C) for a 3D flow"
        raise ValueError(f"{name} must have shape {want}; got {noise.shape}")
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating-point array; got dtype {noise.dtype}")
    return noise


def check_flow_for(noise: jax.Array, flow, name: str = "flow") -> jax.Array:
    """A 2D ``(..., H, W, 2)`` or 3D ``(..., D, H, W, 3)`` flow that fits the noise.

    The flow's last axis says how many spatial axes there are (``nd``); after this check
    ``flow.shape[-1] == nd`` and the noise has at least ``nd + 1`` axes. A batched flow has the
    noise's leading dimensions (one flow per example).
    """
    flow = jnp.asarray(flow)
    nd = 3 if flow.ndim >= 1 and flow.shape[-1] == 3 else 2
    if flow.ndim < nd + 1 or flow.shape[-1] != nd:
        raise ValueError(
            f"{name} must have shape (H, W, 2) or (..., H, W, 2) for images, or (D, H, W, 3) or "
            f"(..., D, H, W, 3) for volumes; got {flow.shape}"
        )
    if jnp.issubdtype(flow.dtype, jnp.complexfloating) or flow.dtype == jnp.bool_:
        raise ValueError(f"{name} must be real-valued; got dtype {flow.dtype}")
    check_noise(noise, nd)
    grid = "(H, W)" if nd == 2 else "(D, H, W)"
    if flow.shape[-nd - 1 : -1] != noise.shape[-nd - 1 : -1]:
        raise ValueError(
            f"{name} and noise must share {grid}; got {name} {flow.shape} and noise {noise.shape}"
        )
    if flow.ndim > nd + 1 and flow.shape[: -nd - 1] != noise.shape[: -nd - 1]:
        raise ValueError(
            f"a batched {name} must have the noise's leading dimensions; got {name} "
            f"{flow.shape} for noise {noise.shape}"
        )
    return flow


def check_flows(flows, name: str = "flows") -> tuple[jax.Array, int]:
    """A sequence of flows ``(T, H, W, 2)`` or ``(T, D, H, W, 3)``; returns it and ``nd``."""
    flows = jnp.asarray(flows)
    nd = flows.shape[-1] if flows.ndim in (4, 5) else 0
    if flows.ndim != nd + 2 or nd not in (2, 3):
        raise ValueError(
            f"{name} must have shape (T, H, W, 2), or (T, D, H, W, 3) for volumes; got "
            f"{flows.shape}"
        )
    if jnp.issubdtype(flows.dtype, jnp.complexfloating) or flows.dtype == jnp.bool_:
        raise ValueError(f"{name} must be real-valued; got dtype {flows.dtype}")
    return flows, nd
