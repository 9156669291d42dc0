"""Method names of the experiments' command lines and their cached jitted warps.

A name is a method of :func:`irwarp.warp`, ``"splat"`` (:func:`irwarp.warp_forward`), or a
numbered shorthand ``"<method><N>"`` for a method with one integer option (``"chang4"`` is
``method="chang", upsample=4``). This module knows no method beyond that table of shorthands.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

import jax

import irwarp

# Shorthand "<method><N>" -> the integer option that N gives; such a method needs its N.
_NUMBERED = {"chang": "upsample"}
_NUMBERED_NAME = re.compile(r"([a-z_]+?)(\d+)")


def _known() -> tuple[str, ...]:
    # TODO(irwarp.methods): read the public method registry here instead of irwarp.METHODS.
    return (*irwarp.METHODS, "splat")


def parse_method(name: str) -> tuple[str, dict]:
    """``"chang4"`` -> ``("chang", {"upsample": 4})``; ``"grid"`` -> ``("grid", {})``; also "splat".

    Raises:
      ValueError: for a name that is neither ``"splat"``, ``"chang<N>"`` nor in ``irwarp.METHODS``.
    """
    m = _NUMBERED_NAME.fullmatch(name)
    if m and m.group(1) in _NUMBERED:
        return m.group(1), {_NUMBERED[m.group(1)]: int(m.group(2))}
    plain = [n for n in _known() if n not in _NUMBERED]
    if name in plain:
        return name, {}
    numbered = ", ".join(f"'{n}<N>' (e.g. '{n}4')" for n in _NUMBERED)
    raise ValueError(
        f"unknown method {name!r}; expected 'splat', {numbered} or one of "
        f"{', '.join(n for n in plain if n != 'splat')}"
    )


def method_label(name: str) -> str:
    """Human-readable method name for tables and legends (``"chang4"`` -> ``"chang N=4"``)."""
    m = _NUMBERED_NAME.fullmatch(name)
    return f"{m.group(1)} N={m.group(2)}" if m and m.group(1) in _NUMBERED else name


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
    if base == "splat":
        return jax.jit(lambda key, x, bflow, fflow: irwarp.warp_forward(key, x, fflow))
    return jax.jit(lambda key, x, bflow, fflow: irwarp.warp(key, x, bflow, method=base, **options))


@functools.cache
def sequence_fn(name: str) -> Callable:
    """Jitted ``f(key, noise0, backward_flows, forward_flows) -> (T + 1, ...) frames``."""
    base, options = parse_method(name)
    if base == "splat":
        return jax.jit(
            lambda key, x, bflows, fflows: irwarp.warp_sequence(key, x, fflows, method="splat")
        )
    return jax.jit(
        lambda key, x, bflows, fflows: irwarp.warp_sequence(key, x, bflows, method=base, **options)
    )
