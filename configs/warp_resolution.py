"""Warp resolution for latent noise: warp at latent x s, downsample to the latent, against s = 8.

Run (about 4.5 minutes on 2 shared CPU cores, a third of it XLA compilation and DIS flow):

    python -m experiments.warp_resolution --config=configs/warp_resolution.py \
        --workdir=/tmp/warp_resolution

Tiny variant for the smoke test (particle only; about 40 s on 2 loaded CPU cores, mostly compilation):

    python -m experiments.warp_resolution --config=configs/warp_resolution.py:small \
        --workdir=/tmp/warp_resolution_small

Override any field, e.g. ``--config.methods="('grid',)"``, ``--config.clip=bigbuckbunny.mp4`` or
``--config.preset_latent="(60, 90)"``. Tuples (not lists) are used so that such overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the warp-resolution config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Replace the run already in the workdir if its config differs (otherwise such a run is
    # refused; experiments.lib.workdir). A rerun of the same config replaces its files anyway.
    config.overwrite = False
    # Seed of frame 0 (drawn at the video resolution) and of the streams' keys.
    config.seed = 0
    # Video size (H, W); the latent is (H, W) / factor.
    config.video_size = (240, 320)
    # Spatial factor of the latent model (8: CogVideoX, Wan, HunyuanVideo, SD; 32: LTX-Video).
    config.factor = 8
    # Noise channels C (CogVideoX's latent has 16).
    config.channels = 16
    # Warp scales s: the noise is warped at latent x s and downsampled by s. Each divides
    # `factor`; s = factor (the video resolution) is the reference.
    config.scales = (1, 2, 4, 8)
    # Methods (irwarp.noise_stream names).
    config.methods = ("grid", "particle")
    # Warped frames T after frame 0 (the clip needs T + 1 frames from clip_start).
    config.frames = 48
    # Frames t at which the table reports the correlation with the reference (each <= frames).
    config.eval_frames = (1, 4, 16, 48)
    # Flows: "clip" (DIS optical flow of the clip below, occlusion-masked) and/or "rotzoom" (a
    # constant per-frame rotation by rotzoom_deg plus zoom by rotzoom_factor about the centre).
    config.flows = ("clip", "rotzoom")
    # The real clip (irwarp.video.default_clip name), its first frame and frame stride.
    config.clip = "bikes.mp4"
    config.clip_start = 0
    config.clip_stride = 1
    # Optical flow (irwarp.video.flow_estimator) and the forward-backward occlusion tolerances
    # (irwarp.video.masked_backward_flow: relative alpha, absolute beta in pixels).
    config.flow_method = "dis"
    config.occlusion_alpha = 0.01
    config.occlusion_beta = 0.5
    # Synthetic flow: degrees of rotation and zoom factor per frame (> 1 zooms in).
    config.rotzoom_deg = 1.0
    config.rotzoom_factor = 1.01
    # Also run the reference scale with another stream key: the correlation between two
    # reference runs is the ceiling that no scale can beat (the fresh sub-pixel noise differs).
    config.reference_repeat = True
    # Timed scans per cell after one warm-up call; the median is reported.
    config.repeats = 3
    # Speed at a preset's latent (H, W) (CogVideoX: 480x720 video -> 60x90); () skips it.
    config.preset_latent = (60, 90)
    # Frames per timed scan at the preset shape, and its per-frame rotation in degrees.
    config.preset_frames = 4
    config.preset_rotation_deg = 1.0
    # A preset scale whose predicted time (the previous scale's times s^2 ratio) exceeds this many
    # seconds per frame is not run: the table gives the extrapolation and says so.
    config.preset_max_s_per_frame = 3.0

    if arg == "small":
        config.video_size = (64, 96)
        config.methods = ("particle",)  # grid compiles 5x longer; the law is the same
        config.frames = 4
        config.eval_frames = (1, 4)
        config.repeats = 1
        config.preset_latent = (8, 12)
        config.preset_frames = 4
    elif arg:
        raise ValueError(f"unknown warp_resolution config variant {arg!r}; known: 'small'")
    return config
