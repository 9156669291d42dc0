"""Benchmark: the ``irwarp dataset`` command, one process against two processes and two devices.

    python -m experiments.bench_dataset --config=configs/bench_dataset.py --workdir=DIR

Test clip (made once, cached in ``DIR/clips``, with :func:`experiments.bench_cli.make_clips`): the
packaged Big Buck Bunny clip resized to ``config.size``, its first ``config.clip_frames`` frames.
The manifest (``DIR/manifest.jsonl``) lists that clip ``config.videos`` times under the ids
``v0, v1, ...``, each line with ``"frames": config.frames``; the keys come from the ids, so every
video has its own noise.

Every run is ``python -m irwarp.cli dataset MANIFEST --out OUT --preset P --method M --chunk C
--latent-only --quiet --cache-dir CACHE`` with this checkout first on ``PYTHONPATH``, in fresh
processes, in one of three modes:

- ``single``: one process, one device;
- ``processes``: ``config.processes`` processes on 127.0.0.1 (``--coordinator 127.0.0.1:PORT
  --num-processes N --process-id I``, jax.distributed), one device each;
- ``devices``: one process with ``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (batches
  of ``D`` videos, sharded over the devices).

For each run: the wall time from launching the first process to the exit of the last; videos/s
and frames/s from it and from ``OUT/report.json`` (the job's own timing); each process's report
(``OUT/.process-<i>.json``, and ``report.json``'s ``per_process`` where there are several); a
check that the work split as the manifest's ``i, i + N, ...`` and that each process's report
counts what ``OUT/status.jsonl`` says it did; and the SHA-256 of every video's ``noise.npy``,
compared with the first run of the first mode (bit-identical noise in every mode). One untimed
warm-up run per mode fills the compilation cache (``DIR/cache``) first.

Writes ``config.json``, ``metrics.jsonl`` (one line per run, with its per-process reports and
hashes) and ``results.md`` (the tables under a header naming the hardware, the load average and
the command) into the workdir.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import warnings

from absl import logging

from experiments import bench_cli
from experiments.lib import launch, measure, tables
from experiments.lib import workdir as workdir_lib
from irwarp import dataset

# The runs start from a process that has imported JAX; they exec at once (no fork hazard).
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "bench_dataset"
MODES = ("single", "processes", "devices")
RUN_COLUMNS = (
    "mode",
    "processes x devices",
    "repeats",
    "wall s",
    "videos/s (wall)",
    "frames/s (wall)",
    "report s",
    "videos/s (report)",
    "frames/s (report)",
    "start-up + exit s",
    "wall speed-up vs first mode",
    "split and per-process report ok",
    "noise bit-identical",
    "load avg",
)
PROCESS_COLUMNS = (
    "mode",
    "process",
    "devices",
    "videos",
    "frames",
    "seconds",
    "videos/s",
    "frames/s",
)
_DEVICE_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S*")


def mode_label(config, mode: str) -> str:
    """The mode as the tables name it."""
    if mode == "single":
        return "(a) one process, one device"
    if mode == "processes":
        return f"(b) {config.processes} processes (jax.distributed, 127.0.0.1)"
    if mode == "devices":
        return f"(c) one process, {config.devices} devices (batches of {config.devices})"
    raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")


def layout(config, mode: str) -> tuple[int, int]:
    """(processes, devices per process) of a mode."""
    if mode == "processes":
        return int(config.processes), 1
    if mode == "devices":
        return 1, int(config.devices)
    mode_label(config, mode)  # raises on an unknown mode
    return 1, 1


# ----------------------------------------------------------------------------- inputs


def make_clip(config, folder: str) -> str:
    """The test clip (cached in ``folder``): bench_cli's clip maker, one length only."""
    n = int(config.clip_frames)
    spec = types.SimpleNamespace(
        clip=config.clip, size=tuple(config.size), crf=config.crf, long_frames=n, short_frames=n
    )
    return bench_cli.make_clips(spec, folder)["short"]


