"""Noise for latent models: temporal compression modes and warping at high resolution.

Run (about 10 minutes on 2 busy CPU cores, mostly XLA compilation of the 30 warp paths):

    python -m experiments.latent_noise --config=configs/latent_noise.py --workdir=/tmp/latent_noise

Tiny variant for the smoke test (about 40 s on 2 CPU cores, nearly all compilation):

    python -m experiments.latent_noise --config=configs/latent_noise.py:small --workdir=/tmp/ln_small

Override any field, e.g. ``--config.temporal.factors="(2, 4, 8)"``. Tuples (not lists) are used so
that such overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the latent-noise config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Replace the run already in the workdir if its config differs (otherwise such a run is
    # refused; experiments.lib.workdir). A rerun of the same config replaces its files anyway.
    config.overwrite = False
    # Seed of every noise draw and warp.
    config.seed = 0

    # Part A: temporal compression of warped noise videos.
    config.temporal = ml_collections.ConfigDict()
    # Frame size (H, W), channels C and independent videos B (pooled as samples).
    config.temporal.size = (64, 64)
    config.temporal.channels = 4
    config.temporal.batch = 4
    # Frames T of each video (a multiple of every factor).
    config.temporal.frames = 16
    # Warping method of the videos (any irwarp.warp method; "splat" uses forward flows).
    config.temporal.method = "grid"
    # Constant translations of the content, in pixels per frame, along x.
    config.temporal.speeds = (0.25, 0.5, 1.0)
    # A rotation of the content by this many degrees per frame about the centre (0 = none).
    config.temporal.rotation_deg = 1.0
    # Temporal compression factors k.
    config.temporal.factors = (2, 4)
    # Pixels this close to the border are left out of the temporal correlations.
    config.temporal.margin = 4

    # Part B: resolution consistency (warp at k times the resolution, then downsample).
    config.resolution = ml_collections.ConfigDict()
    # Coarse (latent) frame size (H, W), channels C and noise samples B.
    config.resolution.size = (32, 32)
    config.resolution.channels = 4
    config.resolution.batch = 8
    # Upsampling factors k of the high-resolution path.
    config.resolution.factors = (2, 4)
    # Factor of the reference (the high-resolution grid path at this k approximates the exact
    # infinite-resolution areas).
    config.resolution.reference_factor = 8
    # Methods compared (each warps at both resolutions).
    config.resolution.methods = ("grid", "particle")
    # Test flows at the coarse resolution: rotation (degrees), zoom factor, vortex strength
    # (degrees), shear-wave amplitude (coarse pixels) and a camera fly-through over a terrain
    # (True/False).
    config.resolution.rotation_deg = 7.0
    config.resolution.zoom = 1.15
    config.resolution.vortex = 40.0
    config.resolution.shear_amplitude = 1.0
    config.resolution.camera = True
    # Coarse pixels this close to the border are left out of the comparisons.
    config.resolution.margin = 3
    # Timing: repetitions (median) of each path.
    config.resolution.repeats = 3

    if arg == "small":
        config.temporal.size = (16, 16)
        config.temporal.channels = 2
        config.temporal.batch = 2
        config.temporal.frames = 4
        config.temporal.speeds = (0.5,)
        config.temporal.rotation_deg = 0.0
        config.temporal.factors = (2,)
        config.temporal.margin = 2
        config.resolution.size = (12, 12)
        config.resolution.channels = 2
        config.resolution.batch = 2
        config.resolution.factors = (2,)
        config.resolution.reference_factor = 4
        config.resolution.methods = ("particle",)
        config.resolution.zoom = 0.0
        config.resolution.vortex = 0.0
        config.resolution.shear_amplitude = 0.0
        config.resolution.camera = False
        config.resolution.margin = 2
        config.resolution.repeats = 1
    elif arg:
        raise ValueError(f"unknown latent_noise config variant {arg!r}; known: 'small'")
    return config
