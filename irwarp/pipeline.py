"""Warping long videos in chunks, and batches of videos sharded across devices.

Both drive the noise stream (:mod:`irwarp.stream`), the one definition of how a video's frames
follow each other, for every method of the registry (lagrangian included):

* :func:`warp_chunk` runs the stream over one chunk of flows from a given state (or, for chain
  methods, from the previous frame). Frame ``t`` depends only on ``(key, t)`` and the state, so a
  video warped chunk by chunk, carrying the state, equals one call on the whole video
  (:func:`irwarp.warp_sequence`), bit for bit, whatever the chunk sizes; memory is bounded by
  the chunk.
* :func:`warp_videos` warps a batch of videos, one key per video, with the batch axis sharded over
  a 1-D mesh of devices (``jax.sharding.NamedSharding``); video ``b`` of the result is
  ``warp_sequence(keys[b], noise0[b], flows[b])`` whatever the number of devices.

Frame 0 of a video is :func:`first_frame`: ``normal(fold_in(key, 0))``. (For lagrangian, sheet 0's
key is ``fold_in(key, 0)`` too — :mod:`irwarp.stream`'s keying — split inside the sheet into its
tree and fresh-noise keys; the two uses of one key are those of ``warp_sequence``, which the
pipeline reproduces exactly.)

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from irwarp import methods as methods_lib
from irwarp import stream as stream_lib
from irwarp._inputs import check_flows, check_key, check_noise
from irwarp.stream import StreamState, noise_stream

__all__ = [
    "LAGRANGIAN_OPTIONS",
    "LagrangianState",
    "StreamState",
    "batch_mesh",
    "check_method",
    "first_frame",
    "lagrangian_chunk",
    "lagrangian_start",
    "warp_chunk",
    "warp_videos",
]

# Options of method "lagrangian" (from the registry).
LAGRANGIAN_OPTIONS = tuple(methods_lib.get_method("lagrangian").options)
# Per-frame diagnostics of irwarp.sheet.lagrangian_frame returned by lagrangian_chunk.
_LAGRANGIAN_INFO = ("dropped_nodes", "beyond_window", "fresh")

# The streaming state of method "lagrangian" is the stream's state (kept as a name of its own).
LagrangianState = StreamState


def first_frame(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """Noise of frame 0: ``normal(fold_in(key, 0), shape)``.

    Args:
      key: PRNG key of the video.
      shape: ``(..., H, W, C)`` static shape.
      dtype: floating dtype of the noise.

    Returns:
      ``(..., H, W, C)`` i.i.d. N(0, 1) noise.
    """
    key = check_key(key)
    return jax.random.normal(jax.random.fold_in(key, 0), tuple(shape), dtype)


def check_method(method: str, options: dict) -> None:
    """Raise ValueError unless ``method`` (any registered method, 2D) takes ``options``."""
    methods_lib.get_method(method).resolve(options, rank=2)


def _check_t0(t0):
    if isinstance(t0, (bool, np.bool_)):
        raise ValueError(f"t0 must be an integer >= 1; got {t0!r}")
    if isinstance(t0, numbers.Integral):
        if t0 < 1:
            raise ValueError(f"t0 must be an integer >= 1 (frame 0 is noise0); got {t0!r}")
        return jnp.int32(t0)
    t0 = jnp.asarray(t0)
    if t0.shape != () or not jnp.issubdtype(t0.dtype, jnp.integer):
        raise ValueError(f"t0 must be an integer scalar >= 1; got {t0.dtype}{list(t0.shape)}")
    if not isinstance(t0, jax.core.Tracer) and int(t0) < 1:
        raise ValueError(f"t0 must be an integer >= 1 (frame 0 is noise0); got {int(t0)}")
    return t0.astype(jnp.int32)


def warp_chunk(
    key: jax.Array,
    prev,
    flows: jax.Array,
    t0: int | jax.Array | None = None,
    *,
    method: str = "grid",
    **options,
) -> jax.Array:
    """Warp frames ``t0 .. t0 + T - 1`` of a video: the noise stream over one chunk of flows.

    Frame ``t`` uses the *global* frame index ``t`` (chain methods: ``warp(fold_in(key, t),
    frame_{t-1}, flows[t - t0])``), so splitting a video into chunks gives the same frames as one
    call on the whole video, or as :func:`irwarp.warp_sequence`. ``t0`` is traced: chunks of equal
    length share one compilation.

    Args:
      key: PRNG key of the video (the same for every chunk).
      prev: the :class:`~irwarp.stream.StreamState` after frame ``t0 - 1`` (any method; from
        ``irwarp.noise_stream(method).init(noise0)`` or the previous chunk), or, for chain
        methods, the ``(..., H, W, C)`` noise of frame ``t0 - 1``.
      flows: ``(T, H, W, 2)`` backward flows of frames ``t0 .. t0 + T - 1`` (``flows[i]`` maps
        frame ``t0 + i`` into frame ``t0 + i - 1``), or forward flows for ``method="splat"``. NaN
        flow pixels get fresh noise.
      t0: global index (``>= 1``) of the first frame of the chunk; with a state it defaults to
        (and must equal) ``state.t + 1``.
      method: any method of the registry, e.g. ``"grid"``, ``"splat"``, ``"lagrangian"``.
      **options: method options (static).

    Returns:
      ``(T, ..., H, W, C)`` noise of frames ``t0 .. t0 + T - 1``. To carry a state on, use
      ``irwarp.noise_stream(method, **options).scan`` (or :func:`lagrangian_chunk`).

    Raises:
      ValueError: on an unknown method or option, a bad ``t0``, a previous frame given to a
        keyframe method (which needs its state), or shapes that do not match.
    """
    key = check_key(key)
    stream = noise_stream(method, **options)
    flows, nd = check_flows(flows)
    if nd != 2:
        raise ValueError(f"flows must have shape (T, H, W, 2); got {flows.shape}")
    if isinstance(prev, StreamState):
        state = prev
        if t0 is not None:
            t0 = _check_t0(t0)
            if not isinstance(state.t, jax.core.Tracer) and not isinstance(t0, jax.core.Tracer):
                if int(t0) != int(state.t) + 1:
                    raise ValueError(f"t0 = {int(t0)} but the state is after frame {int(state.t)}")
    else:
        if stream.method.kind != "chain":
            raise ValueError(
                f"method {stream.method.name!r} integrates from a keyframe: pass its stream state "
                "as prev (irwarp.noise_stream(method).init(noise0), or lagrangian_start and "
                "lagrangian_chunk), not the previous frame"
            )
        if t0 is None:
            raise ValueError("t0 (the global index of the chunk's first frame) is required")
        state = StreamState(check_noise(prev, name="prev"), None, _check_t0(t0) - 1)
    frame = check_noise(state.frame, name="prev")
    if flows.shape[1:3] != frame.shape[-3:-1]:
        raise ValueError(
            f"flows (T, H, W, 2) must match the noise's (H, W); got flows {flows.shape} and "
            f"prev {frame.shape}"
        )
    _, frames = stream.scan(key, state, flows)
    return frames


def lagrangian_start(noise0: jax.Array) -> StreamState:
    """The lagrangian stream's state after frame 0: ``noise0`` is the keyframe, zero flow, ``t = 0``.

    The same as ``irwarp.noise_stream("lagrangian").init(noise0)``.

    Args:
      noise0: ``(..., H, W, C)`` floating noise of frame 0 (e.g. :func:`first_frame`); kept in
        float32 (exact for bf16/f16 inputs).

    Raises:
      ValueError: if ``noise0`` is not a floating ``(..., H, W, C)`` array.
    """
    return noise_stream("lagrangian").init(noise0)


def lagrangian_chunk(
    key: jax.Array,
    state: StreamState,
    flows: jax.Array,
    *,
    depth: int | None = None,
    capacity: float | None = None,
    keyframe_every: int | None = None,
    return_info: bool = False,
):
    """Frames ``t + 1 .. t + T`` by method ``"lagrangian"``: its stream over one chunk.

    ``noise_stream("lagrangian", depth=..., capacity=..., keyframe_every=...).scan`` with the
    per-frame diagnostics: chaining the returned state through any chunking of a video gives
    bit-identical frames to ``irwarp.warp_sequence(key, noise0, flows, method="lagrangian")``.

    Args:
      key: PRNG key of the video (the same for every chunk).
      state: :class:`~irwarp.stream.StreamState` after frame ``t`` (:func:`lagrangian_start`).
      flows: ``(T, H, W, 2)`` backward flows of frames ``t + 1 .. t + T``.
      depth, capacity, keyframe_every: the method's options (None: the defaults).
      return_info: also return a dict of ``(T,)`` int32 per-frame diagnostics of
        :func:`irwarp.sheet.lagrangian_frame`: ``dropped_nodes`` (split nodes beyond the capacity;
        0 means the quadrature is exact), ``beyond_window`` (pixels whose pre-image leaves the
        ``3 x 3`` window of roots) and ``fresh`` (pixels given fresh noise).

    Returns:
      ``(frames, state)``: ``(T, ..., H, W, C)`` float32 noise and the state after frame
      ``t + T``; ``(frames, state, info)`` with ``return_info``.

    Raises:
      ValueError: on bad options, a state that is not a lagrangian :class:`StreamState` of float32
        noise, or flows that are not ``(T, H, W, 2)`` on the state's grid.
    """
    options = dict(depth=depth, capacity=capacity, keyframe_every=keyframe_every)
    options = {k: v for k, v in options.items() if v is not None}
    stream = noise_stream("lagrangian", **options)
    stream.check_state(state)
    h, w = state.frame.shape[-3:-1]
    flows = jnp.asarray(flows)
    if flows.ndim != 4 or flows.shape[1:] != (h, w, 2):
        raise ValueError(
            f"flows must have shape (T, H, W, 2) = (T, {h}, {w}, 2) to match the state; got "
            f"{flows.shape}"
        )
    state, frames, info = stream.scan(key, state, flows, return_info=True)
    if not return_info:
        return frames, state
    return frames, state, {k: info[k].astype(jnp.int32) for k in _LAGRANGIAN_INFO}


def batch_mesh(devices: Sequence[jax.Device] | None = None, axis: str = "batch") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices) with the named ``axis``."""
    devs = np.asarray(jax.devices() if devices is None else list(devices))
    if devs.size == 0:
        raise ValueError("batch_mesh needs at least one device; got none")
    return Mesh(devs.reshape(-1), (axis,))


