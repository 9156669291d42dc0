"""Warping long videos in chunks, and batches of videos sharded across devices.

Frame ``t`` of a warped sequence is ``warp(fold_in(key, t), frame_{t-1}, flows[t-1])`` and frame 0
is ``normal(fold_in(key, 0))`` (:func:`first_frame`), exactly as in :func:`irwarp.warp_sequence`.
Each frame depends only on ``(key, t)`` and the previous frame, so a video can be warped chunk
by chunk, carrying the last noise frame from one chunk to the next, in memory bounded by the chunk
size, with a result that does not depend on the chunk size (:func:`warp_chunk`).

:func:`warp_videos` warps a batch of videos at once, one key per video, with the batch axis
sharded over a 1-D mesh of devices (``jax.sharding.NamedSharding``); video ``b`` of the result is
``warp_sequence(keys[b], noise0[b], flows[b])`` whatever the number of devices.

Method ``"lagrangian"`` (:mod:`irwarp.sheet`) does not chain: frame ``t`` integrates the virtual
Brownian sheet of its keyframe over the pre-image of each pixel under the composed backward flow
from ``t`` to the keyframe. Its streaming state is therefore :class:`LagrangianState` (keyframe
noise, composed flow, frame index) instead of the previous frame: :func:`lagrangian_start` makes it
from frame 0 and :func:`lagrangian_chunk` advances it by one chunk of flows. Keying and keyframe
schedule are exactly those of ``irwarp.warp_sequence(key, noise0, flows, method="lagrangian")``
(:func:`irwarp.sheet.lagrangian_sequence`): frames ``m K + 1 .. (m + 1) K`` integrate sheet ``m``
with key ``fold_in(key, m)``, frame ``m K`` becomes the roots of sheet ``m`` and the composed flow
restarts from zero, and the fresh noise of frame ``t`` (non-finite composed flow) uses
``fold_in(., t)``. So the frames are bit-identical to ``warp_sequence`` whatever the chunking.
Frame 0 of the pipeline is still :func:`first_frame` (``normal(fold_in(key, 0))``); sheet 0 uses
``fold_in(key, 0)`` too, through ``jax.random.split`` of it (the sheet's tree and fresh-noise keys):
one key in two roles, inherited from ``warp_sequence``'s keying, which this module follows so that
the two give the same frames.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from irwarp import flows as flows_lib
from irwarp import sheet

# The package re-exports the function ``warp``, which hides the module: import from it by path.
from irwarp.warp import _check_method, _check_noise, warp, warp_forward

__all__ = [
    "LAGRANGIAN_OPTIONS",
    "LagrangianState",
    "batch_mesh",
    "check_method",
    "first_frame",
    "lagrangian_chunk",
    "lagrangian_start",
    "warp_chunk",
    "warp_videos",
]

# Options of method "lagrangian" (irwarp.sheet.lagrangian_sequence).
LAGRANGIAN_OPTIONS = ("depth", "capacity", "keyframe_every")
# Per-frame diagnostics of irwarp.sheet.lagrangian_frame returned by lagrangian_chunk.
_LAGRANGIAN_INFO = ("dropped_nodes", "beyond_window", "fresh")


def first_frame(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """Noise of frame 0: ``normal(fold_in(key, 0), shape)``.

    Args:
      key: PRNG key of the video.
      shape: ``(..., H, W, C)`` static shape.
      dtype: floating dtype of the noise.

    Returns:
      ``(..., H, W, C)`` i.i.d. N(0, 1) noise.
    """
    return jax.random.normal(jax.random.fold_in(key, 0), tuple(shape), dtype)


def check_method(method: str, options: dict) -> None:
    """Raise ValueError unless ``method`` takes ``options``.

    ``method`` is a :func:`irwarp.warp` method, ``"splat"`` (no options) or ``"lagrangian"``
    (options ``depth``, ``capacity``, ``keyframe_every`` of :func:`irwarp.sheet.lagrangian_sequence`,
    whose values are checked too).
    """
    if method == "lagrangian":
        _lagrangian_options(options)
        return
    if method == "splat":
        if options:
            raise ValueError(f"method 'splat' takes no options; got {sorted(options)}")
        return
    _check_method(method, options)


def _step(key, prev, flow, method, options):
    if method == "splat":
        return warp_forward(key, prev, flow)
    return warp(key, prev, flow, method=method, **options)


@functools.partial(jax.jit, static_argnames=("method", "options"))
def _scan_chunk(key, prev, flows, t0, method, options):
    options = dict(options)

    def body(x, inputs):
        t, flow = inputs
        y = _step(jax.random.fold_in(key, t), x, flow, method, options)
        return y, y

    ts = t0 + jnp.arange(flows.shape[0], dtype=jnp.int32)
    _, frames = jax.lax.scan(body, prev, (ts, flows))
    return frames


def warp_chunk(
    key: jax.Array,
    prev: jax.Array,
    flows: jax.Array,
    t0: int | jax.Array,
    *,
    method: str = "grid",
    **options,
) -> jax.Array:
    """Warp frames ``t0 .. t0 + T - 1`` of a video, given the noise of frame ``t0 - 1``.

    Frame ``t`` is ``warp(fold_in(key, t), frame_{t-1}, flows[t - t0])`` with the *global* frame
    index ``t``, so splitting a video into chunks (each starting from the last frame of the
    previous one) gives the same frames as one call on the whole video, or as
    :func:`irwarp.warp_sequence`. ``t0`` is traced: chunks of equal length share one compilation.

    Args:
      key: PRNG key of the video (the same for every chunk).
      prev: ``(..., H, W, C)`` noise of frame ``t0 - 1``.
      flows: ``(T, H, W, 2)`` backward flows of frames ``t0 .. t0 + T - 1`` (``flows[i]`` maps
        frame ``t0 + i`` into frame ``t0 + i - 1``), or forward flows for ``method="splat"``. NaN
        flow pixels get fresh noise.
      t0: global index (``>= 1``) of the first frame of the chunk.
      method: any method of :func:`irwarp.warp`, or ``"splat"`` (forward flows).
      **options: method options (static).

    Returns:
      ``(T, ..., H, W, C)`` noise of frames ``t0 .. t0 + T - 1``.

    Raises:
      ValueError: on an unknown method or option, or shapes that do not match; for
        ``method="lagrangian"``, whose state is not the previous frame (use
        :func:`lagrangian_chunk`).
    """
    if method == "lagrangian":
        raise ValueError(
            "method 'lagrangian' streams a LagrangianState (keyframe noise, composed flow, frame "
            "index), not the previous frame: use pipeline.lagrangian_start and "
            "pipeline.lagrangian_chunk"
        )
    check_method(method, options)
    prev = _check_noise(prev)
    flows = jnp.asarray(flows)
    if flows.ndim != 4 or flows.shape[-1] != 2:
        raise ValueError(f"flows must have shape (T, H, W, 2); got {flows.shape}")
    if flows.shape[1:3] != prev.shape[-3:-1]:
        raise ValueError(
            f"flows (T, H, W, 2) must match the noise's (H, W); got flows {flows.shape} and "
            f"prev {prev.shape}"
        )
    return _scan_chunk(key, prev, flows, jnp.asarray(t0, jnp.int32), method, _freeze(options))


def _freeze(options: dict) -> tuple:
    return tuple(sorted(options.items()))


# --------------------------------------------------------------------------------------------------
# Method "lagrangian": streaming the keyframe state.


class LagrangianState(NamedTuple):
    """Streaming state of method ``"lagrangian"`` after frame ``t`` (a pytree).

    Attributes:
      keyframe: ``(..., H, W, C)`` float32 root noise of the current sheet (the noise of the
        last keyframe ``m K <= t``, or of frame 0).
      total_flow: ``(H, W, 2)`` float32 composed backward flow from frame ``t`` to the keyframe
        (zero right after a keyframe). NaN where :func:`irwarp.flows.compose` leaves it
        non-finite: where the newest flow is, and where all 4 bilinear samples of the older
        composed flow are (isolated older NaN are bridged by the valid neighbours).
      t: int32 scalar, index of the last frame produced (0 after :func:`lagrangian_start`).
    """

    keyframe: jax.Array
    total_flow: jax.Array
    t: jax.Array


def _lagrangian_options(options: dict) -> dict:
    """Checked options of method "lagrangian" as ``dict(depth, capacity, every)``."""
    unknown = set(options) - set(LAGRANGIAN_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for method 'lagrangian'; allowed: "
            f"{', '.join(sorted(LAGRANGIAN_OPTIONS))}"
        )
    return dict(
        depth=sheet._check_depth(options.get("depth", sheet.DEFAULT_DEPTH)),
        capacity=sheet._check_capacity(options.get("capacity", sheet.DEFAULT_CAPACITY)),
        every=sheet._check_keyframe_every(options.get("keyframe_every")),
    )


def lagrangian_start(noise0: jax.Array) -> LagrangianState:
    """The state after frame 0: ``noise0`` is the keyframe, the composed flow is zero, ``t = 0``.

    Args:
      noise0: ``(..., H, W, C)`` floating noise of frame 0 (e.g. :func:`first_frame`); kept in
        float32 (exact for bf16/f16 inputs).

    Returns:
      A :class:`LagrangianState` for :func:`lagrangian_chunk`.

    Raises:
      ValueError: if ``noise0`` is not a floating ``(..., H, W, C)`` array.
    """
    noise0 = _check_noise(noise0)
    h, w = noise0.shape[-3:-1]
    return LagrangianState(
        keyframe=noise0.astype(jnp.float32),
        total_flow=jnp.zeros((h, w, 2), jnp.float32),
        t=jnp.zeros((), jnp.int32),
    )


@functools.partial(jax.jit, static_argnames=("depth", "capacity", "every"))
def _lagrangian_scan(key, state, flows, *, depth: int, capacity: float, every: int | None):
    def body(carry, flow):
        keyframe, total, t = carry
        t = t + 1
        # psi_t = psi_{t-1} o psi_flow: frame t -> frame t-1 -> ... -> keyframe.
        total = flows_lib.compose(total, flow)
        segment = 0 if every is None else (t - 1) // every
        y, info = sheet.lagrangian_frame(
            jax.random.fold_in(key, segment),
            keyframe,
            total,
            depth=depth,
            capacity=capacity,
            frame=t,
            return_info=True,
        )
        info = {k: info[k].astype(jnp.int32) for k in _LAGRANGIAN_INFO}
        if every is not None:
            restart = t % every == 0
            keyframe = jnp.where(restart, y, keyframe)
            total = jnp.where(restart, 0.0, total)
        return LagrangianState(keyframe, total, t), (y, info)

    state, (frames, info) = jax.lax.scan(body, state, flows.astype(jnp.float32))
    return frames, state, info


def lagrangian_chunk(
    key: jax.Array,
    state: LagrangianState,
    flows: jax.Array,
    *,
    depth: int = sheet.DEFAULT_DEPTH,
    capacity: float = sheet.DEFAULT_CAPACITY,
    keyframe_every: int | None = None,
    return_info: bool = False,
):
    """Warp frames ``t + 1 .. t + T`` by method ``"lagrangian"``, given the state after frame ``t``.

    For each frame ``s``: ``total <- compose(total, flows[s - t - 1])`` (frame ``s`` -> keyframe),
    ``Y_s = lagrangian_frame(fold_in(key, m), keyframe, total, frame=s)`` with sheet index
    ``m = (s - 1) // K`` (``m = 0`` without keyframes), and at ``s = (m + 1) K`` the keyframe
    becomes ``Y_s`` and ``total`` restarts from zero. This is
    :func:`irwarp.sheet.lagrangian_sequence` streamed: chaining the returned state through any
    chunking of a video gives bit-identical frames to ``irwarp.warp_sequence(key, noise0, flows,
    method="lagrangian", ...)``. ``state.t`` is traced, so chunks of equal length share one
    compilation.

    Args:
      key: PRNG key of the video (the same for every chunk).
      state: :class:`LagrangianState` after frame ``t`` (:func:`lagrangian_start` for ``t = 0``).
      flows: ``(T, H, W, 2)`` backward flows of frames ``t + 1 .. t + T`` (``flows[i]`` maps frame
        ``t + 1 + i`` into frame ``t + i``); non-finite pixels get fresh noise.
      depth: static leaf level ``L`` of the sheet (:func:`irwarp.sheet.lagrangian_frame`).
      capacity: static frontier budget of the sheet.
      keyframe_every: static ``K >= 1``, or None for one keyframe (frame 0) for the whole video.
      return_info: also return a dict of ``(T,)`` int32 per-frame diagnostics of
        :func:`irwarp.sheet.lagrangian_frame`: ``dropped_nodes`` (split nodes beyond the capacity;
        0 means the quadrature is exact), ``beyond_window`` (pixels whose pre-image leaves the
        ``3 x 3`` window of roots: part of it is left out, the pixel is renormalised by what is
        kept) and ``fresh`` (pixels given fresh noise).

    Returns:
      ``(frames, state)``: ``(T, ..., H, W, C)`` float32 noise of frames ``t + 1 .. t + T`` and the
      state after frame ``t + T``; ``(frames, state, info)`` with ``return_info``.

    Raises:
      ValueError: on bad options, a state that is not a :class:`LagrangianState` of float32
        noise, or flows that are not ``(T, H, W, 2)`` on the state's grid.

    References:
      Deng et al. 2025 (arXiv:2411.01212); :mod:`irwarp.sheet` (virtual Brownian sheet).
    """
    opts = _lagrangian_options(dict(depth=depth, capacity=capacity, keyframe_every=keyframe_every))
    if not isinstance(state, LagrangianState):
        raise ValueError(
            f"state must be a LagrangianState (from lagrangian_start); got {type(state).__name__}"
        )
    keyframe = _check_noise(state.keyframe)
    if keyframe.dtype != jnp.float32:
        raise ValueError(f"state.keyframe must be float32; got {keyframe.dtype}")
    h, w = keyframe.shape[-3:-1]
    if jnp.shape(state.total_flow) != (h, w, 2) or jnp.shape(state.t) != ():
        raise ValueError(
            f"state.total_flow must be (H, W, 2) = {(h, w, 2)} and state.t a scalar; got "
            f"{jnp.shape(state.total_flow)} and {jnp.shape(state.t)}"
        )
    flows = jnp.asarray(flows)
    if flows.ndim != 4 or flows.shape[1:] != (h, w, 2):
        raise ValueError(
            f"flows must have shape (T, H, W, 2) = (T, {h}, {w}, 2) to match the state; got "
            f"{flows.shape}"
        )
    state = LagrangianState(
        keyframe,
        jnp.asarray(state.total_flow, jnp.float32),
        jnp.asarray(state.t, jnp.int32),
    )
    frames, state, info = _lagrangian_scan(key, state, flows, **opts)
    return (frames, state, info) if return_info else (frames, state)


def batch_mesh(devices: Sequence[jax.Device] | None = None, axis: str = "batch") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices) with the named ``axis``."""
    devs = np.asarray(jax.devices() if devices is None else list(devices))
    if devs.size == 0:
        raise ValueError("batch_mesh needs at least one device; got none")
    return Mesh(devs.reshape(-1), (axis,))


