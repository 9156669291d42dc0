"""Claim 2, convergence: Chang et al. at upsampling N = 1 .. 32 against the grid variant.

Run (about 2.5 to 3 minutes on 2 CPU cores, most of it in the Monte Carlo at N = 16 and 32):

    python -m experiments.convergence --config=configs/convergence.py --workdir=/tmp/paper/convergence

Tiny variant for the smoke test (about 25 s on 2 CPU cores, nearly all compilation):

    python -m experiments.convergence --config=configs/convergence.py:small --workdir=/tmp/c_small

Override any field, e.g. ``--config.samples=4096`` (a lower Monte-Carlo floor) or
``--config.upsample="(1, 2, 4, 8)"``. Tuples (not lists) are used so that such overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the convergence config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Replace the run already in the workdir if its config differs (otherwise such a run is
    # refused; experiments.lib.workdir). A rerun of the same config replaces its files anyway.
    config.overwrite = False
    # Seed of the noise and of the warps.
    config.seed = 0
    # Frame size (H, W) of the covariance measurement (the zoo flows are built at this size).
    config.size = (32, 32)
    # irwarp.flows.zoo flows: affine ("rotation" 10 degrees, "zoom_in" 1.3) and smooth non-affine
    # ("vortex", "shear_waves").
    config.flows = ("rotation", "zoom_in", "vortex", "shear_waves")
    # Upsampling factors N of Chang et al.
    config.upsample = (1, 2, 4, 8, 16, 32)
    # Monte-Carlo noise samples R per flow and method (rounded up to a multiple of chunk).
    config.samples = 1024
    # Samples warped per call (as channels of one (H, W, chunk) array); also the channels of the
    # exact probe (>= 9). Memory of Chang et al. grows as H W chunk N^2.
    config.chunk = 64
    # Timing: one (H, W, C) frame along the zoo rotation of that size.
    config.timing_size = (128, 128)
    config.timing_channels = 4
    # Timed calls after the first (compiling) one; the median is reported.
    config.repeats = 3
    # Smallest N used to fit the time slope (small N are dominated by fixed costs).
    config.time_fit_min_n = 4

    if arg == "small":
        config.size = (12, 12)
        config.flows = ("rotation", "vortex")
        config.upsample = (1, 2, 4)
        config.samples = 64
        config.chunk = 32
        # Same shape as the covariance runs, so the compiled warps are reused.
        config.timing_size = (12, 12)
        config.timing_channels = 32
        config.repeats = 1
        config.time_fit_min_n = 1
    elif arg:
        raise ValueError(f"unknown convergence config variant {arg!r}; known: 'small'")
    return config
