"""Warping long videos in chunks, and batches of videos sharded across devices.

Frame ``t`` of a warped sequence is ``warp(fold_in(key, t), frame_{t-1}, flows[t-1])`` and frame 0
is ``normal(fold_in(key, 0))`` (:func:`first_frame`), exactly as in :func:`irwarp.warp_sequence`.
Each frame depends only on ``(key, t)`` and the previous frame, so a video can be warped chunk
by chunk, carrying the last noise frame from one chunk to the next, in memory bounded by the chunk
size, with a result that does not depend on the chunk size (:func:`warp_chunk`).

:func:`warp_videos` warps a batch of videos at once, one key per video, with the batch axis
sharded over a 1-D mesh of devices (``jax.sharding.NamedSharding``); video ``b`` of the result is
``warp_sequence(keys[b], noise0[b], flows[b])`` whatever the number of devices.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# The package re-exports the function ``warp``, which hides the module: import from it by path.
from irwarp.warp import _check_method, _check_noise, warp, warp_forward

__all__ = ["batch_mesh", "check_method", "first_frame", "warp_chunk", "warp_videos"]


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
    """Raise ValueError unless ``method`` (a :func:`irwarp.warp` method or ``"splat"``) takes ``options``."""
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
      ValueError: on an unknown method or option, or shapes that do not match.
    """
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
      method: any method of :func:`irwarp.warp`, or ``"splat"``.
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
