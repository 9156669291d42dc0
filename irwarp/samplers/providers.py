"""Noise providers: the noise a diffusion sampler uses for each frame of a video.

For frame ``t`` a sampler needs the initial noise (the starting point ``x_T``, or the noise added
to the input image in SDEdit) and, for stochastic samplers (DDPM, DDIM with ``eta > 0``), fresh
N(0, 1) noise for each of its ``S`` steps. A :class:`FrameNoise` holds both. A provider makes
frame 0's noise with ``init`` and frame ``t``'s from frame ``t - 1``'s with ``next``:

* :class:`FreshProvider`: new i.i.d. noise every frame (flickers);
* :class:`FixedProvider`: the same noise every frame (texture sticks to the screen);
* :class:`WarpedProvider`: every step's noise of frame ``t - 1`` carried to frame ``t`` along the
  backward flow with an :func:`irwarp.warp` method. For ``grid`` and ``particle`` the partition
  record is built once per frame and applied to the stacked ``(S + 1, ..., H, W, C)`` noise, which
  :func:`irwarp.apply_record` folds into one feature axis: one record serves every step, batch
  element and channel (DESIGN.md section 2). ``warp_initial_only=True`` warps only the initial
  noise and draws the per-step noise fresh (an ablation).

Keys. Frame ``t`` uses ``k_t = fold_in(key, t)`` split into ``(k_initial, k_steps, k_warp)``, so
frame ``t`` depends only on ``(key, t)`` and frame ``t - 1``; with an identity flow and the same
key, ``grid`` and ``particle`` give exactly the noise of :class:`FixedProvider`.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212). Chang et al., How I Warped Your Noise, ICLR 2024 (fixed/fresh baselines).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp

from irwarp import records
from irwarp.pipeline import check_method
from irwarp.warp import apply_record, warp

__all__ = [
    "PROVIDERS",
    "FixedProvider",
    "FrameNoise",
    "FreshProvider",
    "WarpedProvider",
    "make_provider",
    "register_provider",
]


@flax.struct.dataclass
class FrameNoise:
    """The noise of one frame.

    Attributes:
      initial: ``(..., H, W, C)`` N(0, 1) noise: ``x_T``, or the noise of SDEdit's noised input.
      steps: ``(S, ..., H, W, C)`` N(0, 1) noise of the ``S`` sampler steps (``S = 0`` for
        deterministic samplers).
    """

    initial: jax.Array
    steps: jax.Array

    @property
    def num_steps(self) -> int:
        """``S``, the number of per-step noise fields."""
        return int(self.steps.shape[0])

    def stacked(self) -> jax.Array:
        """``(S + 1, ..., H, W, C)``: the initial noise followed by the per-step noise."""
        return jnp.concatenate([self.initial[None], self.steps], axis=0)

    @classmethod
    def from_stacked(cls, stack: jax.Array) -> FrameNoise:
        """The inverse of :meth:`stacked`."""
        return cls(initial=stack[0], steps=stack[1:])


def _frame_keys(key: jax.Array, t) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(k_initial, k_steps, k_warp)`` of frame ``t``."""
    k = jax.random.split(jax.random.fold_in(key, t), 3)
    return k[0], k[1], k[2]


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3 or min(shape) < 1:
        raise ValueError(f"shape must be (..., H, W, C) with positive sizes; got {shape}")
    return shape


def _check_num_steps(num_steps) -> int:
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps must be an integer >= 0; got {num_steps!r}")
    return num_steps


def _fresh(key: jax.Array, t, shape: tuple[int, ...], num_steps: int) -> FrameNoise:
    k_init, k_steps, _ = _frame_keys(key, t)
    return FrameNoise(
        initial=jax.random.normal(k_init, shape, jnp.float32),
        steps=jax.random.normal(k_steps, (num_steps,) + shape, jnp.float32),
    )


def _check_prev_flow(prev: FrameNoise, flow: jax.Array) -> jax.Array:
    if not isinstance(prev, FrameNoise):
        raise ValueError(f"prev must be a FrameNoise; got {type(prev).__name__}")
    flow = jnp.asarray(flow)
    h, w = prev.initial.shape[-3:-1]
    if flow.shape != (h, w, 2):
        raise ValueError(
            f"flow must be the (H, W, 2) = {(h, w, 2)} backward flow of the noise's grid; got "
            f"{flow.shape}"
        )
    return flow


