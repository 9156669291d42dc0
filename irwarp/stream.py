"""The noise stream: one pair of pure functions, ``init`` and ``step``, for every method.

A video's noise is a stateful process over frames, like an optimiser over steps (optax's
``GradientTransformation(init, update)``). :func:`noise_stream` gives it for any registered method
(:mod:`irwarp.methods`)::

    stream = irwarp.noise_stream("grid")
    state = stream.init(noise0)                     # after frame 0
    state, frame1 = stream.step(key, state, flow1)  # frame 1 from the state and flow 1
    state, frames = stream.scan(key, state, flows)  # the next T frames (lax.scan of step)

``key`` is the video's key, the same for every call: the stream derives the key of each frame
itself, so frame ``t`` depends only on ``(key, t)`` and the state, never on how the video was cut
into calls. Every driver runs this one stream: :func:`warp_sequence`, chunked streaming
(:func:`irwarp.pipeline.warp_chunk`, any method and any chunking), batches of videos sharded over
devices (:func:`irwarp.pipeline.warp_videos`), and the samplers' providers.

State. :class:`StreamState` ``(frame, total_flow, t)`` is a pytree:

* chain methods (grid, particle, splat, chang, ...): ``frame`` is the last frame produced and
  ``total_flow`` is None; frame ``t`` is ``warp(keying(key, t), frame_{t-1}, flows[t-1])``.
* keyframe methods (lagrangian): ``frame`` is the keyframe's float32 noise (the roots of its
  virtual Brownian sheet) and ``total_flow`` the composed backward flow ``(H, W, 2)`` from the last
  frame to the keyframe: ``total <- compose(total, flow_t)``, then frame ``t`` integrates sheet
  ``m`` with key ``keying(key, m)``, where ``m = (t - 1) // K`` for ``keyframe_every=K`` (``m = 0``
  without keyframes). At ``t = (m + 1) K`` frame ``t`` becomes the keyframe of sheet ``m + 1`` and
  the composed flow restarts from zero. This is the one place where the keyframe schedule and its
  keying live.

``keying(key, i)`` defaults to ``jax.random.fold_in`` (frame ``t`` of a chain method uses
``fold_in(key, t)``; sheet ``m`` uses ``fold_in(key, m)``); the samplers' providers pass their own.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212); docs/DESIGN.md (noise stream).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from irwarp import flows as flows_lib
from irwarp import methods as methods_lib
from irwarp._inputs import check_flows, check_key, check_noise
from irwarp.methods import Method
from irwarp.warp import chain_step  # importing irwarp.warp registers the built-in methods

__all__ = ["NoiseStream", "StreamState", "noise_stream", "warp_sequence"]


class StreamState(NamedTuple):
    """The state of a noise stream after frame ``t`` (a pytree; see the module docstring).

    Attributes:
      frame: ``(..., H, W, C)``: the last frame (chain methods) or the keyframe's float32 noise
        (keyframe methods).
      total_flow: ``(H, W, 2)`` float32 composed backward flow from frame ``t`` to the keyframe
        (keyframe methods; zero right after a keyframe), or None (chain methods). NaN where
        :func:`irwarp.flows.compose` leaves it non-finite.
      t: int32 scalar, the index of the last frame produced.
    """

    frame: jax.Array
    total_flow: jax.Array | None
    t: jax.Array

    @property
    def keyframe(self) -> jax.Array:
        """The keyframe's noise (keyframe methods; the same array as ``frame``)."""
        return self.frame


