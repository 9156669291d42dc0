"""irwarp dataset: manifests, keys, broken videos, resume, kill, and jax.distributed processes.

The multi-process tests start real processes (``python -m irwarp.cli dataset ...``) on
127.0.0.1 and compare their files with a one-process run bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import clipgen
import numpy as np
import pytest

from irwarp import dataset, export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small and quick: preset sd (spatial 8, every frame a latent frame) at 64x96 -> latent 8x12x4.
FLAGS = ["--preset", "sd", "--method", "particle", "--quiet", "--no-preview"]
PANS = [(8, 0), (0, 8), (4, 4), (-8, 0), (8, 8)]


def _cli(args, env=None, **kw):
    e = dict(os.environ, **(env or {}))
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "irwarp.cli", *args], env=e, capture_output=True, text=True, **kw
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Five short pans (frame folders), a manifest of them, and the cache the runs share."""
    root = tmp_path_factory.mktemp("clips")
    for i, (dx, dy) in enumerate(PANS):
        clipgen.write_folder(str(root / f"v{i}"), clipgen.pan_frames(9, 64, 96, dx, dy, seed=i))
    manifest = root / "manifest.txt"
    manifest.write_text("# five pans\n" + "".join(f"v{i}\n" for i in range(len(PANS))))
    return root, str(manifest), str(root / "cache")


@pytest.fixture(scope="module")
def single(clips):
    """The reference: one process, one device."""
    root, manifest, cache = clips
    out = str(root / "single")
    r = _cli(["dataset", manifest, "--out", out, "--cache-dir", cache, *FLAGS])
    assert r.returncode == 0, r.stderr
    return out


def _noise(out: str, vid: str, name: str = "noise.npy") -> np.ndarray:
    return np.load(os.path.join(out, vid, name))


def _status(out: str) -> list[dict]:
    with open(os.path.join(out, dataset.STATUS)) as f:
        return [json.loads(line) for line in f]


def _assert_same(a: str, b: str, ids) -> None:
    for vid in ids:
        for name in ("noise.npy", "noise_frames.npy"):
            x, y = _noise(a, vid, name), _noise(b, vid, name)
            assert x.dtype == y.dtype and x.shape == y.shape
            assert np.array_equal(x.view(np.uint16), y.view(np.uint16)), (vid, name)


IDS = [f"v{i}" for i in range(len(PANS))]


def test_single_process_writes_every_video_and_a_status_line_each(single):
    rows = _status(single)
    assert sorted(r["id"] for r in rows) == IDS
    assert all(r["status"] == "done" and r["error"] is None for r in rows)
    assert all(r["process"] == 0 and r["frames"] == 9 and r["seconds"] >= 0 for r in rows)
    for vid in IDS:
        meta = json.load(open(os.path.join(single, vid, export.META)))
        assert meta["files"]["noise"]["shape"] == [9, 8, 12, 4]
        assert meta["key"] == f"irwarp.export.video_key(0, {vid!r})"
    report = json.load(open(os.path.join(single, "report.json")))
    assert report["done"] == 5 and report["failed"] == 0 and report["frames_per_s"] > 0
    assert not [n for n in os.listdir(single) if ".partial-" in n or n.endswith(".scratch")]


def test_keys_depend_on_id_not_on_order(single):
    """Different ids give different noise; a video's noise is its own (seed, id)'s."""
    a, b = _noise(single, "v0"), _noise(single, "v1")
    assert abs(np.corrcoef(a[0].ravel(), b[0].ravel())[0, 1]) < 5 / np.sqrt(a[0].size)
    k0, k1 = export.video_key(0, "v0"), export.video_key(0, "v0")
    assert np.array_equal(np.asarray(jax_key_data(k0)), np.asarray(jax_key_data(k1)))


def jax_key_data(k):
    import jax

    return jax.random.key_data(k)


def test_reversed_manifest_gives_the_same_files(clips, single, tmp_path):
    root, _, cache = clips
    manifest = tmp_path / "reversed.jsonl"
    manifest.write_text(
        "".join(json.dumps({"path": str(root / v), "id": v}) + "\n" for v in reversed(IDS))
    )
    out = str(tmp_path / "out")
    r = _cli(["dataset", str(manifest), "--out", out, "--cache-dir", cache, *FLAGS])
    assert r.returncode == 0, r.stderr
    _assert_same(single, out, IDS)


