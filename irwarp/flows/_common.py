"""Argument checks shared by the modules of :mod:`irwarp.flows`, for images and volumes.

Each raises ``ValueError`` naming what was expected and what came; they run at trace time.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["check_flow", "check_size", "check_vector", "default_centre", "is_concrete_number"]

_SIZE_NAMES = {2: "(h, w)", 3: "(d, h, w)"}
_FLOW_SHAPES = {2: "(H, W, 2)", 3: "(D, H, W, 3)"}


def check_size(*sizes) -> tuple[int, ...]:
    """``(h, w)`` or ``(d, h, w)`` as Python ints, if every size is a positive integer."""
    ok = all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and int(s) > 0 for s in sizes
    )
    if not ok:
        got = ", ".join(repr(s) for s in sizes)
        raise ValueError(f"expected positive integer sizes {_SIZE_NAMES[len(sizes)]}; got ({got})")
    return tuple(int(s) for s in sizes)


def check_flow(
    flow: ArrayLike, name: str = "flow", *, ndim: int = 2, batched: bool = False
) -> jax.Array:
    """A real flow ``(H, W, 2)`` (``ndim`` 2; ``(..., H, W, 2)`` when ``batched``) or
    ``(D, H, W, 3)`` (``ndim`` 3), as float32."""
    shape = jnp.shape(flow)
    if batched:
        if len(shape) < ndim + 1 or shape[-1] != ndim:
            raise ValueError(f"{name} must have shape (..., {_FLOW_SHAPES[ndim][1:]}; got {shape}")
    elif len(shape) != ndim + 1 or shape[-1] != ndim:
        raise ValueError(f"{name} must have shape {_FLOW_SHAPES[ndim]}; got {shape}")
    dtype = jnp.result_type(flow)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"{name} must be a real-valued array; got dtype {dtype}")
    return jnp.asarray(flow, jnp.float32)


def is_concrete_number(value) -> bool:
    """True for a Python (or numpy) real number that is not a bool (so it can be checked)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_vector(value: ArrayLike, name: str, what: str = "(x, y, z)") -> jax.Array:
    """A float32 vector of as many components as ``what`` names (e.g. ``"(x, y)"``)."""
    v = jnp.asarray(value, jnp.float32)
    length = what.count(",") + 1
    if v.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},) as {what}; got {v.shape}")
    return v


def default_centre(sizes: tuple[int, ...], centre) -> jax.Array:
    """``centre`` as ``(x, y)`` / ``(x, y, z)``; by default the middle of the grid ``sizes``."""
    if centre is None:
        return jnp.array([n / 2.0 for n in reversed(sizes)], jnp.float32)
    return check_vector(centre, "centre", "(x, y)" if len(sizes) == 2 else "(x, y, z)")
