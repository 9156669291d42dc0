"""Benchmark: frames per second of optical-flow estimation and of warping, on a real clip.

    python -m experiments.bench_video --config=configs/bench_video.py --workdir=DIR

For each frame size, the clip's frames are read and resized once (not timed). Then:

- flow, one direction: ``flow_estimator(method)(frame_{t+1}, frame_t)`` (the backward flow) on
  every consecutive pair, after one warm-up pair; frames per second = pairs / seconds.
- flow, both directions + occlusion: backward and forward flow and the forward-backward
  consistency mask (``irwarp.video.masked_backward_flow``), what ``warp_video`` does per frame.
- warp: ``irwarp.pipeline.warp_chunk`` on ``chunk_size`` frames of ``C``-channel noise along the
  clip's masked DIS flows; compiled first (compile time reported separately), then ``warmup``
  untimed and ``repeats`` timed calls, each ending in ``block_until_ready``; frames per second
  = chunk_size / median seconds.

Writes ``config.json``, ``bench_video.jsonl`` (one line per measurement) and ``bench_video.md``
(the table under a header naming the hardware and the command) into the workdir, and prints the
table.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from experiments.lib import launch, measure, tables
from experiments.lib import workdir as workdir_lib
from irwarp import pipeline, video

# imageio starts ffmpeg with fork + exec, which is safe; Python warns about any fork under JAX.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


def _size_str(size) -> str:
    return f"{size[0]}x{size[1]}"


def time_flow(
    frames: np.ndarray, method: str, params: dict, *, both: bool, alpha, beta, repeats: int
) -> float:
    """Seconds per frame pair of flow estimation (one direction, or both + occlusion mask):
    the median over ``repeats`` passes over all pairs."""
    est = video.flow_estimator(method, **params)

    def step(a, b):
        bwd = est(b, a)
        if both:
            fwd = est(a, b)
            flow, _ = video.masked_backward_flow(bwd, fwd, alpha, beta)
            np.asarray(flow)

    step(frames[0], frames[1])  # warm-up (and jit of the consistency mask)
    passes = []
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        for a, b in zip(frames[:-1], frames[1:], strict=True):
            step(a, b)
        passes.append((time.perf_counter() - t0) / (len(frames) - 1))
    return statistics.median(passes)


def chunk_flows(frames: np.ndarray, chunk: int, preset: str, alpha, beta) -> np.ndarray:
    """``(chunk, H, W, 2)`` masked DIS backward flows of the clip (repeated if it is short)."""
    est = video.flow_estimator("dis", preset=preset)
    flows = []
    for i in range(chunk):
        a, b = frames[i % (len(frames) - 1)], frames[i % (len(frames) - 1) + 1]
        flow, _ = video.masked_backward_flow(est(b, a), est(a, b), alpha, beta)
        flows.append(np.asarray(flow))
    return np.stack(flows)


def time_warp(key, flows: np.ndarray, method: str, channels: int, warmup: int, repeats: int):
    """``(compile seconds, median seconds per call)`` of ``warp_chunk`` on ``flows``."""
    h, w = flows.shape[1:3]
    prev = pipeline.first_frame(key, (h, w, channels))
    fl = jnp.asarray(flows)
    t0 = time.perf_counter()
    pipeline.warp_chunk(key, prev, fl, 1, method=method).block_until_ready()
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        pipeline.warp_chunk(key, prev, fl, 1, method=method).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipeline.warp_chunk(key, prev, fl, 1, method=method).block_until_ready()
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times)


def run(config, workdir: str, command: str | None = None) -> list[dict]:
    """Runs the benchmark and writes its outputs into ``workdir``; returns the measurements."""
    path = config.video_path or video.default_clip(config.clip)
    info = video.probe(path)
    if config.num_frames < 2:
        raise ValueError(f"num_frames must be >= 2; got {config.num_frames}")
    os.makedirs(workdir, exist_ok=True)
    workdir_lib.write_config(workdir, config)
    hw = measure.hardware()
    load_before = os.getloadavg()[0]
    if command is None:
        command = launch.command_line("bench_video", workdir)
    key = jax.random.key(int(config.seed))
    alpha, beta = float(config.occlusion_alpha), float(config.occlusion_beta)
    rows: list[dict] = []
    with workdir_lib.JsonlWriter(os.path.join(workdir, "bench_video.jsonl")) as out:

        def emit(**row):
            row = dict(row, **{k: hw[k] for k in ("cpu", "usable_cores", "backend", "device_kind")})
            rows.append(row)
            out.write(row)
            logging.info("%s", json.dumps(workdir_lib.jsonable(row)))

        for size in config.sizes:
            size = tuple(int(s) for s in size)
            frames = video.read_frames(
                path, start=int(config.start), count=int(config.num_frames), size=size
            )
            if len(frames) < 2:
                raise ValueError(f"expected >= 2 frames from {path!r}; got {len(frames)}")
            for method in config.flow_methods:
                params = {"preset": config.dis_preset} if method == "dis" else {}
                for both in (False, True):
                    s = time_flow(
                        frames,
                        method,
                        params,
                        both=both,
                        alpha=alpha,
                        beta=beta,
                        repeats=int(config.repeats),
                    )
                    emit(
                        stage="flow",
                        method=method,
                        variant="both directions + occlusion" if both else "one direction",
                        size=list(size),
                        seconds_per_frame=s,
                        fps=1.0 / s,
                        pairs=len(frames) - 1,
                    )
            flows = chunk_flows(frames, int(config.chunk_size), config.dis_preset, alpha, beta)
            for method in config.warp_methods:
                comp, med = time_warp(
                    key,
                    flows,
                    method,
                    int(config.channels),
                    int(config.warmup),
                    int(config.repeats),
                )
                emit(
                    stage="warp",
                    method=method,
                    variant=f"C={config.channels}, {config.chunk_size} frames per call",
                    size=list(size),
                    seconds_per_frame=med / flows.shape[0],
                    fps=flows.shape[0] / med,
                    compile_s=comp,
                )
    load = (load_before, os.getloadavg()[0])
    md = markdown(config, rows, hw, command, path, info, load)
    with open(os.path.join(workdir, "bench_video.md"), "w") as f:
        f.write(md)
    print(md)
    sys.stdout.flush()
    return rows


def markdown(
    config, rows: list[dict], hw: dict, command: str, path: str, info, load=(None, None)
) -> str:
    """The table (one row per stage and method, one column per size) under a header."""
    sizes = [tuple(int(s) for s in size) for size in config.sizes]
    labels = {
        "dis": f"DIS ({config.dis_preset})",
        "farneback": "Farneback",
        "grid": "grid",
        "particle": "particle",
    }
    keys = []
    for r in rows:
        k = (r["stage"], r["method"], r["variant"])
        if k not in keys:
            keys.append(k)
    table_rows = []
    for stage, method, variant in keys:
        cells = [f"{stage}: {variant}", labels.get(method, method)]
        for size in sizes:
            hit = [
                r
                for r in rows
                if (r["stage"], r["method"], r["variant"]) == (stage, method, variant)
                and tuple(r["size"]) == size
            ]
            cells.append(f"{hit[0]['fps']:.1f}" if hit else "-")
        table_rows.append(cells)
    columns = ["stage", "method"] + [f"{_size_str(s)} fps" for s in sizes]
    compile_notes = ", ".join(
        f"{r['method']} {_size_str(r['size'])} {r['compile_s']:.1f} s"
        for r in rows
        if r["stage"] == "warp"
    )
    header = [
        "# irwarp video benchmark: frames per second",
        "",
        f"- Hardware: {hw['cpu']}, {hw['cores']} cores ({hw['usable_cores']} usable); "
        f"{hw['platform']}",
        f"- Software: Python {hw['python']}, jax {hw['jax']} ({hw['backend']}, "
        f"{hw['device_kind']}), OpenCV {_cv2_version()}",
        f"- Command: `{command}`",
        f"- Clip: {os.path.basename(path)} ({info.size[1]}x{info.size[0]}, {info.num_frames} "
        f"frames), frames {config.start}..{config.start + config.num_frames - 1} resized to each "
        "size (H x W) with area interpolation; decoding and resizing are not timed.",
        f"- 1-minute load average {tables.fmt(load[0], 1)} at the start and "
        f"{tables.fmt(load[1], 1)} at the end"
        + (
            f" (above the {hw['usable_cores']} usable cores: other processes shared the CPU, so "
            "the numbers are lower than on an idle machine)."
            if max(v or 0.0 for v in load) > hw["usable_cores"]
            else "."
        ),
        "- Flow: OpenCV on the CPU whatever the JAX backend; per frame pair, median of "
        f"{config.repeats} passes over all pairs after one warm-up pair. 'both directions + "
        "occlusion' is what warp_video does per frame (backward and forward flow, "
        "forward-backward check, NaN for occluded pixels).",
        f"- Warp: irwarp.pipeline.warp_chunk, {config.chunk_size} frames of {config.channels}-"
        "channel noise per jitted call along the clip's masked DIS flows, median of "
        f"{config.repeats} calls after {config.warmup} warm-up; compile time excluded "
        f"({compile_notes}).",
    ]
    return "\n".join(header + ["", tables.markdown_table(columns, table_rows), ""])


def _cv2_version() -> str:
    try:
        import cv2

        return cv2.__version__
    except ImportError:
        return "not installed"


if __name__ == "__main__":
    launch.run_main("bench_video", run)
