"""The ``irwarp`` command end to end on synthetic clips with a known pan (tests/clipgen.py).

Runs go through ``irwarp.cli.main`` in this process (its compiled programs are reused between
runs of one shape), except the compilation-cache test, which needs fresh processes. Every run
passes ``--cache-dir`` (never the user's cache) and ``--quiet``. The clips are small: 9 frames of
128 x 192 give a cogvideox latent of 3 x 16 x 24 x 16; the method is ``particle`` wherever the
method does not matter (it compiles in seconds); ``grid`` (the default) runs once.
"""

import json
import os
import subprocess
import sys

import clipgen
import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy

import irwarp
from irwarp import cli, export, methods, stats

T, H, W, DX = 9, 128, 192, 8  # cogvideox: latent (3, 16, 24, 16); 1 latent px per video frame
LATENT_SHIFT = 4 * DX // 8  # latent px per latent frame (4 video frames, spatial factor 8)
FAST = ["--method", "particle", "--cache-dir", "none", "--quiet"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def warp(*args) -> int:
    """``irwarp warp ARGS`` in this process; returns the exit code (argparse's too)."""
    try:
        return cli.main(["warp", *map(str, args)])
    except SystemExit as e:
        return e.code


def ok(*args) -> str:
    """Runs ``irwarp warp ARGS`` (fast defaults first, so ARGS override them); returns --out."""
    argv = [*FAST, *map(str, args)]
    assert warp(*argv) == 0, argv
    return str(argv[argv.index("--out") + 1])


def listing(folder) -> list[str]:
    """Every name in ``folder``, hidden temporaries included."""
    return sorted(os.listdir(folder))


def snapshot(folder) -> dict:
    """Name -> (bytes, mtime) of every file in ``folder`` (None if the folder does not exist)."""
    if not os.path.exists(folder):
        return None
    out = {}
    for name in listing(folder):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            out[name] = (f.read(), os.stat(path).st_mtime_ns)
    return out


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def load_meta(out) -> dict:
    with open(os.path.join(out, "meta.json")) as f:
        return json.load(f)


def shift_corr(a, b, shift: int) -> float:
    """Correlation of ``b[:, shift:]`` with ``a[:, :-shift]`` (content moving +shift along W)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if shift > 0:
        a, b = a[:, :-shift], b[:, shift:]
    elif shift < 0:
        a, b = a[:, -shift:], b[:, :shift]
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# ----------------------------------------------------------------------------- clips and runs


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    pan = clipgen.pan_frames(T, H, W, DX)
    c = {
        "root": root,
        "mp4": clipgen.write_mp4(str(root / "pan.mp4"), pan),
        "pan": clipgen.write_folder(str(root / "pan"), pan),
        "short": clipgen.write_folder(str(root / "short"), pan[:3]),
        "odd": clipgen.write_folder(str(root / "odd"), clipgen.pan_frames(5, 130, 197, DX)),
        "ltx": clipgen.write_folder(str(root / "ltx"), clipgen.pan_frames(17, 64, 96, DX)),
        "small": clipgen.write_folder(str(root / "small"), clipgen.pan_frames(5, 64, 64, DX)),
    }
    return c


@pytest.fixture(scope="module")
def runs(clips, tmp_path_factory):
    """The shared runs: out folders by name."""
    root = tmp_path_factory.mktemp("runs")
    r = {}
    # The one grid run: the default method, on a video file.
    r["grid"] = str(root / "grid")
    assert warp(clips["mp4"], "--out", r["grid"], "--preset", "cogvideox", "--cache-dir", "none",
                "--quiet") == 0  # fmt: skip
    r["fresh"] = ok(clips["mp4"], "--out", root / "fresh", "--method", "fresh", "--latent-only")
    r["base"] = ok(clips["pan"], "--out", root / "base")
    r["again"] = ok(clips["pan"], "--out", root / "again")
    r["seed1"] = ok(clips["pan"], "--out", root / "seed1", "--seed", 1, "--latent-only")
    r["f32"] = ok(clips["pan"], "--out", root / "f32", "--dtype", "float32")
    for dtype in ("float16", "bfloat16", "float32"):
        r[f"st_{dtype}"] = ok(
            clips["pan"], "--out", root / f"st_{dtype}", "--format", "safetensors",
            "--dtype", dtype,
        )  # fmt: skip
    for layout in ("TCHW", "CTHW"):
        r[layout] = ok(clips["pan"], "--out", root / layout, "--layout", layout)
    r["latent_only"] = ok(clips["pan"], "--out", root / "latent_only", "--latent-only")
    return r


# ----------------------------------------------------------------------------- 1. the files


def test_default_run_writes_the_documented_files(runs):
    out = runs["grid"]
    assert listing(out) == [
        "meta.json",
        "noise.npy",
        "noise_frames.npy",
        "preview.mp4",
        "stats.json",
    ]
    noise = np.load(os.path.join(out, "noise.npy"))
    frames = np.load(os.path.join(out, "noise_frames.npy"))
    t_latent = (T - 1) // 4 + 1
    assert noise.shape == (t_latent, H // 8, W // 8, 16) and noise.dtype == np.float16
    assert frames.shape == (T, H // 8, W // 8, 16) and frames.dtype == np.float16
    # "subsample": latent frame j is video frame 4 j, bit for bit
    np.testing.assert_array_equal(noise, frames[::4])
    # every output is an ordinary file (rw-r--r-- under the usual umask), like np.save's
    mask = os.umask(0)
    os.umask(mask)
    for name in listing(out):
        assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o666 & ~mask, name


def test_meta_json(runs, clips):
    meta = load_meta(runs["grid"])
    assert meta["irwarp"] == irwarp.__version__
    assert meta["preset"]["name"] == "cogvideox"
    assert (meta["preset"]["channels"], meta["preset"]["spatial"], meta["preset"]["temporal"]) == (
        16,
        8,
        4,
    )
    assert meta["method"] == "grid"
    assert meta["options"] == methods.get_method("grid").resolve({}, rank=2)
    assert meta["seed"] == 0 and meta["key"] == "jax.random.key(0)"
    assert meta["files"] == {
        "noise": {"name": "noise.npy", "shape": [3, 16, 24, 16], "layout": "THWC",
                  "dtype": "float16"},
        "noise_frames": {"name": "noise_frames.npy", "shape": [T, 16, 24, 16], "layout": "THWC",
                         "dtype": "float16"},
    }  # fmt: skip
    assert meta["latent_frames"] == 3
    assert meta["latent_video_frames"] == [0, 4, 8]
    assert meta["temporal_mode"] == "subsample"
    assert meta["video"]["num_frames"] == T and meta["video"]["frames_used"] == list(range(T))
    assert meta["video"]["size"] == [H, W] and meta["latent_size"] == [16, 24]
    assert meta["video"]["fps"] == pytest.approx(25.0)  # the mp4's frame rate
    assert meta["source"] == os.path.abspath(clips["mp4"])
    s = meta["settings"]
    assert set(export.SETTINGS_KEYS) <= set(s)
    assert (s["preset"], s["method"], s["seed"], s["layout"], s["dtype"], s["fmt"]) == (
        "cogvideox",
        "grid",
        0,
        "THWC",
        "float16",
        "npy",
    )
    t = meta["timings"]
    assert t["total_s"] > 0 and t["frames_per_s"] > 0 and t["batch"] == 1
    assert t["total_s"] >= t["compile_first_s"] >= 0 and t["warp_s"] >= 0


def test_stats_json_rows_agree_with_the_noise(runs):
    out = runs["grid"]
    with open(os.path.join(out, "stats.json")) as f:
        doc = json.load(f)
    rows = doc["frames"]
    assert [r["t"] for r in rows] == list(range(T))
    assert [r["video_frame"] for r in rows] == list(range(T))
    assert [r["latent_frame"] for r in rows] == [0, None, None, None, 1, None, None, None, 2]
    assert rows[0]["coherence"] is None and all(r["coherence"] is not None for r in rows[1:])
    # the statistics are of the written noise (float16 rounding moves them by ~1e-4)
    frames = np.load(os.path.join(out, "noise_frames.npy")).astype(np.float64)
    for r, x in zip(rows, frames, strict=True):
        assert r["mean"] == pytest.approx(x.mean(), abs=1e-3)
        assert r["var"] == pytest.approx(x.var(), abs=1e-3)
        assert 0 <= r["ks"] <= 1 and 0 <= r["ks_p"] <= 1
    s = doc["summary"]
    assert s["frames"] == T and s["n_per_frame"] == 16 * 24 * 16
    assert s["ks_p_min_latent"] == min(rows[t]["ks_p"] for t in (0, 4, 8))
    # the stored coherence is the flow-aligned correlation of consecutive frames: near 1 on a pan
    assert s["coherence_median"] > 0.9


@pytest.mark.filterwarnings("ignore:os.fork")  # imageio-ffmpeg's fork is followed by exec
def test_preview_mp4(runs):
    import imageio.v2 as imageio

    meta = load_meta(runs["grid"])
    fh, fw = meta["flow_size"]
    reader = imageio.get_reader(os.path.join(runs["grid"], "preview.mp4"), format="ffmpeg")
    try:
        shapes = [frame.shape for frame in reader]
    finally:
        reader.close()
    assert len(shapes) == T
    assert set(shapes) == {(fh, 2 * fw, 3)}  # the video beside its noise


# ----------------------------------------------------------------------------- 2., 3. the law


def test_every_latent_frame_is_white(runs):
    """Each latent frame (6144 samples) passes the whiteness checks at 5 standard errors,
    Bonferroni-corrected over the frames; so does every video frame's noise."""
    for name in ("noise.npy", "noise_frames.npy"):
        x = np.load(os.path.join(runs["grid"], name)).astype(np.float32)
        checks = stats.whiteness_checks(x, frame_axes=0)
        assert checks["all"], (name, checks)


def test_noise_moves_with_the_content(runs):
    """On a pan of 8 px per video frame the noise of latent frame k + 1 is that of latent frame k
    moved by 4 latent px.

    Warped noise transports every interior latent pixel exactly along an exact flow, so the
    correlation is 1 up to flow-estimation error and float16 rounding (~1e-3): 0.99 measured,
    bound 0.9. At the wrong shifts (0, and the opposite direction) the frames are two windows of
    white noise 4 px apart, correlation within 5 standard errors of 0 (se = 1 / sqrt(n), n the
    number of pairs: 16 x 20 x 16 = 5120, 5 se = 0.07). So is fresh noise at the right shift.
    """
    warped = np.load(os.path.join(runs["grid"], "noise.npy"))
    fresh = np.load(os.path.join(runs["fresh"], "noise.npy"))
    n = 16 * (24 - LATENT_SHIFT) * 16
    bound = 5 / np.sqrt(n)
    for k in range(warped.shape[0] - 1):
        assert shift_corr(warped[k], warped[k + 1], LATENT_SHIFT) > 0.9, k
        assert abs(shift_corr(warped[k], warped[k + 1], -LATENT_SHIFT)) < bound, k
        assert abs(shift_corr(warped[k], warped[k + 1], 0)) < 5 / np.sqrt(16 * 24 * 16), k
        assert abs(shift_corr(fresh[k], fresh[k + 1], LATENT_SHIFT)) < bound, k
    assert stats.whiteness_checks(fresh.astype(np.float32), frame_axes=0)["all"]


def test_forward_flow_methods_move_and_measure_along_the_backward_flow(clips, tmp_path):
    """splat takes forward flows: its noise moves with the pan like the others, and stats.json
    measures its coherence along the backward flow (along the forward flow it would be ~0)."""
    out = ok(clips["pan"], "--out", tmp_path / "splat", "--method", "splat", "--preset", "sd")
    x = np.load(os.path.join(out, "noise.npy"))
    shift = DX // 8  # sd: every video frame is a latent frame, 1 latent px apart
    for k in range(x.shape[0] - 1):
        assert shift_corr(x[k], x[k + 1], shift) > 0.9, k
    rows = json.load(open(os.path.join(out, "stats.json")))["frames"]
    assert all(r["coherence"] > 0.9 for r in rows[1:]), [r["coherence"] for r in rows]


# ----------------------------------------------------------------------------- 4. formats


def test_safetensors_dtypes(runs):
    ref32 = np.load(os.path.join(runs["f32"], "noise.npy"))
    ref16 = np.load(os.path.join(runs["base"], "noise.npy"))
    assert ref32.dtype == np.float32
    np.testing.assert_array_equal(ref16, ref32.astype(np.float16))  # one rounding of one noise
    for dtype, want in (
        ("float16", ref16),
        ("bfloat16", ref32.astype(ml_dtypes.bfloat16)),
        ("float32", ref32),
    ):
        out = runs[f"st_{dtype}"]
        assert {"noise.safetensors", "noise_frames.safetensors"} <= set(listing(out))
        tensors = safetensors.numpy.load_file(os.path.join(out, "noise.safetensors"))
        assert list(tensors) == ["noise"]
        x = tensors["noise"]
        assert x.dtype == np.dtype(want.dtype) and x.shape == (3, 16, 24, 16), dtype
        np.testing.assert_array_equal(x.view(np.uint8), want.view(np.uint8))  # bit for bit
        frames = safetensors.numpy.load_file(os.path.join(out, "noise_frames.safetensors"))
        np.testing.assert_array_equal(frames["noise"][::4].view(np.uint8), x.view(np.uint8))
        with safetensors.safe_open(os.path.join(out, "noise.safetensors"), "numpy") as f:
            md = f.metadata()
        assert md["irwarp"] == irwarp.__version__ and md["preset"] == "cogvideox"
        assert md["layout"] == "THWC"
        assert load_meta(out)["files"]["noise"]["dtype"] == dtype


@pytest.mark.parametrize("layout, perm", [("TCHW", (0, 3, 1, 2)), ("CTHW", (3, 0, 1, 2))])
def test_layouts_are_transposes(runs, layout, perm):
    for name in ("noise.npy", "noise_frames.npy"):
        thwc = np.load(os.path.join(runs["base"], name))
        x = np.load(os.path.join(runs[layout], name))
        np.testing.assert_array_equal(x, np.transpose(thwc, perm))
        assert x.flags.c_contiguous  # a plain C-order file
        assert load_meta(runs[layout])["files"][name.split(".")[0]] == {
            "name": name,
            "shape": list(x.shape),
            "layout": layout,
            "dtype": "float16",
        }


def test_bfloat16_npy_is_refused_naming_safetensors(clips, tmp_path, capsys):
    out = tmp_path / "out"
    assert warp(clips["pan"], "--out", out, "--dtype", "bfloat16", *FAST) == 2
    err = capsys.readouterr().err
    assert err.startswith("irwarp warp: error: ")
    assert "bfloat16" in err and "--format safetensors" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- 5. runs


def test_same_seed_same_bits_other_seed_other_noise(runs):
    for name in ("noise.npy", "noise_frames.npy", "stats.json"):
        assert read_bytes(os.path.join(runs["base"], name)) == read_bytes(
            os.path.join(runs["again"], name)
        ), name
    a = np.load(os.path.join(runs["base"], "noise.npy"))
    b = np.load(os.path.join(runs["seed1"], "noise.npy"))
    assert a.shape == b.shape and not np.array_equal(a, b)
    # independent draws: uncorrelated, within 5 standard errors, frame by frame
    for k in range(a.shape[0]):
        assert abs(shift_corr(a[k], b[k], 0)) < 5 / np.sqrt(a[k].size), k
    assert load_meta(runs["seed1"])["seed"] == 1


def test_latent_only(runs):
    out = runs["latent_only"]
    assert listing(out) == ["meta.json", "noise.npy"]
    assert list(load_meta(out)["files"]) == ["noise"]
    np.testing.assert_array_equal(
        np.load(os.path.join(out, "noise.npy")), np.load(os.path.join(runs["base"], "noise.npy"))
    )


@pytest.mark.parametrize(
    "clip, args, shape",
    [
        ("pan", ["--preset", "sd"], (T, 16, 24, 4)),
        ("ltx", ["--preset", "ltx"], (3, 2, 3, 128)),
        ("pan", ["--preset", "none", "--channels", 3, "--size", "64x96"], (T, 64, 96, 3)),
    ],
)
def test_other_presets(clips, tmp_path, clip, args, shape):
    out = ok(clips[clip], "--out", tmp_path / "out", "--latent-only", *args)
    x = np.load(os.path.join(out, "noise.npy"))
    assert x.shape == shape and x.dtype == np.float16
    meta = load_meta(out)
    assert meta["latent_frames"] == shape[0]
    assert meta["latent_video_frames"] == [j * (8 if clip == "ltx" else 1) for j in range(shape[0])]
    assert stats.whiteness_checks(x.astype(np.float32), frame_axes=0)["all"]


def test_integral_mode_streams_the_causal_groups(clips, runs, tmp_path):
    """Latent frame j >= 1 under "integral" is (1/2) x the sum of video frames 4 j - 3 .. 4 j
    (k = 4), frame 0 alone: the streamed grouping equals the formula on the written frames."""
    out = ok(clips["pan"], "--out", tmp_path / "out", "--dtype", "float32",
             "--temporal-mode", "integral", "--no-preview", "--no-stats")  # fmt: skip
    frames = np.load(os.path.join(out, "noise_frames.npy")).astype(np.float64)
    noise = np.load(os.path.join(out, "noise.npy"))
    np.testing.assert_array_equal(frames, np.load(os.path.join(runs["f32"], "noise_frames.npy")))
    want = np.stack([frames[0]] + [frames[4 * j - 3 : 4 * j + 1].sum(0) / 2 for j in (1, 2)])
    np.testing.assert_allclose(noise, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- 6. bad input


def _refused(capsys, out, *args, expect=()):
    """The run exits 2 with ``irwarp warp: error:`` naming ``expect``; ``out`` is untouched."""
    before = snapshot(out)
    assert warp(*args, "--out", out, *FAST) == 2, args
    err = capsys.readouterr().err
    assert "irwarp warp: error:" in err
    for text in expect:
        assert text in err, (text, err)
    assert snapshot(out) == before
    return err


def test_refuses_a_video_shorter_than_one_latent_group(clips, tmp_path, capsys):
    _refused(capsys, tmp_path / "o", clips["short"],
             expect=("needs at least 5 video frames", "gives 3"))  # fmt: skip


def test_refuses_a_size_the_factor_does_not_divide(clips, tmp_path, capsys):
    _refused(capsys, tmp_path / "o", clips["odd"],
             expect=("divisible by its spatial factor 8", "got (130, 197)",
                     "pass --size 128x192"))  # fmt: skip
    # and the size it names is accepted
    ok(clips["odd"], "--out", tmp_path / "fixed", "--size", "128x192", "--latent-only")


@pytest.mark.parametrize(
    "flag, value, expect",
    [
        ("--preset", "cogvideo", "invalid choice: 'cogvideo' (choose from 'cogvideox'"),
        ("--layout", "HWTC", "invalid choice: 'HWTC' (choose from 'THWC', 'TCHW', 'CTHW')"),
        ("--method", "gird", "unknown method 'gird'; expected one of grid, particle"),
        ("--option", "nosuch=1", "unknown option(s) ['nosuch'] for method 'particle'"),
        ("--size", "128", "expected HxW, e.g. 480x720; got '128'"),
    ],
)
def test_refuses_unknown_names(clips, tmp_path, capsys, flag, value, expect):
    out = tmp_path / "o"
    assert warp(clips["pan"], "--out", out, *FAST, flag, value) == 2
    assert expect in capsys.readouterr().err
    assert not out.exists()


def test_refuses_an_unwritable_output_folder(clips, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _refused(capsys, str(blocker / "out"), clips["pan"],
             expect=("cannot write to the output folder", "Not a directory"))  # fmt: skip
    assert blocker.read_text() == "not a folder"


def test_refuses_a_flow_file_of_the_wrong_shape(clips, tmp_path, capsys):
    flow = tmp_path / "flow.npy"
    np.save(flow, np.zeros((T - 1, H // 2, W // 2, 2), np.float32))
    _refused(capsys, tmp_path / "o", clips["pan"], "--flow", flow,
             expect=(f"expected flows of shape (T - 1, H, W, 2) = {(T - 1, H, W, 2)}",
                     f"got {(T - 1, H // 2, W // 2, 2)}"))  # fmt: skip
    _refused(capsys, tmp_path / "o", clips["pan"], "--flow", tmp_path / "missing.npy",
             expect=("an existing flow file", "missing.npy"))  # fmt: skip


def test_refuses_a_missing_or_unreadable_video(clips, tmp_path, capsys):
    _refused(capsys, tmp_path / "o", tmp_path / "missing.mp4",
             expect=("expected a video file or a folder of frames", "does not exist"))  # fmt: skip
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    _refused(capsys, tmp_path / "o", junk, expect=("expected a video that ffmpeg can decode",))


def test_refuses_a_folder_holding_another_run_unless_overwrite(clips, tmp_path, capsys):
    out = ok(clips["pan"], "--out", tmp_path / "out")
    err = _refused(capsys, out, clips["pan"], "--seed", 1,
                   expect=("already holds a different run", "seed", "--overwrite"))  # fmt: skip
    assert "differs in: key, seed" in err
    # the same run again is not "different": it is accepted and rewrites the same bits
    first = read_bytes(os.path.join(out, "noise.npy"))
    ok(clips["pan"], "--out", out)
    assert read_bytes(os.path.join(out, "noise.npy")) == first
    # --overwrite replaces it, and leaves no file of the old run (here: another format, and
    # latent frames only) beside the new meta.json
    ok(clips["pan"], "--out", out, "--seed", 1, "--overwrite", "--latent-only",
       "--format", "safetensors")  # fmt: skip
    assert listing(out) == ["meta.json", "noise.safetensors"]
    assert load_meta(out)["seed"] == 1


# ----------------------------------------------------------------------------- 7. interrupted


@pytest.fixture
def corrupt_clip(clips, tmp_path):
    """The pan with frame 5 of 9 truncated after its header (probe accepts it; decoding fails)."""
    folder = clipgen.write_folder(str(tmp_path / "corrupt"), clipgen.pan_frames(T, H, W, DX))
    bad = os.path.join(folder, "frame_005.png")
    head = read_bytes(bad)[:200]
    with open(bad, "wb") as f:
        f.write(head)
    return folder


def test_a_failed_run_leaves_nothing(corrupt_clip, tmp_path, capsys):
    """Decoding fails at frame 5: with --chunk 2, frames 0-4 have reached the temporary files
    by then. Nothing that looks finished, and no temporary, is left."""
    out = tmp_path / "out"
    assert warp(corrupt_clip, "--out", out, *FAST, "--chunk", 2) == 2
    err = capsys.readouterr().err
    assert "expected a readable image; could not decode" in err and "frame_005.png" in err
    assert listing(out) == []


def test_a_failed_overwrite_leaves_no_finished_look(corrupt_clip, clips, tmp_path, capsys):
    """A failed --overwrite of a finished run: the old meta.json is gone (the folder no longer
    claims to hold a finished run), and no temporary is left."""
    out = ok(clips["pan"], "--out", tmp_path / "out")
    assert warp(corrupt_clip, "--out", out, *FAST, "--chunk", 2, "--seed", 1, "--overwrite") == 2
    capsys.readouterr()
    names = listing(out)
    assert "meta.json" not in names
    assert not [n for n in names if n.startswith(".")], names


def test_an_interrupted_run_leaves_nothing(clips, tmp_path, capsys, monkeypatch):
    """Ctrl-C in the middle of writing: exit 130, the output folder empty."""
    added = []
    real_add = export._Outputs.add

    def add(self, *args):
        if len(added) == 5:
            raise KeyboardInterrupt
        added.append(1)
        return real_add(self, *args)

    monkeypatch.setattr(export._Outputs, "add", add)
    out = tmp_path / "out"
    assert warp(clips["pan"], "--out", out, *FAST, "--chunk", 2) == 130
    assert "interrupted; no partial output was left" in capsys.readouterr().err
    assert listing(out) == []


# ----------------------------------------------------------------------------- 8. help


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse's line wrapping undone


def test_top_level_help_names_the_commands(capsys):
    text = _help(capsys)
    for command in ("warp", "dataset", "presets"):
        assert command in text


@pytest.mark.parametrize("command", ["warp", "dataset"])
def test_help_lists_every_flag_with_its_default(capsys, monkeypatch, command):
    monkeypatch.delenv("IRWARP_CACHE_DIR", raising=False)
    text = _help(capsys, command)
    sub = cli.build_parser()._subparsers._group_actions[0].choices[command]
    flags = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    for action in flags:
        assert action.option_strings[-1] in text, action.dest
    assert text.count("(default:") >= len(flags)
    for fragment in (
        "--preset {cogvideox,wan,hunyuan,ltx,sd,animatediff,none}",
        "(default: cogvideox)",
        "--method METHOD",
        "(default: grid)",
        "--dtype {float16,bfloat16,float32} noise dtype (default: float16)",
        "--layout {THWC,TCHW,CTHW}",
        "(default: THWC)",
        "--chunk CHUNK frames per compiled step (default: 16)",
        "--seed SEED seed of the noise (default: 0)",
        "(default: subsample)",
        f"(default: {cli.DEFAULT_CACHE})",
        "--latent-only",
        "(default: False)",
    ):
        assert fragment in text, fragment
    if command == "dataset":
        assert "--coordinator HOST:PORT" in text and "--num-processes" in text


def test_presets_command_lists_every_preset(capsys):
    assert cli.main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == list(export.presets.preset_names())


# ----------------------------------------------------------------------------- 9. the cache


def test_persistent_compilation_cache(clips, tmp_path):
    """Two processes with one --cache-dir: the first fills it, the second compiles nothing new
    (every program is found) and writes the same bits."""
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("IRWARP_CACHE_DIR", None)
    entries = []
    for i in (1, 2):
        cmd = [sys.executable, "-m", "irwarp.cli", "warp", clips["small"], "--out",
               str(tmp_path / f"out{i}"), "--method", "particle", "--latent-only", "--quiet",
               "--cache-dir", str(cache)]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "wrote" in done.stdout
        entries.append(sorted(os.listdir(cache)))
    assert entries[0], "the cache folder is empty after the first run"
    assert entries[1] == entries[0]
    assert read_bytes(tmp_path / "out1" / "noise.npy") == read_bytes(
        tmp_path / "out2" / "noise.npy"
    )
