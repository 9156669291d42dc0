"""Diffusion noise schedules and the conversions between eps-, v- and x0-prediction.

A schedule is the table ``alpha_bar_t`` (``alphas_cumprod``) for integer timesteps
``t = 0 .. T - 1`` and the prediction type of the model that uses it. The forward process is
``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps`` with ``eps ~ N(0, I)``.

References:
  Ho, Jain, Abbeel. Denoising Diffusion Probabilistic Models. NeurIPS 2020 (linear schedule).
  Nichol, Dhariwal. Improved Denoising Diffusion Probabilistic Models. ICML 2021 (cosine schedule).
  Salimans, Ho. Progressive Distillation for Fast Sampling of Diffusion Models. ICLR 2022
  (v-prediction).
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "PREDICTIONS",
    "Schedule",
    "cosine_schedule",
    "linear_schedule",
    "model_target",
    "q_sample",
    "to_eps_x0",
]

PREDICTIONS: tuple[str, ...] = ("eps", "v", "x0")
"""What a denoiser may predict: the noise, the velocity ``v``, or the clean image."""


@flax.struct.dataclass
class Schedule:
    """The cumulative signal level ``alpha_bar_t`` of every timestep and the model's prediction type.

    Attributes:
      alphas_cumprod: ``(T,)`` float32 ``alpha_bar_t = prod_{s <= t} (1 - beta_s)``, decreasing in
        ``t``, all in ``(0, 1)``.
      prediction: static; ``"eps"`` (the model predicts the noise), ``"v"``
        (``v = sqrt(ab) eps - sqrt(1 - ab) x_0``) or ``"x0"`` (the clean image).
    """

    alphas_cumprod: jax.Array
    prediction: str = flax.struct.field(pytree_node=False, default="eps")

    @property
    def num_timesteps(self) -> int:
        """``T``, the number of timesteps."""
        return int(self.alphas_cumprod.shape[0])


def _check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}; got {prediction!r}")
    return prediction


def _check_timesteps(num_timesteps) -> int:
    if not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 2:
        raise ValueError(f"num_timesteps must be an integer >= 2; got {num_timesteps!r}")
    return int(num_timesteps)


def linear_schedule(
    num_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    prediction: str = "eps",
) -> Schedule:
    """The linear-beta schedule of DDPM: ``beta_t`` evenly spaced, ``ab_t = prod_{s<=t} (1 - beta_s)``.

    Args:
      num_timesteps: ``T >= 2``.
      beta_start: ``beta_0`` in ``(0, 1)``.
      beta_end: ``beta_{T-1}`` in ``[beta_start, 1)``.
      prediction: ``"eps"``, ``"v"`` or ``"x0"``.

    Returns:
      A :class:`Schedule` with ``(T,)`` ``alphas_cumprod``.

    Raises:
      ValueError: on betas outside ``(0, 1)``, ``beta_end < beta_start``, ``T < 2`` or an unknown
        prediction type.

    References:
      Ho et al. 2020, section 4.
    """
    n = _check_timesteps(num_timesteps)
    if not (0.0 < beta_start <= beta_end < 1.0):
        raise ValueError(
            f"expected 0 < beta_start <= beta_end < 1; got beta_start={beta_start}, "
            f"beta_end={beta_end}"
        )
    betas = np.linspace(beta_start, beta_end, n, dtype=np.float64)
    ab = np.cumprod(1.0 - betas)
    return Schedule(jnp.asarray(ab, jnp.float32), _check_prediction(prediction))


def cosine_schedule(
    num_timesteps: int = 1000, s: float = 0.008, prediction: str = "eps"
) -> Schedule:
    """The cosine schedule: ``ab(u) = f(u) / f(0)``, ``f(u) = cos((u + s) / (1 + s) pi / 2)^2``.

    Timestep ``t`` is ``u = (t + 1) / T``; ``beta_t = 1 - ab_t / ab_{t-1}`` is clipped to
    ``<= 0.999`` as in the paper, so ``ab_{T-1} > 0``.

    Args:
      num_timesteps: ``T >= 2``.
      s: small offset ``>= 0`` that keeps ``beta_0`` from vanishing.
      prediction: ``"eps"``, ``"v"`` or ``"x0"``.

    Returns:
      A :class:`Schedule` with ``(T,)`` ``alphas_cumprod``.

    References:
      Nichol, Dhariwal 2021, equation 17.
    """
    n = _check_timesteps(num_timesteps)
    if not (s >= 0.0 and math.isfinite(s)):
        raise ValueError(f"s must be a finite number >= 0; got {s}")
    u = np.arange(n + 1, dtype=np.float64) / n
    f = np.cos((u + s) / (1.0 + s) * np.pi / 2.0) ** 2
    ab = f / f[0]
    betas = np.clip(1.0 - ab[1:] / ab[:-1], 0.0, 0.999)
    ab = np.cumprod(1.0 - betas)
    return Schedule(jnp.asarray(ab, jnp.float32), _check_prediction(prediction))


def _bcast(ab: jax.Array, x: jax.Array) -> jax.Array:
    """``ab`` of shape ``()`` or ``(B,)`` broadcast against ``x`` ``(B, ...)``."""
    ab = jnp.asarray(ab, jnp.float32)
    return ab.reshape(ab.shape + (1,) * (x.ndim - ab.ndim))


def to_eps_x0(
    output: jax.Array, x_t: jax.Array, alpha_bar: jax.Array, prediction: str
) -> tuple[jax.Array, jax.Array]:
    """The noise and clean-image estimates implied by a model output.

    ``eps``: ``x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)``; ``x0``:
    ``eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)``; ``v``: ``x0 = sqrt(ab) x_t - sqrt(1 - ab) v``,
    ``eps = sqrt(1 - ab) x_t + sqrt(ab) v``.

    Args:
      output: ``(B, H, W, C)`` model output.
      x_t: ``(B, H, W, C)`` the noisy input.
      alpha_bar: ``()`` or ``(B,)`` ``alpha_bar_t`` of the input.
      prediction: ``"eps"``, ``"v"`` or ``"x0"``.

    Returns:
      ``(eps, x0)``, each ``(B, H, W, C)`` float32.

    References:
      Salimans, Ho 2022, appendix D (v-parameterisation).
    """
    _check_prediction(prediction)
    out = jnp.asarray(output, jnp.float32)
    x = jnp.asarray(x_t, jnp.float32)
    ab = _bcast(alpha_bar, x)
    a, b = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
    if prediction == "eps":
        return out, (x - b * out) / a
    if prediction == "x0":
        return (x - a * out) / b, out
    return b * x + a * out, a * x - b * out


def model_target(
    x0: jax.Array, noise: jax.Array, alpha_bar: jax.Array, prediction: str
) -> jax.Array:
    """What a model of the given prediction type should output for ``x_t = q_sample(x0, noise)``.

    ``eps``: ``noise``; ``x0``: ``x0``; ``v``: ``sqrt(ab) noise - sqrt(1 - ab) x0``.

    Args:
      x0: ``(B, H, W, C)`` clean images.
      noise: ``(B, H, W, C)`` the N(0, 1) noise.
      alpha_bar: ``()`` or ``(B,)``.
      prediction: ``"eps"``, ``"v"`` or ``"x0"``.

    Returns:
      ``(B, H, W, C)`` float32 regression target.
    """
    _check_prediction(prediction)
    x0 = jnp.asarray(x0, jnp.float32)
    noise = jnp.asarray(noise, jnp.float32)
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    ab = _bcast(alpha_bar, x0)
    return jnp.sqrt(ab) * noise - jnp.sqrt(1.0 - ab) * x0


def q_sample(x0: jax.Array, noise: jax.Array, t: jax.Array, schedule: Schedule) -> jax.Array:
    """The forward process: ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise``.

    Args:
      x0: ``(B, H, W, C)`` clean images (scaled to ``[-1, 1]``).
      noise: ``(B, H, W, C)`` N(0, 1) noise.
      t: ``()`` or ``(B,)`` int timesteps in ``[0, T)``.
      schedule: the :class:`Schedule`.

    Returns:
      ``(B, H, W, C)`` float32 noisy images.

    Raises:
      ValueError: if ``x0`` and ``noise`` differ in shape.

    References:
      Ho et al. 2020, equation 4.
    """
    x0 = jnp.asarray(x0, jnp.float32)
    noise = jnp.asarray(noise, jnp.float32)
    if x0.shape != noise.shape:
        raise ValueError(f"x0 and noise must have the same shape; got {x0.shape} and {noise.shape}")
    ab = _bcast(schedule.alphas_cumprod[jnp.asarray(t, jnp.int32)], x0)
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise
