"""Warped noise for every video of a manifest, on JAX's multi-controller runtime.

``irwarp dataset MANIFEST --out DIR`` (:func:`run`) warps each video of the manifest into
``DIR/<id>/`` with the files of ``irwarp warp`` (:mod:`irwarp.export`).

- **Manifest.** A text file of video paths (one per line; blank lines and ``#`` comments
  skipped; the id is the file name without its extension), or JSONL (``.jsonl``) with ``path``
  and optional ``id`` and per-video settings (any :class:`irwarp.export.Settings` field, e.g.
  ``"frames": 49``, ``"size": [480, 720]``, ``"method": "particle"``). Relative paths are
  relative to the manifest's folder. Ids must be unique and usable as folder names.
- **Keys.** Video ``id``'s key is :func:`irwarp.export.video_key` ``(seed, id)``, so its noise
  does not depend on the manifest's order, the number of processes or devices, or the batch.
- **Work split.** Under ``jax.distributed`` (``--coordinator HOST:PORT --num-processes N
  --process-id I``, or the runtime's auto-detection), process ``i`` takes videos
  ``i, i + N, ...`` of the manifest. Inside a process, videos of one shape are batched, one per
  local device, and the batch is sharded over the devices (``jax.sharding``).
- **Status.** ``DIR/status.jsonl`` gets one line per finished or failed video: ``id``,
  ``status`` (``done`` / ``failed``), ``error``, ``seconds``, ``frames``, ``process``, ``run``.
  Lines are appended whole (one ``write`` of an ``O_APPEND`` file), so processes can share it.
- **Resume and crashes.** A video is written into a hidden staging folder ``DIR/.<id>.partial-*``
  and renamed to ``DIR/<id>`` when complete. A rerun skips the videos whose folder holds a
  finished run of the same settings, removes staging folders left by a killed run, and redoes
  the rest (failed videos included). A broken video (missing, corrupt, too short, a size the
  preset does not divide) is recorded as failed and does not stop the others.
- **Throughput.** Each process writes its report (videos/s, frames/s) to ``DIR/.process-<i>.json``;
  after a barrier, process 0 writes the whole job's, with each process's, to ``DIR/report.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence

import jax
import numpy as np

from irwarp import export, files
from irwarp.progress import Progress

__all__ = ["Entry", "read_manifest", "run", "format_report", "STATUS"]

STATUS = "status.jsonl"
_ID = re.compile(r"^[A-Za-z0-9._-]+$")
_SETTING_FIELDS = {f.name for f in dataclasses.fields(export.Settings)} - {"overwrite"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One manifest line: the video's ``id``, ``path`` and its own settings."""

    id: str
    path: str
    overrides: dict


def _check_id(vid: str, where: str) -> str:
    if not isinstance(vid, str) or not _ID.match(vid) or vid in (".", ".."):
        raise ValueError(
            f"{where}: expected an id of letters, digits, '.', '_' or '-' (a folder name); "
            f"got {vid!r}"
        )
    return vid


