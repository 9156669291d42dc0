"""Smoke tests and expectations of the five paper experiments, and the notebook that shows them.

Each experiment runs once, in-process, on its ``small`` config (module-scoped fixtures); the tests
check that its outputs exist and are finite, and, for gaussianity and convergence, that the paper's
expectations hold on the small config. The notebook is executed headless on those workdirs. About
2 minutes on 2 CPU cores, nearly all of it XLA compilation.
"""

import importlib
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

from irwarp import flows  # noqa: E402

NAMES = ("gaussianity", "convergence", "cost", "degenerate", "coherence")
# Keys of each experiment's metric lines that must be finite numbers (a NaN is written as null).
FINITE_KEYS = {
    "gaussianity": ("mean", "var", "ks", "ks_p", "ac_x", "ac_y", "max_cross", "dup"),
    "convergence": ("exact_mae", "exact_rms", "mc_mae", "mc_floor", "mc_bias_rms"),
    "cost": ("ms", "compile_s", "xla_temp_mb", "run_mb", "process_peak_mb"),
    "degenerate": ("var", "ks_p", "map_max", "pair_max", "corr_input", "failsafe", "fresh"),
    "coherence": ("rho", "ideal", "retained"),
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_config(name, arg=None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory):
    return tmp_path_factory.mktemp("paper")


def _run(name, root):
    experiment = importlib.import_module(f"experiments.{name}")
    workdir = root / name
    return experiment.run(load_config(name, "small"), str(workdir)), workdir


@pytest.fixture(scope="module")
def gaussianity(paper_root):
    return _run("gaussianity", paper_root)


@pytest.fixture(scope="module")
def convergence(paper_root):
    return _run("convergence", paper_root)


@pytest.fixture(scope="module")
def cost(paper_root):
    return _run("cost", paper_root)


@pytest.fixture(scope="module")
def degenerate(paper_root):
    return _run("degenerate", paper_root)


@pytest.fixture(scope="module")
def coherence(paper_root):
    return _run("coherence", paper_root)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("arg", [None, "small"])
def test_config_loads(name, arg):
    config = load_config(name, arg)
    assert isinstance(config, ml_collections.ConfigDict)
    assert "seed" in config
    json.loads(config.to_json())  # every field serialises (config.json)
    with pytest.raises(ValueError, match="unknown"):
        load_config(name, "huge")


def _check_outputs(name, workdir):
    config = load_config(name, "small")
    assert json.loads((workdir / "config.json").read_text()) == json.loads(config.to_json())
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert lines
    for line in lines:
        row = json.loads(line)
        for key in FINITE_KEYS[name]:
            if key in row:
                v = row[key]
                assert isinstance(v, (int, float)) and math.isfinite(v), (name, key, row)
    pngs = sorted(workdir.glob("*.png"))
    assert pngs, name
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, png
    summary = (workdir / "summary.md").read_text()
    assert summary.startswith("# Claim") and "|---|" in summary
    for png in pngs:
        assert png.name in summary, png.name
    return [json.loads(line) for line in lines]


# Reading the real clip starts ffmpeg (fork + exec) after JAX has started threads; harmless here.
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
def test_gaussianity_outputs_and_expectations(gaussianity):
    rows, workdir = gaussianity
    _check_outputs("gaussianity", workdir)
    by = {(r["method"], r["flow"]): r for r in rows}
    zoo = flows.zoo(4, 4)
    injective = sorted(set(zoo) - flows.DEGENERATE)
    assert {f for _, f in by} >= set(zoo)
    for r in rows:
        assert r["finite"], r
    # The white methods pass every check: particle, splat, fresh and fixed on every flow, grid on
    # the injective ones.
    for method in ("particle", "splat", "fresh", "fixed"):
        for f in zoo:
            assert by[method, f]["white"], (method, f, by[method, f]["failed"])
    for f in injective:
        assert by["grid", f]["white"], (f, by["grid", f]["failed"])
    # Bilinear resampling lowers the variance (and fails the variance check) off the identity.
    for f in ("translation", "rotation", "zoom_in", "vortex", "shear_waves"):
        assert "var" in by["bilinear", f]["failed"], f
        assert by["bilinear", f]["var"] < 0.8, f
    assert by["bilinear", "identity"]["white"]
    # Nearest-neighbour resampling of a zoom-in copies values; grid does not.
    assert by["nearest", "zoom_in"]["dup"] > 0.1
    assert by["grid", "zoom_in"]["dup"] < 0.05


def test_convergence_outputs_and_error_falls_with_n(convergence):
    result, workdir = convergence
    _check_outputs("convergence", workdir)
    config = load_config("convergence", "small")
    rows = result["rows"]
    for flow in config.flows:
        chang = sorted(
            (r for r in rows if r["flow"] == flow and r["method"] == "chang"), key=lambda r: r["n"]
        )
        errors = [r["exact_mae"] for r in chang]
        assert [r["n"] for r in chang] == list(config.upsample)
        assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), (flow, errors)
        assert errors[-1] < 0.5 * errors[0], (flow, errors)
        assert result["slopes"][flow]["exact"] < -0.5
        # Monte Carlo agrees: its raw error falls too, and the grid control sits on its floor.
        mc = [r["mc_mae"] for r in chang]
        assert mc[-1] < mc[0], (flow, mc)
        (grid,) = [r for r in rows if r["flow"] == flow and r["method"] == "grid"]
        assert grid["exact_mae"] < 1e-5
        assert abs(grid["mc_mae"] / grid["mc_floor"] - 1.0) < 0.2, grid
    for name in ["grid"] + [f"chang{n}" for n in config.upsample]:
        assert result["timing"][name]["ms"] > 0


