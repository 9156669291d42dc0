"""Method names of the experiments' command lines and their cached jitted warps.

A name is a chain method of the registry (:mod:`irwarp.methods`): a backward-flow method of
:func:`irwarp.warp`, a forward one (``"splat"``, :func:`irwarp.warp_forward`), or a shorthand
``"<method><N>"`` (``"chang4"`` is ``method="chang", upsample=4``). This module knows no method.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax

import irwarp


def parse_method(name: str) -> tuple[str, dict]:
    """A per-frame warp method of the registry: ``"chang4"`` -> ``("chang", {"upsample": 4})``.

    Reads :func:`irwarp.parse_method` (the method registry, :mod:`irwarp.methods`); keyframe
    methods (``"lagrangian"``) integrate whole sequences and are not per-frame warps.

    Raises:
      ValueError: for a name that is not a chain method of the registry.
    """
    base, options = irwarp.parse_method(name)
    method = irwarp.get_method(base)
    if method.kind != "chain":
        chains = ", ".join(irwarp.methods.method_names(kind="chain"))
        raise ValueError(f"{name!r} is a {method.kind} method, not a per-frame warp: use {chains}")
    return base, options


def method_label(name: str) -> str:
    """Human-readable method name for tables and legends (``"chang4"`` -> ``"chang N=4"``)."""
    try:
        base, options = irwarp.parse_method(name)
    except ValueError:
        return name
    short = irwarp.get_method(base).shorthand
    if short in options and name != base:
        return f"{base} {'N' if short == 'upsample' else short}={options[short]}"
    return name


def _is_forward(base: str) -> bool:
    return irwarp.get_method(base).flow == "forward"


def check_methods(names: Sequence[str]) -> tuple[str, ...]:
    """Validates every method name (see :func:`parse_method`); returns them as a tuple."""
    for n in names:
        parse_method(n)
    return tuple(names)


@functools.cache
def warp_fn(name: str) -> Callable:
    """Jitted ``f(key, noise, backward_flow, forward_flow) -> warped noise`` for a method name.

    ``"splat"`` uses the forward flow (``irwarp.warp_forward``), every other method the backward
    flow (``irwarp.warp``). Cached, so experiments that share shapes share compilations.
    """
    base, options = parse_method(name)
    if _is_forward(base):
        return jax.jit(lambda key, x, bflow, fflow: irwarp.warp_forward(key, x, fflow))
    return jax.jit(lambda key, x, bflow, fflow: irwarp.warp(key, x, bflow, method=base, **options))


@functools.cache
def sequence_fn(name: str) -> Callable:
    """Jitted ``f(key, noise0, backward_flows, forward_flows) -> (T + 1, ...) frames``."""
    base, options = parse_method(name)
    if _is_forward(base):
        return jax.jit(
            lambda key, x, bflows, fflows: irwarp.warp_sequence(key, x, fflows, method=base)
        )
    return jax.jit(
        lambda key, x, bflows, fflows: irwarp.warp_sequence(key, x, bflows, method=base, **options)
    )