@dataclasses.dataclass(frozen=True)
class NoiseStream:
    """``init`` / ``step`` of one method with its options (hashable: a static argument).

    Attributes:
      method: the registered :class:`~irwarp.methods.Method`.
      options: its resolved options as sorted ``(name, value)`` pairs (``keyframe_every`` of a
        keyframe method included).
      rank: 2 (images) or 3 (volumes).
      keying: ``keying(key, i)``: the key of frame ``i`` (chain methods) or of sheet ``i``
        (keyframe methods) from the video's key.
    """

    method: Method
    options: tuple
    rank: int = 2
    keying: Callable[[jax.Array, Any], jax.Array] = jax.random.fold_in

    def init(self, noise0: jax.Array, t: int | jax.Array = 0) -> StreamState:
        """The state after frame ``t`` (default 0) whose noise is ``noise0``.

        For a keyframe method ``noise0`` becomes the keyframe (kept in float32, exact for bf16 and
        f16) and the composed flow is zero.

        Raises:
          ValueError: if ``noise0`` is not floating ``(..., H, W, C)`` (``(..., D, H, W, C)``).
        """
        noise0 = check_noise(noise0, self.rank)
        t = jnp.asarray(t, jnp.int32)
        if self.method.kind == "chain":
            return StreamState(noise0, None, t)
        h, w = noise0.shape[-3:-1]
        return StreamState(noise0.astype(jnp.float32), jnp.zeros((h, w, 2), jnp.float32), t)

    def step(self, key: jax.Array, state: StreamState, flow: jax.Array):
        """Frame ``state.t + 1`` along ``flow``: ``(state, frame)``.

        Args:
          key: the video's PRNG key.
          state: :class:`StreamState` after frame ``t``.
          flow: the flow of frame ``t + 1``: backward ``(H, W, 2)`` (``(*G, rank)``), forward for
            a forward method; chain methods also take per-example flows ``(..., H, W, 2)``.

        Returns:
          ``(state, frame)``: the state after frame ``t + 1`` and that frame.
        """
        key = check_key(key)
        self.check_state(state)
        return _step_jit(self, key, state, jnp.asarray(flow))

    def scan(self, key: jax.Array, state: StreamState, flows: jax.Array, *, return_info=False):
        """Frames ``t + 1 .. t + T`` along ``flows`` ``(T, ...)``: ``lax.scan`` of :meth:`step`.

        Args:
          key: the video's PRNG key.
          state: :class:`StreamState` after frame ``t``.
          flows: ``(T, H, W, 2)`` (``(T, *G, rank)``); ``flows[i]`` is the flow of frame
            ``t + 1 + i``.
          return_info: also return the keyframe method's per-frame diagnostics (a dict of
            ``(T,)`` arrays; empty for chain methods).

        Returns:
          ``(state, frames)`` (``(state, frames, info)`` with ``return_info``): frames
          ``(T, ..., H, W, C)``.
        """
        key = check_key(key)
        self.check_state(state)
        flows = jnp.asarray(flows)
        state, frames, info = _scan_jit(self, key, state, flows)
        return (state, frames, info) if return_info else (state, frames)

    def check_state(self, state) -> None:
        """Raises ValueError unless ``state`` is a :class:`StreamState` of this stream's kind."""
        if not isinstance(state, StreamState):
            raise ValueError(
                f"state must be a StreamState (from NoiseStream.init); got {type(state).__name__}"
            )
        keyed = self.method.kind == "keyframe"
        if keyed != (state.total_flow is not None):
            raise ValueError(
                f"state does not belong to a {self.method.kind} method's stream "
                f"({self.method.name!r}): total_flow is " + ("missing" if keyed else "set")
            )
        if keyed:
            h, w = state.frame.shape[-3:-1]
            if jnp.shape(state.total_flow) != (h, w, 2):
                raise ValueError(
                    f"state.total_flow must be (H, W, 2) = {(h, w, 2)}; got "
                    f"{jnp.shape(state.total_flow)}"
                )
            if state.frame.dtype != jnp.float32:
                raise ValueError(
                    f"state.frame (the keyframe) must be float32; got {state.frame.dtype}"
                )
        if jnp.shape(state.t) != ():
            raise ValueError(f"state.t must be a scalar; got shape {jnp.shape(state.t)}")


def noise_stream(
    method: str | Method = "grid",
    *,
    rank: int = 2,
    keying: Callable[[jax.Array, Any], jax.Array] | None = None,
    **options,
) -> NoiseStream:
    """The noise stream of a registered method (see the module docstring).

    Args:
      method: a method name of the registry (``"grid"``, ``"particle"``, ``"splat"``,
        ``"lagrangian"``, ...), a shorthand (``"chang4"``, ``"lagrangian3"``), or a
        :class:`~irwarp.methods.Method`.
      rank: 2 for images, 3 for volumes.
      keying: ``keying(key, i) -> key`` (default ``jax.random.fold_in``); a module-level function,
        so that equal streams compile once.
      **options: the method's options (static), e.g. ``depth=3, keyframe_every=8``.

    Returns:
      A :class:`NoiseStream`.

    Raises:
      ValueError: on an unknown method, option or rank.
    """
    if isinstance(method, str) and method not in methods_lib.method_names():
        name, implied = methods_lib.parse_method(method)
        clash = set(implied) & set(options)
        if clash:
            raise ValueError(f"{method!r} already sets {sorted(clash)}; got {options}")
        method, options = name, dict(implied, **options)
    m = methods_lib.get_method(method)
    opts = m.resolve(options, rank=rank)
    return NoiseStream(m, methods_lib.freeze_options(opts), rank, keying or jax.random.fold_in)


