"""Benchmark: the ``irwarp warp`` command end to end, as a user runs it, one fresh process a run.

    python -m experiments.bench_cli --config=configs/bench_cli.py --workdir=DIR

Test clips (made once, cached in ``DIR/clips``): the packaged Big Buck Bunny clip (132 frames,
720x1280) resized to ``config.size`` and played forwards then backwards (ping-pong) until
``long_frames`` frames, written with imageio-ffmpeg (libx264); its first ``short_frames`` frames
are the short clip.

Every measurement is one subprocess ``python -m irwarp.cli warp CLIP --out OUT --preset P
--size HxW --method M --quiet [--latent-only | --no-stats] [--frames N] --cache-dir CACHE``, with
this checkout first on ``PYTHONPATH``. For each run:

- wall time of the subprocess (Python start, imports, the run, the commit), and the engine's
  ``meta.json`` timings (``total_s``, the compile of the first frame, the first chunk with the
  compile of the chunk step, the warp, and the stage sums: decode, flow, occlusion in the
  producer thread; write, preview in the main thread);
- peak RSS of the ``irwarp`` process from ``os.wait4`` (one child per measurement, so maxima do
  not mix) and, sampled every ``sample_s`` with psutil, the peak of the process tree's summed RSS
  (with the ffmpeg decoder and preview encoder) and the RSS over time.

Runs: warm-up runs fill ``DIR/cache`` (the persistent compilation cache; one per compiled
variant, untimed); then, with that warm cache, the short clip ``repeats`` times per method
(default outputs), with ``--latent-only`` and with ``--no-stats`` (the stats' share of the step);
the long clip ``long_repeats`` times (default and ``--latent-only``, and each method); the
CogVideoX-shaped run (``cog_frames`` of the long clip) ``repeats`` times with default outputs and
with ``--latent-only``; and, with a fresh cache, each method once (``cold``: compile time).
Steady-state frames/s is measured two ways: the marginal rate between the long and the short
clip (difference of frames over difference of wall times), and within a run, the frames after
the first chunk over the time after it. ``jax.random.normal`` of the latent shape is timed in
this process (median of ``normal_repeats`` calls) before and after the runs.

Writes ``config.json``, ``metrics.jsonl`` (one line per run with its RSS samples, and the
reference timings), ``results.md`` (the tables under a header naming the hardware, the load
average and the command) and ``bench_cli.png`` (ms per frame by stage, and RSS over the run) into
the workdir.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import jax
import numpy as np
from absl import logging

from experiments.lib import launch, measure, tables
from experiments.lib import workdir as workdir_lib
from irwarp import presets, video

# imageio starts ffmpeg with fork + exec, which is safe; Python warns about any fork under JAX.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "bench_cli"
OUTPUTS = {
    "default": (),
    "latent-only": ("--latent-only",),
    "no-stats": ("--no-stats",),
}
OUTPUT_LABELS = {
    "default": "default (noise + noise_frames + stats + preview)",
    "latent-only": "--latent-only (noise.npy + meta.json)",
    "no-stats": "--no-stats (noise + noise_frames + preview)",
}
# Stages of meta.json's timings: the producer thread's, then the main thread's.
STAGES = ("decode", "flow", "occlusion", "warp", "stats", "write", "preview")
RUN_COLUMNS = (
    "run",
    "clip frames",
    "method",
    "outputs",
    "cache",
    "repeats",
    "wall s",
    "frames/s (wall)",
    "engine total s",
    "compile + first chunk s",
    "steady frames/s",
    "peak RSS MB",
    "peak tree RSS MB",
    "load avg",
)


def _size_str(size) -> str:
    return f"{size[0]}x{size[1]}"


# ----------------------------------------------------------------------------- clips


def make_clips(config, folder: str) -> dict[str, str]:
    """The long and short test clips (cached in ``folder``); returns ``{"long": path, ...}``."""
    import cv2
    import imageio

    h, w = (int(v) for v in config.size)
    n_long, n_short = int(config.long_frames), int(config.short_frames)
    tag = f"{os.path.splitext(config.clip)[0]}_{h}x{w}_crf{int(config.crf)}"
    paths = {
        "long": os.path.join(folder, f"{tag}_{n_long}f.mp4"),
        "short": os.path.join(folder, f"{tag}_{n_short}f.mp4"),
    }
    wanted = {"long": n_long, "short": n_short}
    if all(os.path.exists(p) and video.probe(p).num_frames == wanted[k] for k, p in paths.items()):
        return paths
    os.makedirs(folder, exist_ok=True)
    src = video.default_clip(config.clip)
    fps = video.probe(src).fps or 25.0
    frames = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in video.iter_frames(src)]
    if len(frames) < 2:
        raise ValueError(f"expected at least 2 frames from {src!r}; got {len(frames)}")
    # Ping-pong: 0 1 ... n-1 n-2 ... 1 0 1 ... (no frame repeated at the turns).
    cycle = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    order = [cycle[i % len(cycle)] for i in range(max(n_long, n_short))]
    for what, count in wanted.items():
        fd, tmp = tempfile.mkstemp(prefix=".clip-", suffix=".mp4", dir=folder)
        os.close(fd)
        writer = imageio.get_writer(
            tmp,
            format="FFMPEG",
            fps=fps,
            codec="libx264",
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-crf", str(int(config.crf)), "-pix_fmt", "yuv420p"],
        )
        try:
            for i in order[:count]:
                writer.append_data(frames[i])
        finally:
            writer.close()
        os.chmod(tmp, 0o644)
        os.replace(tmp, paths[what])
    for what, p in paths.items():
        got = video.probe(p).num_frames
        if got != wanted[what]:
            raise ValueError(f"{p!r}: expected {wanted[what]} frames; wrote {got}")
    return paths


# ----------------------------------------------------------------------------- one run


class _Sampler:
    """Summed RSS of a process and its descendants, sampled every ``period`` s in a thread."""

    def __init__(self, pid: int, period: float):
        self.samples: list[tuple[float, float, float]] = []  # (t, self MB, tree MB)
        self._stop = threading.Event()
        self._period = period
        self._pid = pid
        self._t0 = time.perf_counter()
        self._thread = None
        if period > 0:
            self._thread = threading.Thread(target=self._work, daemon=True)
            self._thread.start()

    def _work(self):
        try:  # psutil comes with the test extra (ipykernel); without it only wait4's peak is kept
            import psutil
        except ImportError:
            return
        try:
            proc = psutil.Process(self._pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                own = proc.memory_info().rss
                tree = own
                for c in proc.children(recursive=True):
                    try:
                        tree += c.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            self.samples.append((time.perf_counter() - self._t0, own / 2**20, tree / 2**20))
            self._stop.wait(self._period)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def peak_tree_mb(self) -> float | None:
        return max((s[2] for s in self.samples), default=None)


def cli_command(config, clip: str, out: str, method: str, outputs: str, cache: str, frames: int):
    """The argv of one ``irwarp warp`` run."""
    cmd = [sys.executable, "-m", "irwarp.cli", "warp", clip, "--out", out]
    cmd += ["--preset", config.preset, "--size", _size_str(config.size), "--method", method]
    cmd += ["--chunk", str(int(config.chunk)), "--cache-dir", cache, "--quiet", "--overwrite"]
    cmd += list(OUTPUTS[outputs])
    if frames:
        cmd += ["--frames", str(int(frames))]
    return cmd


def run_once(cmd: list[str], out: str, sample_s: float, timeout_s: float) -> dict:
    """Runs ``cmd`` in a fresh process; wall time, ``meta.json`` timings and peak memory.

    Raises:
      RuntimeError: if the command fails or runs past ``timeout_s`` (its output is in the message).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if os.path.isdir(out):
        shutil.rmtree(out)
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        sampler = _Sampler(proc.pid, sample_s)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        finally:
            timer.cancel()
            sampler.stop()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read()
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited with {proc.returncode} after {wall:.1f} s:\n{text[-4000:]}"
        )
    with open(os.path.join(out, "meta.json")) as f:
        meta = json.load(f)
    sizes = {n: os.path.getsize(os.path.join(out, n)) for n in sorted(os.listdir(out))}
    shutil.rmtree(out)
    return {
        "wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024.0,  # KiB on Linux
        "peak_tree_rss_mb": sampler.peak_tree_mb,
        "rss_samples": sampler.samples,
        "load_1min": load,
        "num_frames": int(meta["video"]["num_frames"]),
        "latent_frames": int(meta["latent_frames"]),
        "latent_shape": [*meta["latent_size"], int(meta["preset"]["channels"])],
        "timings": meta["timings"],
        "file_bytes": sizes,
    }


