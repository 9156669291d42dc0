"""The main job, experiments/warp_video.py, end to end on tiny clips (slow: each run decodes a clip,
estimates flows and compiles the warps), and its checks of the input and of the workdir."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp import pipeline, resample, video

# The optional video extras (opencv-python-headless, imageio, imageio-ffmpeg, scikit-video).
cv2 = pytest.importorskip("cv2")
pytest.importorskip("imageio_ffmpeg")
if importlib.util.find_spec("skvideo") is None:
    pytest.skip("scikit-video (the packaged clips) is not installed", allow_module_level=True)
from PIL import Image  # noqa: E402

from configs import warp_video as warp_video_config  # noqa: E402
from experiments import warp_video  # noqa: E402

# Marked slow in conftest.py. imageio and imageio-ffmpeg start ffmpeg with fork + exec, which is
# safe; Python warns anyway.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- the job


def _small(**overrides):
    config = warp_video_config.get_config("small")
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("wv") / "run")
    summary = warp_video.run(_small(), workdir)
    return workdir, summary


def test_end_to_end_outputs(small_run):
    workdir, summary = small_run
    config = _small()
    t, (h, w), c, k = 4, tuple(config.video.size), config.channels, config.latent.factor
    for name in ("grid", "particle"):
        assert np.load(os.path.join(workdir, f"noise_{name}.npy")).shape == (t, h, w, c)
        lat = np.load(os.path.join(workdir, f"noise_{name}_latent.npy"))
        assert lat.shape == (t, h // k, w // k, c)
        full = np.load(os.path.join(workdir, f"noise_{name}.npy"))
        np.testing.assert_allclose(lat, np.asarray(resample.downsample(full, k)), atol=1e-6)
    # The flows used are OpenCV's on the frames as read (nothing drawn on them), NaN where the
    # forward-backward check failed.
    flows = np.load(os.path.join(workdir, "flows.npy"))
    assert flows.shape == (t - 1, h, w, 2)
    frames = video.read_frames(video.default_clip(config.video.clip), count=t, size=(h, w))
    est = video.flow_estimator("dis", preset=config.flow.dis_preset)
    for i in range(t - 1):
        expected, _ = video.masked_backward_flow(
            est(frames[i + 1], frames[i]), est(frames[i], frames[i + 1])
        )
        np.testing.assert_array_equal(flows[i], np.asarray(expected))
    with open(os.path.join(workdir, "stats.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == t * 3 * 2  # frames x (grid, particle, fresh) x (full, latent)
    assert {"mean", "var", "ks", "ac_x", "ac_y", "coherence"} <= set(rows[0])
    coh = {
        r["method"]: r["coherence"] for r in rows if r["frame"] == 1 and r["resolution"] == "full"
    }
    assert coh["grid"] > 0.5 and coh["particle"] > 0.5 and abs(coh["fresh"]) < 0.2
    for name in ("config.json", "summary.json", "stats.png", "still.png", "xt_slice.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    import imageio.v2 as imageio

    mp4 = imageio.mimread(os.path.join(workdir, "side_by_side.mp4"))
    gif = imageio.mimread(os.path.join(workdir, "side_by_side.gif"))
    assert len(mp4) == t and len(gif) == t
    assert mp4[0].shape[:2] == (2 * h, 4 * w)  # video + grid + particle + fresh; latent row
    assert not [n for n in os.listdir(workdir) if n.startswith(".")]  # no temp folder left
    assert 0.8 < summary["methods"]["grid/full"]["var"] < 1.2


def test_result_does_not_depend_on_chunk_size(small_run, tmp_path):
    workdir, _ = small_run
    other = str(tmp_path / "chunk3")
    warp_video.run(_small(chunk_size=3, **{"output.mp4": False, "output.gif": False}), other)
    for name in ("noise_grid.npy", "noise_particle.npy", "noise_grid_latent.npy", "flows.npy"):
        np.testing.assert_array_equal(
            np.load(os.path.join(other, name)), np.load(os.path.join(workdir, name)), err_msg=name
        )


def test_lagrangian_variant_smoke(tmp_path):
    """configs/warp_video.py:lagrangian,small: grid, particle and lagrangian on a tiny clip. The
    streamed lagrangian noise (chunks of 2, keyframes every 3 frames, a padded last chunk) is the
    noise irwarp.warp_sequence gives on the flows the job used, with the job's key; every method
    gets per-frame coherence with the previous frame and with its anchor (keyframe) frame."""
    config = warp_video_config.get_config("lagrangian,small")
    config.output.mp4 = config.output.gif = False
    workdir = str(tmp_path / "lag")
    summary = warp_video.run(config, workdir)
    t, (h, w), c = config.video.count, tuple(config.video.size), config.channels
    opts = config.method_options.lagrangian.to_dict()
    assert config.methods == ("grid", "particle", "lagrangian") and config.anchor_every == 3
    noise = np.load(os.path.join(workdir, "noise_lagrangian.npy"))
    assert noise.shape == (t, h, w, c)
    flows = np.load(os.path.join(workdir, "flows.npy"))
    k_warp, _ = jax.random.split(jax.random.key(config.seed))
    x0 = pipeline.first_frame(k_warp, (h, w, c))
    ref = irwarp.warp_sequence(k_warp, x0, jnp.asarray(flows), method="lagrangian", **opts)
    np.testing.assert_array_equal(noise, np.asarray(ref))
    with open(os.path.join(workdir, "stats.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == t * 4 * 2  # frames x (grid, particle, lagrangian, fresh) x resolutions
    full = {(r["method"], r["frame"]): r for r in rows if r["resolution"] == "full"}
    assert [full[("lagrangian", f)]["anchor"] for f in range(1, t)] == [0, 0, 0, 3, 3]
    for f in (1, 4):  # right after a keyframe the anchor is the previous frame
        assert full[("lagrangian", f)]["coherence_anchor"] == full[("lagrangian", f)]["coherence"]
    for m in ("grid", "particle", "lagrangian"):
        assert full[(m, 1)]["coherence"] > 0.5 and full[(m, 3)]["coherence_anchor"] > 0.3
        assert 0.8 < summary["methods"][f"{m}/full"]["var"] < 1.2
        assert summary["timing"]["warp_s_per_frame"][m] > 0
    assert abs(full[("fresh", 3)]["coherence_anchor"]) < 0.2
    assert {"dropped_nodes", "beyond_window", "fresh_pixels"} <= set(full[("lagrangian", 2)])
    assert summary["methods"]["lagrangian/full"]["dropped_nodes_total"] == 0
    assert "| lagrangian | full |" in warp_video.summary_table(summary)
    with pytest.raises(ValueError, match="unknown warp_video config variant"):
        warp_video_config.get_config("small,bogus")


def test_precomputed_flows_npy_and_flo(small_run, tmp_path):
    """The flows a run used, loaded back as backward flows (.npy, and a folder of .flo files),
    give the same noise (NaN = occluded survives both formats)."""
    workdir, _ = small_run
    flows = np.load(os.path.join(workdir, "flows.npy"))
    flo_dir = tmp_path / "flo"
    flo_dir.mkdir()
    for i, fl in enumerate(flows):
        irwarp.flows.write_flo(flo_dir / f"{i:03d}.flo", fl)
    quiet = {"output.mp4": False, "output.gif": False, "flow.source": "file"}
    for src in (os.path.join(workdir, "flows.npy"), str(flo_dir)):
        out = str(tmp_path / ("npy" if src.endswith(".npy") else "flo_run"))
        warp_video.run(_small(**quiet, **{"flow.path": src}), out)
        np.testing.assert_array_equal(
            np.load(os.path.join(out, "noise_grid.npy")),
            np.load(os.path.join(workdir, "noise_grid.npy")),
        )


def _frames_dir(tmp_path, sizes, name="frames"):
    d = tmp_path / name
    d.mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(d / f"{i:02d}.png")
    return d


def _assert_fails_cleanly(config, workdir, error, match):
    with pytest.raises(error, match=match):
        warp_video.run(config, workdir)
    assert not os.path.exists(workdir) or os.listdir(workdir) == []


def test_bad_input_missing_file(tmp_path):
    _assert_fails_cleanly(
        _small(**{"video.path": str(tmp_path / "missing.mp4")}),
        str(tmp_path / "out"),
        FileNotFoundError,
        "missing.mp4.*does not exist",
    )


def test_bad_input_unreadable_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    _assert_fails_cleanly(
        _small(**{"video.path": str(bad)}), str(tmp_path / "out"), ValueError, "could not read"
    )


def test_bad_input_zero_frames(tmp_path):
    _assert_fails_cleanly(
        _small(**{"video.start": 1000}), str(tmp_path / "out"), ValueError, "got 0 of the 120"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_fails_cleanly(
        _small(**{"video.path": str(empty)}), str(tmp_path / "out"), ValueError, "got 0 frames"
    )


def test_bad_input_frames_of_different_sizes(tmp_path):
    d = _frames_dir(tmp_path, [(32, 48), (32, 48), (40, 48)])
    _assert_fails_cleanly(
        _small(**{"video.path": str(d)}),
        str(tmp_path / "out"),
        ValueError,
        r"same size: expected \(H, W\) = \(32, 48\).*got \(40, 48\)",
    )


def test_bad_input_flow_shape_mismatch(tmp_path):
    flows = tmp_path / "flows.npy"
    np.save(flows, np.zeros((3, 16, 48, 2), np.float32))
    _assert_fails_cleanly(
        _small(**{"flow.source": "file", "flow.path": str(flows)}),
        str(tmp_path / "out"),
        ValueError,
        r"expected flows of shape \(T-1, H, W, 2\) = \(3, 32, 48, 2\).*got \(3, 16, 48, 2\)",
    )
    _assert_fails_cleanly(
        _small(**{"flow.source": "file", "flow.path": str(tmp_path / "none.npy")}),
        str(tmp_path / "out"),
        FileNotFoundError,
        "none.npy",
    )


def test_bad_input_size_not_multiple_of_latent_factor(tmp_path):
    _assert_fails_cleanly(
        _small(**{"video.size": (30, 48)}), str(tmp_path / "out"), ValueError, "multiple of"
    )


def test_failure_mid_run_leaves_no_partial_output(tmp_path):
    """A frame whose header reads fine but whose pixels do not decode fails after outputs were
    started: the temporary folder is removed and an existing workdir keeps only its own files."""
    d = _frames_dir(tmp_path, [(32, 48)] * 4)
    data = (d / "03.png").read_bytes()
    (d / "03.png").write_bytes(data[: len(data) // 2])  # truncated: header fine, pixels missing
    workdir = tmp_path / "out"
    workdir.mkdir()
    (workdir / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="03.png"):
        warp_video.run(_small(**{"video.path": str(d)}), str(workdir))
    assert os.listdir(workdir) == ["keep.txt"]


def test_forward_flow_files_are_converted_to_backward(tmp_path):
    """direction='forward': content moving by (+2, 0) is stored as forward flow (2, 0); the job
    warps along the backward flow (-2, 0), and without reverse flows the occlusion check is off."""
    path = tmp_path / "forward.npy"
    np.save(path, np.broadcast_to(np.float32([2.0, 0.0]), (3, 32, 48, 2)))
    plan = warp_video.Plan(
        _small(**{"flow.source": "file", "flow.path": str(path), "flow.direction": "forward"})
    )
    assert not plan.occlusion
    flow, valid = plan.flows(0, None, None)
    np.testing.assert_allclose(flow[8:-8, 8:-8], np.broadcast_to([-2.0, 0.0], (16, 32, 2)))
    assert valid.all()


# ----------------------------------------------------------------------------- sizes (issue 18, 4)


@pytest.mark.parametrize("size", [(8, 8), (8, 64)])
def test_latent_side_of_one_pixel_is_refused_when_planned(tmp_path, size):
    """A latent side of 1 px used to fail mid-run (``lag 1 needs W > 1``); now the plan refuses
    it before the workdir is touched, naming the size to pass."""
    _assert_fails_cleanly(
        _small(**{"video.size": size}),
        str(tmp_path / "out"),
        ValueError,
        r"latent frame \(H/k, W/k\) = \(1, \d\).*needs both sides >= 2.*--config.video.size, "
        r'e.g. "\(16, (16|64)\)"',
    )


def test_frames_too_small_for_dis_are_refused_when_planned(tmp_path):
    """OpenCV's DIS raised a raw cv2.error (or crashed) on tiny frames; now the plan refuses."""
    _assert_fails_cleanly(
        _small(**{"video.size": (8, 64), "latent.factor": 1}),
        str(tmp_path / "out"),
        ValueError,
        r"flow.source='dis' needs frames of at least 32 pixels a side.*got \(H, W\) = \(8, 64\)"
        r'.*e.g. "\(32, 64\)".*--config.flow.source=farneback',
    )
    _assert_fails_cleanly(
        _small(**{"video.size": (1, 48), "latent.factor": 1, "flow.source": "farneback"}),
        str(tmp_path / "out"),
        ValueError,
        r"frame size \(H, W\) = \(1, 48\) needs both sides >= 2",
    )