def write_manifest(config, clip: str, path: str) -> list[str]:
    """The JSONL manifest: ``clip`` under ``config.videos`` ids; returns the ids in order."""
    ids = [f"v{i}" for i in range(int(config.videos))]
    with open(path, "w") as f:
        for vid in ids:
            f.write(json.dumps({"path": clip, "id": vid, "frames": int(config.frames)}) + "\n")
    return ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(config, mode: str, manifest: str, out: str, cache: str) -> list[list[str]]:
    """The argv of each process of one run of ``mode``."""
    cmd = [sys.executable, "-m", "irwarp.cli", "dataset", manifest, "--out", out]
    cmd += ["--preset", config.preset, "--method", config.method, "--chunk", str(int(config.chunk))]
    cmd += ["--latent-only", "--quiet", "--cache-dir", cache]
    nproc, _ = layout(config, mode)
    if mode != "processes":
        return [cmd]
    coordinator = f"127.0.0.1:{_free_port()}"
    return [
        cmd + ["--coordinator", coordinator, "--num-processes", str(nproc), "--process-id", str(i)]
        for i in range(nproc)
    ]


def environment(config, mode: str) -> dict:
    """This environment with the checkout first on PYTHONPATH and the mode's device count."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    flags = _DEVICE_FLAG.sub("", env.get("XLA_FLAGS", "")).split()
    _, devices = layout(config, mode)
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    else:
        env.pop("XLA_FLAGS", None)
    return env


# ----------------------------------------------------------------------------- one run


def launch_run(cmds: list[list[str]], env: dict, timeout_s: float) -> dict:
    """Starts every process of a run at once; wall time from the first start to the last exit.

    Raises:
      RuntimeError: if a process fails or the run passes ``timeout_s`` (the outputs are in the
        message).
    """
    load = os.getloadavg()[0]
    logs = [tempfile.TemporaryFile("w+") for _ in cmds]
    try:
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(c, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            for c, log in zip(cmds, logs, strict=True)
        ]

        def kill_all():
            for p in procs:
                p.kill()

        timer = threading.Timer(timeout_s, kill_all)
        timer.start()
        try:
            for p in procs:
                p.wait()
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        texts = []
        for log in logs:
            log.seek(0)
            texts.append(log.read())
    finally:
        for log in logs:
            log.close()
    codes = [p.returncode for p in procs]
    if any(codes):
        detail = "\n".join(
            f"--- process {i} ({' '.join(c[1:])}) exited with {code}:\n{text[-3000:]}"
            for i, (c, code, text) in enumerate(zip(cmds, codes, texts, strict=True))
        )
        raise RuntimeError(f"irwarp dataset run failed after {wall:.1f} s:\n{detail}")
    return {"wall_s": wall, "load_1min": load, "stdout": [t[-2000:] for t in texts]}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_outputs(out: str, ids: list[str], nproc: int, frames_per_video: int) -> dict:
    """report.json, each process's report, the split check and the noise hashes of one run."""
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    per_process = []
    for i in range(nproc):
        with open(os.path.join(out, f".process-{i}.json")) as f:
            per_process.append(json.load(f))
    with open(os.path.join(out, dataset.STATUS)) as f:
        status = [json.loads(line) for line in f if line.strip()]
    problems = []
    if sorted(r["id"] for r in status) != sorted(ids):
        problems.append("status.jsonl does not list every video exactly once")
    if any(r["status"] != "done" for r in status):
        problems.append("a video failed")
    for i, p in enumerate(per_process):
        rows = [r for r in status if r["process"] == i]
        if sorted(r["id"] for r in rows) != sorted(ids[i::nproc]):
            problems.append(f"process {i} did {sorted(r['id'] for r in rows)}, not ids[{i}::N]")
        if p["process"] != i or p["processes"] != nproc:
            problems.append(f"process {i}'s report names process {p['process']}/{p['processes']}")
        if p["done"] != len(rows) or p["frames"] != sum(r["frames"] for r in rows):
            problems.append(f"process {i}'s report counts {p['done']} videos, {p['frames']} frames")
    if report["done"] != len(ids) or report["frames"] != len(ids) * frames_per_video:
        problems.append(f"report.json counts {report['done']} videos, {report['frames']} frames")
    if report.get("processes", 1) != nproc:
        problems.append(f"report.json names {report.get('processes')} processes")
    if nproc > 1:
        keys = ("process", "done", "frames", "seconds", "videos_per_s", "frames_per_s")
        got = [{k: q[k] for k in keys} for q in report.get("per_process", [])]
        if got != [{k: p[k] for k in keys} for p in per_process]:
            problems.append("report.json's per_process differs from the processes' reports")
    hashes = {vid: _sha256(os.path.join(out, vid, "noise.npy")) for vid in ids}
    if len(set(hashes.values())) != len(ids):
        problems.append("two videos have the same noise (their keys should differ)")
    return {"report": report, "per_process": per_process, "problems": problems, "hashes": hashes}


# ----------------------------------------------------------------------------- the runs


