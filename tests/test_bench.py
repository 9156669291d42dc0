"""Smoke test of the benchmark experiment on its tiny config (about 30 s on 2 CPU cores)."""

import importlib
import importlib.util
import json
import math
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.lib import tables

ROOT = pathlib.Path(__file__).resolve().parents[1]
bench = importlib.import_module("experiments.bench")


def _load_config(arg=None):
    return importlib.import_module("configs.bench").get_config(arg)


def _table_rows(md: str, first_column: str) -> tuple[list[str], list[list[str]]]:
    return tables.parse_markdown_table(md, first_column)


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_bench_small_end_to_end(tmp_path):
    config = _load_config("small")
    rows = bench.run(config, str(tmp_path))

    for name in ("bench.md", "bench.jsonl", "split.jsonl", "config.json"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(config.to_json())

    shapes = [" x ".join(map(str, s)) for s in config.shapes]
    expected = {(m, s) for m in config.methods for s in shapes}
    expected |= {(bench.REFERENCE, s) for s in shapes}

    # bench.jsonl: one line per row, every number finite and positive.
    lines = [json.loads(x) for x in (tmp_path / "bench.jsonl").read_text().splitlines()]
    assert len(lines) == len(expected) == len(rows)
    assert {(r["method"], r["shape_str"]) for r in lines} == expected
    for r in lines:
        for k in ("compile_s", "median_ms", "ratio", "xla_temp_mb", "repeats"):
            assert _positive(r[k]), (r["method"], k, r[k])
        assert r["backend"] and r["cpu"] and r["jax"]
    grid = [r for r in lines if r["method"] == "grid"]
    assert all(r["grid_overflow"] == 0 for r in grid)  # a 2-degree rotation fits capacity 3

    # bench.md: the hardware header and a table row per method x shape with positive numbers.
    md = (tmp_path / "bench.md").read_text()
    assert "jax " in md and "backend" in md and "cores" in md
    header, body = _table_rows(md, "method")
    assert tuple(header) == bench.COLUMNS
    assert {(r[0], r[1]) for r in body} == expected
    for r in body:
        for cell in r[2:6]:
            assert _positive(float(cell)), r

    split = [json.loads(x) for x in (tmp_path / "split.jsonl").read_text().splitlines()]
    assert {(r["method"], r["shape_str"]) for r in split} == {
        (m, s) for m in config.split_methods for s in shapes
    }
    for r in split:
        assert _positive(r["record_ms"]) and _positive(r["apply_ms"]), r

    # The public call eager (as the README's quick start writes it) next to the jitted one.
    eager = [json.loads(x) for x in (tmp_path / "eager.jsonl").read_text().splitlines()]
    assert {(r["method"], r["shape_str"]) for r in eager} == {
        (m, " x ".join(map(str, s))) for m in config.eager_methods for s in config.eager_shapes
    }
    for r in eager:
        assert _positive(r["jit_ms"]) and _positive(r["eager_ms"]), r
        assert r["eager_over_jit"] == pytest.approx(r["eager_ms"] / r["jit_ms"])
    header, body = _table_rows(md, "method | B x H x W x C")
    assert tuple(header) == bench.EAGER_COLUMNS and len(body) == len(eager)


@pytest.mark.parametrize("name", ["rotation", "translation", "zoom", "identity"])
def test_synthetic_flows_are_inverse(name):
    """The forward flow is the inverse motion of the backward one: phi(psi(p)) = p."""
    h, w = 6, 9
    back, fwd = bench.synthetic_flows(name, h, w, angle_deg=3.0, zoom=1.1, shift=(0.3, -0.2))
    assert back.shape == fwd.shape == (h, w, 2)
    y, x = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    c = np.array([w / 2, h / 2])
    p = np.stack([x, y], -1)
    q = p + np.asarray(back)  # psi(p), an affine map: apply the affine forward map to it
    a_inv = _affine_of(np.asarray(fwd), p)
    np.testing.assert_allclose(c + (q - c) @ a_inv[0].T + a_inv[1], p, atol=1e-4)
    if name == "identity":
        assert jnp.all(back == 0) and jnp.all(fwd == 0)


def _affine_of(flow, p):
    """Least-squares ``(A, b)`` with ``p + flow = c + A (p - c) + b``."""
    h, w = flow.shape[:2]
    c = np.array([w / 2, h / 2])
    rel = (p - c).reshape(-1, 2)
    target = (p + flow - c).reshape(-1, 2)
    design = np.concatenate([rel, np.ones((rel.shape[0], 1))], 1)
    sol, *_ = np.linalg.lstsq(design, target, rcond=None)
    return sol[:2].T, sol[2]


def test_unknown_method_and_flow_raise():
    with pytest.raises(ValueError, match="unknown benchmark method"):
        bench.make_warp("warpy", grid_capacity=3)
    with pytest.raises(ValueError, match="unknown flow"):
        bench.synthetic_flows("spiral", 4, 4, angle_deg=1.0, zoom=1.0, shift=(0, 0))


def test_bench_schedule_small_end_to_end(tmp_path):
    """The plain (deterministic) schedule's CPU cost against the CPU schedule: both rows per method."""
    bench_schedule = importlib.import_module("experiments.bench_schedule")
    config = importlib.import_module("configs.bench_schedule").get_config("small")
    config.methods = ("particle",)
    rows = bench_schedule.run(config, str(tmp_path))
    assert [r["schedule"] for r in rows] == ["cpu", "plain"]
    for r in rows:
        assert _positive(r["median ms"]) and _positive(r["ratio to random.normal"])
    assert rows[0]["plain / cpu"] == 1.0
    assert (tmp_path / "bench_schedule.md").read_text().count("| particle") == 2