class _Base:
    """``init`` shared by every provider: i.i.d. N(0, 1) from ``fold_in(key, 0)``."""

    def init(self, key: jax.Array, shape: Sequence[int], num_steps: int) -> FrameNoise:
        """Noise of frame 0.

        Args:
          key: PRNG key of the video (the same for every frame).
          shape: ``(..., H, W, C)`` static shape of one noise field, e.g. ``(B, H, W, C)``.
          num_steps: ``S >= 0`` per-step noise fields (0 for deterministic samplers).

        Returns:
          A :class:`FrameNoise` with ``initial`` ``(..., H, W, C)`` and ``steps``
          ``(S, ..., H, W, C)``, all i.i.d. N(0, 1).
        """
        return _fresh(key, 0, _check_shape(shape), _check_num_steps(num_steps))


@flax.struct.dataclass
class FreshProvider(_Base):
    """New i.i.d. N(0, 1) noise every frame, from ``fold_in(key, t)``."""

    @property
    def name(self) -> str:
        return "fresh"

    def next(self, key: jax.Array, prev: FrameNoise, t, flow: jax.Array) -> FrameNoise:
        """Noise of frame ``t``, ignoring ``prev`` (except its shapes) and ``flow``.

        Args:
          key: PRNG key of the video.
          prev: noise of frame ``t - 1``.
          t: frame index ``>= 1`` (int or traced int32).
          flow: ``(H, W, 2)`` backward flow of frame ``t`` (checked, unused).

        Returns:
          A :class:`FrameNoise` shaped like ``prev``.
        """
        _check_prev_flow(prev, flow)
        return _fresh(key, t, tuple(prev.initial.shape), prev.num_steps)


@flax.struct.dataclass
class FixedProvider(_Base):
    """The same noise every frame: ``next`` returns ``prev``."""

    @property
    def name(self) -> str:
        return "fixed"

    def next(self, key: jax.Array, prev: FrameNoise, t, flow: jax.Array) -> FrameNoise:
        """Returns ``prev`` unchanged (``key``, ``t`` unused; ``flow`` checked, unused)."""
        del key, t
        _check_prev_flow(prev, flow)
        return prev


_RECORD_BUILDERS: dict[str, Callable] = {
    "grid": records.grid_record,
    "particle": records.particle_record,
}


@flax.struct.dataclass
class WarpedProvider(_Base):
    """Each step's noise of frame ``t - 1`` warped to frame ``t`` along the backward flow.

    Attributes:
      method: static; an :func:`irwarp.warp` method (``"grid"``, ``"particle"``, ``"chang"``,
        ``"nearest"``, ``"bilinear"``, ``"fixed"``, ``"fresh"``).
      options: static ``((name, value), ...)`` method options (e.g. ``(("upsample", 4),)`` for
        chang).
      warp_initial_only: static; warp only the initial noise and draw the per-step noise fresh.
    """

    method: str = flax.struct.field(pytree_node=False, default="grid")
    options: tuple = flax.struct.field(pytree_node=False, default=())
    warp_initial_only: bool = flax.struct.field(pytree_node=False, default=False)

    def __post_init__(self):
        check_method(self.method, dict(self.options))
        if self.method == "splat":
            raise ValueError("WarpedProvider takes backward flows; method 'splat' is not supported")

    @property
    def name(self) -> str:
        return self.method + ("_initial" if self.warp_initial_only else "")

    def record(self, flow: jax.Array) -> records.PartitionRecord | None:
        """The partition record of ``flow`` for ``grid``/``particle``; ``None`` for other methods.

        Args:
          flow: ``(H, W, 2)`` backward flow of frame ``t``.
        """
        builder = _RECORD_BUILDERS.get(self.method)
        return None if builder is None else builder(flow, **dict(self.options))

    def _warp(self, key: jax.Array, x: jax.Array, flow: jax.Array) -> jax.Array:
        rec = self.record(flow)
        if rec is None:
            return warp(key, x, flow, method=self.method, **dict(self.options))
        return apply_record(key, x, rec)

    def next(self, key: jax.Array, prev: FrameNoise, t, flow: jax.Array) -> FrameNoise:
        """Noise of frame ``t``: ``warp(k_warp, stack(prev), flow)`` with one record for all steps.

        Args:
          key: PRNG key of the video.
          prev: noise of frame ``t - 1``: ``initial`` ``(..., H, W, C)``, ``steps``
            ``(S, ..., H, W, C)``.
          t: frame index ``>= 1``.
          flow: ``(H, W, 2)`` backward flow of frame ``t`` (``flow[i, j]`` points to where pixel
            ``(i, j)`` of frame ``t`` came from in frame ``t - 1``); NaN pixels get fresh noise.

        Returns:
          A :class:`FrameNoise` shaped like ``prev``.

        References:
          Deng et al. 2025; DESIGN.md sections 2-3.
        """
        flow = _check_prev_flow(prev, flow)
        k_init, k_steps, k_warp = _frame_keys(key, t)
        if self.warp_initial_only:
            steps = jax.random.normal(k_steps, prev.steps.shape, jnp.float32)
            return FrameNoise(initial=self._warp(k_warp, prev.initial, flow), steps=steps)
        return FrameNoise.from_stacked(self._warp(k_warp, prev.stacked(), flow))


