"""Demo ("main job"): warp noise along a synthetic swirling flow with every method and compare.

Run (30 s to 1 minute on 2 CPU cores, depending on their load; about 10 s of it compiles
the eight warp sequences):

    python -m experiments.demo --config=configs/demo.py --workdir=/tmp/demo

Tiny variant for the smoke test (about 15 s on 2 CPU cores):

    python -m experiments.demo --config=configs/demo.py:small --workdir=/tmp/demo_small

Writes config.json, metrics.jsonl, summary.md and strip.png into the workdir (see
experiments/demo.py). Override any field on the command line, e.g. ``--config.num_frames=32``,
``--config.flow.components="('zoom',)"`` or ``--config.method_options.chang.upsample=8``. Tuples
(not lists) are used so that such overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the demo config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Seed of the initial noise and of the warps (the flow is deterministic).
    config.seed = 0
    # Noise frame size H x W and number of channels C (like a latent of a video diffusion model).
    config.height = 128
    config.width = 128
    config.channels = 4
    # Number of frames T, frame 0 included: T - 1 warps along the same per-frame flow.
    config.num_frames = 16

    # The per-frame backward flow: the motions in `components` are applied to the content one
    # after the other within each frame step (irwarp.flows.compose chains their backward flows).
    config.flow = ml_collections.ConfigDict()
    # Any of "vortex", "rotation", "translation", "zoom", "shear_waves", in the order applied.
    config.flow.components = ("vortex", "rotation", "translation")
    # Vortex: content at the centre turns this many degrees counter-clockwise per frame, fading
    # with distance as a Gaussian (irwarp.flows.vortex).
    config.flow.vortex_strength = 12.0
    # Vortex fall-off radius as a fraction of min(H, W).
    config.flow.vortex_radius = 0.25
    # Rotation of the whole frame about its centre, degrees counter-clockwise per frame.
    config.flow.rotation_deg = 2.0
    # Backward-flow translation (dx, dy) in pixels per frame: the content moves by (-dx, -dy),
    # so new (disoccluded, fresh-noise) content enters at the right and bottom borders.
    config.flow.translation = (0.37, 0.21)
    # Zoom factor per frame (> 1 zooms in) of the "zoom" component.
    config.flow.zoom = 1.02
    # Peak displacement (pixels) and wavelength (fraction of min(H, W)) of "shear_waves".
    config.flow.shear_amplitude = 1.0
    config.flow.shear_wavelength = 0.25
    # Fixed-point iterations of irwarp.flows.forward_from_backward, which gives "splat" the
    # forward flow of the same motion.
    config.flow.splat_iterations = 20

    # Methods, one table row and one strip row each. "splat" is irwarp.warp_sequence(method="splat")
    # with the forward flow; any other name is an irwarp.warp method.
    config.methods = (
        "grid",
        "particle",
        "splat",
        "chang",
        "bilinear",
        "nearest",
        "fixed",
        "fresh",
    )
    # Keyword options passed to irwarp.warp_sequence for a method (methods not listed get none).
    config.method_options = ml_collections.ConfigDict()
    # Chang et al.'s baseline with 4 x 4 sub-pixels per pixel.
    config.method_options.chang = ml_collections.ConfigDict({"upsample": 4})

    # Statistics (irwarp.stats), per warped frame t = 1 .. T-1.
    config.stats = ml_collections.ConfigDict()
    # Standard errors allowed by each irwarp.stats.whiteness_checks check.
    config.stats.num_se = 5.0
    # Smallest KS p-value accepted by the whiteness checks.
    config.stats.ks_alpha = 1e-3
    # How irwarp.stats.temporal_correlation resamples the previous frame: "bilinear" or "nearest".
    config.stats.temporal_mode = "bilinear"

    # Timing of the whole jitted sequence (compile time is reported separately).
    config.timing = ml_collections.ConfigDict()
    # Untimed calls after compilation.
    config.timing.warmup = 1
    # Timed calls; the table reports their median divided by the T - 1 warped frames.
    config.timing.repeats = 3

    # strip.png: a flow row (a test pattern carried along the flow) above one row per method.
    config.plot = ml_collections.ConfigDict()
    # Frames shown, one column each (every entry must be < num_frames).
    config.plot.frames = (0, 4, 8, 12, 15)
    # Noise channel shown, in grayscale.
    config.plot.channel = 0
    # Noise values are clipped to [-clip, clip] (black to white).
    config.plot.clip = 3.0
    # Width of one image cell of the strip in screen pixels (128 shows a 128-wide frame 1:1; use
    # an integer multiple of the width to avoid moire), and the PNG resolution (scales the text).
    config.plot.cell_pixels = 128
    config.plot.dpi = 100
    # Side of the checkerboard squares of the test pattern, as a fraction of min(H, W).
    config.plot.checker = 0.125
    # Arrows (content motion per frame, magnified) drawn over the first flow-row cell, per side.
    config.plot.arrows = 8

    if arg == "small":
        config.height = 32
        config.width = 32
        config.num_frames = 4
        # grid, particle and splat must pass the whiteness checks; bilinear must fail on variance.
        config.methods = ("grid", "particle", "splat", "bilinear")
        config.timing.repeats = 1
        config.plot.frames = (0, 1, 3)
        config.plot.arrows = 6
        config.plot.cell_pixels = 96  # 3 screen pixels per noise pixel
    elif arg:
        raise ValueError(f"unknown demo config variant {arg!r}; known: 'small'")
    return config
