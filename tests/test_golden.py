"""The public API gives the same outputs as at commit a31bd78: "the same noise for the same key".

``tests/golden/public_api.npz`` holds the outputs of every case of ``tests/golden/cases.py`` as
computed at a31bd78 (``tests/golden/make_golden.py``). Each case is recomputed here with the
current code and compared array by array: same output names, shapes and dtypes; integer and
boolean arrays (record ``src`` / ``dst``, leaf and node counts) exactly; floating arrays to float
rounding.
"""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

_GOLDEN = pathlib.Path(__file__).parent / "golden"


def _load_cases():
    # Loaded by path: tests/ is not a package (its modules import ``reference`` as a top-level
    # module, which a tests/__init__.py would break under pytest's default import mode).
    spec = importlib.util.spec_from_file_location("irwarp_golden_cases", _GOLDEN / "cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cases = _load_cases()

# The core tier (cases.CORE, 60 cases) is part of the core suite: 84 s of CPU, nearly all of it
# compilation. The other 49 cases compile for several minutes more (the lagrangian cases 14-21 s
# of CPU each): they are marked slow, so `pytest -m "not slow"` leaves them out and the README's
# test command (what CI runs) runs them all.
_FULL = pytest.mark.slow

# Float tolerance. The random draws must be identical; what may differ is float32 rounding: a
# refactor that fuses, reorders or vectorises the same arithmetic differently (XLA contracting
# into fused multiply-adds, a different reduction order in a segment_sum, jit against eager) moves
# values by a few ulps, and divisions by sqrt(A_d) or chained frames can grow that to ~1e-6. Any
# change of a random stream or of the geometry moves values by O(0.1-1), far beyond this.
RTOL = 2e-5
ATOL = 2e-5
# Outputs returned in bfloat16 are rounded from float32 at the end: a float32 change of a few ulps
# can flip that rounding by one bfloat16 ulp (2^-7 relative at most, 8 significant bits).
RTOL_BF16 = 2.0**-7


@pytest.fixture(scope="module")
def golden():
    with np.load(_GOLDEN / "public_api.npz") as z:
        meta = json.loads(str(z["__meta__"]))
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    return meta, arrays


def test_file_and_cases_agree(golden):
    """Every stored case has a definition and vice versa (the file and cases.py cannot drift)."""
    meta, arrays = golden
    stored = {k.split(cases.SEP)[0] for k in arrays}
    assert stored == set(meta["cases"])
    assert sorted(stored) == sorted(cases.CASES)
    assert set(meta["arrays"]) == set(arrays)
    assert meta["base_commit"] == "a31bd78"


# The full tier is split over this file and test_golden_tail.py (every other slow case), so that
# `pytest -n 2 --dist loadfile` runs the two halves on both workers.
FULL = [c for c in cases.CASES if c not in cases.CORE]
TAIL = frozenset(FULL[1::2])


@pytest.mark.parametrize(
    "case",
    [c if c in cases.CORE else pytest.param(c, marks=_FULL) for c in cases.CASES if c not in TAIL],
)
def test_golden(golden, case):
    check_case(golden, case)


def check_case(golden, case):
    """Recomputes ``case`` and compares every output with the stored one."""
    meta, arrays = golden
    stored = {
        k.split(cases.SEP, 1)[1]: v for k, v in arrays.items() if k.split(cases.SEP)[0] == case
    }
    got = cases.evaluate(case)
    assert sorted(got) == sorted(stored), (
        f"{case}: outputs {sorted(got)} != stored {sorted(stored)}"
    )
    for name, (value, dtype) in got.items():
        key = case + cases.SEP + name
        want = stored[name]
        want_dtype = meta["arrays"][key]["dtype"]
        where = (
            f"{case} output {name!r} (golden made with jax {meta['jax_version']}; running jax "
            f"{jax.__version__})"
        )
        assert dtype == want_dtype, f"{where}: dtype {dtype}, golden {want_dtype}"
        assert value.shape == want.shape, f"{where}: shape {value.shape}, golden {want.shape}"
        assert value.dtype == want.dtype, f"{where}: stored as {value.dtype}, golden {want.dtype}"
        if np.issubdtype(want.dtype, np.floating):
            rtol = RTOL_BF16 if dtype == "bfloat16" else RTOL
            np.testing.assert_allclose(value, want, rtol=rtol, atol=ATOL, err_msg=where)
        else:
            np.testing.assert_array_equal(value, want, err_msg=where)


@pytest.mark.parametrize(
    "case, name, delta", [("warp/grid/shared", "out", 1e-3), ("record/particle", "src", 1)]
)
def test_golden_catches_a_change(golden, case, name, delta):
    """The comparison fails for a perturbed output (so the test can fail): a float, an index."""
    meta, arrays = golden
    key = case + cases.SEP + name
    changed = arrays[key].copy()
    changed.flat[37] += delta
    with pytest.raises(AssertionError):
        check_case((meta, dict(arrays, **{key: changed})), case)