Provider = FreshProvider | FixedProvider | WarpedProvider

_CHANG = re.compile(r"chang(\d+)")

PROVIDERS: dict[str, Callable[..., Provider]] = {
    "fresh": lambda **o: FreshProvider(),
    # With warp_initial_only, "fixed" keeps the initial noise and draws fresh per-step noise.
    "fixed": lambda warp_initial_only=False: (
        WarpedProvider("fixed", (), warp_initial_only=True)
        if warp_initial_only
        else FixedProvider()
    ),
    "nearest": lambda **o: WarpedProvider("nearest", (), **o),
    "bilinear": lambda **o: WarpedProvider("bilinear", (), **o),
    "grid": lambda capacity=3, edge_points=2, **o: WarpedProvider(
        "grid", (("capacity", capacity), ("edge_points", edge_points)), **o
    ),
    "particle": lambda **o: WarpedProvider("particle", (), **o),
    "chang": lambda upsample=4, capacity=3, **o: WarpedProvider(
        "chang", (("upsample", upsample), ("capacity", capacity)), **o
    ),
}
"""Provider factories by name; ``make_provider`` also accepts ``"chang<N>"`` (e.g. ``"chang4"``)."""


def register_provider(name: str, factory: Callable[..., Provider]) -> None:
    """Adds a provider factory ``factory(**options) -> provider`` under ``name``."""
    if not isinstance(name, str) or not name or _CHANG.fullmatch(name):
        raise ValueError(f"expected a new provider name (not 'chang<N>'); got {name!r}")
    PROVIDERS[name] = factory


def make_provider(name: str, **options) -> Provider:
    """A noise provider by name.

    Args:
      name: ``"fresh"``, ``"fixed"``, ``"nearest"``, ``"bilinear"``, ``"grid"``, ``"particle"``,
        ``"chang"`` or ``"chang<N>"`` (Chang et al. with ``N x N`` upsampling), or a name added
        with :func:`register_provider`.
      **options: method options (``capacity``, ``edge_points`` for grid; ``upsample``,
        ``capacity`` for chang) and ``warp_initial_only`` for the warped providers.

    Returns:
      The provider (a hashable flax struct with ``init`` and ``next``).

    Raises:
      ValueError: on an unknown name or option.
    """
    m = _CHANG.fullmatch(name) if isinstance(name, str) else None
    if m:
        if "upsample" in options:
            raise ValueError(f"{name!r} already sets upsample; got upsample={options['upsample']}")
        name, options = "chang", dict(options, upsample=int(m.group(1)))
    if name not in PROVIDERS:
        raise ValueError(
            f"unknown noise provider {name!r}; known: {', '.join(PROVIDERS)}, 'chang<N>'"
        )
    if name in ("fresh", "fixed") and options:
        unknown = set(options) - {"warp_initial_only"}
        if unknown:
            raise ValueError(f"provider {name!r} takes no options; got {sorted(unknown)}")
    try:
        return PROVIDERS[name](**options)
    except TypeError as e:
        raise ValueError(f"bad options {sorted(options)} for provider {name!r}: {e}") from e