@functools.lru_cache(maxsize=32)
def _sharded_fn(mesh: Mesh, stream: stream_lib.NoiseStream):
    shard = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    one = functools.partial(stream_lib.sequence_frames, stream)
    return jax.jit(jax.vmap(one), in_shardings=(shard, shard, shard), out_shardings=shard)


def _divisor_mesh(mesh: Mesh, b: int) -> Mesh:
    """The first ``d`` devices of ``mesh``, ``d`` the largest device count that divides ``b``."""
    n = mesh.devices.size
    d = max(k for k in range(1, n + 1) if b % k == 0)
    return mesh if d == n else Mesh(mesh.devices.reshape(-1)[:d], mesh.axis_names)


def warp_videos(
    keys: jax.Array,
    noise0: jax.Array,
    flows: jax.Array,
    *,
    method: str = "grid",
    mesh: Mesh | None = None,
    **options,
) -> jax.Array:
    """Warp a batch of videos, sharding the batch axis over a 1-D device mesh.

    Video ``b`` is ``warp_sequence(keys[b], noise0[b], flows[b], method=method, **options)``: the
    noise stream of each video, ``vmap``-ed, under one ``jit`` with inputs and output sharded as
    ``NamedSharding(mesh, P(axis))``. A batch that is not a multiple of the device count runs on
    the largest number of the mesh's devices that divides it (e.g. B = 6 on 4 devices: 3), so
    the result is always batch-sharded, never replicated. Each video's computation is
    independent of the others, so the result equals :func:`irwarp.warp_sequence` per video, up to
    float32 rounding where XLA vectorises a different number of videos per device differently (a
    few ulps; the random draws are identical).

    Args:
      keys: ``(B,)`` PRNG keys, one per video (e.g. ``jax.random.split(key, B)``).
      noise0: ``(B, H, W, C)`` noise of frame 0 of each video.
      flows: ``(B, T, H, W, 2)`` backward flows (forward flows for ``method="splat"``).
      method: any method of the registry (lagrangian included).
      mesh: a 1-D :class:`jax.sharding.Mesh` (default: :func:`batch_mesh` over all devices).
      **options: method options (static).

    Returns:
      ``(B, T + 1, H, W, C)`` noise, sharded over the mesh on ``B``; frame 0 is ``noise0``.

    Raises:
      ValueError: on a mesh that is not 1-D, an unknown method or option, or mismatched shapes.
    """
    stream = noise_stream(method, **options)
    noise0 = jnp.asarray(noise0)
    flows = jnp.asarray(flows)
    if noise0.ndim != 4:
        raise ValueError(f"noise0 must have shape (B, H, W, C); got {noise0.shape}")
    check_noise(noise0, name="noise0")
    b = noise0.shape[0]
    if flows.ndim != 5 or flows.shape[-1] != 2 or flows.shape[0] != b:
        raise ValueError(
            f"flows must have shape (B, T, H, W, 2) with B = {b} (noise0 {noise0.shape}); "
            f"got {flows.shape}"
        )
    if flows.shape[2:4] != noise0.shape[1:3]:
        raise ValueError(
            f"flows (B, T, H, W, 2) must match noise0's (H, W); got {flows.shape} and "
            f"{noise0.shape}"
        )
    if jnp.shape(keys)[:1] != (b,):
        raise ValueError(f"keys must have leading dimension B = {b}; got {jnp.shape(keys)}")
    mesh = batch_mesh() if mesh is None else mesh
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must be 1-D; got axes {mesh.axis_names}")
    if b == 0 or noise0.size == 0:
        return jnp.zeros((b, flows.shape[1] + 1) + noise0.shape[1:], noise0.dtype)
    return _sharded_fn(_divisor_mesh(mesh, b), stream)(keys, noise0, flows)
