"""Claim 5, temporal coherence: constant sub-pixel motions and a slow rotation over 30 frames.

Run (about 30 s on 2 CPU cores):

    python -m experiments.coherence --config=configs/coherence.py --workdir=/tmp/paper/coherence

Tiny variant for the smoke test (about 25 s on 2 CPU cores, nearly all compilation):

    python -m experiments.coherence --config=configs/coherence.py:small --workdir=/tmp/co_small

Override any field, e.g. ``--config.frames=60``, ``--config.speeds="(0.25, 0.5)"`` or
``--config.methods="('grid', 'particle')"``. Tuples (not lists) are used so that such overrides
parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the coherence config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
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
    # Methods: "splat" (irwarp.warp_sequence with the exact forward flows), "chang<N>", or any
    # irwarp.warp method name.
    config.methods = ("grid", "particle", "splat", "chang4", "bilinear", "nearest")
    # Pixels whose exact pre-image comes closer than this to the border of frame 0 are left out.
    config.margin = 2
    # Frames shown in the summary tables (the last frame is always shown).
    config.report_frames = (1, 2, 10)

    if arg == "small":
        config.size = (16, 16)
        config.channels = 2
        config.batch = 2
        config.frames = 4
        config.speeds = (0.25, 0.5)
        config.rotation_deg = 2.0
        config.methods = ("grid", "particle", "bilinear")
        config.margin = 1
        config.report_frames = (1, 2)
    elif arg:
        raise ValueError(f"unknown coherence config variant {arg!r}; known: 'small'")
    return config
