"""experiments/lib (the experiments' shared library), the experiments' own shape (thin launchers on
the public API), and the public diagnostics of irwarp.sheet that the cost harness calls."""

import ast
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common, paper_common
from experiments.lib import methods, tables
from experiments.lib import workdir as workdir_lib
from irwarp import sheet

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.py"))
MAX_FUNCTION_LINES = 100


# ----------------------------------------------------------------------------- shape of the code


def _long_functions(path: pathlib.Path) -> dict[str, int]:
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out[f"{path.stem}.{node.name}"] = lines
    return out


def test_no_experiment_function_is_over_100_lines():
    found = {}
    for path in [*EXPERIMENTS, *sorted((REPO / "experiments" / "lib").glob("*.py"))]:
        found.update(_long_functions(path))
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines: {found}"


def test_experiments_and_configs_use_only_public_names_of_irwarp():
    private = re.compile(
        r"\b(irwarp|sheet|pipeline|video|records|warp|stats|flows|flows3d|resample"
        r"|baselines|bridge|samplers|unet|providers|sampling)\._[a-zA-Z]"
    )
    hits = []
    for path in [
        *EXPERIMENTS,
        *(REPO / "configs").glob("*.py"),
        *(REPO / "experiments" / "lib").glob("*.py"),
    ]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if private.search(code) or re.search(r"from irwarp\._|import irwarp\._", code):
                hits.append(f"{path.name}:{i}: {line.strip()}")
    assert not hits, hits


def test_old_helper_modules_reexport_the_library():
    assert common.parse_method is methods.parse_method
    assert common.markdown_table is tables.markdown_table
    assert common.JsonlWriter is workdir_lib.JsonlWriter
    assert paper_common.Workdir is workdir_lib.Workdir
    assert paper_common.cell is tables.cell


# ----------------------------------------------------------------------------- methods


def test_parse_method_and_label():
    assert methods.parse_method("grid") == ("grid", {})
    assert methods.parse_method("splat") == ("splat", {})
    assert methods.parse_method("chang4") == ("chang", {"upsample": 4})
    assert methods.method_label("chang4") == "chang N=4"
    assert methods.method_label("grid") == "grid"
    assert methods.parse_method("chang") == ("chang", {})  # the registry's default upsample
    for bad in ("grid2", "bogus"):
        with pytest.raises(ValueError, match=r"unknown method .*'chang<N>'"):
            methods.parse_method(bad)
    with pytest.raises(ValueError, match="keyframe method, not a per-frame warp"):
        methods.parse_method("lagrangian")


# ----------------------------------------------------------------------------- workdir


def test_atomic_open_leaves_old_content_on_error(tmp_path):
    path = tmp_path / "a.json"
    workdir_lib.write_json(str(path), {"x": 1})
    with pytest.raises(RuntimeError):
        with workdir_lib.atomic_open(str(path)) as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert json.loads(path.read_text()) == {"x": 1}
    assert os.listdir(tmp_path) == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


def _config(**fields):
    import ml_collections

    return ml_collections.ConfigDict({"overwrite": False, "a": 1, "b": {"c": 2}, **fields})


def test_workdir_writes_all_or_nothing(tmp_path):
    wd_path = str(tmp_path / "run")
    with pytest.raises(RuntimeError):
        with workdir_lib.Workdir(wd_path, _config(), name="t") as wd:
            wd.metric({"x": float("nan")})
            with open(wd.file("out.txt"), "w") as f:
                f.write("half")
            raise RuntimeError("boom")
    assert not os.path.exists(wd_path)  # created by the run, removed with it
    with workdir_lib.Workdir(wd_path, _config(), name="t") as wd:
        wd.metric({"x": float("nan")})
        wd.write_summary("# s")
        assert os.listdir(wd_path) == [os.path.basename(wd.tmp)]  # nothing in place yet
    assert sorted(os.listdir(wd_path)) == ["config.json", "metrics.jsonl", "summary.md"]
    assert workdir_lib.read_jsonl(os.path.join(wd_path, "metrics.jsonl")) == [{"x": None}]


def test_workdir_rerun_replaces_folder_outputs(tmp_path):
    wd_path = str(tmp_path / "run")
    for text in ("old", "new"):
        with workdir_lib.Workdir(wd_path, _config(), name="t") as wd:
            os.makedirs(wd.file("ckpt"))
            with open(os.path.join(wd.file("ckpt"), "p.txt"), "w") as f:
                f.write(text)
            assert wd.final("ckpt") == os.path.join(wd_path, "ckpt")
    assert (tmp_path / "run" / "ckpt" / "p.txt").read_text() == "new"


