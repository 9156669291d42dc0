"""The golden cases of irwarp's public API, shared by ``make_golden.py`` and ``tests/test_golden.py``.

``CASES`` maps a case name to a zero-argument function that calls public irwarp names (as the
README and the docstrings show them) with fixed keys at tiny shapes and returns a dict of named
outputs (``jax.Array`` or ``np.ndarray``). ``make_golden.py`` froze them at commit a31bd78 into
``public_api.npz``; the test recomputes every case with the current code and compares. Change a
case only together with a deliberate, documented change of the random stream (CHANGELOG), and
regenerate the file then (``--force``).

Inputs are made here with ``jax.random`` and :mod:`irwarp.flows` / :mod:`irwarp.flows3d`; the
flows themselves are cases too (``flows/...``), so a change of a flow generator is reported under
its own name before it shows up downstream. A call that does not compile itself runs under one
``jax.jit`` with the inputs as arguments (the functions that do, in :mod:`irwarp.pipeline` and
:mod:`irwarp.sheet`, are called as they are): eager dispatch gives the same values up to float
rounding and costs several times the compile time here. ``CORE`` names the cases the default test
run checks (the rest need ``IRWARP_GOLDEN_FULL=1``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import irwarp
from irwarp import flows, flows3d, pipeline, resample, sheet
from irwarp.samplers import providers

# Tiny shapes: the test compiles every case once, on a 2-core CPU.
B, H, W, C = 2, 12, 16, 2
D3, H3, W3 = 6, 8, 10
T = 4
NUM_STEPS = 2

# The provider names of irwarp.samplers.PROVIDERS at a31bd78 (a fixed list: PROVIDERS is a mutable
# registry), plus "chang4" (make_provider's "chang<N>" form).
PROVIDER_NAMES = (
    "fresh",
    "fixed",
    "nearest",
    "bilinear",
    "grid",
    "particle",
    "chang",
    "lagrangian",
    "chang4",
)

# The 2D warp methods and their options (irwarp.METHODS at a31bd78, grid twice).
WARP_METHODS = {
    "grid": {},
    "grid_cap4_ep3": {"capacity": 4, "edge_points": 3},
    "particle": {},
    "chang4": {"upsample": 4},
    "nearest": {},
    "bilinear": {},
    "fixed": {},
    "fresh": {},
}


def _key(i: int = 0) -> jax.Array:
    return jax.random.key(i)


def _noise(i: int, shape, dtype=jnp.float32) -> jax.Array:
    return jax.random.normal(jax.random.key(1000 + i), shape, dtype)


# --------------------------------------------------------------------------------------------------
# Input flows.


@functools.cache
def flow_rot() -> jax.Array:
    """Rotation by 7 degrees plus a sub-pixel shift ``(0.3, -0.2)``: the generic smooth flow."""
    return flows.rotation(H, W, 7.0) + jnp.array([0.3, -0.2], jnp.float32)


@functools.cache
def flow_zoom() -> jax.Array:
    """Zoom out (factor 0.7) with a small rotation: pre-images up to ~1.5 pixels wide."""
    return flows.compose(flows.zoom(H, W, 0.7), flows.rotation(H, W, -4.0))


@functools.cache
def flow_nan() -> jax.Array:
    """The rotation flow with a NaN patch (disoccluded pixels) and one NaN pixel."""
    f = flows.nan_patch(flow_rot(), 3, 5, 3, 4)
    return f.at[9, 1].set(jnp.nan)


@functools.cache
def flow_fold() -> jax.Array:
    """A folding (non-injective) flow plus a sub-pixel vertical shift: the fail-safe fires."""
    return flows.fold_over(H, W) + jnp.array([0.0, 0.35], jnp.float32)


@functools.cache
def flows_batched() -> jax.Array:
    """``(B, H, W, 2)`` per-example flows."""
    return jnp.stack([flow_rot(), flows.translation(H, W, -0.6, 1.3)])


@functools.cache
def flows_seq() -> jax.Array:
    """``(T, H, W, 2)`` backward flows: rotations of growing angle plus sub-pixel shifts."""
    return jnp.stack(
        [
            flows.rotation(H, W, 3.0 * (t + 1)) + jnp.array([0.25, 0.4 - 0.3 * t], jnp.float32)
            for t in range(T)
        ]
    )


@functools.cache
def forward_flows_seq() -> jax.Array:
    """``(T, H, W, 2)`` forward flows (for the splat) of the backward flows above."""
    return jnp.stack([flows.forward_from_backward(f) for f in flows_seq()])


@functools.cache
def flow3d_rot() -> jax.Array:
    """``(D, H, W, 3)``: a rotation about a tilted axis plus a sub-voxel shift."""
    return flows3d.rotation3d(D3, H3, W3, (0.3, -0.5, 1.0), 9.0) + jnp.array(
        [0.3, -0.2, 0.45], jnp.float32
    )


@functools.cache
def flows3d_seq() -> jax.Array:
    """``(T, D, H, W, 3)`` 3D flows."""
    return jnp.stack(
        [
            flows3d.translation3d(D3, H3, W3, 0.3 * t - 0.4, 0.2, -0.35) + flow3d_rot() * 0.5
            for t in range(T)
        ]
    )


@functools.cache
def noise2d(i: int = 0, dtype=jnp.float32) -> jax.Array:
    """``(B, H, W, C)`` noise."""
    return _noise(i, (B, H, W, C), dtype)


@functools.cache
def noise3d(i: int = 0) -> jax.Array:
    """``(B, D, H, W, C)`` noise."""
    return _noise(100 + i, (B, D3, H3, W3, C))


# --------------------------------------------------------------------------------------------------
# Case builders.

Case = Callable[[], dict]
CASES: dict[str, Case] = {}


def _case(name: str, fn: Case) -> None:
    if name in CASES:
        raise ValueError(f"duplicate golden case {name!r}")
    CASES[name] = fn


def _record_arrays(rec) -> dict:
    """Every array field of a partition record, and its diagnostics."""
    out = {
        "src": rec.src,
        "dst": rec.dst,
        "area": rec.area,
        "overflow": rec.overflow,
        "source_use": rec.source_use,
        "dst_area": rec.dst_area(),
        "num_overflow": rec.num_overflow(),
        "overflow_area": rec.overflow_area(),
        "num_failsafe": rec.num_failsafe(),
    }
    if rec.tail_count is not None:
        out["tail_count"] = rec.tail_count
    return out


def _frame_noise(fn, prefix: str = "") -> dict:
    out = {prefix + "initial": fn.initial, prefix + "steps": fn.steps}
    if fn.state is not None:
        # The lagrangian state's arrays by the names both state types have (SheetState at
        # a31bd78, the noise stream's StreamState since): its keyframe and composed flow.
        out[f"{prefix}state_keyframe"] = fn.state.keyframe
        out[f"{prefix}state_total_flow"] = fn.state.total_flow
    return out


def _lagrangian_state(state) -> dict:
    """The arrays of a lagrangian streaming state (LagrangianState at a31bd78, StreamState since)."""
    return {"keyframe": state.keyframe, "total_flow": state.total_flow, "t": state.t}


# Input flows (also cases, so that a change of a generator has its own name).
_case("flows/rot", lambda: {"flow": flow_rot()})
_case("flows/zoom", lambda: {"flow": flow_zoom()})
_case("flows/nan", lambda: {"flow": flow_nan()})
_case("flows/fold", lambda: {"flow": flow_fold()})
_case("flows/batched", lambda: {"flow": flows_batched()})
_case("flows/seq", lambda: {"flows": flows_seq()})
_case("flows/forward_seq", lambda: {"flows": forward_flows_seq()})
_case("flows3d/rot", lambda: {"flow": flow3d_rot()})
_case("flows3d/seq", lambda: {"flows": flows3d_seq()})

# Each computation is one jax.jit of a public call with the inputs as arguments (eager dispatch of
# the same call compiles every primitive on its own and is ~10x slower here). The functions are
# made once, so cases of the same shapes share one compilation.


def _warp_fn(method: str, **options):
    return jax.jit(functools.partial(irwarp.warp, method=method, **options))


# warp, 2D: every method with a shared and a per-example flow, and with NaN pixels.
_WARP_FNS = {
    name: _warp_fn("chang" if name.startswith("chang") else name.split("_")[0], **opts)
    for name, opts in WARP_METHODS.items()
}
for _name, _fn in _WARP_FNS.items():
    _case(f"warp/{_name}/shared", lambda f=_fn: {"out": f(_key(1), noise2d(0), flow_rot())})
    _case(f"warp/{_name}/batched", lambda f=_fn: {"out": f(_key(2), noise2d(1), flows_batched())})
    _case(f"warp/{_name}/nan", lambda f=_fn: {"out": f(_key(3), noise2d(2), flow_nan())})

# grid with a zoom-out (tail pieces; capacity 4) and a fold (the fail-safe).
_case("warp/grid/zoom", lambda: {"out": _WARP_FNS["grid"](_key(4), noise2d(3), flow_zoom())})
_case(
    "warp/grid_cap4_ep3/zoom",
    lambda: {"out": _WARP_FNS["grid_cap4_ep3"](_key(4), noise2d(3), flow_zoom())},
)
_case("warp/grid/fold", lambda: {"out": _WARP_FNS["grid"](_key(5), noise2d(4), flow_fold())})
_case(
    "warp/particle/fold",
    lambda: {"out": _WARP_FNS["particle"](_key(5), noise2d(4), flow_fold())},
)
# The default method (no method argument), an unbatched (H, W, C) noise with extra leading dims,
# a legacy uint32 key, and bfloat16 noise.
_case(
    "warp/default/unbatched",
    lambda: {"out": jax.jit(irwarp.warp)(_key(6), _noise(5, (H, W, C)), flow_rot())},
)
_case(
    "warp/grid/lead2",
    lambda: {"out": _WARP_FNS["grid"](_key(7), _noise(6, (2, 3, H, W, C)), flow_rot())},
)
_case(
    "warp/grid/legacy_key",
    lambda: {"out": _WARP_FNS["grid"](jax.random.PRNGKey(8), noise2d(7), flow_rot())},
)
_case(
    "warp/particle/legacy_key",
    lambda: {"out": _WARP_FNS["particle"](jax.random.PRNGKey(8), noise2d(7), flow_rot())},
)
for _m in ("grid", "particle"):
    _case(
        f"warp/{_m}/bfloat16",
        lambda m=_m: {"out": _WARP_FNS[m](_key(9), noise2d(8, jnp.bfloat16), flow_rot())},
    )

# warp and warp_forward in 3D, warp_forward in 2D.
_warp3d = _warp_fn("particle")
_forward = jax.jit(irwarp.warp_forward)
_case("warp3d/particle/shared", lambda: {"out": _warp3d(_key(10), noise3d(0), flow3d_rot())})
_case(
    "warp3d/particle/batched",
    lambda: {"out": _warp3d(_key(11), noise3d(1), jnp.stack([flow3d_rot(), -flow3d_rot()]))},
)
_case("warp_forward3d/shared", lambda: {"out": _forward(_key(12), noise3d(2), flow3d_rot())})
_case(
    "warp_forward/shared",
    lambda: {"out": _forward(_key(13), noise2d(9), forward_flows_seq()[0])},
)
_case("warp_forward/batched", lambda: {"out": _forward(_key(14), noise2d(10), flows_batched())})
_case("warp_forward/nan", lambda: {"out": _forward(_key(15), noise2d(11), flow_nan())})

# Partition records (every array field and the diagnostics) and apply_record with each.
_BUILDERS = {
    "grid": irwarp.grid_record,
    "grid_cap4_ep3": functools.partial(irwarp.grid_record, capacity=4, edge_points=3),
    "particle": irwarp.particle_record,
    "splat": irwarp.splat_record,
    "particle3d": irwarp.particle3d_record,
    "splat3d": irwarp.splat3d_record,
}
_RECORDS = {  # case -> (builder, flow)
    "grid": ("grid", flow_rot),
    "grid_zoom_cap4_ep3": ("grid_cap4_ep3", flow_zoom),
    "grid_fold": ("grid", flow_fold),
    "grid_nan": ("grid", flow_nan),
    "particle": ("particle", flow_rot),
    "particle_fold": ("particle", flow_fold),
    "splat": ("splat", lambda: forward_flows_seq()[1]),
    "particle3d": ("particle3d", flow3d_rot),
    "splat3d": ("splat3d", flow3d_rot),
}
_RECORD_FNS = {
    name: jax.jit(lambda flow, b=build: _record_arrays(b(flow)))
    for name, build in _BUILDERS.items()
}
_APPLY_FNS = {
    name: jax.jit(lambda key, x, flow, b=build: irwarp.apply_record(key, x, b(flow)))
    for name, build in _BUILDERS.items()
}
for _i, (_name, (_b, _flow)) in enumerate(_RECORDS.items()):
    _x = noise3d if _b.endswith("3d") else noise2d
    _case(f"record/{_name}", lambda b=_b, f=_flow: _RECORD_FNS[b](f()))
    _case(
        f"apply_record/{_name}",
        lambda b=_b, f=_flow, x=_x, i=_i: {"out": _APPLY_FNS[b](_key(20 + i), x(12), f())},
    )


# warp_sequence (T = 4 frames).
def _sequence_fn(method: str, **options):
    return jax.jit(functools.partial(irwarp.warp_sequence, method=method, **options))


for _m in ("grid", "particle", "nearest"):
    _case(
        f"warp_sequence/{_m}",
        lambda m=_m: {"out": _sequence_fn(m)(_key(30), noise2d(13), flows_seq())},
    )
_case(
    "warp_sequence/splat",
    lambda: {"out": _sequence_fn("splat")(_key(31), noise2d(14), forward_flows_seq())},
)
for _depth in (2, 3):
    for _every in (None, 2):
        _case(
            f"warp_sequence/lagrangian/depth{_depth}_every{_every}",
            lambda d=_depth, e=_every: {
                "out": irwarp.warp_sequence(
                    _key(32),
                    noise2d(15),
                    flows_seq(),
                    method="lagrangian",
                    depth=d,
                    keyframe_every=e,
                )
            },
        )
_case(
    "warp_sequence3d/particle",
    lambda: {"out": _sequence_fn("particle")(_key(33), noise3d(4), flows3d_seq())},
)
_case(
    "warp_sequence3d/splat",
    lambda: {"out": _sequence_fn("splat")(_key(34), noise3d(5), flows3d_seq())},
)


# irwarp.pipeline (its functions compile themselves).
def _pipeline_chunks(method: str) -> dict:
    key = _key(40)
    x0 = pipeline.first_frame(key, (B, H, W, C))
    fl = flows_seq()
    a = pipeline.warp_chunk(key, x0, fl[:2], 1, method=method)
    b = pipeline.warp_chunk(key, a[-1], fl[2:], 3, method=method)
    return {"first_frame": x0, "chunk0": a, "chunk1": b}


def _pipeline_lagrangian() -> dict:
    key = _key(41)
    x0 = pipeline.first_frame(key, (B, H, W, C))
    fl = flows_seq()
    opts = dict(depth=3, keyframe_every=3, return_info=True)
    state = pipeline.lagrangian_start(x0)
    out = {"start_" + k: v for k, v in _lagrangian_state(state).items()}
    for i, sl in enumerate((slice(0, 2), slice(2, 4))):
        frames, state, info = pipeline.lagrangian_chunk(key, state, fl[sl], **opts)
        out[f"chunk{i}_frames"] = frames
        out.update({f"chunk{i}_state_{k}": v for k, v in _lagrangian_state(state).items()})
        out.update({f"chunk{i}_info_{k}": v for k, v in info.items()})
    return out


def _pipeline_videos(method: str, **options) -> dict:
    keys = jax.random.split(_key(42), B)
    fl = jnp.stack([flows_seq(), flows_seq()[::-1] * 0.5])
    return {"out": pipeline.warp_videos(keys, noise2d(16), fl, method=method, **options)}


_case("pipeline/warp_chunk/grid", lambda: _pipeline_chunks("grid"))
_case("pipeline/warp_chunk/particle", lambda: _pipeline_chunks("particle"))
_case("pipeline/lagrangian_chunk", _pipeline_lagrangian)
_case("pipeline/warp_videos/grid", lambda: _pipeline_videos("grid"))
_case("pipeline/warp_videos/particle", lambda: _pipeline_videos("particle"))
_case("pipeline/warp_videos/lagrangian", lambda: _pipeline_videos("lagrangian", depth=2))


# irwarp.sheet (its functions compile themselves).
def _sheet_frame() -> dict:
    total = flows.compose(flows_seq()[0], flows_seq()[1])
    y, info = sheet.lagrangian_frame(
        _key(50), noise2d(18), total, depth=3, frame=2, return_info=True
    )
    return {"out": y, **{"info_" + k: v for k, v in info.items()}}


def _sheet_polygons() -> dict:
    polygons = jnp.array(
        [
            [[1.2, 1.1], [3.7, 1.4], [3.1, 3.3], [1.4, 2.9]],
            [[5.0, 5.0], [6.5, 5.25], [6.0, 7.0], [4.75, 6.5]],
            [[-0.6, 10.2], [1.3, 10.0], [1.1, 11.9], [-0.4, 11.5]],
        ],
        jnp.float32,
    )
    sums, counts = sheet.polygon_integrals(_key(51), noise2d(19), polygons, depth=3)
    return {"sums": sums, "counts": counts}


def _sheet_nodes() -> dict:
    rows = jnp.array([0, 3, 11, -1, 12, 5], jnp.int32)
    cols = jnp.array([0, 7, 15, 4, 2, -2], jnp.int32)
    sub_r = jnp.array([0, 1, 3, 2, 0, 1], jnp.int32)
    sub_c = jnp.array([3, 2, 0, 1, 1, 0], jnp.int32)
    x = noise2d(20)
    return {
        "level2": sheet.node_values(_key(52), x, rows, cols, sub_r, sub_c, level=2),
        "level0": sheet.node_values(_key(52), x, rows, cols, 0 * sub_r, 0 * sub_c, level=0),
    }


_case("sheet/lagrangian_frame", _sheet_frame)
_case("sheet/polygon_integrals", _sheet_polygons)
_case("sheet/node_values", _sheet_nodes)


# irwarp.samplers providers: init, then two next steps along the flows (one jit per provider).
def _provider_case(name: str, **options) -> Case:
    prov = providers.make_provider(name, **options)

    @jax.jit
    def run(key, fl) -> dict:
        noise = prov.init(key, (B, H, W, C), num_steps=NUM_STEPS)
        out = _frame_noise(noise, "frame0_")
        for t in (1, 2):
            noise = prov.next(key, noise, t, fl[t - 1])
            out.update(_frame_noise(noise, f"frame{t}_"))
        return out

    return lambda: run(_key(60), flows_seq())


for _p in PROVIDER_NAMES:
    _case(f"provider/{_p}", _provider_case(_p))
_case("provider/grid/warp_initial_only", _provider_case("grid", warp_initial_only=True))
_case(
    "provider/lagrangian/warp_initial_only",
    _provider_case("lagrangian", warp_initial_only=True),
)
_case(
    "provider/lagrangian/depth2_every1",
    _provider_case("lagrangian", depth=2, keyframe_every=1),
)

# Resampling and bridges (cheap: all in the core tier).
_CHEAP = ("downsample", "upsample", "temporal_compress", "resample", "bridge_increments")
_down = jax.jit(irwarp.downsample, static_argnums=1)
_up = jax.jit(irwarp.upsample, static_argnums=2)
_case("downsample/k2", lambda: {"out": _down(noise2d(21), 2)})
_case("downsample/k4", lambda: {"out": _down(noise2d(21), 4)})
_case("upsample/k2", lambda: {"out": _up(_key(70), noise2d(22), 2)})
_case("upsample/k3", lambda: {"out": _up(_key(71), noise2d(22), 3)})
_case("upsample/k2_bfloat16", lambda: {"out": _up(_key(72), noise2d(22, jnp.bfloat16), 2)})
for _mode in resample.TEMPORAL_MODES:
    _case(
        f"temporal_compress/{_mode}",
        lambda m=_mode: {
            "out": irwarp.temporal_compress(_noise(23, (T, B, H, W, C)), 2, mode=m),
            "axis1": irwarp.temporal_compress(_noise(24, (B, T, H, W, C)), 4, mode=m, axis=1),
        },
    )
_case("resample/downsample_flow", lambda: {"out": resample.downsample_flow(flow_rot(), 2)})
_case("resample/upsample_flow", lambda: {"out": resample.upsample_flow(flow_nan(), 2)})

# Brownian-bridge increments.
_case(
    "bridge_increments",
    lambda: {
        "out": irwarp.bridge_increments(
            _key(80),
            _noise(25, (5, 3)),
            jnp.asarray(np.tile(np.array([0.1, 0.25, 0.4, 0.25], np.float32), (5, 3, 1))),
        )
    },
)

# --------------------------------------------------------------------------------------------------
# The core tier, checked by every test run: each warp method but chang, every record builder,
# warp_forward, the sequence and pipeline drivers, a warped provider and resampling, with each
# expensive compilation (grid) at most once. The other cases (chang, per-example flows and options
# of every method, the lagrangian sheet, every provider) compile for 2-7 s of CPU each (14-21 s for
# a lagrangian one, measured on the 2-core CPU): tests/test_golden.py runs them when
# IRWARP_GOLDEN_FULL=1, as it should before merging a change of warp, records, sheet or samplers.
CORE = frozenset(
    [name for name in CASES if name.startswith(("flows/", "flows3d/"))]
    + [f"warp/{m}/{v}" for m in ("grid", "particle", "nearest") for v in ("shared", "nan")]
    + [f"warp/{m}/{v}" for m in ("bilinear", "fixed", "fresh") for v in ("shared", "nan")]
    + ["warp/grid/zoom", "warp/grid/fold", "warp/particle/fold", "warp/particle/batched"]
    + ["warp/particle/bfloat16", "warp/particle/legacy_key"]
    + ["warp3d/particle/shared", "warp_forward3d/shared"]
    + ["warp_forward/shared", "warp_forward/nan"]
    + [f"record/{r}" for r in ("grid", "grid_fold", "grid_nan", "particle", "particle_fold")]
    + ["record/splat", "record/particle3d", "record/splat3d"]
    + ["apply_record/particle", "apply_record/particle_fold", "apply_record/splat"]
    + ["warp_sequence/particle", "warp_sequence/splat"]
    + ["pipeline/warp_chunk/particle", "pipeline/warp_videos/particle"]
    + [f"provider/{p}" for p in ("fresh", "fixed", "particle")]
    + [name for name in CASES if name.split("/")[0] in _CHEAP]
)

# --------------------------------------------------------------------------------------------------
# Evaluation, shared by make_golden.py and the test.

SEP = "|"  # npz key of output ``name`` of case ``case``: ``case + SEP + name``


def evaluate(case: str) -> dict[str, tuple[np.ndarray, str]]:
    """Runs one case: ``{output name: (array, dtype name as returned)}``.

    Floating outputs come back as float32 arrays (bfloat16 ones are widened exactly; the returned
    dtype name keeps ``"bfloat16"``); integer and boolean outputs keep their dtype.
    """
    out = {}
    for name, value in CASES[case]().items():
        if SEP in name:
            raise ValueError(f"output name {name!r} of case {case!r} must not contain {SEP!r}")
        dtype = str(jnp.asarray(value).dtype)
        a = np.asarray(value)
        if jnp.issubdtype(a.dtype, jnp.floating):
            a = a.astype(np.float32)
        out[name] = (a, dtype)
    return out


if not CORE <= set(CASES):
    raise ValueError(f"CORE names unknown cases: {sorted(CORE - set(CASES))}")