def read_manifest(path: str | os.PathLike) -> list[Entry]:
    """The entries of a manifest (see the module docstring); checked, before any work.

    Raises:
      FileNotFoundError: if the manifest does not exist.
      ValueError: on a malformed JSONL line, a line without ``path``, an unknown setting, a bad
        or duplicate id, or an empty manifest.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"expected a manifest file (paths or JSONL); {path!r} does not exist"
        )
    base = os.path.dirname(os.path.abspath(path))
    entries: list[Entry] = []
    with open(path) as f:
        lines = f.read().splitlines()
    jsonl = path.endswith(".jsonl")
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{path}:{n}"
        if jsonl:
            try:
                row = json.loads(text)
            except ValueError as e:
                raise ValueError(f"{where}: expected a JSON object; {e}") from e
            if not isinstance(row, dict) or not isinstance(row.get("path"), str):
                raise ValueError(f'{where}: expected an object with a "path" string; got {text!r}')
            video = row.pop("path")
            vid = row.pop("id", None)
            unknown = set(row) - _SETTING_FIELDS
            if unknown:
                raise ValueError(
                    f"{where}: unknown setting(s) {sorted(unknown)}; known: id, path, "
                    f"{', '.join(sorted(_SETTING_FIELDS))}"
                )
            if "size" in row and row["size"] is not None:
                row["size"] = tuple(row["size"])
            overrides = row
        else:
            video, vid, overrides = text, None, {}
        video = video if os.path.isabs(video) else os.path.join(base, video)
        if vid is None:
            vid = os.path.splitext(os.path.basename(video.rstrip(os.sep)))[0]
        entries.append(Entry(_check_id(vid, where), video, overrides))
    if not entries:
        raise ValueError(f"{path!r}: expected at least one video; the manifest is empty")
    seen: dict[str, int] = {}
    for e in entries:
        if e.id in seen:
            raise ValueError(
                f"{path!r}: duplicate id {e.id!r} (ids name the output folders; give each "
                'JSONL line its own "id")'
            )
        seen[e.id] = 1
    return entries


# ----------------------------------------------------------------------------- runtime


def _init_distributed(coordinator, num_processes, process_id, auto: bool) -> bool:
    """Starts jax.distributed when asked; returns whether it runs."""
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError(
            "--coordinator, --num-processes and --process-id go together; got "
            f"coordinator={coordinator!r}, num_processes={num_processes!r}, "
            f"process_id={process_id!r}"
        )
    if all(given):
        if not isinstance(num_processes, int) or num_processes < 1:
            raise ValueError(f"num_processes must be an integer >= 1; got {num_processes!r}")
        if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise ValueError(f"process_id must be in [0, {num_processes}); got {process_id!r}")
        if num_processes == 1:
            return False
        _cpu_collectives()
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
        return True
    if auto:
        _cpu_collectives()
        jax.distributed.initialize()
        return True
    return False


def _cpu_collectives() -> None:
    # The end-of-run barrier is a collective; CPU processes need gloo for it (GPU/TPU have theirs).
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # older jax: the option is absent and the default works
        pass


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


class _Status:
    """``status.jsonl``: whole lines appended with one ``write`` each (O_APPEND)."""

    def __init__(self, out: str):
        self.path = os.path.join(out, STATUS)

    def append(self, row: dict) -> None:
        line = (json.dumps(files.jsonable(row), allow_nan=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rows(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        out = []
        with open(self.path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:  # a torn last line of a killed writer: ignored
                    continue
        return out


def _finished(folder: str, settings: dict) -> bool:
    meta = os.path.join(folder, export.META)
    try:
        with open(meta) as f:
            return json.load(f).get("settings") == settings
    except (OSError, ValueError):
        return False


def _clean_partials(out: str, ids: set[str]) -> list[str]:
    """Removes the staging folders of ``ids`` (this process owns them) left by a killed run."""
    removed = []
    for name in os.listdir(out):
        m = re.match(r"^\.(.+)\.partial-", name)
        if m and m.group(1) in ids:
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
            removed.append(name)
    return removed


# ----------------------------------------------------------------------------- run


def run(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    settings: export.Settings | None = None,
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto_distributed: bool = False,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
) -> dict:
    """Warp every video of ``manifest`` into ``out/<id>/``; this process's share of the work.

    Returns:
      a report: ``process``, ``processes``, ``devices``, ``done``, ``skipped``, ``failed``,
      ``frames``, ``seconds``, ``videos_per_s``, ``frames_per_s``, and (process 0 of a
      multi-process job, after all processes finished) ``overall``: the same over every process.

    Raises:
      ValueError / FileNotFoundError: on a bad manifest or flags (before any work). Broken videos
        do not raise: they are counted in ``failed`` and recorded in ``status.jsonl``.
    """
    settings = export.Settings() if settings is None else settings
    entries = read_manifest(manifest)
    out = os.fspath(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot write to the output folder {out!r}: {e}") from e
    distributed = _init_distributed(coordinator, num_processes, process_id, auto_distributed)
    pid, nproc = jax.process_index(), jax.process_count()
    devices = list(devices or jax.local_devices())
    mine = entries[pid::nproc]
    status = _Status(out)
    run_id = uuid.uuid4().hex[:12]
    _clean_partials(out, {e.id for e in mine})
    done_before = {r["id"] for r in status.rows() if r.get("status") == "done"}
    t_start = time.perf_counter()
    report = {"process": pid, "processes": nproc, "devices": len(devices), "run": run_id}
    counts = {"done": 0, "skipped": 0, "failed": 0, "frames": 0}

    def record(entry, state, seconds, frames=0, error=None):
        counts[state] += 1
        counts["frames"] += frames
        row = {
            "id": entry.id,
            "status": "failed" if state == "failed" else "done",
            "error": error,
            "seconds": round(seconds, 4),
            "frames": frames,
            "process": pid,
            "run": run_id,
            "path": entry.path,
        }
        status.append(row)

    # Plan every video of this process's share (broken ones fail here); a plan writes nothing,
    # so they are planned into one scratch folder and get their staging folders when they run.
    scratch = os.path.join(out, f".process-{pid}.scratch")
    planned: list[tuple[Entry, export.Plan]] = []
    for e in mine:
        t0 = time.perf_counter()
        try:
            s = dataclasses.replace(settings, overwrite=True, **e.overrides)
            info = f"irwarp.export.video_key({s.seed}, {e.id!r})"
            p = export.plan(e.path, scratch, s, key=export.video_key(s.seed, e.id), key_info=info)
        except Exception as err:  # a broken video: recorded, the others go on
            record(e, "failed", time.perf_counter() - t0, error=f"{type(err).__name__}: {err}")
            continue
        if _finished(os.path.join(out, e.id), p.settings_dict()):
            if e.id in done_before:
                counts["skipped"] += 1
            else:  # finished, but killed between its rename and its status line
                record(e, "done", 0.0, frames=p.num_frames)
            continue
        planned.append((e, p))
    shutil.rmtree(scratch, ignore_errors=True)

    # Batches of one shape, one video per local device.
    groups: dict[tuple, list[tuple[Entry, export.Plan]]] = {}
    for item in planned:
        groups.setdefault(item[1].shape_key, []).append(item)
    total_frames = sum(p.num_frames for _, p in planned)
    bar = Progress(max(total_frames, 1), enabled=bool(progress) and bool(planned)).update
    frames_done = 0
    for items in groups.values():
        for i in range(0, len(items), len(devices)):
            batch = items[i : i + len(devices)]
            frames_done = _run_batch(batch, devices, out, record, bar, frames_done)

    seconds = time.perf_counter() - t_start
    report.update(counts)
    report["seconds"] = seconds
    report["videos_per_s"] = counts["done"] / seconds if seconds > 0 else 0.0
    report["frames_per_s"] = counts["frames"] / seconds if seconds > 0 else 0.0
    files.write_json(os.path.join(out, f".process-{pid}.json"), report)
    if distributed or nproc > 1:
        _barrier(f"irwarp-dataset-{len(entries)}")
        if pid == 0:
            report["overall"] = _overall(out, nproc)
            files.write_json(os.path.join(out, "report.json"), report["overall"])
    else:
        report["overall"] = {k: report[k] for k in ("done", "skipped", "failed", "frames")}
        report["overall"].update(
            seconds=seconds,
            videos_per_s=report["videos_per_s"],
            frames_per_s=report["frames_per_s"],
            processes=1,
        )
        files.write_json(os.path.join(out, "report.json"), report["overall"])
    return report


def _run_batch(batch, devices, out, record, bar, frames_done) -> int:
    """Runs one batch; if it fails, each video alone, so one broken video fails only itself."""
    t0 = time.perf_counter()
    plans = [
        dataclasses.replace(p, out=tempfile.mkdtemp(prefix=f".{e.id}.partial-", dir=out))
        for e, p in batch
    ]
    try:
        export.run_batch(plans, devices=devices, progress=False)
    except Exception as err:
        for p in plans:
            shutil.rmtree(p.out, ignore_errors=True)
        if len(batch) == 1:
            entry, p = batch[0]
            record(entry, "failed", time.perf_counter() - t0, error=f"{type(err).__name__}: {err}")
            return frames_done + p.num_frames
        for item in batch:
            frames_done = _run_batch([item], devices, out, record, bar, frames_done)
        return frames_done
    seconds = (time.perf_counter() - t0) / len(batch)
    for (entry, _), p in zip(batch, plans, strict=True):
        final = os.path.join(out, entry.id)
        if os.path.lexists(final):
            shutil.rmtree(final)
        os.rename(p.out, final)
        record(entry, "done", seconds, frames=p.num_frames)
        frames_done += p.num_frames
    bar(frames_done)
    return frames_done


def _overall(out: str, nproc: int) -> dict:
    reports = []
    for i in range(nproc):
        with open(os.path.join(out, f".process-{i}.json")) as f:
            reports.append(json.load(f))
    seconds = max(r["seconds"] for r in reports)
    total = {k: sum(r[k] for r in reports) for k in ("done", "skipped", "failed", "frames")}
    total.update(
        processes=nproc,
        seconds=seconds,
        videos_per_s=total["done"] / seconds if seconds > 0 else 0.0,
        frames_per_s=total["frames"] / seconds if seconds > 0 else 0.0,
        per_process=[
            {
                k: r[k]
                for k in (
                    "process",
                    "done",
                    "failed",
                    "frames",
                    "seconds",
                    "videos_per_s",
                    "frames_per_s",
                )
            }
            for r in reports
        ],
    )
    return total


def format_report(report: dict) -> str:
    """One or two lines for the terminal."""
    r = report
    line = (
        f"process {r['process']}/{r['processes']} ({r['devices']} device(s)): {r['done']} done, "
        f"{r['skipped']} skipped, {r['failed']} failed; {r['frames']} frames in "
        f"{r['seconds']:.1f} s ({r['videos_per_s']:.2f} videos/s, {r['frames_per_s']:.1f} frames/s)"
    )
    o = r.get("overall")
    if o and o.get("processes", 1) > 1:
        line += (
            f"\noverall ({o['processes']} processes): {o['done']} done, {o['failed']} failed; "
            f"{o['videos_per_s']:.2f} videos/s, {o['frames_per_s']:.1f} frames/s"
        )
    return line


_ = np  # numpy arrays pass through files.jsonable
