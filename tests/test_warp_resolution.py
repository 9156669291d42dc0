"""Smoke test of experiments/warp_resolution.py on its ``small`` config (50-80 s on 2 CPU cores)."""

import importlib
import json
import math

import numpy as np
import pytest

from experiments import warp_resolution
from experiments.lib import tables
from experiments.lib import workdir as workdir_lib

pytestmark = pytest.mark.slow

# Per-frame mean and variance of N(0, 1) latent frames, in standard errors (the largest over T
# frames of one row; frames of a warped video share their noise, so no Bonferroni gain is taken).
NUM_SE = 5.0


def small_config():
    config = importlib.import_module("configs.warp_resolution").get_config("small")
    config.preset_latent = ()  # the preset timing has its own test below (it compiles again)
    return config


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("warp_resolution")
    config = small_config()
    return warp_resolution.run(config, str(workdir)), workdir, config


def test_outputs(small_run):
    rows, workdir, config = small_run
    assert json.loads((workdir / "config.json").read_text()) == json.loads(config.to_json())
    assert workdir_lib.read_jsonl(str(workdir / "metrics.jsonl")) == json.loads(json.dumps(rows))
    assert (workdir / "warp_resolution.png").read_bytes().startswith(b"\x89PNG")
    header, body = tables.parse_markdown_table((workdir / "results.md").read_text(), "flow")
    assert "corr t=1" in header and "x normal" in header
    labels = len(config.scales) + int(config.reference_repeat)
    assert len(body) == len(rows) == len(config.flows) * len(config.methods) * labels


def test_law(small_run):
    rows, _, config = small_run
    factor = int(config.factor)
    by = {(r["flow"], r["method"], r["scale"]): r for r in rows}
    for r in rows:
        corr = np.asarray(r["corr_valid"] + r["corr_all"], np.float64)
        assert np.all(np.isfinite(corr)) and np.all(np.abs(corr) <= 1.0 + 1e-9), r["label"]
        # Every scale's latent frames are N(0, 1): mean and variance within a few standard errors.
        assert r["max_abs_mean_z"] < NUM_SE, (r["flow"], r["method"], r["label"])
        assert r["max_abs_var_z"] < NUM_SE, (r["flow"], r["method"], r["label"])
        assert r["white"], (r["flow"], r["method"], r["label"], r["failed"])
        assert 0.0 < r["coherence_mean"] < 1.0
        assert r["s_per_frame"] > 0 and r["normal_s_per_frame"] > 0
    for f in config.flows:
        for m in config.methods:
            ref = by[f, m, factor]
            np.testing.assert_allclose(ref["corr_valid"], 1.0, atol=1e-6)
            # The reference with another key is not the reference: the ceiling is below 1.
            assert by[f, m, warp_resolution.REF_REPEAT]["corr_valid"][0] < 0.999
            # Measured (docs/results.md): warping at 4x the latent beats the latent at t = 1.
            assert by[f, m, 4]["corr_valid"][0] > by[f, m, 1]["corr_valid"][0], (f, m)


def test_valid_masks_follow_the_trajectory():
    h, w = 6, 8
    flows = np.zeros((3, h, w, 2), np.float32)
    flows[0, 2, 3] = np.nan  # disoccluded at frame 1
    flows[1, ..., 0] = 1.0  # frame 2 pulls from one pixel to the right
    masks = warp_resolution.valid_masks(flows)
    assert not masks[0, 2, 3] and masks[0].sum() == h * w - 1
    # Frame 2's pixel (2, 2) pulls from x = 3.5 (the centre of the NaN pixel): invalid. The
    # right-most column pulls from outside the frame: invalid.
    assert not masks[1, 2, 2] and not masks[1, :, -1].any() and masks[1, 0, 0]
    assert masks[2].sum() == masks[1].sum()


def test_preset_speed_extrapolates_past_the_budget():
    config = small_config()
    config.methods = ("particle",)
    config.factor, config.scales, config.video_size = 2, (1, 2), (4, 6)
    config.preset_latent, config.preset_frames = (2, 3), 2
    config.preset_max_s_per_frame = 0.0  # every scale after the first is extrapolated
    rows = warp_resolution.preset_speed(config)
    assert [(r["scale"], r["extrapolated"]) for r in rows] == [(1, False), (2, True)]
    assert math.isclose(rows[1]["s_per_frame"], 4.0 * rows[0]["s_per_frame"])
    assert rows[1]["normal_s_per_frame"] is None


def test_config_variants():
    mod = importlib.import_module("configs.warp_resolution")
    json.loads(mod.get_config().to_json())
    with pytest.raises(ValueError, match="variant"):
        mod.get_config("huge")
    config = small_config()
    config.scales = (1, 3, 8)
    with pytest.raises(ValueError, match="divide"):
        warp_resolution.check_config(config)