def derived(r: dict, chunk: int = 16) -> dict:
    """Per-run numbers from the timings: frames/s, steady-state frames/s, ms per frame by stage."""
    t, n = r["timings"], r["num_frames"]
    first = t["compile_first_s"] + (t["first_chunk_s"] or 0.0)
    after = n - 1 - min(chunk, n - 1)
    rest = t["total_s"] - first
    stage_ms = {k: 1e3 * t.get(f"{k}_s", 0.0) / n for k in STAGES if k != "stats"}
    return {
        "fps_wall": n / r["wall_s"],
        "fps_total": n / t["total_s"],
        "first_s": first,
        "steady_fps": after / rest if after > 0 and rest > 0 else None,
        "warp_ms_per_frame": 1e3 * t["warp_s"] / after if after > 0 else None,
        "startup_s": r["wall_s"] - t["total_s"],
        "stage_ms": stage_ms,
    }


def time_normal(shape, warmup: int, repeats: int) -> float:
    """Median seconds of a jitted ``jax.random.normal`` of ``shape`` in this process."""
    fn = jax.jit(lambda k: jax.random.normal(k, shape))
    return measure.median_seconds(fn, jax.random.key(0), warmup=warmup, repeats=repeats)


# ----------------------------------------------------------------------------- the runs


