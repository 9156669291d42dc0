"""Claim 5, temporal coherence: constant sub-pixel motions and a slow rotation over 30 frames.

Run (about 4 minutes on 2 busy CPU cores; the lagrangian and chang16@0 sequences and the cost
table dominate):

    python -m experiments.coherence --config=configs/coherence.py --workdir=/tmp/paper/coherence

Tiny variant for the smoke test (about 40 s on 2 CPU cores, nearly all compilation):

    python -m experiments.coherence --config=configs/coherence.py:small --workdir=/tmp/co_small

Override any field, e.g. ``--config.frames=60``, ``--config.speeds="(0.25, 0.5)"`` or
``--config.methods="('grid', 'particle')"``. Tuples (not lists) are used so that such overrides
parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the coherence config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Replace the run already in the workdir if its config differs (otherwise such a run is
    # refused; experiments.lib.workdir). A rerun of the same config replaces its files anyway.
    config.overwrite = False
    # Seed of the noise and of the warps.
    config.seed = 0
    # Frame size (H, W), channels C and independent noise images B (pooled as samples).
    config.size = (64, 64)
    config.channels = 4
    config.batch = 4
    # Frames T warped after frame 0.
    config.frames = 30
    # Constant translations of the content, in pixels per frame.
    config.speeds = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    # Direction of the translations in degrees (0 = to the right, 90 = up on screen).
    config.direction_deg = 0.0
    # A smooth rotation of the content by this many degrees per frame about the centre
    # (0 = no rotation motion).
    config.rotation_deg = 1.0
    # Methods: "splat" (irwarp.warp_sequence with the exact forward flows), "chang<N>", any
    # irwarp.warp method name, "lagrangian" (the virtual Brownian sheet at leaf level `depth`) or
    # "lagrangian<L>", and "chang<N>@0" (Chang et al. from frame 0 on one fixed N x N upsampled
    # state, along the composed flow: the O(N^2)-memory reference for "lagrangian").
    config.methods = (
        "grid",
        "particle",
        "splat",
        "chang4",
        "bilinear",
        "nearest",
        "lagrangian",
        "chang16@0",
    )
    # Leaf level L of "lagrangian" (leaves of 2^-L px, Chang et al.'s N = 2^L).
    config.depth = 4
    # Frontier budget of "lagrangian": split nodes per pixel per level in units of 2^l + 1.
    config.capacity = 4.0
    # Keyframe period of "lagrangian" (0 = one sheet for the whole sequence).
    config.keyframe_every = 0
    # Pixels whose exact pre-image comes closer than this to the border of frame 0 are left out.
    config.margin = 2
    # Frames shown in the summary tables (the last frame is always shown).
    config.report_frames = (1, 2, 10)
    # Cost table (one frame, on the noise batch): leaf levels of "lagrangian" and upsampling
    # factors of Chang et al. from frame 0, both along the composed flow of `cost_frame` frames of
    # motion number `cost_motion` (-1 = the last, the rotation); chained methods timed for one
    # step; median of `cost_repeats` calls, each alternated with a chained grid step (the ratios
    # to it are paired). Empty `cost_depths` skips the table.
    config.cost_depths = (2, 3, 4, 5)
    config.cost_upsamples = (4, 8, 16)
    config.cost_chained = ("grid", "particle")
    config.cost_motion = -1
    config.cost_frame = 10
    config.cost_repeats = 9

    if arg == "small":
        config.size = (16, 16)
        config.channels = 2
        config.batch = 2
        config.frames = 4
        config.speeds = (0.25, 0.5)
        config.rotation_deg = 2.0
        config.methods = ("grid", "particle", "bilinear", "lagrangian")
        config.depth = 2
        config.margin = 1
        config.report_frames = (1, 2)
        config.cost_depths = (2,)
        config.cost_upsamples = ()
        config.cost_chained = ("grid",)
        config.cost_frame = 2
        config.cost_repeats = 1
    elif arg:
        raise ValueError(f"unknown coherence config variant {arg!r}; known: 'small'")
    return config