def test_workdir_refuses_another_run_unless_overwrite(tmp_path):
    wd_path = str(tmp_path / "run")
    with workdir_lib.Workdir(wd_path, _config(), name="t") as wd:
        open(wd.file("old.txt"), "w").close()
    with workdir_lib.Workdir(wd_path, _config(), name="t") as wd:  # the same run again
        open(wd.file("old.txt"), "w").close()
    with pytest.raises(ValueError, match=r"holds another run .*b.c: 2 -> 3.*overwrite=True"):
        workdir_lib.Workdir(wd_path, _config(b={"c": 3}), name="t")
    assert sorted(os.listdir(wd_path)) == ["config.json", "metrics.jsonl", "old.txt"]
    with workdir_lib.Workdir(wd_path, _config(overwrite=True, b={"c": 3}), name="t") as wd:
        open(wd.file("new.txt"), "w").close()
    assert sorted(os.listdir(wd_path)) == ["config.json", "metrics.jsonl", "new.txt"]
    with open(os.path.join(wd_path, "config.json")) as f:
        assert json.load(f)["b"] == {"c": 3}
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="must be a folder"):
        workdir_lib.Workdir(str(tmp_path / "file"), _config(), name="t")


def test_stale_temporaries_are_removed_and_live_ones_refused(tmp_path, caplog):
    wd_path = tmp_path / "run"
    stale = wd_path / ".t-dead"
    stale.mkdir(parents=True)
    (stale / "x.npy").write_bytes(b"truncated")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (stale / workdir_lib.OWNER).write_text(
        json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename})
    )
    old_format = wd_path / ".t-old"  # no owner file: a folder of an older version
    old_format.mkdir()
    assert workdir_lib.clean_stale(str(wd_path), "t") == [str(stale), str(old_format)]
    assert os.listdir(wd_path) == []
    assert any("x.npy" in r.getMessage() for r in caplog.records)
    live = wd_path / ".t-live"
    live.mkdir()
    (live / workdir_lib.OWNER).write_text(
        json.dumps({"pid": os.getppid(), "host": os.uname().nodename})
    )
    with pytest.raises(ValueError, match=r"is in use: process \d+"):
        workdir_lib.Workdir(str(wd_path), _config(), name="t")


# ----------------------------------------------------------------------------- tables


def test_markdown_table_round_trip():
    md = tables.markdown_table(("a", "b"), [(1, 0.5), ("x", None)])
    assert tables.parse_markdown_table(md, "a") == (["a", "b"], [["1", "0.500"], ["x", "-"]])
    assert tables.cell(1e-5) == "1.0e-05" and tables.cell(0.25, 2) == "0.25"
    with pytest.raises(ValueError, match="expected 2 cells per row; got 1"):
        tables.markdown_table(("a", "b"), [(1,)])


# ----------------------------------------------------------------------------- sheet diagnostics


def test_sheet_diagnostics_are_what_a_frame_uses():
    flow = jax.random.normal(jax.random.key(0), (5, 6, 2)) * 0.7
    flow = flow.at[1, 2].set(jnp.nan)
    verts, valid = sheet.frame_octagons(flow)
    ref_verts, ref_valid = sheet._octagons(flow)
    np.testing.assert_array_equal(verts, ref_verts)
    np.testing.assert_array_equal(valid, ref_valid)
    assert verts.shape == (30, 8, 2) and not bool(valid[1 * 6 + 2])
    k1 = jax.random.bits(jax.random.key(1), (7,), jnp.uint32)
    k2 = jax.random.bits(jax.random.key(2), (7,), jnp.uint32)
    ref = sheet._normals(k1, k2, sheet._SPLIT, 9, sheet._SPLIT_SCALE(3))
    np.testing.assert_array_equal(sheet.split_normals(k1, k2, 3), ref)
    assert sheet.ROOT_WINDOW == sheet._WINDOW and sheet.SPLIT_MARGIN == sheet._EPS
    with pytest.raises(ValueError, match=r"total_flow must have shape \(H, W, 2\); got \(5, 6\)"):
        sheet.frame_octagons(flow[..., 0])
    with pytest.raises(ValueError, match="features must be a positive integer; got 0"):
        sheet.split_normals(k1, k2, 0)
    with pytest.raises(ValueError, match=r"k1 and k2 must both be \(K,\)"):
        sheet.split_normals(k1, k2[:3], 3)
