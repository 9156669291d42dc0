"""Video diffusion sampling frame after frame, with the noise carried by a provider.

Frame 0 is sampled from ``provider.init(key, ...)``; frame ``t >= 1`` from
``provider.next(key, noise_{t-1}, t, flows[t-1])``, both with :func:`~irwarp.samplers.sample`
(optionally SDEdit of the input frame). The frames run in a ``lax.scan``; frame ``t`` depends only
on ``(key, t)``, frame ``t - 1``'s noise and the inputs, so a long video can be sampled in chunks
(:func:`sample_video_chunk`) with the same result.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212), section 5 (video editing with warped noise).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from irwarp.samplers.providers import FrameNoise
from irwarp.samplers.sampling import ApplyFn, is_stochastic, sample
from irwarp.samplers.schedules import Schedule

__all__ = ["sample_video", "sample_video_chunk"]


def _check_flows(flows, hw: tuple[int, int], count: int | None) -> jax.Array:
    flows = jnp.asarray(flows, jnp.float32)
    if flows.ndim != 4 or flows.shape[1:] != (*hw, 2):
        raise ValueError(
            f"flows must have shape (T - 1, H, W, 2) = (T - 1, {hw[0]}, {hw[1]}, 2); got {flows.shape}"
        )
    if count is not None and flows.shape[0] != count:
        raise ValueError(f"expected {count} flows (one per frame pair); got {flows.shape[0]}")
    return flows


def sample_video_chunk(
    key: jax.Array,
    apply_fn: ApplyFn,
    params,
    schedule: Schedule,
    provider,
    prev: FrameNoise,
    flows: jax.Array,
    t0: int | jax.Array,
    *,
    frames: jax.Array | None = None,
    num_steps: int,
    sampler: str = "ddim",
    eta: float = 0.0,
    strength: float = 1.0,
    clip_x0: float | None = 1.0,
) -> tuple[jax.Array, FrameNoise]:
    """Samples frames ``t0 .. t0 + T - 1`` given the noise of frame ``t0 - 1``.

    Args:
      key: PRNG key of the video (the same for every chunk).
      apply_fn, params, schedule: the denoiser (see :func:`~irwarp.samplers.sample`).
      provider: a noise provider (:func:`~irwarp.samplers.make_provider`).
      prev: the :class:`FrameNoise` of frame ``t0 - 1``.
      flows: ``(T, H, W, 2)`` backward flows; ``flows[i]`` maps frame ``t0 + i`` into the frame
        before.
      t0: global index ``>= 1`` of the first frame (may be traced).
      frames: ``(T, B, H, W, C)`` input frames in ``[-1, 1]`` (SDEdit), or ``None``.
      num_steps, sampler, eta, strength, clip_x0: as :func:`~irwarp.samplers.sample`.

    Returns:
      ``((T, B, H, W, C) samples, FrameNoise of frame t0 + T - 1)``.
    """
    shape = tuple(prev.initial.shape)
    flows = _check_flows(flows, shape[-3:-1], None)
    if frames is not None:
        frames = jnp.asarray(frames, jnp.float32)
        if frames.shape != (flows.shape[0],) + shape:
            raise ValueError(
                f"frames must have shape (T,) + {shape} with T = {flows.shape[0]} flows; got "
                f"{frames.shape}"
            )
    options = dict(
        num_steps=num_steps, sampler=sampler, eta=eta, strength=strength, clip_x0=clip_x0
    )

    def body(noise, inputs):
        t, flow, frame = inputs
        noise = provider.next(key, noise, t, flow)
        return noise, sample(apply_fn, params, schedule, noise, x_init=frame, **options)

    ts = jnp.asarray(t0, jnp.int32) + jnp.arange(flows.shape[0], dtype=jnp.int32)
    last, out = jax.lax.scan(body, prev, (ts, flows, frames))
    return out, last


def sample_video(
    key: jax.Array,
    apply_fn: ApplyFn,
    params,
    schedule: Schedule,
    provider,
    *,
    flows: jax.Array,
    frames: jax.Array | None = None,
    shape: Sequence[int] | None = None,
    num_steps: int,
    sampler: str = "ddim",
    eta: float = 0.0,
    strength: float = 1.0,
    clip_x0: float | None = 1.0,
) -> jax.Array:
    """Samples (or, with ``frames``, SDEdits) a video with noise from ``provider``.

    ``noise_0 = provider.init(key, (B, H, W, C), S')``, ``noise_t = provider.next(key, noise_{t-1},
    t, flows[t-1])``, ``out_t = sample(apply_fn, params, schedule, noise_t, x_init=frames[t])``;
    ``S' = num_steps`` for stochastic samplers and 0 for deterministic DDIM (whose per-step
    noise would be unused).

    Args:
      key: PRNG key; all noise of the video derives from it.
      apply_fn, params, schedule: the denoiser (see :func:`~irwarp.samplers.sample`).
      provider: a noise provider (:func:`~irwarp.samplers.make_provider`).
      flows: ``(T - 1, H, W, 2)`` backward flows; ``flows[t-1]`` maps frame ``t`` into frame
        ``t - 1`` (NaN where occluded: fresh noise there).
      frames: ``(T, B, H, W, C)`` input frames in ``[-1, 1]`` for SDEdit, or ``None``.
      shape: ``(B, H, W, C)`` of a frame when ``frames`` is ``None``.
      num_steps, sampler, eta, strength, clip_x0: as :func:`~irwarp.samplers.sample`.

    Returns:
      ``(T, B, H, W, C)`` float32 samples.

    Raises:
      ValueError: on inconsistent shapes, or the errors of :func:`~irwarp.samplers.sample`.

    References:
      Deng et al. 2025, section 5; Meng et al. 2022 (SDEdit).
    """
    if frames is not None:
        frames = jnp.asarray(frames, jnp.float32)
        if frames.ndim != 5:
            raise ValueError(f"frames must have shape (T, B, H, W, C); got {frames.shape}")
        if shape is not None and tuple(shape) != frames.shape[1:]:
            raise ValueError(f"shape {tuple(shape)} does not match frames {frames.shape}")
        shape = frames.shape[1:]
    elif shape is None:
        raise ValueError(
            "sample_video needs frames (T, B, H, W, C) or shape (B, H, W, C); got neither"
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError(f"shape must be (B, H, W, C); got {shape}")
    num_frames = None if frames is None else frames.shape[0]
    flows = _check_flows(flows, shape[1:3], None if num_frames is None else num_frames - 1)
    noise_steps = num_steps if is_stochastic(sampler, eta) else 0
    options = dict(
        num_steps=num_steps, sampler=sampler, eta=eta, strength=strength, clip_x0=clip_x0
    )
    noise0 = provider.init(key, shape, noise_steps)
    first = sample(
        apply_fn, params, schedule, noise0, x_init=None if frames is None else frames[0], **options
    )
    if flows.shape[0] == 0:
        return first[None]
    rest, _ = sample_video_chunk(
        key,
        apply_fn,
        params,
        schedule,
        provider,
        noise0,
        flows,
        1,
        frames=None if frames is None else frames[1:],
        **options,
    )
    return jnp.concatenate([first[None], rest], axis=0)