def schedule(config) -> list[dict]:
    """Every subprocess run, in order: warm-ups, warm measurements, then cold ones."""
    mm = config.memory_method
    methods = list(config.methods)
    jobs = []
    warm_variants = [(m, "default") for m in methods] + [(mm, "latent-only")]
    for m, o in warm_variants if config.warm_up else ():  # one per compiled variant, untimed
        jobs.append(dict(role="warm-up", clip="short", method=m, outputs=o, cache="warm"))
    short = [(m, "default") for m in methods] + [(mm, "latent-only")]
    if config.stats_ablation:
        short.append((mm, "no-stats"))
    for _ in range(int(config.repeats)):  # repeats interleaved, so load drift spreads over all
        for m, o in short:
            jobs.append(dict(role="short", clip="short", method=m, outputs=o, cache="warm"))
        for o in ("default", "latent-only"):
            jobs.append(
                dict(role="cogvideox", clip="long", method=mm, outputs=o, cache="warm",
                     frames=int(config.cog_frames))
            )  # fmt: skip
    for _ in range(int(config.long_repeats)):
        for m, o in [(mm, "default"), (mm, "latent-only")] + [
            (m, "default") for m in methods if m != mm
        ]:
            jobs.append(dict(role="long", clip="long", method=m, outputs=o, cache="warm"))
    if config.cold:
        for m in methods:
            jobs.append(dict(role="cold", clip="short", method=m, outputs="default", cache="cold"))
    return jobs