def _step(stream: NoiseStream, key, state: StreamState, flow):
    """``(state, frame, info)`` of frame ``state.t + 1`` (traced; the stream's only step)."""
    t = state.t + 1
    options = dict(stream.options)
    if stream.method.kind == "chain":
        y = chain_step(stream.method, options, stream.keying(key, t), state.frame, flow)
        return StreamState(y, None, t), y, {}
    every = options.pop("keyframe_every")
    # psi_t = psi_{t-1} o psi_flow: frame t -> frame t-1 -> ... -> keyframe.
    total = flows_lib.compose(state.total_flow, flow.astype(jnp.float32))
    segment = 0 if every is None else (t - 1) // every
    y, info = stream.method.frame(stream.keying(key, segment), state.frame, total, t, **options)
    keyframe = state.frame
    if every is not None:
        restart = t % every == 0
        keyframe = jnp.where(restart, y, keyframe)
        total = jnp.where(restart, 0.0, total)
    return StreamState(keyframe, total, t), y, info


@functools.partial(jax.jit, static_argnums=0)
def _step_jit(stream, key, state, flow):
    state, y, _ = _step(stream, key, state, flow)
    return state, y


def scan_frames(stream: NoiseStream, key, state: StreamState, flows):
    """``(state, frames, info)`` of ``lax.scan`` over ``flows`` (traced; for drivers)."""
    state = StreamState(state.frame, state.total_flow, jnp.asarray(state.t, jnp.int32))

    def body(carry, flow):
        carry, y, info = _step(stream, key, carry, flow)
        return carry, (y, info)

    state, (frames, info) = jax.lax.scan(body, state, flows)
    return state, frames, info


_scan_jit = jax.jit(scan_frames, static_argnums=0)


def sequence_frames(stream: NoiseStream, key, noise0, flows):
    """``(T + 1, ...)`` frames: ``noise0`` then the stream over ``flows`` (traced; for drivers)."""
    _, frames, _ = scan_frames(stream, key, stream.init(noise0), flows)
    return jnp.concatenate([noise0[None], frames.astype(noise0.dtype)], axis=0)


_sequence_jit = jax.jit(sequence_frames, static_argnums=0)


def warp_sequence(
    key: jax.Array, noise0: jax.Array, flows: jax.Array, *, method: str = "grid", **options
) -> jax.Array:
    """Warp noise frame after frame along a sequence of flows: the stream of ``method``.

    Chain methods: frame ``t >= 1`` is ``warp(fold_in(key, t), frame_{t-1}, flows[t-1])``, so frame
    ``t`` depends only on ``(key, t)`` and the previous frame, not on the sequence length.
    ``method="lagrangian"`` (options ``depth``, ``capacity``, ``keyframe_every``) does not chain:
    frame ``t`` integrates the keyframe's virtual Brownian sheet over its pre-image under the
    composed flow, so sub-pixel motion does not drift (:mod:`irwarp.sheet`). Compiled on first use.

    Volumes: ``noise0`` ``(..., D, H, W, C)`` with flows ``(T, D, H, W, 3)`` and method
    ``"particle"`` or ``"splat"``.

    Args:
      key: PRNG key.
      noise0: ``(..., H, W, C)`` noise of frame 0 (``(..., D, H, W, C)`` for volumes).
      flows: ``(T, H, W, 2)`` backward flows; ``flows[t-1]`` maps frame ``t`` into frame ``t-1``
        (``(T, D, H, W, 3)`` for volumes); forward flows for ``method="splat"``. ``T = 0`` gives
        ``noise0[None]``.
      method: any method of the registry (:mod:`irwarp.methods`): ``"grid"``, ``"particle"``,
        ``"splat"``, ``"chang"``, ``"nearest"``, ``"bilinear"``, ``"fixed"``, ``"fresh"``,
        ``"lagrangian"``, or a shorthand such as ``"chang4"``.
      **options: method options (static).

    Returns:
      ``(T + 1, ...)`` noise, each frame of ``noise0``'s shape and dtype; frame 0 is ``noise0``.

    Raises:
      ValueError: on a bad key, bad shapes, an unknown method or option, or a method not
        supported in 3D.
    """
    key = check_key(key)
    noise0 = check_noise(noise0)
    flows, nd = check_flows(flows)
    stream = noise_stream(method, rank=nd, **options)
    check_noise(noise0, nd)
    if flows.shape[1:-1] != noise0.shape[-nd - 1 : -1]:
        raise ValueError(
            f"flows {'(T, H, W, 2)' if nd == 2 else '(T, D, H, W, 3)'} must match noise0's grid; "
            f"got flows {flows.shape} and noise0 {noise0.shape}"
        )
    if noise0.size == 0 or flows.shape[0] == 0:
        return jnp.broadcast_to(noise0[None], (flows.shape[0] + 1,) + noise0.shape)
    return _sequence_jit(stream, key, noise0, flows)