@functools.lru_cache(maxsize=32)
def _sharded_fn(mesh: Mesh, method: str, options: tuple):
    axis = mesh.axis_names[0]
    shard = NamedSharding(mesh, PartitionSpec(axis))

    if method == "lagrangian":
        opts = _lagrangian_options(dict(options))

        def one(key, x0, fl):
            frames, _, _ = _lagrangian_scan(key, lagrangian_start(x0), fl, **opts)
            return jnp.concatenate([x0[None], frames.astype(x0.dtype)], axis=0)

    else:

        def one(key, x0, fl):
            frames = _scan_chunk(key, x0, fl, jnp.int32(1), method, options)
            return jnp.concatenate([x0[None], frames], axis=0)

    return jax.jit(jax.vmap(one), in_shardings=(shard, shard, shard), out_shardings=shard)


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

    Video ``b`` is ``warp_sequence(keys[b], noise0[b], flows[b], method=method, **options)``. The
    batch is split evenly over the mesh's devices (``NamedSharding(mesh, P(axis))`` for inputs and
    output, under one ``jit``); a batch that is not a multiple of the device count is padded by
    repeating its last video, and the padding is dropped from the result. Each video's
    computation is independent of the others, so the result equals the single-device one and
    :func:`irwarp.warp_sequence` per video, up to float32 rounding: XLA may vectorise a different
    number of videos per device differently (a few ulps; the random draws are identical).

    Args:
      keys: ``(B,)`` PRNG keys, one per video (e.g. ``jax.random.split(key, B)``).
      noise0: ``(B, H, W, C)`` noise of frame 0 of each video.
      flows: ``(B, T, H, W, 2)`` backward flows (forward flows for ``method="splat"``).
      method: any method of :func:`irwarp.warp`, ``"splat"``, or ``"lagrangian"`` (options
        ``depth``, ``capacity``, ``keyframe_every``; :func:`irwarp.sheet.lagrangian_sequence`).
      mesh: a 1-D :class:`jax.sharding.Mesh` (default: :func:`batch_mesh` over all devices).
      **options: method options (static).

    Returns:
      ``(B, T + 1, H, W, C)`` noise, sharded over the mesh on ``B``; frame 0 is ``noise0``.

    Raises:
      ValueError: on a mesh that is not 1-D, an unknown method or option, or mismatched shapes.
    """
    check_method(method, options)
    noise0 = jnp.asarray(noise0)
    flows = jnp.asarray(flows)
    if noise0.ndim != 4:
        raise ValueError(f"noise0 must have shape (B, H, W, C); got {noise0.shape}")
    _check_noise(noise0)
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
    n_dev = mesh.devices.size
    pad = (-b) % n_dev
    if pad:

        def extend(a):
            return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0)

        keys, noise0, flows = extend(keys), extend(noise0), extend(flows)
    out = _sharded_fn(mesh, method, _freeze(options))(keys, noise0, flows)
    return out[:b] if pad else out
