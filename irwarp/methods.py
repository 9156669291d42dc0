"""The method registry: every warping method declared once.

A :class:`Method` says everything an entry point needs to know about a method: its name, its
options with their defaults and checks, the flow it takes (``"backward"`` or ``"forward"``), the
ranks it supports (2 for images, 3 for volumes), whether it chains frames (``"chain"``: frame
``t`` is warped from frame ``t - 1``) or integrates every frame from a keyframe (``"keyframe"``),
and what computes it. :func:`irwarp.warp`, :func:`irwarp.warp_forward`, :func:`irwarp.warp_sequence`,
the noise stream (:mod:`irwarp.stream`), the pipeline, the samplers' providers and the
experiments' method strings (``"chang4"``, ``"lagrangian3"``) all read this registry; a new method
added with :func:`register_method` is available to all of them.

What computes a method:

* ``"chain"`` methods give ``warp[rank](key, x, flow, **options)``: float32 ``x`` of shape
  ``(*G, F)`` (grid ``G``, features ``F``: leading dims and channels folded together), a float32
  flow ``(*G, rank)``, the warped ``(*G, F)``. A method built on a partition record may give
  ``record[rank](flow, **options)`` instead, and then ``warp`` is the record applied with the
  Brownian bridge (:func:`irwarp.apply_record`): the samplers use the record to warp every
  diffusion step's noise with one geometry.
* ``"keyframe"`` methods give ``frame(key, keyframe, total_flow, t, **options) -> (y, info)``: the
  noise of frame ``t`` from the keyframe's noise ``(..., H, W, C)`` and the composed backward flow
  ``(H, W, 2)`` from frame ``t`` to the keyframe. The stream owns the keyframe schedule (the
  ``keyframe_every`` option every keyframe method has).

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212); docs/DESIGN.md section 3 (the variants).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "Method",
    "Option",
    "freeze_options",
    "get_method",
    "integer",
    "method_names",
    "optional_integer",
    "parse_method",
    "positive_real",
    "register_method",
]

_FLOWS = ("backward", "forward")
_KINDS = ("chain", "keyframe")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


# --------------------------------------------------------------------------------------------------
# Option checks: each takes the option's name and value and returns the normalised value.


def integer(minimum: int, maximum: int | None = None) -> Callable[[str, Any], int]:
    """A check for an integer option in ``[minimum, maximum]`` (bools are rejected)."""

    def check(name: str, value) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            want = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise ValueError(f"{name} must be an integer {want}; got {value!r}")
        return int(value)

    return check


def optional_integer(minimum: int) -> Callable[[str, Any], int | None]:
    """A check for ``None`` or an integer ``>= minimum``."""
    inner = integer(minimum)

    def check(name: str, value) -> int | None:
        if value is None:
            return None
        try:
            return inner(name, value)
        except ValueError:
            raise ValueError(
                f"{name} must be None or an integer >= {minimum}; got {value!r}"
            ) from None

    return check


def positive_real(name: str, value) -> float:
    """A check for a finite real option ``> 0``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Option:
    """A method option: its default and its check ``check(name, value) -> value``."""

    default: Any
    check: Callable[[str, Any], Any] | None = None


# --------------------------------------------------------------------------------------------------
# Methods.


@dataclasses.dataclass(frozen=True, eq=False)
class Method:
    """A warping method, declared once (see the module docstring).

    Attributes:
      name: the method's name (lower case, e.g. ``"grid"``).
      kind: ``"chain"`` or ``"keyframe"``.
      flow: ``"backward"`` (``psi`` maps the new frame into the old) or ``"forward"``.
      ranks: spatial ranks supported, e.g. ``(2,)`` or ``(2, 3)``.
      options: ``{name: Option}``; every option of the method with its default.
      warp: ``{rank: fn(key, x, flow, **options)}`` for chain methods (see module docstring).
      record: ``{rank: builder(flow, **options) -> PartitionRecord}`` for record-based methods.
      frame: keyframe methods' ``frame(key, keyframe, total_flow, t, **options) -> (y, info)``.
      shorthand: an option that an integer suffix of the name sets (``"chang4"`` ->
        ``upsample=4``), or None.
      summary: one line for tables and ``--help``.

    Two methods are equal only if they are the same object (a registered method is a static
    argument of the compiled public calls).
    """

    name: str
    kind: str = "chain"
    flow: str = "backward"
    ranks: tuple[int, ...] = (2,)
    options: Mapping[str, Option] = dataclasses.field(default_factory=dict)
    warp: Mapping[int, Callable] | None = None
    record: Mapping[int, Callable] | None = None
    frame: Callable | None = None
    shorthand: str | None = None
    summary: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"a method name is lower case letters, digits and '_', starting with a letter; "
                f"got {self.name!r}"
            )
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}; got {self.kind!r}")
        if self.flow not in _FLOWS:
            raise ValueError(f"flow must be one of {_FLOWS}; got {self.flow!r}")
        ranks = tuple(self.ranks)
        if not ranks or any(r not in (2, 3) for r in ranks):
            raise ValueError(f"ranks must be a non-empty subset of (2, 3); got {self.ranks!r}")
        object.__setattr__(self, "ranks", ranks)
        opts = dict(self.options)
        for k, v in opts.items():
            if not isinstance(v, Option):
                raise ValueError(
                    f"option {k!r} of method {self.name!r} must be an Option; got {v!r}"
                )
        if self.kind == "keyframe":
            opts.setdefault("keyframe_every", Option(None, optional_integer(1)))
            if self.frame is None:
                raise ValueError(f"keyframe method {self.name!r} needs frame=")
            if ranks != (2,):
                raise ValueError(f"keyframe methods support rank 2 only; got {ranks}")
        else:
            have = set(self.warp or {}) | set(self.record or {})
            if set(ranks) - have:
                raise ValueError(
                    f"chain method {self.name!r} needs warp= or record= for each rank {ranks}; "
                    f"got ranks {sorted(have)}"
                )
        if self.shorthand is not None and self.shorthand not in opts:
            raise ValueError(f"shorthand {self.shorthand!r} is not an option of {self.name!r}")
        object.__setattr__(self, "options", MappingProxyType(opts))
        for attr in ("warp", "record"):
            value = getattr(self, attr)
            if value is not None:
                object.__setattr__(self, attr, MappingProxyType(dict(value)))

    @property
    def defaults(self) -> dict[str, Any]:
        """``{option: default}``."""
        return {k: o.default for k, o in self.options.items()}

    def resolve(self, options: Mapping[str, Any], rank: int = 2, flow: str | None = None) -> dict:
        """Checked options with the defaults filled in.

        Args:
          options: the options a caller passed.
          rank: the spatial rank of the call (2 or 3).
          flow: the flow direction the caller has (``"backward"`` / ``"forward"``), or None to skip.

        Returns:
          ``{option: value}`` for every option of the method.

        Raises:
          ValueError: on an unknown option, a bad value, a rank or flow the method does not take.
        """
        if rank not in self.ranks:
            supported = ", ".join(method_names(rank=rank)) or "none"
            raise ValueError(
                f"method {self.name!r} does not support rank {rank} ({_RANK_WORDS[rank]}); "
                f"supported in {rank}D: {supported}"
            )
        if flow is not None and flow != self.flow:
            raise ValueError(
                f"method {self.name!r} takes a {self.flow} flow; this call passes a {flow} flow"
            )
        unknown = set(options) - set(self.options)
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} for method {self.name!r}; allowed: {allowed}"
            )
        out = {}
        for k, opt in self.options.items():
            value = options.get(k, opt.default)
            if opt.check is not None:
                value = opt.check(k, value)
            out[k] = value
        return out


