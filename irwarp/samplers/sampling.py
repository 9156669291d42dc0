"""DDIM and DDPM (ancestral) sampling around any denoiser, with an SDEdit mode.

The denoiser is ``apply_fn(params, x, t) -> output``: ``x`` ``(B, H, W, C)`` noisy images
(data scaled to ``[-1, 1]``; the clean-image estimate is clipped to that range by default,
``clip_x0=1.0``), ``t`` ``(B,)`` int32 timesteps, and the output ``(B, H, W, C)`` is the
noise, ``v`` or the clean image, as ``schedule.prediction`` says. All randomness comes in through
a :class:`~irwarp.samplers.providers.FrameNoise`, so a sample is a deterministic function of its
noise: warped noise gives temporally coherent samples.

Steps. ``S = num_steps`` timesteps ``tau_0 > ... > tau_{S-1} = 0`` evenly spaced (rounded) from
``t_start = max(round(strength T) - 1, 0)`` down to 0; step ``i`` goes from ``tau_i`` to
``tau_{i+1}`` and the last one to the clean image (``alpha_bar = 1``). With ``strength = 1`` and no
input the sampler starts from ``x = noise.initial``; with an input image (SDEdit) it starts from
``x = sqrt(ab) x_init + sqrt(1 - ab) noise.initial`` at ``t_start``, so all ``S`` steps are spent
between ``t_start`` and 0. If ``S > t_start + 1`` some timesteps repeat; a step from ``tau`` to the
same ``tau`` leaves ``x`` unchanged (both updates reduce to the identity).

Updates, with ``ab = alpha_bar_{tau_i}``, ``ab' = alpha_bar_{tau_{i+1}}`` and ``z_i = noise.steps[i]``:

* ``"ddim"``: ``x' = sqrt(ab') x0 + sqrt(1 - ab' - sigma^2) eps + sigma z_i`` with
  ``sigma = eta sqrt((1 - ab') / (1 - ab)) sqrt(1 - ab / ab')`` (Song et al., eq. 12);
  ``eta = 0`` is deterministic and needs no per-step noise.
* ``"ddpm"``: ancestral sampling from the posterior ``q(x_{tau'} | x_tau, x0)`` of the strided chain:
  ``x' = sqrt(ab') (1 - a) / (1 - ab) x0 + sqrt(a) (1 - ab') / (1 - ab) x + sqrt(beta~) z_i`` with
  ``a = ab / ab'`` and ``beta~ = (1 - ab') / (1 - ab) (1 - a)`` (Ho et al., eqs. 6-7, the
  "posterior" variance). It equals DDIM with ``eta = 1`` (the same law and, on the same noise,
  the same numbers up to rounding); ``eta`` is ignored.

References:
  Song, Meng, Ermon. Denoising Diffusion Implicit Models. ICLR 2021.
  Ho, Jain, Abbeel. Denoising Diffusion Probabilistic Models. NeurIPS 2020.
  Meng et al. SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations.
  ICLR 2022.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from irwarp.samplers.providers import FrameNoise
from irwarp.samplers.schedules import Schedule, to_eps_x0

__all__ = ["SAMPLERS", "ApplyFn", "is_stochastic", "sample", "timesteps"]

SAMPLERS: tuple[str, ...] = ("ddim", "ddpm")
"""Sampler names of :func:`sample`."""

ApplyFn = Callable[[object, jax.Array, jax.Array], jax.Array]
"""``apply_fn(params, x (B, H, W, C), t (B,) int32) -> output (B, H, W, C)``."""


def _check_sampler(sampler: str, eta) -> float:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    try:
        eta = float(eta)
    except (TypeError, jax.errors.ConcretizationTypeError) as e:
        raise ValueError(f"eta must be a static Python number >= 0; got {eta!r}") from e
    if not (eta >= 0.0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a finite number >= 0; got {eta}")
    return eta


def is_stochastic(sampler: str, eta: float = 0.0) -> bool:
    """Whether the sampler uses per-step noise: ``"ddpm"``, or ``"ddim"`` with ``eta > 0``."""
    eta = _check_sampler(sampler, eta)
    return sampler == "ddpm" or eta > 0.0


def _check_strength(strength) -> float:
    try:
        strength = float(strength)
    except (TypeError, jax.errors.ConcretizationTypeError) as e:
        raise ValueError(
            f"strength must be a static Python number in (0, 1]; got {strength!r}"
        ) from e
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1]; got {strength}")
    return strength


def timesteps(num_timesteps: int, num_steps: int, strength: float = 1.0) -> np.ndarray:
    """The ``S`` timesteps of a sampling run, from ``t_start`` down to 0.

    ``tau_i = round(t_start (S - 1 - i) / (S - 1))`` with ``t_start = max(round(strength T) - 1, 0)``.

    Args:
      num_timesteps: ``T`` of the schedule.
      num_steps: ``S >= 1``.
      strength: SDEdit strength in ``(0, 1]`` (1: start from pure noise at ``T - 1``).

    Returns:
      ``(S,)`` int32 numpy array, non-increasing, ending at 0.

    Raises:
      ValueError: on ``S < 1`` or a strength outside ``(0, 1]``.
    """
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1; got {num_steps!r}")
    strength = _check_strength(strength)
    t_start = max(int(round(strength * num_timesteps)) - 1, 0)
    return np.round(np.linspace(t_start, 0, int(num_steps))).astype(np.int32)


def sample(
    apply_fn: ApplyFn,
    params,
    schedule: Schedule,
    noise: FrameNoise,
    *,
    num_steps: int,
    sampler: str = "ddim",
    eta: float = 0.0,
    x_init: jax.Array | None = None,
    strength: float = 1.0,
    clip_x0: float | None = 1.0,
) -> jax.Array:
    """Runs a DDIM or DDPM sampler with ``lax.scan`` over its steps; deterministic given ``noise``.

    Args:
      apply_fn: the denoiser ``apply_fn(params, x, t)`` (see :data:`ApplyFn`).
      params: its parameters (any pytree).
      schedule: the :class:`~irwarp.samplers.schedules.Schedule` it was trained with; its
        ``prediction`` says what ``apply_fn`` returns.
      noise: ``initial`` ``(B, H, W, C)`` and, for stochastic samplers, ``steps``
        ``(S, B, H, W, C)`` with ``S = num_steps`` (deterministic DDIM accepts any ``S``).
      num_steps: ``S >= 1`` denoising steps (model evaluations).
      sampler: ``"ddim"`` or ``"ddpm"`` (ancestral, posterior variance).
      eta: DDIM stochasticity, ``0`` (deterministic) to ``1`` (DDPM's law); ignored by ``"ddpm"``.
      x_init: ``(B, H, W, C)`` input image in ``[-1, 1]`` for SDEdit, or ``None``.
      strength: SDEdit strength in ``(0, 1]``: the fraction of the diffusion the input is noised
        to. Must be 1 when ``x_init`` is ``None``.
      clip_x0: clip the clean-image estimate to ``[-clip_x0, clip_x0]`` at every step (and
        recompute the noise estimate from it), or ``None`` for no clipping. The default 1.0 is
        the range of image data (``[-1, 1]``); the output then lies in ``[-clip_x0, clip_x0]``
        (the last step returns the clipped estimate). Turn it off only for data that is not
        bounded so: unclipped, the estimate ``(x - sqrt(1 - ab) eps) / sqrt(ab)`` at the first
        steps (``ab`` near 0) multiplies the denoiser's error by up to ``1 / sqrt(ab)``; with the
        shipped denoiser (``irwarp.samplers.unet.load_denoiser``) 20 DDPM or DDIM steps then give
        pixels up to about +-7000 (mean ``|x|`` about 800), against ``[-1, 1]`` clipped.

    Returns:
      ``(B, H, W, C)`` float32 sample.

    Raises:
      ValueError: on an unknown sampler, a strength outside ``(0, 1]`` (or below 1 without
        ``x_init``), noise or input of the wrong shape, or missing per-step noise.

    References:
      Song et al. 2021 (DDIM), eq. 12; Ho et al. 2020 (DDPM), eqs. 6-7; Meng et al. 2022 (SDEdit).
    """
    eta = _check_sampler(sampler, eta)
    strength = _check_strength(strength)
    if not isinstance(noise, FrameNoise):
        raise ValueError(f"noise must be a FrameNoise; got {type(noise).__name__}")
    x_T = jnp.asarray(noise.initial, jnp.float32)
    if x_T.ndim != 4:
        raise ValueError(f"noise.initial must have shape (B, H, W, C); got {x_T.shape}")
    if noise.steps.shape[1:] != x_T.shape:
        raise ValueError(f"noise.steps must have shape (S,) + {x_T.shape}; got {noise.steps.shape}")
    stochastic = sampler == "ddpm" or eta > 0.0
    if stochastic and noise.steps.shape[0] != num_steps:
        raise ValueError(
            f"sampler {sampler!r} with eta={eta} needs num_steps={num_steps} per-step noise fields "
            f"(noise.steps of shape {(num_steps,) + x_T.shape}); got {noise.steps.shape}"
        )
    if clip_x0 is not None and not float(clip_x0) > 0:
        raise ValueError(f"clip_x0 must be None or > 0; got {clip_x0}")
    taus = timesteps(schedule.num_timesteps, num_steps, strength)
    ab_all = jnp.asarray(schedule.alphas_cumprod, jnp.float32)
    ab = ab_all[taus]
    ab_prev = jnp.concatenate([ab_all[taus[1:]], jnp.ones((1,), jnp.float32)])
    if x_init is None:
        if strength != 1.0:
            raise ValueError(f"strength < 1 (SDEdit) needs x_init; got strength={strength}")
        x = x_T
    else:
        x_init = jnp.asarray(x_init, jnp.float32)
        if x_init.shape != x_T.shape:
            raise ValueError(
                f"x_init must have the noise's shape {x_T.shape} (B, H, W, C); got {x_init.shape}"
            )
        x = jnp.sqrt(ab[0]) * x_init + jnp.sqrt(1.0 - ab[0]) * x_T
    batch = x.shape[0]
    prediction = schedule.prediction

    def body(x, inputs):
        if stochastic:
            tau, a, a_prev, z = inputs
        else:
            (tau, a, a_prev), z = inputs, None
        out = apply_fn(params, x, jnp.full((batch,), tau, jnp.int32))
        if out.shape != x.shape:
            raise ValueError(f"apply_fn must return the shape of x {x.shape}; got {out.shape}")
        eps, x0 = to_eps_x0(out, x, a, prediction)
        if clip_x0 is not None:
            x0 = jnp.clip(x0, -clip_x0, clip_x0)
            eps = (x - jnp.sqrt(a) * x0) / jnp.sqrt(1.0 - a)
        if sampler == "ddim":
            var = eta**2 * (1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev)
            dir_coef = jnp.sqrt(jnp.maximum(1.0 - a_prev - var, 0.0))
            x_new = jnp.sqrt(a_prev) * x0 + dir_coef * eps
        else:
            alpha = a / a_prev
            x_new = (
                jnp.sqrt(a_prev) * (1.0 - alpha) / (1.0 - a) * x0
                + jnp.sqrt(alpha) * (1.0 - a_prev) / (1.0 - a) * x
            )
            var = (1.0 - a_prev) / (1.0 - a) * (1.0 - alpha)
        if stochastic:
            x_new = x_new + jnp.sqrt(jnp.maximum(var, 0.0)) * z
        return x_new.astype(jnp.float32), None

    xs = (jnp.asarray(taus), ab, ab_prev)
    if stochastic:
        xs = xs + (jnp.asarray(noise.steps, jnp.float32),)
    x, _ = jax.lax.scan(body, x, xs)
    return x
