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
  element and channel (docs/DESIGN.md section 2). ``warp_initial_only=True`` warps only the initial
  noise and draws the per-step noise fresh (an ablation).

Keys. Frame ``t`` uses ``k_t = fold_in(key, t)`` split into ``(k_initial, k_steps, k_warp)``, so
frame ``t`` depends only on ``(key, t)`` and frame ``t - 1``; with an identity flow and the same
key, ``grid``, ``particle`` and ``lagrangian`` give exactly the noise of :class:`FixedProvider`.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212). Chang et al., How I Warped Your Noise, ICLR 2024 (fixed/fresh baselines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp

from irwarp import methods as methods_lib
from irwarp import records, sheet
from irwarp.stream import NoiseStream, StreamState, noise_stream

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
    if flow.shape == (h, w, 2):
        return flow
    b = prev.initial.shape[-4] if prev.initial.ndim >= 4 else None
    if b is not None and flow.shape == (b, h, w, 2):
        return flow
    per_example = f" or (B, H, W, 2) = {(b, h, w, 2)}" if b is not None else ""
    raise ValueError(
        f"flow must be the (H, W, 2) = {(h, w, 2)} backward flow of the noise's grid"
        f"{per_example} (one per example of the noise's axis -4); got {flow.shape}"
    )


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


def _warp_key(key: jax.Array, t) -> jax.Array:
    """The stream keying of the warped providers: ``k_warp`` of frame ``t``."""
    return _frame_keys(key, t)[2]


def _sheet_key(key: jax.Array, m) -> jax.Array:
    """The stream keying of the lagrangian provider: sheet ``m`` from ``k_warp`` of frame 0."""
    return jax.random.fold_in(_frame_keys(key, 0)[2], m)


def _advance(stream, key: jax.Array, state: StreamState, flow: jax.Array):
    """``stream.step``; a per-example flow ``(B, H, W, 2)`` steps each example's stream.

    With a per-example flow, the noise's axis ``-4`` is the batch ``B`` and example ``b`` is the
    stream of key ``split(key, B)[b]`` (its own record, its own sheet).
    """
    if flow.ndim == 3:
        return stream.step(key, state, flow)
    keys = jax.random.split(key, flow.shape[0])
    axes = StreamState(
        -4, None if state.total_flow is None or state.total_flow.ndim == 3 else 0, None
    )
    return jax.vmap(stream.step, in_axes=(0, axes, 0), out_axes=(StreamState(-4, 0, None), -4))(
        keys, state, flow
    )


@flax.struct.dataclass
class WarpedProvider(_Base):
    """Each step's noise of frame ``t - 1`` warped to frame ``t`` along the backward flow.

    The provider drives the method's noise stream (:mod:`irwarp.stream`) over the stacked
    ``(S + 1, ..., H, W, C)`` noise with the frame key ``k_warp`` of frame ``t``: for ``grid`` and
    ``particle`` one partition record per frame serves every step, batch element and channel
    (docs/DESIGN.md section 2).

    Attributes:
      method: static; a backward-flow chain method of the registry (``"grid"``, ``"particle"``,
        ``"chang"``, ``"nearest"``, ``"bilinear"``, ``"fixed"``, ``"fresh"``, or a registered one).
      options: static ``((name, value), ...)`` method options (e.g. ``(("upsample", 4),)`` for
        chang).
      warp_initial_only: static; warp only the initial noise and draw the per-step noise fresh.
    """

    method: str = flax.struct.field(pytree_node=False, default="grid")
    options: tuple = flax.struct.field(pytree_node=False, default=())
    warp_initial_only: bool = flax.struct.field(pytree_node=False, default=False)

    def __post_init__(self):
        method = methods_lib.get_method(self.method)
        if method.kind != "chain" or method.flow != "backward":
            raise ValueError(
                f"WarpedProvider takes a backward-flow chain method; {self.method!r} is a "
                f"{method.flow}-flow {method.kind} method"
            )
        method.resolve(dict(self.options), rank=2)

    @property
    def name(self) -> str:
        return self.method + ("_initial" if self.warp_initial_only else "")

    @property
    def stream(self) -> NoiseStream:
        """The noise stream this provider drives."""
        return noise_stream(self.method, keying=_warp_key, **dict(self.options))

    def record(self, flow: jax.Array) -> records.PartitionRecord | None:
        """The partition record of ``flow`` for a record-based method; ``None`` for others.

        Args:
          flow: ``(H, W, 2)`` backward flow of frame ``t``.
        """
        method = methods_lib.get_method(self.method)
        if not method.record or 2 not in method.record:
            return None
        return method.record[2](flow, **method.resolve(dict(self.options), rank=2))

    def next(self, key: jax.Array, prev: FrameNoise, t, flow: jax.Array) -> FrameNoise:
        """Noise of frame ``t``: the stream's step from ``stack(prev)`` along ``flow``.

        Args:
          key: PRNG key of the video.
          prev: noise of frame ``t - 1``: ``initial`` ``(..., H, W, C)``, ``steps``
            ``(S, ..., H, W, C)``.
          t: frame index ``>= 1``.
          flow: ``(H, W, 2)`` backward flow of frame ``t`` (``flow[i, j]`` points to where pixel
            ``(i, j)`` of frame ``t`` came from in frame ``t - 1``), or ``(B, H, W, 2)``, one per
            example (the noise's axis -4 is then ``B``); NaN pixels get fresh noise.

        Returns:
          A :class:`FrameNoise` shaped like ``prev``.

        References:
          Deng et al. 2025; docs/DESIGN.md sections 2-3.
        """
        flow = _check_prev_flow(prev, flow)
        carried = prev.initial[None] if self.warp_initial_only else prev.stacked()
        state = StreamState(carried, None, jnp.asarray(t, jnp.int32) - 1)
        _, y = _advance(self.stream, key, state, flow)
        if self.warp_initial_only:
            steps = jax.random.normal(_frame_keys(key, t)[1], prev.steps.shape, jnp.float32)
            return FrameNoise(initial=y[0], steps=steps)
        return FrameNoise.from_stacked(y)


# The lagrangian provider's state is the noise stream's (one lagrangian state type).
SheetState = StreamState


@flax.struct.dataclass
class LagrangianProvider(_Base):
    """Every step's noise integrated from the keyframe's virtual Brownian sheet (no chaining).

    The provider drives the ``"lagrangian"`` noise stream (:mod:`irwarp.stream`, where the
    keyframe schedule lives) over the stacked keyframe noise ``X_key`` ``(S + 1, ..., H, W, C)``:
    frame ``t`` of keyframe segment ``m = (t - 1) // K`` is
    ``Y_t = lagrangian_frame(fold_in(k_sheet, m), X_key, psi_t)`` with ``psi_t`` the composed
    backward flow from frame ``t`` to the keyframe. Every element of the stack (each step, batch
    element and channel) is an independent sheet of one call, so the per-step fields stay
    independent. ``k_sheet`` is ``k_warp`` of frame 0 (unused by ``init``), so the stack of frames
    equals ``irwarp.warp_sequence(k_sheet, stack_0, flows, method="lagrangian", keyframe_every=K)``.
    The stream's :class:`~irwarp.stream.StreamState` rides in :attr:`FrameNoise.state`.

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
        self.stream  # noqa: B018 (checks the options)

    @property
    def name(self) -> str:
        return "lagrangian" + ("_initial" if self.warp_initial_only else "")

    @property
    def stream(self) -> NoiseStream:
        """The noise stream this provider drives."""
        return noise_stream(
            "lagrangian",
            keying=_sheet_key,
            depth=self.depth,
            capacity=self.capacity,
            keyframe_every=self.keyframe_every,
        )

    def _carried(self, noise: FrameNoise) -> jax.Array:
        return noise.initial[None] if self.warp_initial_only else noise.stacked()

    def init(self, key: jax.Array, shape: Sequence[int], num_steps: int) -> FrameNoise:
        """Noise of frame 0 (as every provider's) with the stream's first state.

        Args:
          key: PRNG key of the video.
          shape: ``(..., H, W, C)`` static shape of one noise field.
          num_steps: ``S >= 0`` per-step noise fields.

        Returns:
          A :class:`FrameNoise` with ``state`` a :class:`~irwarp.stream.StreamState` (the
          stacked noise as keyframe, zero flow, ``t = 0``).
        """
        noise = super().init(key, shape, num_steps)
        return noise.replace(state=self.stream.init(self._carried(noise)))

    def next(self, key: jax.Array, prev: FrameNoise, t, flow: jax.Array) -> FrameNoise:
        """Noise of frame ``t`` from the keyframe's sheet over ``psi_t = compose(psi_{t-1}, flow)``.

        Args:
          key: PRNG key of the video.
          prev: noise of frame ``t - 1`` made by this provider (its ``state`` a
            :class:`~irwarp.stream.StreamState`).
          t: frame index ``>= 1`` (int or traced int32).
          flow: ``(H, W, 2)`` backward flow of frame ``t`` into frame ``t - 1``, or ``(B, H, W,
            2)`` one per example; NaN pixels (and pixels whose composed flow is NaN) get fresh
            noise.

        Returns:
          A :class:`FrameNoise` shaped like ``prev``, with the updated state.

        Raises:
          ValueError: if ``prev`` carries no lagrangian StreamState (SheetState) of its shape, or
            on a bad flow.

        References:
          Deng et al. 2025; Chang et al. 2024; :mod:`irwarp.sheet`.
        """
        flow = _check_prev_flow(prev, flow)
        state = prev.state
        carried_shape = self._carried(prev).shape
        if (
            not isinstance(state, StreamState)
            or state.total_flow is None
            or state.frame.shape != carried_shape
        ):
            raise ValueError(
                "prev must be the FrameNoise of LagrangianProvider.init/next with a lagrangian "
                f"StreamState (SheetState) whose keyframe has shape {carried_shape}; got state "
                f"{type(state).__name__}"
                + (f" of shape {state.frame.shape}" if isinstance(state, StreamState) else "")
            )
        state = StreamState(state.frame, state.total_flow, jnp.asarray(t, jnp.int32) - 1)
        new_state, y = _advance(self.stream, key, state, flow)
        if self.warp_initial_only:
            steps = jax.random.normal(_frame_keys(key, t)[1], prev.steps.shape, jnp.float32)
            return FrameNoise(initial=y[0], steps=steps, state=new_state)
        return FrameNoise.from_stacked(y, new_state)


Provider = FreshProvider | FixedProvider | WarpedProvider | LagrangianProvider


def _fixed(warp_initial_only: bool = False) -> Provider:
    # With warp_initial_only, "fixed" keeps the initial noise and draws fresh per-step noise.
    if warp_initial_only:
        return WarpedProvider("fixed", (), warp_initial_only=True)
    return FixedProvider()


def _fresh_provider(warp_initial_only: bool = False) -> Provider:
    del warp_initial_only  # every step is fresh anyway
    return FreshProvider()


PROVIDERS: dict[str, Callable[..., Provider]] = {
    "fresh": _fresh_provider,
    "fixed": _fixed,
    "lagrangian": lambda **o: LagrangianProvider(**o),
}
"""Providers that are not a warp method's stream, by name. Every other name is a method of the
registry (:mod:`irwarp.methods`): a backward-flow chain method gives its :class:`WarpedProvider`
(``"grid"``, ``"particle"``, ``"chang"``, ``"chang<N>"``, a registered method, ...)."""


def register_provider(name: str, factory: Callable[..., Provider]) -> None:
    """Adds a provider factory ``factory(**options) -> provider`` under ``name``.

    (A new warp method registered with :func:`irwarp.register_method` needs no provider: it has
    one already.)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"expected a new provider name; got {name!r}")
    try:
        methods_lib.parse_method(name)
    except ValueError:
        pass
    else:
        if name not in PROVIDERS:
            raise ValueError(f"{name!r} is a method of the registry; it has its provider already")
    PROVIDERS[name] = factory


def make_provider(name: str, **options) -> Provider:
    """A noise provider by name.

    Args:
      name: ``"fresh"``, ``"fixed"``, ``"lagrangian"``, a name added with
        :func:`register_provider`, or any backward-flow chain method of the registry or its
        shorthand: ``"grid"``, ``"particle"``, ``"nearest"``, ``"bilinear"``, ``"chang"`` or
        ``"chang<N>"`` (Chang et al. with ``N x N`` upsampling).
      **options: method options (``capacity``, ``edge_points`` for grid; ``upsample``,
        ``capacity`` for chang; ``depth``, ``capacity``, ``keyframe_every`` for lagrangian) and
        ``warp_initial_only`` for the warped providers.

    Returns:
      The provider (a hashable flax struct with ``init`` and ``next``).

    Raises:
      ValueError: on an unknown name or option.
    """
    if name in PROVIDERS:
        if name in ("fresh", "fixed") and set(options) - {"warp_initial_only"}:
            unknown = sorted(set(options) - {"warp_initial_only"})
            raise ValueError(f"provider {name!r} takes no options; got {unknown}")
        try:
            return PROVIDERS[name](**options)
        except TypeError as e:
            raise ValueError(f"bad options {sorted(options)} for provider {name!r}: {e}") from e
    try:
        method, implied = methods_lib.parse_method(name)
    except ValueError:
        known = ", ".join(
            list(PROVIDERS) + list(methods_lib.method_names(kind="chain", flow="backward"))
        )
        raise ValueError(f"unknown noise provider {name!r}; known: {known}, 'chang<N>'") from None
    clash = set(implied) & set(options)
    if clash:
        raise ValueError(f"{name!r} already sets {sorted(clash)}; got {options}")
    warp_initial_only = options.pop("warp_initial_only", False)
    resolved = methods_lib.get_method(method).resolve(dict(implied, **options), rank=2)
    return WarpedProvider(
        method, methods_lib.freeze_options(resolved), warp_initial_only=warp_initial_only
    )