def schedule(config) -> list[dict]:
    """Every run, in order: a warm-up per mode, then the repeats, interleaved mode by mode."""
    modes = list(config.modes)
    for m in modes:
        layout(config, m)  # unknown modes fail before any work
    jobs = [dict(role="warm-up", mode=m) for m in modes] if config.warm_up else []
    for r in range(int(config.repeats)):
        jobs += [dict(role="timed", mode=m, repeat=r) for m in modes]
    return jobs


def run(config, workdir: str, command: str | None = None) -> list[dict]:
    """Runs the benchmark and writes its outputs into ``workdir``; returns the per-run rows."""
    if command is None:
        command = launch.command_line(NAME, workdir)
    hw = measure.hardware()
    with workdir_lib.Workdir(workdir, config, name=NAME) as wd:
        clip = make_clip(config, os.path.join(workdir, "clips"))
        manifest = os.path.join(workdir, "manifest.jsonl")
        ids = write_manifest(config, clip, manifest)
        cache = os.path.join(workdir, "cache")
        scratch = tempfile.mkdtemp(prefix=".scratch-", dir=workdir)
        rows: list[dict] = []
        reference = None
        load_start = os.getloadavg()
        try:
            for i, job in enumerate(schedule(config)):
                mode = job["mode"]
                nproc, devices = layout(config, mode)
                out = os.path.join(scratch, f"out-{i}")
                cmds = commands(config, mode, manifest, out, cache)
                r = launch_run(cmds, environment(config, mode), float(config.timeout_s))
                r.update(read_outputs(out, ids, nproc, int(config.frames)))
                shutil.rmtree(out)
                if reference is None and mode == config.modes[0]:
                    reference = r["hashes"]
                r.update(job, index=i, processes=nproc, devices=devices)
                r["command"] = " ".join(cmds[0][1:])
                r["differ"] = [v for v in ids if reference and r["hashes"][v] != reference[v]]
                rows.append(r)
                wd.metric(r)
                rep = r["report"]
                logging.info(
                    "%s %s: %.1f s wall, %.1f s report, %d videos, %d frames%s",
                    job["role"],
                    mode,
                    r["wall_s"],
                    rep["seconds"],
                    rep["done"],
                    rep["frames"],
                    f"; problems: {r['problems']}" if r["problems"] else "",
                )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        load_end = os.getloadavg()
        summary = summarise(config, rows)
        for s in summary:
            wd.metric(dict(s, role="summary"))
        md = markdown(config, rows, summary, hw, command, clip, (load_start, load_end))
        wd.write_summary(md, "results.md")
    print(md)
    sys.stdout.flush()
    return rows


# ----------------------------------------------------------------------------- tables


def _med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(config, rows: list[dict]) -> list[dict]:
    """One row per mode (warm-ups left out): medians over its repeats, and its checks."""
    out = []
    for mode in config.modes:
        g = [r for r in rows if r["mode"] == mode and r["role"] == "timed"]
        if not g:
            continue
        warm = [r for r in rows if r["mode"] == mode]
        done = g[0]["report"]["done"]
        frames = g[0]["report"]["frames"]
        nproc = g[0]["processes"]
        per_process = []
        for i in range(nproc):
            ps = [r["per_process"][i] for r in g]
            per_process.append(
                {
                    "process": i,
                    "devices": ps[0]["devices"],
                    "videos": ps[0]["done"],
                    "frames": ps[0]["frames"],
                    "seconds": _med([p["seconds"] for p in ps]),
                    "videos_per_s": _med([p["videos_per_s"] for p in ps]),
                    "frames_per_s": _med([p["frames_per_s"] for p in ps]),
                }
            )
        out.append(
            {
                "mode": mode,
                "processes": nproc,
                "devices": g[0]["devices"],
                "repeats": len(g),
                "videos": done,
                "frames": frames,
                "wall_s": _med([r["wall_s"] for r in g]),
                "videos_per_s_wall": _med([done / r["wall_s"] for r in g]),
                "frames_per_s_wall": _med([frames / r["wall_s"] for r in g]),
                "report_s": _med([r["report"]["seconds"] for r in g]),
                "videos_per_s_report": _med([r["report"]["videos_per_s"] for r in g]),
                "frames_per_s_report": _med([r["report"]["frames_per_s"] for r in g]),
                "startup_s": _med([r["wall_s"] - r["report"]["seconds"] for r in g]),
                "load_1min": _med([r["load_1min"] for r in g]),
                "problems": sorted({p for r in g for p in r["problems"]}),
                "runs_checked": len(warm),
                "differ": sorted({v for r in warm for v in r["differ"]}),
                "per_process": per_process,
            }
        )
    return out


