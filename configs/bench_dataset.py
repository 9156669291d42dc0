"""Throughput of the ``irwarp dataset`` command: one process, two jax.distributed processes, two
local devices; wall time, report.json's videos/s and frames/s, and bit-identical noise.

Run (about 7 minutes on a loaded 2-core CPU: 3 untimed warm-up runs, then 3 x 3 timed runs of 8
videos of 49 frames at 480x720; writes results.md and metrics.jsonl, and caches the test clip and
the warm compilation cache in the workdir):

    python -m experiments.bench_dataset --config=configs/bench_dataset.py --workdir=/tmp/bench_ds

Tiny variant for the smoke test (about 20-40 s on 2 CPU cores: 2 videos of 9 frames at 64x96,
preset sd, the one-process and two-device modes, no warm-up):

    python -m experiments.bench_dataset --config=configs/bench_dataset.py:small --workdir=/tmp/bds

Tuples, not lists, so that ``--config.modes="('single', 'devices')"`` overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the bench_dataset config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Packaged clip the test clip is made from (irwarp.video.default_clip; 132 frames 720x1280),
    # with experiments.bench_cli.make_clips: resized once to `size` (area interpolation), its
    # first `clip_frames` frames, libx264 at constant rate factor `crf`.
    config.clip = "bigbuckbunny.mp4"
    config.size = (480, 720)
    config.clip_frames = 100
    config.crf = 18
    # Videos in the manifest: the clip listed this many times under the ids v0, v1, ... (JSONL),
    # each with its own "frames" setting (cogvideox keeps 1 + 4k video frames: 49 -> 13 latent).
    config.videos = 8
    config.frames = 49
    # Command flags: latent preset, warp method, frames per compiled step. Every run also passes
    # --latent-only --quiet and the warm --cache-dir.
    config.preset = "cogvideox"
    config.method = "grid"
    config.chunk = 16
    # Modes, each run in fresh processes: "single" (one process, one device), "processes"
    # (`processes` processes on 127.0.0.1 with jax.distributed, one device each), "devices" (one
    # process with XLA_FLAGS=--xla_force_host_platform_device_count=`devices`: batches of that
    # many videos, sharded). The first mode is the reference of the bit-identity check.
    config.modes = ("single", "processes", "devices")
    config.processes = 2
    config.devices = 2
    # Timed runs per mode (interleaved mode by mode, so load drift spreads over all; the tables
    # give medians).
    config.repeats = 3
    # One untimed run per mode first, to fill the compilation cache (off: only for the smoke test).
    config.warm_up = True
    # Seconds after which a run's processes are killed (and the benchmark fails).
    config.timeout_s = 600.0
    # Replace another run in the workdir (experiments.lib.workdir's one-run rule).
    config.overwrite = False

    if arg == "small":
        config.size = (64, 96)
        config.clip_frames = 9
        config.videos = 2
        config.frames = 9
        config.preset = "sd"
        config.chunk = 4
        config.modes = ("single", "devices")
        config.repeats = 1
        config.warm_up = False
        config.timeout_s = 120.0
    elif arg:
        raise ValueError(f"unknown bench_dataset config variant {arg!r}; known: 'small'")
    return config
