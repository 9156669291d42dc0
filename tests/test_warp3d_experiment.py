"""Smoke tests of experiments.warp3d and experiments.latent_noise on their ``small`` configs.

Each experiment runs once, in-process (module-scoped fixtures); the tests check that the outputs
exist and are finite, and a few laws that hold even at this size. About 90 s on 2 CPU cores,
nearly all of it XLA compilation.
"""

import importlib
import math

import pytest

from experiments import common

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config(name, arg=None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.fixture(scope="module")
def warp3d_run(tmp_path_factory):
    from experiments import warp3d

    workdir = tmp_path_factory.mktemp("warp3d")
    return warp3d.run(_config("warp3d", "small"), str(workdir)), workdir


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    from experiments import latent_noise

    workdir = tmp_path_factory.mktemp("latent_noise")
    return latent_noise.run(_config("latent_noise", "small"), str(workdir)), workdir


@pytest.mark.parametrize("name", ["warp3d", "latent_noise"])
def test_configs_load(name):
    for arg in (None, "small"):
        assert _config(name, arg).seed == 0
    with pytest.raises(ValueError, match="unknown"):
        _config(name, "huge")


def test_warp3d_outputs(warp3d_run):
    result, workdir = warp3d_run
    for f in ("config.json", "metrics.jsonl", "summary.md", "coherence.png", "volume_slices.png"):
        assert (workdir / f).is_file(), f
    for f in ("coherence.png", "volume_slices.png", "camera_frames.png"):
        assert (workdir / f).read_bytes()[:8] == PNG_MAGIC
    for f in ("volume.gif", "camera.gif"):
        assert (workdir / f).read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    rows = common.read_jsonl(str(workdir / "metrics.jsonl"))
    cfg = _config("warp3d", "small")
    n_vol = len(cfg.volume.methods) * (cfg.volume.frames + 1)
    n_cam = len(cfg.camera.methods) * (cfg.camera.frames + 1)
    assert len(rows) == n_vol + n_cam
    for r in rows:
        for key in ("var", "ks_p", "coherence", "direct"):
            assert r[key] is not None and math.isfinite(r[key]), (key, r)
        assert 0.5 < r["var"] < 1.5, r
    text = (workdir / "summary.md").read_text()
    assert "## Rotating volume" in text and "## Camera fly-through" in text


def test_warp3d_warps_move_with_the_exact_motion(warp3d_run):
    """After one step every warp keeps about as much correlation with frame 0 moved exactly as a
    single exact warp does (retained near 1); a warp in the wrong direction would fall well below."""
    result, _ = warp3d_run
    for part in ("volume", "camera"):
        for m, c in result[part].items():
            assert c["coherence"][0] == pytest.approx(1.0, abs=1e-5), (part, m)
            assert 0.85 < c["retained"][1] < 1.15, (part, m, c["retained"][1])
            assert c["lag1"][1] > 0.4, (part, m)


def test_latent_noise_outputs_and_laws(latent_run):
    result, workdir = latent_run
    for f in ("temporal.png", "resolution.png"):
        assert (workdir / f).read_bytes()[:8] == PNG_MAGIC
    rows = {(r["motion"], r["k"], r["mode"]): r for r in result["temporal"]}
    k = 2
    # Independent frames: integral keeps variance 1, mean shrinks it to 1/k; a static scene: the
    # integral has variance k; subsampling always returns N(0, 1) frames. 16x16x2x2 values per
    # frame: the tolerances are 5+ standard errors.
    assert rows["fresh", k, "integral"]["var"] == pytest.approx(1.0, abs=0.12)
    assert rows["fresh", k, "mean"]["var"] == pytest.approx(1.0 / k, abs=0.06)
    assert rows["static", k, "integral"]["var"] == pytest.approx(
        k * rows["static", k, "mean"]["var"], rel=1e-4
    )
    for motion in ("v=0.5", "static", "fresh"):
        assert rows[motion, k, "subsample"]["var"] == pytest.approx(1.0, abs=0.12)
    res = result["resolution"]
    assert {r["k"] for r in res} == {1, 2}
    for r in res:
        assert r["corr_ref"] > 0.99 and r["rel_err"] < 0.1, r
        assert 0.7 < r["var"] < 1.3, r
    assert "## Resolution consistency" in (workdir / "summary.md").read_text()
