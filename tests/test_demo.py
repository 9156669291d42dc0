"""Smoke test of the demo experiment on its tiny config (about 15 s on 2 CPU cores)."""

import importlib
import importlib.util
import json
import math
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
demo = importlib.import_module("experiments.demo")
common = importlib.import_module("experiments.common")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_config(arg=None):
    return importlib.import_module("configs.demo").get_config(arg)


def _table(md: str) -> tuple[list[str], list[list[str]]]:
    """Header and body rows of the markdown table whose header starts with ``| method |``."""
    return common.parse_markdown_table(md, "method")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    config = _load_config("small")
    return config, workdir, demo.run(config, str(workdir))


def test_outputs_exist(small_run):
    config, workdir, result = small_run
    for name in ("config.json", "metrics.jsonl", "summary.md", "strip.png"):
        assert (workdir / name).is_file(), name
        assert (workdir / name).stat().st_size > 0, name
    assert json.loads((workdir / "config.json").read_text()) == json.loads(config.to_json())
    assert (workdir / "strip.png").read_bytes()[:8] == PNG_MAGIC
    assert set(result["outputs"]) == {"config", "metrics", "summary", "strip"}


def test_metrics_lines(small_run):
    config, workdir, _ = small_run
    rows = common.read_jsonl(str(workdir / "metrics.jsonl"))
    nt = config.num_frames
    assert [(r["method"], r["t"]) for r in rows] == [
        (m, t) for m in config.methods for t in range(nt)
    ]
    for r in rows:
        for k in demo.STATS:
            assert math.isfinite(r[k]), (r["method"], r["t"], k)
        if r["t"] == 0:
            assert r["temporal_corr"] is None
        else:
            assert -1.0 <= r["temporal_corr"] <= 1.0, r


def test_summary_table(small_run):
    config, workdir, result = small_run
    header, body = _table((workdir / "summary.md").read_text())
    assert tuple(header) == demo.COLUMNS
    assert [r[0] for r in body] == list(config.methods)
    numeric = [i for i, c in enumerate(header) if c in demo.STATS + ("temporal corr", "ms/frame")]
    for r in body:
        for i in numeric:
            assert math.isfinite(float(r[i])), (r[0], header[i], r[i])
        assert float(r[header.index("ms/frame")]) > 0
    assert set(result["summary"]) == set(config.methods)


def test_exact_warps_are_white_and_bilinear_is_not(small_run):
    _, _, result = small_run
    s = result["summary"]
    for method in ("grid", "particle", "splat"):
        assert s[method]["white"], (method, s[method]["failed"])
        # A coherent warp: clearly correlated with the previous frame along the flow.
        assert s[method]["temporal_corr"] > 0.3, (method, s[method]["temporal_corr"])
    # Bilinear resampling averages neighbours, so it lowers the variance in every warped frame.
    assert not s["bilinear"]["white"]
    assert s["bilinear"]["failed"].get("var") == s["bilinear"]["num_warped_frames"]
    assert s["bilinear"]["var"] < 0.8


def test_bad_configs_raise(tmp_path):
    config = _load_config("small")
    config.methods = ("warpy",)
    with pytest.raises(ValueError, match="unknown method"):
        demo.run(config, str(tmp_path))
    config = _load_config("small")
    config.plot.frames = (0, 99)
    with pytest.raises(ValueError, match="plot.frames"):
        demo.run(config, str(tmp_path))
    config = _load_config("small")
    config.flow.components = ("spiral",)
    with pytest.raises(ValueError, match="unknown flow component"):
        demo.build_flow(config)