# ----------------------------------------------------------------------------- workdir (issue 18, 1)


def _hidden(workdir):
    if not os.path.isdir(workdir):
        return []
    return sorted(n for n in os.listdir(workdir) if n.startswith("."))


def _kill_when_writing(workdir, args, sig=signal.SIGKILL, timeout=300.0):
    """Starts the job as a program and sends it ``sig`` once its temporary folder holds a .npy
    being written (the writer's hidden ``.noise_<method>.npy.XXXXXXXX.tmp``)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.warp_video", f"--workdir={workdir}", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            tmp = [n for n in _hidden(workdir) if n.startswith(".warp_video-")]
            try:
                files = os.listdir(os.path.join(workdir, tmp[0])) if tmp else []
            except FileNotFoundError:  # the folder went away between the two calls
                files = []
            if any(".npy" in f for f in files):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before it could be killed"
    finally:
        proc.send_signal(sig)
        proc.wait(timeout=120)


def test_workdir_holds_one_run(small_run, tmp_path, caplog):
    """After a grid + particle run: a particle-only run into the same workdir is refused (and
    the old run stays whole) unless overwrite=True, which replaces the old run's files (no old
    noise_grid.npy or side_by_side.gif beside the new ones). A killed run's temporary folder,
    holding unfinished .npy files, is removed and reported by the next run."""
    import shutil

    old, _ = small_run
    workdir = str(tmp_path / "wd")
    shutil.copytree(old, workdir)
    before = {n: os.path.getmtime(os.path.join(workdir, n)) for n in os.listdir(workdir)}
    quiet = {"output.mp4": False, "output.gif": False, "methods": ("particle",)}
    config_args = [
        "--config=configs/warp_video.py:small",
        "--config.output.mp4=False",
        "--config.output.gif=False",
        "--config.methods=('particle',)",
        "--config.overwrite=True",
    ]
    _kill_when_writing(workdir, config_args)
    stale = _hidden(workdir)
    assert len(stale) == 1 and stale[0].startswith(".warp_video-")
    assert {n: os.path.getmtime(os.path.join(workdir, n)) for n in os.listdir(workdir)} == {
        **before,
        stale[0]: os.path.getmtime(os.path.join(workdir, stale[0])),
    }  # the killed run touched none of the old run's files

    with pytest.raises(ValueError, match=r"holds another run.*methods.*--config.overwrite=True"):
        warp_video.run(_small(**quiet), workdir)
    assert _hidden(workdir) == []  # the stale folder is removed, and reported
    assert any("was killed" in r.getMessage() for r in caplog.records)
    assert {n: os.path.getmtime(os.path.join(workdir, n)) for n in os.listdir(workdir)} == before

    summary = warp_video.run(_small(overwrite=True, **quiet), workdir)
    assert sorted(os.listdir(workdir)) == [
        "config.json",
        "flows.npy",
        "noise_particle.npy",
        "noise_particle_latent.npy",
        "stats.jsonl",
        "stats.png",
        "still.png",
        "summary.json",
        "xt_slice.png",
    ]
    assert set(summary["methods"]) == {
        f"{m}/{r}" for m in ("particle", "fresh") for r in ("full", "latent")
    }
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["methods"] == ["particle"]
    np.testing.assert_array_equal(
        np.load(os.path.join(workdir, "noise_particle.npy")),
        np.load(os.path.join(old, "noise_particle.npy")),
    )


def test_sigterm_removes_the_temporary_folder(tmp_path):
    """A run ended by SIGTERM cleans up as on an error: nothing is left in the workdir."""
    workdir = tmp_path / "wd"
    args = ["--config=configs/warp_video.py:small", "--config.output.mp4=False"]
    _kill_when_writing(str(workdir), args, sig=signal.SIGTERM)
    assert not workdir.exists() or os.listdir(workdir) == []


@pytest.mark.parametrize("fps", [-1.0, float("nan"), float("inf")])
def test_negative_or_non_finite_fps_is_refused_when_planned(tmp_path, fps):
    """A negative output.fps used to mean "the clip's rate", silently (issue 18, item 9)."""
    _assert_fails_cleanly(
        _small(**{"output.fps": fps}),
        str(tmp_path / "out"),
        ValueError,
        r"output.fps must be a finite number >= 0",
    )
