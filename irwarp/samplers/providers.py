"""Noise providers: the noise a diffusion sampler uses for each frame of a video.

For frame ``t`` a sampler needs the initial noise (the starting point ``x_T``, or the noise added
to the input image in SDEdit) and, for stochastic samplers (DDPM, DDIM with ``eta > 0``), fresh
N(0, 1) noise for each of its ``S`` steps. A :class:`FrameNoise` holds both. A provider makes
frame 0's noise with ``init`` and frame ``t``'s from frame ``t - 1``'s with ``next``:

* :class:`FreshProvider`: new i.i.d. noise every frame (flickers);
* :class:`FixedProvider`: the same noise every frame (texture sticks to the screen);
* :class:`LagrangianProvider`: every step's noise of frame ``t`` integrated from the keyframe's
  virtual Brownian sheet over the pre-image of each pixel under the composed backward flow to the
  keyframe (:mod:`irwarp.sheet`; no chaining, so no drift under sub-pixel motion). Its state (the
  keyframe's stacked noise and the composed flow) rides in :attr:`FrameNoise.state`.
* :class:`WarpedProvider`: every step's noise of frame ``t - 1`` carried to frame ``t`` along the
  backward flow with an :func:`irwarp.warp` method. For ``grid`` and ``particle`` the partition
  record is built once per frame and applied to the stacked ``(S + 1, ..., H, W, C)`` noise, which
  :func:`irwarp.apply_record` folds into one feature axis: one record serves every step, batch
  element and channel (DESIGN.md section 2). ``warp_initial_only=True`` warps only the initial
  noise and draws the per-step noise fresh (an ablation).

Keys. Frame ``t`` uses ``k_t = fold_in(key, t)`` split into ``(k_initial, k_steps, k_warp)``, so
frame ``t`` depends only on ``(key, t)`` and frame ``t - 1``; with an identity flow and the same
key, ``grid``, ``particle`` and ``lagrangian`` give exactly the noise of :class:`FixedProvider`.

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

from irwarp import flows as flows_lib
from irwarp import records, sheet
from irwarp.pipeline import check_method
from irwarp.warp import apply_record, warp

__all__ = [
    "PROVIDERS",
    "FixedProvider",
    "FrameNoise",
    "FreshProvider",
    "LagrangianProvider",
    "SheetState",
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
      state: provider state carried from frame to frame besides the noise (a pytree, e.g. a
        :class:`SheetState`), or ``None`` (the default; every provider but ``lagrangian``). The
        samplers ignore it.
    """

    initial: jax.Array
    steps: jax.Array
    state: object = None

    @property
    def num_steps(self) -> int:
        """``S``, the number of per-step noise fields."""
        return int(self.steps.shape[0])

    def stacked(self) -> jax.Array:
        """``(S + 1, ..., H, W, C)``: the initial noise followed by the per-step noise."""
        return jnp.concatenate([self.initial[None], self.steps], axis=0)

    @classmethod
    def from_stacked(cls, stack: jax.Array, state=None) -> FrameNoise:
        """The inverse of :meth:`stacked` (with the provider ``state``, default ``None``)."""
        return cls(initial=stack[0], steps=stack[1:], state=state)

    def without_state(self) -> FrameNoise:
        """The same noise with ``state=None`` (one pytree structure for every provider)."""
        return FrameNoise(initial=self.initial, steps=self.steps)


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


@flax.struct.dataclass
class SheetState:
    """State of :class:`LagrangianProvider` carried in :attr:`FrameNoise.state`.

    Attributes:
      keyframe: ``(S' + 1, ..., H, W, C)`` stacked noise of the current keyframe (the roots of its
        sheet): the initial noise followed by the per-step noise (``S' = 0`` with
        ``warp_initial_only``).
      total_flow: ``(H, W, 2)`` composed backward flow from the current frame to the keyframe
        (zero at a keyframe).
    """

    keyframe: jax.Array
    total_flow: jax.Array