def test_cost_outputs(cost):
    rows, workdir = cost
    _check_outputs("cost", workdir)
    config = load_config("cost", "small")
    assert {(r["method"], r["size"]) for r in rows} == {
        (m, s) for m in config.methods for s in config.sizes
    }
    for r in rows:
        assert r["ms"] > 0 and r["calls"] >= 1 and r["xla_temp_mb"] > 0, r
        assert r["isolated"] == config.isolate
    assert "Speed-up" in (workdir / "summary.md").read_text()


def test_degenerate_outputs(degenerate):
    rows, workdir = degenerate
    _check_outputs("degenerate", workdir)
    by = {(r["flow"], r["method"]): r for r in rows}
    for r in rows:
        assert r["finite"], r
    # Folding: both records see old cells requested twice.
    assert by["fold_over", "grid"]["failsafe"] > 0
    assert by["fold_over", "particle"]["failsafe"] > 0
    # Collapse: the grid's pre-images have no area (fresh noise); the particle variant keeps pieces.
    assert by["collapse", "grid"]["fresh"] > by["collapse", "particle"]["fresh"]


def test_coherence_outputs(coherence):
    curves, workdir = coherence
    rows = _check_outputs("coherence", workdir)
    config = load_config("coherence", "small")
    assert len(rows) == len(config.methods) * (len(config.speeds) + 1) * (config.frames + 1)
    for (method, motion), c in curves.items():
        assert c["retained"][0] == pytest.approx(1.0, abs=1e-5), (method, motion)
        if method in ("grid", "particle") and motion.startswith("v="):
            # One warp of a translation is exact: all of the ideal covariance is kept.
            assert c["retained"][1] == pytest.approx(1.0, abs=0.15), (method, motion, c)
    # The cost table's split counts: the frame's own count equals the numpy count from the
    # geometry, and neighbouring pixels share nodes (fewer distinct ones).
    costs = [json.loads(line) for line in (workdir / "cost.jsonl").read_text().splitlines()]
    lag = [r for r in costs if r["method"].startswith("lagrangian")]
    assert len(lag) == len(config.cost_depths)
    for r in lag:
        assert r["split_nodes"] == r["split_nodes_geometry"] > r["unique_split_nodes"] > 0, r
        assert r["normals_ms"] > 0 and math.isfinite(r["unique_normals_vs_grid"]), r
        assert r["one_sheet_ms"] > 0 and math.isfinite(r["dedup_sort_vs_grid"]), r
        assert len(r["single_edge_fraction"]) == int(r["method"].split("=")[1])
        assert all(0.0 <= f <= 1.0 for f in r["single_edge_fraction"]), r


def test_notebook_runs_on_the_small_workdirs(
    paper_root, gaussianity, convergence, cost, degenerate, coherence, monkeypatch
):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("IRWARP_PAPER_DIR", str(paper_root))
    nb = nbformat.read(ROOT / "notebooks" / "paper_figures.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError if a cell fails
    images = 0
    text = ""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "image/png" in out.get("data", {}):
                images += 1
            text += out.get("text", "") + out.get("data", {}).get("text/markdown", "")
    assert images == len(list(paper_root.glob("*/*.png")))
    assert "missing" not in text
    for name in NAMES:
        assert f"python -m experiments.{name}" in text  # each summary.md was shown


def test_command_line_with_overrides(tmp_path):
    workdir = tmp_path / "degenerate"
    cmd = [
        sys.executable,
        "-m",
        "experiments.degenerate",
        "--config=configs/degenerate.py:small",
        f"--workdir={workdir}",
        "--config.methods=('particle',)",
        "--config.flows=('collapse',)",
        "--config.samples=16",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((workdir / "config.json").read_text())
    assert config["methods"] == ["particle"] and config["samples"] == 16
    summary = (workdir / "summary.md").read_text()
    assert "--config.samples=16" in summary  # the command as typed
    assert "| collapse | particle |" in summary
