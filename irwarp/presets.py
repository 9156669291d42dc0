"""Latent presets: the noise shape a latent video model expects, as data.

A :class:`LatentPreset` says how a model's VAE maps video to latents: latent ``channels``, the
``spatial`` factor (a latent pixel covers ``spatial x spatial`` video pixels), the ``temporal``
factor, and whether the layout is causal (latent frame 0 encodes video frame 0 alone and each
further latent frame the next ``temporal`` video frames, so ``T`` video frames give
``(T - 1) // temporal + 1`` latent frames; ``1 + temporal m`` frames are used whole). The noise of
latent frame ``j`` is the warped noise of video frame ``temporal j`` under the default temporal
mode ``"subsample"`` (see :func:`irwarp.resample.temporal_compress`).

``warp_scale`` is the default resolution the noise is warped at before the exact integral
downsampling to latent resolution (``irwarp.resample.downsample``): the latent's times
``warp_scale`` (1: at the latent resolution; ``spatial``: at the video's). The measured trade-off
behind each default is in ``docs/results.md`` ("Warp resolution for latent presets").

Sources (VAE factors and layouts) are in ``docs/presets.md``.
"""

from __future__ import annotations

import dataclasses

__all__ = ["LatentPreset", "PRESETS", "get_preset", "preset_names"]


@dataclasses.dataclass(frozen=True)
class LatentPreset:
    """How a latent video model's VAE maps video frames to latent noise.

    Attributes:
      name: the preset's name (``--preset``).
      channels: latent channels ``C`` (None: given by the user, preset ``none``).
      spatial: spatial factor ``f``: latent ``(H / f, W / f)`` for video ``(H, W)``.
      temporal: temporal factor ``k`` (1: one latent frame per video frame).
      causal: latent frame 0 is video frame 0 alone, then groups of ``k`` (``1 + k m`` layout).
      warp_scale: default warp resolution, in multiples of the latent resolution (divides ``f``).
      pipeline: the PyTorch pipeline the preset is for, and the layout its ``latents`` take.
      source: where the factors come from (paper).
    """

    name: str
    channels: int | None
    spatial: int
    temporal: int
    causal: bool
    warp_scale: int
    pipeline: str
    source: str

    def latent_frames(self, num_frames: int) -> int:
        """Number of latent frames for ``num_frames`` video frames (0 if there are none)."""
        t = int(num_frames)
        if t < 1:
            return 0
        if self.temporal == 1:
            return t
        return (t - 1) // self.temporal + 1 if self.causal else t // self.temporal

    def used_frames(self, num_frames: int) -> int:
        """Video frames the latent frames cover: ``1 + k (m - 1)`` causal, ``k m`` otherwise."""
        m = self.latent_frames(num_frames)
        if m == 0 or self.temporal == 1:
            return m
        return 1 + self.temporal * (m - 1) if self.causal else self.temporal * m

    def video_frame(self, latent_frame: int) -> int:
        """The video frame whose noise is latent frame ``j`` under ``"subsample"``: ``k j``."""
        return self.temporal * int(latent_frame)

    def min_frames(self) -> int:
        """Fewest video frames for two latent frames (one latent step of motion)."""
        return 1 + self.temporal if self.causal or self.temporal == 1 else 2 * self.temporal

    def latent_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Latent ``(h, w)`` of video ``(H, W)``; raises ValueError unless ``f`` divides both."""
        h, w = (int(s) for s in size)
        f = self.spatial
        if h % f or w % f or h < f or w < f:
            fix = (max(f, h // f * f), max(f, w // f * f))
            raise ValueError(
                f"preset {self.name!r} needs a video size (H, W) divisible by its spatial factor "
                f"{f}; got {(h, w)}; pass --size {fix[0]}x{fix[1]}"
            )
        return h // f, w // f


_CAUSAL_VAE = "video VAE, causal: frame 0 alone, then groups of 4"
PRESETS: dict[str, LatentPreset] = {
    p.name: p
    for p in (
        LatentPreset(
            "cogvideox",
            16,
            8,
            4,
            True,
            2,
            "diffusers CogVideoXPipeline, latents (B, T, C, H, W)",
            f"Yang et al. 2024, CogVideoX (arXiv:2408.06072): {_CAUSAL_VAE}",
        ),
        LatentPreset(
            "wan",
            16,
            8,
            4,
            True,
            2,
            "diffusers WanPipeline, latents (B, C, T, H, W)",
            f"Wan team 2025, Wan 2.1 (arXiv:2503.20314): {_CAUSAL_VAE}",
        ),
        LatentPreset(
            "hunyuan",
            16,
            8,
            4,
            True,
            2,
            "diffusers HunyuanVideoPipeline, latents (B, C, T, H, W)",
            f"Kong et al. 2024, HunyuanVideo (arXiv:2412.03603): {_CAUSAL_VAE}",
        ),
        LatentPreset(
            "ltx",
            128,
            32,
            8,
            True,
            4,
            "diffusers LTXPipeline, latents (B, C, T, H, W) packed to (B, T H W, C)",
            "HaCohen et al. 2024, LTX-Video (arXiv:2501.00103): 32 x 32 x 8 causal video VAE",
        ),
        LatentPreset(
            "sd",
            4,
            8,
            1,
            False,
            2,
            "diffusers StableDiffusionPipeline, latents (B, C, H, W) per frame",
            "Rombach et al. 2022, latent diffusion (arXiv:2112.10752): image VAE f = 8, 4 channels",
        ),
        LatentPreset(
            "animatediff",
            4,
            8,
            1,
            False,
            2,
            "diffusers AnimateDiffPipeline, latents (B, C, T, H, W)",
            "Guo et al. 2023, AnimateDiff (arXiv:2307.04725): Stable Diffusion's VAE per frame",
        ),
        LatentPreset(
            "none",
            None,
            1,
            1,
            False,
            1,
            "any: the noise at the video's resolution, --channels channels",
            "no VAE: one noise pixel per video pixel",
        ),
    )
}


def preset_names() -> tuple[str, ...]:
    """The names of the presets, in the order of :data:`PRESETS`."""
    return tuple(PRESETS)


def get_preset(name: str) -> LatentPreset:
    """The preset called ``name``; raises ValueError naming the known presets otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
