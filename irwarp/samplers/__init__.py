"""Flax diffusion samplers (DDIM, DDPM, SDEdit) driven by warped noise.

Compose irwarp into any sampler: a denoiser ``apply_fn(params, x, t)``, a
:class:`Schedule`, and a noise provider that hands each frame its initial and per-step noise
(fresh, fixed, warped along the optical flow with any :func:`irwarp.warp` method, or integrated
from the keyframe's virtual Brownian sheet along the composed flow: ``lagrangian``).

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212).
"""

# The small UNet denoiser and its checkpoint loader (irwarp/samplers/unet.py).
from irwarp.samplers import unet  # noqa: E402
from irwarp.samplers.providers import (
    PROVIDERS,
    FixedProvider,
    FrameNoise,
    FreshProvider,
    LagrangianProvider,
    SheetState,
    WarpedProvider,
    make_provider,
    register_provider,
)
from irwarp.samplers.sampling import SAMPLERS, is_stochastic, sample, timesteps
from irwarp.samplers.schedules import (
    PREDICTIONS,
    Schedule,
    cosine_schedule,
    linear_schedule,
    model_target,
    q_sample,
    to_eps_x0,
)
from irwarp.samplers.unet import UNet, load_denoiser  # noqa: E402
from irwarp.samplers.video import sample_video, sample_video_chunk

__all__ = [
    "PREDICTIONS",
    "PROVIDERS",
    "SAMPLERS",
    "FixedProvider",
    "FrameNoise",
    "FreshProvider",
    "LagrangianProvider",
    "Schedule",
    "SheetState",
    "UNet",
    "WarpedProvider",
    "cosine_schedule",
    "is_stochastic",
    "linear_schedule",
    "load_denoiser",
    "make_provider",
    "model_target",
    "q_sample",
    "register_provider",
    "sample",
    "sample_video",
    "sample_video_chunk",
    "timesteps",
    "to_eps_x0",
    "unet",
]