def test_two_processes_on_localhost_are_bit_identical_to_one(clips, single, tmp_path):
    root, manifest, cache = clips
    out, port = str(tmp_path / "two"), _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "irwarp.cli",
                "dataset",
                manifest,
                "--out",
                out,
                "--cache-dir",
                cache,
                *FLAGS,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=dict(os.environ, PYTHONPATH=ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    _assert_same(single, out, IDS)
    rows = _status(out)
    assert sorted(r["id"] for r in rows) == IDS
    assert {r["process"] for r in rows} == {0, 1}
    assert sorted(r["id"] for r in rows if r["process"] == 1) == ["v1", "v3"]  # i, i + N, ...
    report = json.load(open(os.path.join(out, "report.json")))
    assert report["processes"] == 2 and report["done"] == 5
    assert [p["process"] for p in report["per_process"]] == [0, 1]
    assert "overall (2 processes)" in results[0][0]


def test_two_local_devices_batch_and_stay_bit_identical(clips, single, tmp_path):
    _, manifest, cache = clips
    out = str(tmp_path / "devices")
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    r = _cli(["dataset", manifest, "--out", out, "--cache-dir", cache, *FLAGS], env=env)
    assert r.returncode == 0, r.stderr
    assert "(2 device(s))" in r.stdout
    _assert_same(single, out, IDS)


def test_broken_videos_fail_alone_and_the_exit_code_counts_them(clips, single, tmp_path):
    root, _, cache = clips
    short = clipgen.write_folder(str(tmp_path / "short"), clipgen.pan_frames(1, 64, 96, 8))
    odd = clipgen.write_folder(str(tmp_path / "odd"), clipgen.pan_frames(9, 60, 90, 8))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    bad_frame = clipgen.write_folder(str(tmp_path / "badframe"), clipgen.pan_frames(9, 64, 96, 8))
    with open(os.path.join(bad_frame, "frame_005.png"), "wb") as f:
        f.write(b"not a png")
    manifest = tmp_path / "m.txt"
    manifest.write_text(
        "\n".join(
            [
                str(root / "v0"),
                short,
                str(tmp_path / "missing.mp4"),
                odd,
                str(corrupt),
                bad_frame,
                str(root / "v1"),
            ]
        )
    )
    out = str(tmp_path / "out")
    r = _cli(["dataset", str(manifest), "--out", out, "--cache-dir", cache, *FLAGS])
    assert r.returncode == 1
    assert "5 video(s) failed" in r.stderr
    rows = {row["id"]: row for row in _status(out)}
    assert {k for k, v in rows.items() if v["status"] == "done"} == {"v0", "v1"}
    assert "at least 2 video frames" in rows["short"]["error"]
    assert "does not exist" in rows["missing"]["error"]
    assert "--size 56x88" in rows["odd"]["error"]
    assert rows["corrupt"]["error"] and rows["badframe"]["error"]
    for vid in ("short", "missing", "odd", "corrupt", "badframe"):
        assert not os.path.exists(os.path.join(out, vid))
    assert not [n for n in os.listdir(out) if ".partial-" in n]
    _assert_same(single, out, ["v0", "v1"])


def test_rerun_skips_finished_and_recovers_a_missing_status_line(clips, single, tmp_path):
    _, manifest, cache = clips
    out = str(tmp_path / "out")
    assert _cli(["dataset", manifest, "--out", out, "--cache-dir", cache, *FLAGS]).returncode == 0
    # As if killed after v2's rename but before its status line: drop that line.
    rows = _status(out)
    with open(os.path.join(out, dataset.STATUS), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows if r["id"] != "v2")
    before = os.stat(os.path.join(out, "v0", "noise.npy")).st_mtime_ns
    r = _cli(["dataset", manifest, "--out", out, "--cache-dir", cache, *FLAGS])
    assert r.returncode == 0, r.stderr
    assert "1 done, 4 skipped" in r.stdout
    assert os.stat(os.path.join(out, "v0", "noise.npy")).st_mtime_ns == before
    done = [r["id"] for r in _status(out) if r["status"] == "done"]
    assert sorted(done) == IDS  # exactly one line per video


def test_killed_run_restarted_leaves_no_partial_or_duplicate_output(clips, single, tmp_path):
    root, _, cache = clips
    # Twelve videos (the five pans, several times under other ids) so the kill lands mid-run.
    manifest = tmp_path / "m.jsonl"
    ids = [f"k{j}" for j in range(12)]
    manifest.write_text(
        "".join(
            json.dumps({"path": str(root / IDS[j % 5]), "id": vid}) + "\n"
            for j, vid in enumerate(ids)
        )
    )
    out = str(tmp_path / "out")
    args = [
        sys.executable,
        "-m",
        "irwarp.cli",
        "dataset",
        str(manifest),
        "--out",
        out,
        "--cache-dir",
        cache,
        *FLAGS,
    ]
    proc = subprocess.Popen(
        args,
        env=dict(os.environ, PYTHONPATH=ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    status = os.path.join(out, dataset.STATUS)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(status) and open(status).read().count("\n") >= 2:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = len(_status(out))
    assert 0 < finished_before < len(ids), "the kill should land mid-run"
    r = _cli(["dataset", str(manifest), "--out", out, "--cache-dir", cache, *FLAGS])
    assert r.returncode == 0, r.stderr
    rows = _status(out)
    assert sorted(r["id"] for r in rows) == sorted(ids)  # one line each: none twice
    assert not [n for n in os.listdir(out) if ".partial-" in n or n.endswith(".scratch")]
    for _j, vid in enumerate(ids):
        meta = json.load(open(os.path.join(out, vid, export.META)))
        assert meta["files"]["noise"]["shape"] == [9, 8, 12, 4]
        x = _noise(out, vid)
        assert x.shape == (9, 8, 12, 4) and np.all(np.isfinite(x))
    # Same id, same noise as an uninterrupted run of that id.
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text(json.dumps({"path": str(root / IDS[7 % 5]), "id": "k7"}) + "\n")
    out2 = str(tmp_path / "out2")
    assert (
        _cli(["dataset", str(fresh), "--out", out2, "--cache-dir", cache, *FLAGS]).returncode == 0
    )
    _assert_same(out, out2, ["k7"])


def test_manifest_errors_are_clear(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a"}\n')
    with pytest.raises(ValueError, match='"path"'):
        dataset.read_manifest(m)
    m.write_text('{"path": "a.mp4", "colour": 3}\n')
    with pytest.raises(ValueError, match="unknown setting"):
        dataset.read_manifest(m)
    m.write_text('{"path": "a.mp4", "id": "x"}\n{"path": "b.mp4", "id": "x"}\n')
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        dataset.read_manifest(m)
    m.write_text('{"path": "a.mp4", "id": "../up"}\n')
    with pytest.raises(ValueError, match="folder name"):
        dataset.read_manifest(m)
    m.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="empty"):
        dataset.read_manifest(m)
    with pytest.raises(FileNotFoundError):
        dataset.read_manifest(tmp_path / "absent.txt")
    t = tmp_path / "m.txt"
    t.write_text("clips/a.mp4\n/abs/b.mp4\n")
    entries = dataset.read_manifest(t)
    assert [e.id for e in entries] == ["a", "b"]
    assert entries[0].path == str(tmp_path / "clips" / "a.mp4")
    j = tmp_path / "o.jsonl"
    j.write_text('{"path": "a.mp4", "frames": 17, "size": [64, 96], "method": "grid"}\n')
    (e,) = dataset.read_manifest(j)
    assert e.overrides == {"frames": 17, "size": (64, 96), "method": "grid"}


def test_distributed_flags_go_together(tmp_path):
    m = tmp_path / "m.txt"
    m.write_text("a.mp4\n")
    with pytest.raises(ValueError, match="go together"):
        dataset.run(m, tmp_path / "out", coordinator="127.0.0.1:1234")
    with pytest.raises(ValueError, match="process_id must be in"):
        dataset.run(m, tmp_path / "out", coordinator="127.0.0.1:1", num_processes=2, process_id=2)