@flax.struct.dataclass
class LagrangianProvider(_Base):
    """Every step's noise integrated from the keyframe's virtual Brownian sheet (no chaining).

    Frame ``t`` of keyframe segment ``m = (t - 1) // K`` is
    ``Y_t = lagrangian_frame(fold_in(k_sheet, m), X_key, psi_t)`` of the stacked keyframe noise
    ``X_key`` ``(S + 1, ..., H, W, C)``, with ``psi_t = compose(psi_{t-1}, flow_t)`` the composed
    backward flow from frame ``t`` to the keyframe. Every element of the stack (each step, batch
    element and channel) is an independent sheet of one call, so the per-step fields stay
    independent. Frame 0 is the first keyframe; with ``keyframe_every=K`` frame ``t = m K`` becomes
    the keyframe of segment ``m`` and ``psi`` restarts from zero. ``k_sheet`` is ``k_warp`` of frame
    0 (unused by ``init``), so the stack of frames equals
    ``irwarp.sheet.lagrangian_sequence(k_sheet, stack_0, flows, keyframe_every=K)``.

    Attributes:
      depth: static leaf level ``L`` of the sheet (``2^L`` sub-pixels per side); cost ~ ``2^L``.
      capacity: static frontier budget of :func:`irwarp.sheet.lagrangian_frame`.
      keyframe_every: static ``K >= 1``, or ``None`` for one sheet for the whole video.
      warp_initial_only: static; carry only the initial noise, draw the per-step noise fresh.
    """

    depth: int = flax.struct.field(pytree_node=False, default=sheet.DEFAULT_DEPTH)
    capacity: float = flax.struct.field(pytree_node=False, default=sheet.DEFAULT_CAPACITY)
    keyframe_every: int | None = flax.struct.field(pytree_node=False, default=None)
    warp_initial_only: bool = flax.struct.field(pytree_node=False, default=False)

    def __post_init__(self):
        sheet._check_depth(self.depth)
        sheet._check_capacity(self.capacity)
        sheet._check_keyframe_every(self.keyframe_every)

    @property
    def name(self) -> str:
        return "lagrangian" + ("_initial" if self.warp_initial_only else "")

    def _carried(self, noise: FrameNoise) -> jax.Array:
        return noise.initial[None] if self.warp_initial_only else noise.stacked()

    def init(self, key: jax.Array, shape: Sequence[int], num_steps: int) -> FrameNoise:
        """Noise of frame 0 (as every provider's) with the first keyframe as its state.

        Args:
          key: PRNG key of the video.
          shape: ``(..., H, W, C)`` static shape of one noise field.
          num_steps: ``S >= 0`` per-step noise fields.

        Returns:
          A :class:`FrameNoise` with ``state`` a :class:`SheetState` (the stacked noise, zero
          flow).
        """
        noise = super().init(key, shape, num_steps)
        h, w = noise.initial.shape[-3:-1]
        state = SheetState(self._carried(noise), jnp.zeros((h, w, 2), jnp.float32))
        return noise.replace(state=state)

    def next(self, key: jax.Array, prev: FrameNoise, t, flow: jax.Array) -> FrameNoise:
        """Noise of frame ``t`` from the keyframe's sheet over ``psi_t = compose(psi_{t-1}, flow)``.

        Args:
          key: PRNG key of the video.
          prev: noise of frame ``t - 1`` made by this provider (its ``state`` a
            :class:`SheetState`).
          t: frame index ``>= 1`` (int or traced int32).
          flow: ``(H, W, 2)`` backward flow of frame ``t`` into frame ``t - 1``; NaN pixels (and
            pixels whose composed flow is NaN) get fresh noise.

        Returns:
          A :class:`FrameNoise` shaped like ``prev``, with the updated :class:`SheetState`.

        Raises:
          ValueError: if ``prev`` carries no :class:`SheetState` of its shape, or on a bad flow.

        References:
          Deng et al. 2025; Chang et al. 2024; :mod:`irwarp.sheet`.
        """
        flow = _check_prev_flow(prev, flow)
        state = prev.state
        carried_shape = self._carried(prev).shape
        if not isinstance(state, SheetState) or state.keyframe.shape != carried_shape:
            raise ValueError(
                "prev must be the FrameNoise of LagrangianProvider.init/next with a SheetState "
                f"whose keyframe has shape {carried_shape}; got state {type(state).__name__}"
                + (f" of shape {state.keyframe.shape}" if isinstance(state, SheetState) else "")
            )
        k_sheet = _frame_keys(key, 0)[2]
        k_steps = _frame_keys(key, t)[1]
        total = flows_lib.compose(state.total_flow, flow.astype(jnp.float32))
        every = self.keyframe_every
        segment = 0 if every is None else (t - 1) // every
        y = sheet.lagrangian_frame(
            jax.random.fold_in(k_sheet, segment),
            state.keyframe,
            total,
            depth=self.depth,
            capacity=self.capacity,
            frame=t,
        )
        keyframe = state.keyframe
        if every is not None:
            restart = t % every == 0
            keyframe = jnp.where(restart, y, keyframe)
            total = jnp.where(restart, 0.0, total)
        new_state = SheetState(keyframe, total)
        if self.warp_initial_only:
            steps = jax.random.normal(k_steps, prev.steps.shape, jnp.float32)
            return FrameNoise(initial=y[0], steps=steps, state=new_state)
        return FrameNoise.from_stacked(y, new_state)


Provider = FreshProvider | FixedProvider | WarpedProvider | LagrangianProvider

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
    "lagrangian": lambda **o: LagrangianProvider(**o),
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
        ``"chang"`` or ``"chang<N>"`` (Chang et al. with ``N x N`` upsampling), ``"lagrangian"``,
        or a name added with :func:`register_provider`.
      **options: method options (``capacity``, ``edge_points`` for grid; ``upsample``,
        ``capacity`` for chang; ``depth``, ``capacity``, ``keyframe_every`` for lagrangian) and
        ``warp_initial_only`` for the warped providers.

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