_RANK_WORDS = {2: "images, flows (..., H, W, 2)", 3: "volumes, flows (..., D, H, W, 3)"}
_REGISTRY: dict[str, Method] = {}


def register_method(method: Method, *, overwrite: bool = False) -> Method:
    """Adds ``method`` to the registry, where every entry point finds it by name.

    Args:
      method: the :class:`Method`.
      overwrite: replace a method of the same name (otherwise that is an error).

    Returns:
      ``method``.

    Raises:
      ValueError: if ``method`` is not a :class:`Method`, or its name is taken (without
        ``overwrite``) or would be read as another method's shorthand (``"chang4"``).
    """
    if not isinstance(method, Method):
        raise ValueError(f"register_method takes a Method; got {type(method).__name__}")
    if method.name in _REGISTRY and not overwrite:
        raise ValueError(f"method {method.name!r} is registered already; pass overwrite=True")
    for other in _REGISTRY.values():
        if other.shorthand and other.name != method.name:
            if re.fullmatch(re.escape(other.name) + r"\d+", method.name):
                raise ValueError(
                    f"{method.name!r} reads as {other.name!r} with {other.shorthand}="
                    f"{method.name[len(other.name) :]}; choose another name"
                )
    _REGISTRY[method.name] = method
    return method


def get_method(name: str | Method) -> Method:
    """The registered :class:`Method` called ``name`` (a :class:`Method` is returned as it is).

    Raises:
      ValueError: for a name that is not registered.
    """
    if isinstance(name, Method):
        return name
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def method_names(
    *, rank: int | None = None, kind: str | None = None, flow: str | None = None
) -> tuple[str, ...]:
    """Names of the registered methods, optionally only those of a rank, kind or flow."""
    return tuple(
        m.name
        for m in _REGISTRY.values()
        if (rank is None or rank in m.ranks)
        and (kind is None or m.kind == kind)
        and (flow is None or m.flow == flow)
    )


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """A method string as used on command lines: ``"grid"``, or a shorthand like ``"chang4"``.

    ``"<name><N>"`` sets the method's shorthand option to ``N`` (``"chang4"`` -> ``("chang",
    {"upsample": 4})``, ``"lagrangian3"`` -> ``("lagrangian", {"depth": 3})``).

    Returns:
      ``(name, options)``; the options are checked.

    Raises:
      ValueError: for a string that names no registered method.
    """
    if isinstance(spec, str) and spec in _REGISTRY:
        return spec, {}
    if isinstance(spec, str):
        m = re.fullmatch(r"([a-z][a-z0-9_]*?)(\d+)", spec)
        if m and m.group(1) in _REGISTRY and _REGISTRY[m.group(1)].shorthand:
            method = _REGISTRY[m.group(1)]
            options = {method.shorthand: int(m.group(2))}
            method.resolve(options, rank=method.ranks[0])
            return method.name, options
    shorthands = [f"'{m.name}<N>'" for m in _REGISTRY.values() if m.shorthand]
    raise ValueError(
        f"unknown method {spec!r}; expected one of {', '.join(_REGISTRY)}"
        + (f", or {', '.join(shorthands)}" if shorthands else "")
    )


def freeze_options(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Options as a sorted tuple of pairs: a static (hashable) argument of a compiled call.

    Raises:
      ValueError: if a value is not hashable (e.g. a list).
    """
    items = tuple(sorted(options.items()))
    for k, v in items:
        try:
            hash(v)
        except TypeError:
            raise ValueError(
                f"option {k!r} must be hashable (a number, string, None or tuple); got "
                f"{type(v).__name__} {v!r}"
            ) from None
    return items
