"""Claim 3, cost: time and memory per frame of grid, particle, splat and Chang et al. N = 4, 8, 16.

Run (2 to 5 minutes on 2 CPU cores, depending on the load, most of it in Chang et al. at N = 16
and at 1024^2; each cell runs in a fresh process for its own peak memory):

    python -m experiments.cost --config=configs/cost.py --workdir=/tmp/paper/cost

Tiny variant for the smoke test (about 15 s on 2 CPU cores):

    python -m experiments.cost --config=configs/cost.py:small --workdir=/tmp/cost_small

Override any field, e.g. ``--config.max_temp_gb=20`` (to run Chang et al. N = 16 at 1024^2 on a
machine with the memory), ``--config.sizes="(256, 512)"`` or ``--config.isolate=False``. Tuples (not
lists) are used so that such overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the cost config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Replace the run already in the workdir if its config differs (otherwise such a run is
    # refused; experiments.lib.workdir). A rerun of the same config replaces its files anyway.
    config.overwrite = False
    # Seed of the noise and of the warps.
    config.seed = 0
    # Methods: "splat" is irwarp.warp_forward, "chang<N>" is irwarp.warp(method="chang",
    # upsample=N), others irwarp.warp(method=name). Names starting with "chang" are the baseline
    # of the speed-up table, the others the methods compared against it.
    config.methods = ("grid", "particle", "splat", "chang4", "chang8", "chang16")
    # Resolutions S of the S x S frames.
    config.sizes = (256, 512, 1024)
    # Channels C of the frame (a latent of a video diffusion model has 4).
    config.channels = 4
    # Per-frame motion: rotation about the centre by this many degrees (irwarp.flows.rotation);
    # splat gets irwarp.flows.forward_from_backward of it.
    config.rotation_deg = 2.0
    # Timed calls per cell after the first call; the median is reported.
    config.repeats = 5
    # A cell whose first call takes longer than this (seconds) reports that call only; otherwise
    # the timed calls are cut to fit in it.
    config.time_budget_s = 30.0
    # A cell whose compiled executable needs more XLA temporary memory than this (GB) is not run.
    config.max_temp_gb = 8.0
    # (method, S) cells not even compiled; the table says "skipped".
    config.skip = ()
    # Run every cell in a fresh process, so that its peak memory is its own.
    config.isolate = True

    if arg == "small":
        config.methods = ("particle", "chang2")
        config.sizes = (32,)
        config.channels = 2
        config.repeats = 2
        config.time_budget_s = 10.0
    elif arg:
        raise ValueError(f"unknown cost config variant {arg!r}; known: 'small'")
    return config
