"""Smoke test of the end-to-end command benchmark on its tiny config (about 45-60 s on 2 CPU cores:
a 12-frame 64x96 clip, preset sd, one fresh ``irwarp warp`` process per run)."""

import importlib
import json
import math

import pytest

from experiments.lib import tables

pytestmark = pytest.mark.slow

bench_cli = importlib.import_module("experiments.bench_cli")


def _positive(cell: str) -> bool:
    v = float(cell)
    return math.isfinite(v) and v > 0


# The benchmark starts its subprocesses from a process that has imported JAX; they exec at once.
@pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called")
def test_bench_cli_small_end_to_end(tmp_path):
    config = importlib.import_module("configs.bench_cli").get_config("small")
    rows = bench_cli.run(config, str(tmp_path))

    for name in ("results.md", "metrics.jsonl", "config.json", "bench_cli.png"):
        assert (tmp_path / name).is_file(), name
    clips = sorted(p.name for p in (tmp_path / "clips").iterdir())
    assert clips == ["bigbuckbunny_64x96_crf18_12f.mp4", "bigbuckbunny_64x96_crf18_6f.mp4"]

    # One subprocess per scheduled job, each with a wall time, a peak RSS and meta.json timings.
    assert len(rows) == len(bench_cli.schedule(config))
    for r in rows:
        assert r["wall_s"] > 0 and r["peak_rss_mb"] > 0 and r["timings"]["total_s"] > 0, r
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == len(rows) + 1 and metrics[-1]["role"] == "reference"
    assert metrics[-1]["seconds"] > 0

    md = (tmp_path / "results.md").read_text()
    assert "Hardware:" in md and "Load average" in md
    header, body = tables.parse_markdown_table(md, "run | clip frames")
    assert tuple(header) == bench_cli.RUN_COLUMNS
    expected = {
        (role, frames, "grid", outputs)
        for role, frames in (("short", "6"), ("cogvideox", "9"), ("long", "12"))
        for outputs in ("default", "latent-only")
    }
    assert {(r[0], r[1], r[2], r[3]) for r in body} == expected
    for r in body:
        for c in ("wall s", "frames/s (wall)", "engine total s", "peak RSS MB", "steady frames/s"):
            assert _positive(r[header.index(c)]), (c, r)

    header, body = tables.parse_markdown_table(md, "method | outputs | frames short / long")
    assert len(body) == 2 and all(r[2] == "6 / 12" for r in body)
    for r in body:
        assert _positive(r[3]) and _positive(r[4]) and _positive(r[5]), r

    header, body = tables.parse_markdown_table(md, "method | video -> latent")
    assert [r[0] for r in body] == ["grid"] and r"64x96 -> 8 x 12 x 4" == body[0][1]
    assert _positive(body[0][header.index("warp / random.normal")])

    header, body = tables.parse_markdown_table(md, "outputs | frames -> latent")
    assert len(body) == 2 and all(_positive(r[header.index("wall s")]) for r in body)
