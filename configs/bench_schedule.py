"""CPU cost of the plain (deterministic, non-CPU) schedule against the CPU schedule.

Run (about 12 minutes on a 2-core CPU shared with other jobs, load ~10; most of it compiling
(170 s) and running (14 s a call) the plain grid path):

    python -m experiments.bench_schedule --config=configs/bench_schedule.py --workdir=/tmp/bsched

Tiny variant for a smoke run (under a minute):

    python -m experiments.bench_schedule --config=configs/bench_schedule.py:small --workdir=DIR
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; ``arg="small"`` gives the smoke variant."""
    config = ml_collections.ConfigDict()
    # Methods of irwarp.warp to time, each under both schedules of irwarp._schedule.
    config.methods = ("grid", "particle")
    # Noise shape (B, H, W, C): one flow (H, W, 2) shared by the B examples.
    config.shape = (4, 512, 512, 4)
    # Backward flow: a rotation about the image centre (degrees) plus a fractional shift (pixels).
    config.angle_deg = 2.0
    config.shift = (0.3, -0.2)
    # Untimed calls after compilation, then timed calls (the median is reported).
    config.warmup = 2
    config.repeats = 7
    config.seed = 0
    if arg == "small":
        config.shape = (1, 64, 64, 4)
        config.repeats = 3
    return config
