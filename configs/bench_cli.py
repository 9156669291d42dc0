"""End-to-end benchmark of the ``irwarp warp`` command: wall time, stage shares, peak memory.

Run (about 9 minutes on a loaded 2-core CPU, a quarter of it the 1000-frame runs; writes results.md,
metrics.jsonl and bench_cli.png, and caches the test clips and the warm compilation cache in the
workdir):

    python -m experiments.bench_cli --config=configs/bench_cli.py --workdir=/tmp/bench_cli

Tiny variant for the smoke test (about 45-60 s on 2 CPU cores: a 12-frame 64x96 clip, preset
sd, 8 fresh processes):

    python -m experiments.bench_cli --config=configs/bench_cli.py:small --workdir=/tmp/bcs

Tuples, not lists, so that ``--config.methods="('grid',)"`` overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the bench_cli config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Packaged clip the test clips are made from (irwarp.video.default_clip; 132 frames 720x1280).
    config.clip = "bigbuckbunny.mp4"
    # Size (H, W) of the test clips and of --size (the clip is resized once, area interpolation).
    config.size = (480, 720)
    # Frames of the long test clip (the source played forwards then backwards until this many)
    # and of the short one (its first frames).
    config.long_frames = 1000
    config.short_frames = 100
    # libx264 constant rate factor of the test clips (imageio-ffmpeg).
    config.crf = 18
    # Latent preset (--preset); cogvideox: 16 channels, 8x spatial, 4x temporal (480x720 -> 60x90).
    config.preset = "cogvideox"
    # Warp methods timed end to end (--method).
    config.methods = ("grid", "particle")
    # Method of the memory runs and of the output ablations (default / --latent-only / --no-stats).
    config.memory_method = "grid"
    # Video frames of the CogVideoX-shaped run (--frames on the long clip; 49 -> 13 latent frames).
    config.cog_frames = 49
    # Frames per compiled step (--chunk; the command's default is 16).
    config.chunk = 16
    # Fresh-subprocess repeats of the short-clip and CogVideoX-shaped runs (the table gives the
    # median), and of the long-clip runs.
    config.repeats = 3
    config.long_repeats = 1
    # Untimed warm-up runs fill the compilation cache first (off: the first run of each compiled
    # variant compiles; only for the smoke test).
    config.warm_up = True
    # Also run each method once with a fresh (cold) compilation cache.
    config.cold = True
    # Also run the short clip with --no-stats (the stats' share of the compiled step).
    config.stats_ablation = True
    # Seconds between RSS samples of the child process tree (psutil); 0: none (wait4 peak only).
    config.sample_s = 0.1
    # jax.random.normal of the latent shape (H/8, W/8, C), timed in the bench process itself:
    # untimed warm-up calls, then timed calls (median).
    config.normal_warmup = 5
    config.normal_repeats = 50
    # Seconds after which one subprocess is killed (and the run fails).
    config.timeout_s = 900.0
    # Replace another run in the workdir (experiments.lib.workdir's one-run rule).
    config.overwrite = False

    if arg == "small":
        config.size = (64, 96)
        config.long_frames = 12
        config.short_frames = 6
        config.preset = "sd"
        config.methods = ("grid",)
        config.cog_frames = 9
        config.chunk = 4
        config.repeats = 1
        config.cold = False
        config.warm_up = False
        config.stats_ablation = False
        config.normal_repeats = 5
        config.timeout_s = 120.0
    elif arg:
        raise ValueError(f"unknown bench_cli config variant {arg!r}; known: 'small'")
    return config