def _identity_cell(s: dict, reference_mode: str) -> str:
    if s["differ"]:
        return f"no ({len(s['differ'])} of {s['videos']} videos differ)"
    n = s["runs_checked"]
    note = "reference" if s["mode"] == reference_mode else f"{n} run{'s' if n != 1 else ''}"
    return f"yes ({s['videos']} / {s['videos']} videos, {note})"


def markdown(config, rows, summary, hw, command, clip, load) -> str:
    """results.md: the header, the mode table and the per-process table."""
    h, w = (int(v) for v in config.size)
    loads = [r["load_1min"] for r in rows]
    ref = summary[0] if summary else None
    out = [
        "# irwarp dataset throughput",
        "",
        *bench_cli.header_lines(command, hw, load, loads),
        f"- Manifest: `{os.path.basename(clip)}` (the packaged {config.clip} resized to {h}x{w}, "
        f"its first {config.clip_frames} frames, libx264 crf {config.crf}) listed {config.videos} "
        f'times as v0 ... v{int(config.videos) - 1}, each with `"frames": {config.frames}`.',
        f"- Each run: `python -m irwarp.cli dataset MANIFEST --out OUT --preset {config.preset} "
        f"--method {config.method} --chunk {config.chunk} --latent-only --quiet --cache-dir "
        "CACHE` in fresh processes, with a warm compilation cache"
        + (" (one untimed warm-up run per mode first)" if config.warm_up else "")
        + "; medians over the repeats column. 'wall s' is from launching the first process to "
        "the exit of the last; 'report s' and the report rates are report.json's (the slowest "
        "process's time from its start of work to its last video, without Python start-up, "
        "imports, jax.distributed's start and exit); 'start-up + exit s' is their difference.",
        "- 'split and per-process report ok': status.jsonl lists every video once, process i did "
        "the manifest's videos i, i + N, ..., each process's report (`.process-<i>.json`, and "
        "report.json's `per_process`) counts the videos and frames status.jsonl gives it, and "
        "report.json counts all of them. 'noise bit-identical': the SHA-256 of every video's "
        f"noise.npy equals the first run of {mode_label(config, config.modes[0])}, in every run of "
        "the mode, warm-up included (and no two videos share their noise).",
        "",
        "## Modes",
        "",
    ]
    body = []
    for s in summary:
        speedup = ref["wall_s"] / s["wall_s"] if ref and s["wall_s"] else None
        body.append(
            [
                mode_label(config, s["mode"]),
                f"{s['processes']} x {s['devices']}",
                str(s["repeats"]),
                tables.fmt(s["wall_s"], 1),
                tables.fmt(s["videos_per_s_wall"], 3),
                tables.fmt(s["frames_per_s_wall"], 1),
                tables.fmt(s["report_s"], 1),
                tables.fmt(s["videos_per_s_report"], 3),
                tables.fmt(s["frames_per_s_report"], 1),
                tables.fmt(s["startup_s"], 1),
                tables.fmt(speedup, 2),
                "yes" if not s["problems"] else "no: " + "; ".join(s["problems"]),
                _identity_cell(s, config.modes[0]),
                tables.fmt(s["load_1min"], 2),
            ]
        )
    out += [tables.markdown_table(RUN_COLUMNS, body), ""]
    out += [
        "## Each process (its own report: from its start of work to its last video)",
        "",
    ]
    body = []
    for s in summary:
        for p in s["per_process"]:
            body.append(
                [
                    mode_label(config, s["mode"]),
                    str(p["process"]),
                    str(p["devices"]),
                    str(p["videos"]),
                    str(p["frames"]),
                    tables.fmt(p["seconds"], 1),
                    tables.fmt(p["videos_per_s"], 3),
                    tables.fmt(p["frames_per_s"], 1),
                ]
            )
    out += [tables.markdown_table(PROCESS_COLUMNS, body), ""]
    if hw["usable_cores"] <= 2:
        out += [
            f"With {hw['usable_cores']} usable cores, expect no speed-up from more processes or "
            "devices: the processes share the same cores, and each one's DIS optical flow "
            "(OpenCV's threads) and XLA's compiled step already use all of them; what the "
            "modes show here is that the work splits correctly, the reports are right, and the "
            "noise does not depend on the split.",
            "",
        ]
    return "\n".join(out)


if __name__ == "__main__":
    launch.run_main(NAME, run)