def run(config, workdir: str, command: str | None = None) -> list[dict]:
    """Runs the benchmark and writes its outputs into ``workdir``; returns the per-run rows."""
    if command is None:
        command = launch.command_line(NAME, workdir)
    hw = measure.hardware()
    preset = presets.get_preset(config.preset)
    latent = (*preset.latent_size(tuple(config.size)), int(preset.channels or 4))
    with workdir_lib.Workdir(workdir, config, name=NAME) as wd:
        clips = make_clips(config, os.path.join(workdir, "clips"))
        warm_cache = os.path.join(workdir, "cache")
        scratch = tempfile.mkdtemp(prefix=".scratch-", dir=workdir)
        normal_s = [time_normal(latent, config.normal_warmup, config.normal_repeats)]
        rows: list[dict] = []
        load_start = os.getloadavg()
        try:
            for i, job in enumerate(schedule(config)):
                cache = warm_cache
                if job["cache"] == "cold":
                    cache = tempfile.mkdtemp(prefix=".cold-cache-", dir=scratch)
                cmd = cli_command(
                    config,
                    clips[job["clip"]],
                    os.path.join(scratch, "out"),
                    job["method"],
                    job["outputs"],
                    cache,
                    job.get("frames", 0),
                )
                r = run_once(cmd, os.path.join(scratch, "out"), config.sample_s, config.timeout_s)
                if job["cache"] == "cold":
                    shutil.rmtree(cache)
                r.update(job, index=i, command=" ".join(cmd[1:]), frames=job.get("frames", 0))
                r.update(derived(r, int(config.chunk)))
                rows.append(r)
                step = max(1, len(r["rss_samples"]) // 400)  # at most ~400 samples a run
                wd.metric(dict(r, rss_samples=r["rss_samples"][::step]))
                logging.info(
                    "%s %s %s %s: %.1f s wall, %d frames, %.0f MB",
                    job["role"],
                    job["method"],
                    job["outputs"],
                    job["cache"],
                    r["wall_s"],
                    r["num_frames"],
                    r["peak_rss_mb"],
                )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        normal_s.append(time_normal(latent, config.normal_warmup, config.normal_repeats))
        load_end = os.getloadavg()
        ref = {
            "role": "reference",
            "what": f"jax.random.normal{latent}",
            "seconds_before": normal_s[0],
            "seconds_after": normal_s[1],
            "seconds": statistics.median(normal_s),
        }
        wd.metric(ref)
        md = markdown(config, rows, ref, hw, command, clips, (load_start, load_end), latent)
        wd.write_summary(md, "results.md")
        try:
            plot(rows, wd.file("bench_cli.png"))
        except ImportError:
            logging.warning("matplotlib is missing: no bench_cli.png")
    print(md)
    sys.stdout.flush()
    return rows


# ----------------------------------------------------------------------------- tables


def _group(rows, **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def _med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(rows: list[dict]) -> list[dict]:
    """One row per measured configuration (warm-ups left out): medians over its repeats."""
    keys = []
    for r in rows:
        if r["role"] == "warm-up":
            continue
        k = (r["role"], r["method"], r["outputs"], r["cache"])
        if k not in keys:
            keys.append(k)
    out = []
    for role, method, outputs, cache in keys:
        g = _group(rows, role=role, method=method, outputs=outputs, cache=cache)
        med = {
            k: _med([r[k] for r in g])
            for k in (
                "wall_s",
                "fps_wall",
                "first_s",
                "steady_fps",
                "warp_ms_per_frame",
                "peak_rss_mb",
                "peak_tree_rss_mb",
                "load_1min",
                "startup_s",
            )
        }
        med["total_s"] = _med([r["timings"]["total_s"] for r in g])
        med["stage_ms"] = {s: _med([r["stage_ms"].get(s) for r in g]) for s in g[0]["stage_ms"]}
        med["timing_ms"] = {
            k: _med([1e3 * r["timings"][k] for r in g])
            for k in ("compile_first_s", "first_chunk_s")
        }
        out.append(
            dict(
                role=role,
                method=method,
                outputs=outputs,
                cache=cache,
                repeats=len(g),
                num_frames=g[0]["num_frames"],
                latent_frames=g[0]["latent_frames"],
                latent_shape=g[0]["latent_shape"],
                **med,
            )
        )
    return out


def _find(summary, **match):
    hit = _group(summary, **match)
    return hit[0] if hit else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def _stats_ms(summary, method):
    """The stats' cost per frame: warp ms/frame with stats minus without (short clip, medians)."""
    on = _find(summary, role="short", method=method, outputs="default", cache="warm")
    off = _find(summary, role="short", method=method, outputs="no-stats", cache="warm")
    if on is None or off is None or on["warp_ms_per_frame"] is None:
        return None
    return on["warp_ms_per_frame"] - off["warp_ms_per_frame"]


def header_lines(command: str, hw: dict, load, loads) -> list[str]:
    """The command, hardware and load lines a bench's results.md starts with.

    ``load`` is ``(os.getloadavg() at the start, at the end)``, ``loads`` the 1-minute load at
    the start of each run.
    """
    return [
        f"- Command: `{command}`",
        f"- Hardware: {measure.hardware_line()}; {hw['cores']} cores in the machine",
        f"- Load average (1 / 5 / 15 min): {' / '.join(f'{v:.2f}' for v in load[0])} at the start, "
        f"{' / '.join(f'{v:.2f}' for v in load[1])} at the end; 1-minute load at the start of "
        f"the runs: median {_med(loads):.2f}, range {min(loads):.2f}-{max(loads):.2f}"
        + (
            f" (above the {hw['usable_cores']} usable cores: other processes shared the CPU)."
            if max(loads) > hw["usable_cores"]
            else "."
        ),
    ]


def _header(config, rows, hw, command, clips, load, latent) -> list[str]:
    """The header of results.md: command, hardware, load, clips, what each column means."""
    h, w = (int(v) for v in config.size)
    lat = " x ".join(str(v) for v in latent)
    loads = [r["load_1min"] for r in rows]
    return [
        "# irwarp warp end to end",
        "",
        *header_lines(command, hw, load, loads),
        f"- Clips: `{os.path.basename(clips['long'])}` and `{os.path.basename(clips['short'])}`, "
        f"the packaged {config.clip} resized to {h}x{w} and played forwards then backwards, "
        f"libx264 crf {config.crf}.",
        f"- Each run: `python -m irwarp.cli warp CLIP --out OUT --preset {config.preset} --size "
        f"{h}x{w} --method M --chunk {config.chunk} --quiet --cache-dir CACHE [...]` in a fresh "
        f"process ({h}x{w} -> latent {lat}; the frames used are trimmed to the preset's layout). "
        "Medians over the repeats column. "
        "'wall s' is the subprocess from start to exit; 'engine total s' is meta.json's "
        "`total_s` (from the first decoded frame to the last write); 'steady frames/s' is the "
        "frames after the first chunk over the time after it (meta.json timings). 'peak RSS' is "
        "the irwarp process's (`os.wait4`), 'peak tree RSS' the sampled sum with its ffmpeg "
        "decoder and encoder.",
        "",
        "## Runs",
        "",
    ]


def _runs_table(summary) -> list[str]:
    """The runs table: one row per configuration (medians over its repeats)."""
    out: list[str] = []
    body = []
    for s in summary:
        body.append(
            [
                s["role"],
                str(s["num_frames"]),
                s["method"],
                s["outputs"],
                s["cache"],
                str(s["repeats"]),
                tables.fmt(s["wall_s"], 1),
                tables.fmt(s["fps_wall"], 1),
                tables.fmt(s["total_s"], 1),
                tables.fmt(s["first_s"], 1),
                tables.fmt(s["steady_fps"], 1),
                tables.fmt(s["peak_rss_mb"], 0),
                tables.fmt(s["peak_tree_rss_mb"], 0),
                tables.fmt(s["load_1min"], 2),
            ]
        )
    out += [tables.markdown_table(RUN_COLUMNS, body), ""]

    return out


def _memory_table(config, summary) -> list[str]:
    """Peak RSS of the long clip against the short one, same outputs."""
    out: list[str] = []
    mm = config.memory_method
    # Memory: long vs short, the same outputs.
    out += ["## Peak memory: long clip vs short clip", ""]
    mem = []
    for o in ("default", "latent-only"):
        a = _find(summary, role="short", method=mm, outputs=o, cache="warm")
        b = _find(summary, role="long", method=mm, outputs=o, cache="warm")
        if a is None or b is None:
            continue
        ratio = _ratio(b["peak_rss_mb"], a["peak_rss_mb"])
        tree = _ratio(b["peak_tree_rss_mb"], a["peak_tree_rss_mb"])
        mem.append(
            [
                mm,
                OUTPUT_LABELS[o],
                f"{a['num_frames']} / {b['num_frames']}",
                tables.fmt(a["peak_rss_mb"], 0),
                tables.fmt(b["peak_rss_mb"], 0),
                tables.fmt(ratio, 2),
                tables.fmt(tree, 2),
                "yes" if ratio is not None and ratio <= 1.2 else "no",
            ]
        )
    out += [
        tables.markdown_table(
            (
                "method",
                "outputs",
                "frames short / long",
                "short peak RSS MB",
                "long peak RSS MB",
                "long / short",
                "long / short (tree)",
                "within 20 %",
            ),
            mem,
        ),
        "",
    ]

    return out


def _stages_table(summary) -> list[str]:
    """Ms per video frame of each stage, and its share of the engine total."""
    out: list[str] = []
    # Stages: ms per frame (sums of each stage over the run / frames), share of the engine total.
    out += [
        "## Where the time goes (warm cache, medians, ms per video frame)",
        "",
        "decode, flow and occlusion run in the producer thread, overlapped with the main "
        "thread's warp, write and preview, so the shares (of `total_s`) can sum past 100 %. "
        "'warp' is the compiled chunk step after the first chunk (with the stats when they are "
        "on), per frame after it; 'stats' is the warp's extra time with stats against "
        "`--no-stats` (same clip); 'compile + first chunk' is per run, not per frame.",
        "",
    ]
    stage_rows = []
    for s in summary:
        if s["cache"] != "warm" or s["role"] not in ("short", "long"):
            continue
        total_ms = 1e3 * s["total_s"] / s["num_frames"]
        cells = [s["role"], str(s["num_frames"]), s["method"], s["outputs"]]
        for st in STAGES:
            if st == "stats":
                v = _stats_ms(summary, s["method"]) if s["outputs"] == "default" else None
            elif st == "warp":
                v = s["warp_ms_per_frame"]
            else:
                v = s["stage_ms"].get(st)
            share = f" ({100 * v / total_ms:.0f} %)" if v is not None and total_ms else ""
            cells.append(tables.fmt(v, 1) + share if v is not None else "-")
        cells += [tables.fmt(s["first_s"], 2), tables.fmt(total_ms, 1)]
        stage_rows.append(cells)
    out += [
        tables.markdown_table(
            ("run", "frames", "method", "outputs")
            + tuple("warp (+ stats) ms" if st == "warp" else f"{st} ms" for st in STAGES)
            + ("compile + first chunk s", "engine total ms/frame"),
            stage_rows,
        ),
        "",
    ]

    return out


def _speed_table(config, summary, ref, latent) -> list[str]:
    """Frames per second end to end, steady and marginal; warp against random.normal."""
    out: list[str] = []
    h, w = (int(v) for v in config.size)
    lat = " x ".join(str(v) for v in latent)
    # Speed: frames/s end to end, steady state two ways, warp vs random.normal, cold vs warm.
    out += [
        "## Speed (default outputs)",
        "",
        f"`jax.random.normal{tuple(latent)}` jitted in the bench process: "
        f"{1e3 * ref['seconds_before']:.3f} ms before the runs, {1e3 * ref['seconds_after']:.3f} "
        f"ms after (median of {config.normal_repeats} calls each); the ratio uses their median "
        f"{1e3 * ref['seconds']:.3f} ms. 'marginal frames/s' is (frames long - frames short) / "
        "(wall long - wall short): the steady rate with start-up and compile taken out.",
        "",
    ]
    speed = []
    for m in config.methods:
        short = _find(summary, role="short", method=m, outputs="default", cache="warm")
        long = _find(summary, role="long", method=m, outputs="default", cache="warm")
        cold = _find(summary, role="cold", method=m, outputs="default", cache="cold")
        if short is None:
            continue
        marginal = None
        if long is not None and long["wall_s"] > short["wall_s"]:
            marginal = (long["num_frames"] - short["num_frames"]) / (
                long["wall_s"] - short["wall_s"]
            )
        speed.append(
            [
                m,
                f"{h}x{w} -> {lat}",
                tables.fmt(short["fps_wall"], 1),
                tables.fmt(long["fps_wall"], 1) if long else "-",
                tables.fmt(marginal, 1),
                tables.fmt(long["steady_fps"] if long else short["steady_fps"], 1),
                tables.fmt(short["first_s"], 2),
                tables.fmt(cold["first_s"], 2) if cold else "-",
                tables.fmt(cold["wall_s"], 1) if cold else "-",
                tables.fmt(short["wall_s"], 1),
                tables.fmt((long or short)["warp_ms_per_frame"], 2),
                tables.fmt(_ratio((long or short)["warp_ms_per_frame"], 1e3 * ref["seconds"]), 1),
                "yes" if long and long["fps_wall"] >= 10 else "no",
            ]
        )
    out += [
        tables.markdown_table(
            (
                "method",
                "video -> latent",
                f"frames/s, {_find(summary, role='short')['num_frames']} frames",
                "frames/s, long clip",
                "marginal frames/s",
                "steady frames/s (long)",
                "compile + first chunk s, warm",
                "same, cold",
                "wall s cold",
                "wall s warm",
                "warp ms/frame",
                "warp / random.normal",
                ">= 10 frames/s (long)",
            ),
            speed,
        ),
        "",
    ]

    return out


def _cog_table(config, summary, latent) -> list[str]:
    """The CogVideoX-shaped runs (49 frames), default outputs and --latent-only."""
    out: list[str] = []
    mm = config.memory_method
    h, w = (int(v) for v in config.size)
    lat = " x ".join(str(v) for v in latent)
    # CogVideoX-shaped runs.
    out += [f"## A CogVideoX-shaped run: {config.cog_frames} frames at {h}x{w}", ""]
    cog = []
    for o in ("default", "latent-only"):
        s = _find(summary, role="cogvideox", method=mm, outputs=o, cache="warm")
        if s is None:
            continue
        cog.append(
            [
                OUTPUT_LABELS[o],
                f"{s['num_frames']} -> {s['latent_frames']} x {lat}",
                str(s["repeats"]),
                tables.fmt(s["wall_s"], 1),
                tables.fmt(s["total_s"], 1),
                tables.fmt(s["startup_s"], 1),
                tables.fmt(s["wall_s"] / s["num_frames"], 3),
                tables.fmt(s["peak_rss_mb"], 0),
            ]
        )
    out += [
        tables.markdown_table(
            (
                "outputs",
                "frames -> latent",
                "repeats",
                "wall s",
                "engine total s",
                "start-up + exit s",
                "s per frame (wall)",
                "peak RSS MB",
            ),
            cog,
        ),
        "",
    ]
    return out


def markdown(config, rows, ref, hw, command, clips, load, latent) -> str:
    """results.md: the header and the tables (runs, memory, stages, speed, CogVideoX)."""
    summary = summarise(rows)
    out = _header(config, rows, hw, command, clips, load, latent)
    out += _runs_table(summary)
    out += _memory_table(config, summary)
    out += _stages_table(summary)
    out += _speed_table(config, summary, ref, latent)
    out += _cog_table(config, summary, latent)
    return "\n".join(out)


# ----------------------------------------------------------------------------- plot


def plot(rows: list[dict], path: str) -> str:
    """Left: ms per frame by stage (stacked) per warm configuration; right: RSS over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = [s for s in summarise(rows) if s["cache"] == "warm" and s["role"] != "cogvideox"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8))
    labels = [f"{s['method']}\n{s['outputs']}\n{s['num_frames']} fr" for s in summary]
    x = np.arange(len(summary))
    bottom = np.zeros(len(summary))
    for st in ("decode", "flow", "occlusion"):
        v = np.array([s["stage_ms"].get(st) or 0.0 for s in summary])
        ax.bar(x - 0.2, v, 0.38, bottom=bottom, label=f"{st} (producer thread)")
        bottom += v
    bottom = np.zeros(len(summary))
    for st in ("warp", "write", "preview"):
        key = "warp_ms_per_frame"
        v = np.array([(s[key] if st == "warp" else s["stage_ms"].get(st)) or 0.0 for s in summary])
        ax.bar(x + 0.2, v, 0.38, bottom=bottom, label=f"{st} (main thread)", hatch="//")
        bottom += v
    wall = np.array([1e3 * s["wall_s"] / s["num_frames"] for s in summary])
    ax.scatter(x, wall, color="k", marker="_", s=400, zorder=3, label="wall ms/frame")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("ms per video frame")
    ax.set_title("Stages per frame (warm cache, medians)")
    ax.legend(fontsize=7)
    for r in rows:
        if r["role"] in ("short", "long") and r["cache"] == "warm" and r["rss_samples"]:
            t, own, _ = np.array(r["rss_samples"]).T
            bx.plot(
                t / t[-1] * r["num_frames"],
                own,
                label=f"{r['method']} {r['outputs']} {r['num_frames']} fr",
                lw=1,
            )
    bx.set_xlabel("video frames (run time scaled to its frame count)")
    bx.set_ylabel("RSS of the irwarp process, MB")
    bx.set_title("Memory over the run")
    handles, names = bx.get_legend_handles_labels()
    seen = dict(zip(names, handles, strict=True))
    bx.legend(seen.values(), seen.keys(), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    launch.run_main(NAME, run)
