"""Smoke test of the dataset-throughput benchmark on its tiny config (about 20-40 s on 2 CPU
cores: 2 videos of 9 frames at 64x96, preset sd, one process and one process with 2 devices)."""

import importlib
import json
import math

import pytest

from experiments.lib import tables

pytestmark = pytest.mark.slow

bench_dataset = importlib.import_module("experiments.bench_dataset")


def _positive(cell: str) -> bool:
    v = float(cell)
    return math.isfinite(v) and v > 0


# The benchmark starts its subprocesses from a process that has imported JAX; they exec at once.
@pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called")
def test_bench_dataset_small_end_to_end(tmp_path):
    config = importlib.import_module("configs.bench_dataset").get_config("small")
    rows = bench_dataset.run(config, str(tmp_path))

    for name in ("results.md", "metrics.jsonl", "config.json", "manifest.jsonl"):
        assert (tmp_path / name).is_file(), name
    assert [p.name for p in (tmp_path / "clips").iterdir()] == ["bigbuckbunny_64x96_crf18_9f.mp4"]

    # One run per mode (no warm-up), each with its per-process reports and no failed check.
    assert [r["mode"] for r in rows] == ["single", "devices"]
    assert [r["devices"] for r in rows] == [1, 2]
    for r in rows:
        assert r["wall_s"] > r["report"]["seconds"] > 0 and not r["problems"], r["problems"]
        assert r["report"]["done"] == 2 and r["report"]["frames"] == 18
        assert [p["devices"] for p in r["per_process"]] == [r["devices"]]
        assert r["differ"] == [] and len(set(r["hashes"].values())) == 2
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["role"] for m in metrics] == ["timed", "timed", "summary", "summary"]

    md = (tmp_path / "results.md").read_text()
    assert "Hardware:" in md and "Load average" in md
    header, body = tables.parse_markdown_table(md, "mode | processes x devices")
    assert tuple(header) == bench_dataset.RUN_COLUMNS
    assert [r[0] for r in body] == [
        "(a) one process, one device",
        "(c) one process, 2 devices (batches of 2)",
    ]
    assert [r[1] for r in body] == ["1 x 1", "1 x 2"]
    col = header.index
    for r in body:
        for c in ("wall s", "videos/s (wall)", "frames/s (wall)", "report s", "frames/s (report)"):
            assert _positive(r[col(c)]), (c, r)
        assert r[col("split and per-process report ok")] == "yes", r
    assert body[0][col("noise bit-identical")] == "yes (2 / 2 videos, reference)"
    assert body[1][col("noise bit-identical")] == "yes (2 / 2 videos, 1 run)"

    header, body = tables.parse_markdown_table(md, "mode | process | devices")
    assert [(r[1], r[2], r[3], r[4]) for r in body] == [
        ("0", "1", "2", "18"),
        ("0", "2", "2", "18"),
    ]
    assert all(_positive(r[header.index("frames/s")]) for r in body)
