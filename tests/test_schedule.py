"""The backend schedule (irwarp._schedule): both paths agree, the plain path is deterministic.

On CPU the program runs the CPU path (materialising conds, static prefix switches, scatter-adds);
lowered for any other platform it runs the plain path, chosen at lowering time. Here both are run
on CPU (``_schedule.force``) and compared; the plain path's lowering for ``("cuda",)`` must carry
no floating-point scatter-add over possibly repeated indices (what XLA runs with atomics, in an
order that changes from run to run, on GPU). Also: gradients with respect to the flow are finite,
and match finite differences for grid and particle.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp import _schedule, flows

H, W = 24, 20  # with the tail switch forced on below, the grid's prefixes are exercised


@pytest.fixture
def small_grids_switch(monkeypatch):
    """Tail prefixes (lax.switch) even on the small grids of these tests."""
    monkeypatch.setattr(irwarp.records, "_TAIL_SWITCH_MIN_PIXELS", 0)


def _inputs():
    key = jax.random.key(7)
    x = jax.random.normal(jax.random.key(1), (2, H, W, 2))
    yy, xx = jnp.meshgrid(jnp.arange(H, dtype=jnp.float32), jnp.arange(W, dtype=jnp.float32))
    yy, xx = yy.T, xx.T
    # A rotation (some pixels reach the tail), a fold (the fail-safe fires) and a zoom-out.
    flows2d = {
        "rotation": flows.rotation(H, W, 9.0),
        "fold": jnp.stack([2.5 * jnp.sin(yy / 3.0), 2.0 * jnp.cos(xx / 4.0)], -1),
        "zoom_out": jnp.stack([(xx - W / 2) * 0.5, (yy - H / 2) * 0.5], -1),
    }
    return key, x, flows2d


def _volume():
    f3 = 0.6 * jax.random.normal(jax.random.key(5), (4, 6, 5, 3))
    x3 = jax.random.normal(jax.random.key(6), (4, 6, 5, 3))
    return x3, f3


def _both(fn, *args):
    """``fn(*args)`` jitted under the CPU path and under the plain path, as numpy."""
    out = {}
    for which in _schedule.MODES:
        with _schedule.force(which):
            out[which] = jax.tree_util.tree_map(np.asarray, jax.jit(fn)(*args))
    return out["cpu"], out["plain"]


# The plain path adds the pieces of one cell in another order (a sorted segmented scan instead of
# XLA's sequential scatter loop), so S_s, A_d and Y_d differ by float rounding: a sum of K terms of
# size <= 1 moves by a few ulps of 1 per term, then Y_d = sum / sqrt(A_d) with A_d >= ~1e-2.
_NOISE_ATOL = 64 * float(np.finfo(np.float32).eps)


def _assert_noise_close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=_NOISE_ATOL)


# --------------------------------------------------------------------------------------------------
# (a) Both paths on CPU: record indices bit for bit; areas and noise to float rounding.


def _record_fields(rec):
    fields = (rec.src, rec.dst, rec.area, rec.overflow, rec.source_use)
    return fields + ((rec.tail_count,) if rec.tail_count is not None else ())


@pytest.mark.parametrize("options", [{}, {"capacity": 4, "edge_points": 3}, {"capacity": 2}])
def test_grid_record_agrees_on_both_paths(options, small_grids_switch):
    _, _, flows2d = _inputs()
    for name, flow in flows2d.items():
        cpu, plain = _both(lambda f: _record_fields(irwarp.grid_record(f, **options)), flow)
        for a, b in zip(cpu, plain, strict=True):
            if np.issubdtype(a.dtype, np.integer):  # sources, destinations, tail count
                np.testing.assert_array_equal(a, b, err_msg=f"{name} {options}")
            else:
                # The overlaps are the same; each source's use (a sum of up to ~9 pieces) is
                # added in another order on the plain path, so it and the fail-safe's division
                # by it may differ by an ulp or two.
                np.testing.assert_allclose(a, b, rtol=4e-7, atol=0, err_msg=f"{name} {options}")


def test_bilinear_records_are_identical_on_both_paths():
    """The per-source normalisation sums by sort on the plain path: the same sums here."""
    _, _, flows2d = _inputs()
    x3, f3 = _volume()
    del x3
    builders = [
        (irwarp.particle_record, flows2d["fold"]),
        (irwarp.splat_record, flows2d["fold"]),
        (irwarp.particle3d_record, f3),
        (irwarp.splat3d_record, f3),
    ]
    for build, flow in builders:
        cpu, plain = _both(lambda f, build=build: _record_fields(build(f)), flow)
        for a, b in zip(cpu, plain, strict=True):
            # A source's weights are at most 4 (8 in 3D) terms: the plain path's tree of additions
            # may round differently from the sequential loop, by an ulp of the sum.
            np.testing.assert_allclose(a, b, rtol=4e-7, atol=0, err_msg=build.__name__)


@pytest.mark.parametrize(
    "method,options",
    [
        ("grid", {}),
        ("grid", {"capacity": 4, "edge_points": 3}),
        ("grid", {"capacity": 2}),
        ("particle", {}),
        ("chang", {"upsample": 2}),
    ],
)
def test_warp_gives_the_same_noise_on_both_paths(method, options, small_grids_switch):
    key, x, flows2d = _inputs()
    fn = functools.partial(irwarp.warp, method=method, **options)
    for name, flow in flows2d.items():
        cpu, plain = _both(fn, key, x, flow)
        _assert_noise_close(cpu, plain)
        assert np.all(np.isfinite(plain)), name


def test_warp_forward_and_3d_give_the_same_noise_on_both_paths():
    key, x, flows2d = _inputs()
    x3, f3 = _volume()
    _assert_noise_close(*_both(irwarp.warp_forward, key, x, flows2d["fold"]))
    _assert_noise_close(*_both(irwarp.warp_forward, key, x3, f3))
    _assert_noise_close(*_both(functools.partial(irwarp.warp, method="particle"), key, x3, f3))


def test_identity_and_integer_shift_are_exact_on_the_plain_path():
    key, x, _ = _inputs()
    with _schedule.force("plain"):
        for method in ("grid", "particle"):
            y = jax.jit(functools.partial(irwarp.warp, method=method))(key, x, jnp.zeros((H, W, 2)))
            np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
        # Backward flow (+1, 0): new pixel j is old pixel j + 1.
        y = jax.jit(irwarp.warp)(key, x, jnp.zeros((H, W, 2)).at[..., 0].set(1.0))
        np.testing.assert_array_equal(np.asarray(y)[..., :-1, :], np.asarray(x)[..., 1:, :])


def test_lagrangian_sequence_gives_the_same_noise_on_both_paths():
    key = jax.random.key(3)
    x = jax.random.normal(jax.random.key(4), (10, 10, 2))
    fs = jnp.stack([flows.rotation(10, 10, 6.0), jnp.full((10, 10, 2), 0.37)])
    fn = functools.partial(irwarp.warp_sequence, method="lagrangian", depth=2)
    cpu, plain = _both(fn, key, x, fs)
    # The frontier prefixes give the same nodes; the leaf sums of a pixel are added in another
    # order (sorted scan), so the frames agree to float rounding.
    _assert_noise_close(cpu, plain)


def test_sorted_sums_match_segment_sum():
    """The plain path's segment sum: repeated, missing, out-of-range indices, several leaves."""
    rng = np.random.default_rng(0)
    idx = jnp.asarray(rng.integers(-2, 12, size=200), jnp.int32)
    v = jnp.asarray(rng.normal(size=(200, 3)), jnp.float32)
    a = jnp.asarray(rng.random(200), jnp.float32)
    s, t = _schedule._sorted_sums(idx, (v, a), 10)
    keep = (idx >= 0) & (idx < 10)
    ref_s = jax.ops.segment_sum(jnp.where(keep[:, None], v, 0), jnp.clip(idx, 0, 9), 10)
    ref_t = jax.ops.segment_sum(jnp.where(keep, a, 0), jnp.clip(idx, 0, 9), 10)
    np.testing.assert_allclose(s, ref_s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t, ref_t, rtol=1e-5, atol=1e-5)
    assert _schedule._sorted_sums(idx[:0], v[:0], 4).shape == (4, 3)


def test_force_rejects_unknown_schedules():
    with pytest.raises(ValueError, match="schedule must be one of"):
        with _schedule.force("gpu"):
            pass


# --------------------------------------------------------------------------------------------------
# (b), (c) Lowerings: the plain path for other platforms, the CPU path for CPU.


def _op_texts(text: str, name: str) -> list[str]:
    """Texts of the ``"stablehlo.<name>"`` ops of a module: header through their regions."""
    out = []
    for m in re.finditer(rf'"stablehlo\.{name}"\(', text):
        k = text.index("({", m.start()) + 1
        depth = 0
        while True:
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            if depth == 0:
                break
            k += 1
        out.append(text[m.start() : text.index("\n", k)])
    return out


def _float_scatter_adds(text: str) -> int:
    """Scatters whose update adds floats and whose indices are not declared unique."""
    count = 0
    for op in _op_texts(text, "scatter"):
        region = op[op.index("({") :]
        adds = "stablehlo.add" in region
        floats = re.search(r"tensor<(f16|bf16|f32|f64)>", region) is not None
        if adds and floats and "unique_indices = true" not in op:
            count += 1
    return count


def _conditionals(text: str) -> int:
    """``stablehlo.if`` / ``stablehlo.case`` ops other than platform selections.

    ``lax.platform_dependent`` lowered for one platform leaves a ``case`` on a constant index and a
    ``case`` with a single branch; neither is a conditional at run time.
    """
    consts = set(re.findall(r"(%[\w#]+) = stablehlo\.constant", text))
    real = len(re.findall(r'"stablehlo\.if"\(', text))
    for op in _op_texts(text, "case"):
        operand = re.match(r'"stablehlo\.case"\((%[\w#]+)\)', op).group(1)
        body = op[op.index("({") :]
        branches, depth = 0, 0
        for ch in body:
            if ch == "{":
                depth += 1
                branches += depth == 1
            elif ch == "}":
                depth -= 1
        if operand not in consts and branches > 1:
            real += 1
    return real


def _public_calls():
    key, x, flows2d = _inputs()
    flow = flows2d["rotation"]
    x3, f3 = _volume()
    fs = jnp.stack([flows.rotation(10, 10, 6.0), jnp.full((10, 10, 2), 0.37)])
    x10 = jax.random.normal(jax.random.key(4), (10, 10, 2))
    calls = {
        f"warp-{m}": (functools.partial(irwarp.warp, method=m), (key, x, flow))
        for m in ("grid", "particle", "chang", "nearest", "bilinear")
    }
    calls["warp-grid-options"] = (
        functools.partial(irwarp.warp, capacity=4, edge_points=3),
        (key, x, flow),
    )
    calls["warp-grid-batched-flow"] = (irwarp.warp, (key, x, jnp.stack([flow, flow])))
    calls["warp_forward"] = (irwarp.warp_forward, (key, x, flow))
    calls["warp_forward-3d"] = (irwarp.warp_forward, (key, x3, f3))
    calls["warp-particle-3d"] = (functools.partial(irwarp.warp, method="particle"), (key, x3, f3))
    calls["warp_sequence-grid"] = (irwarp.warp_sequence, (key, x10, fs))
    calls["warp_sequence-lagrangian"] = (
        functools.partial(irwarp.warp_sequence, method="lagrangian", depth=2),
        (key, x10, fs),
    )
    return calls


def _lowered(fn, args, platform: str) -> str:
    return jax.export.export(jax.jit(fn), platforms=(platform,))(*args).mlir_module()


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_plain_lowering_has_no_float_scatter_add_over_repeated_indices(
    platform, small_grids_switch
):
    for name, (fn, args) in _public_calls().items():
        text = _lowered(fn, args, platform)
        assert _float_scatter_adds(text) == 0, f"{name} lowered for {platform}"
        assert _conditionals(text) == 0, f"{name} lowered for {platform}"


def test_cpu_lowering_keeps_the_cpu_schedule(small_grids_switch):
    """The switch is real: lowered for CPU, the scatters and conds are still there."""
    calls = _public_calls()
    for name in ("warp-grid", "warp-particle", "warp_sequence-lagrangian"):
        fn, args = calls[name]
        cpu = _lowered(fn, args, "cpu")
        assert _float_scatter_adds(cpu) > 0, name
        assert _conditionals(cpu) > 0, name
        with _schedule.force("plain"):
            plain = _lowered(fn, args, "cpu")
        assert _float_scatter_adds(plain) == 0, name
        assert _conditionals(plain) == 0, name


# --------------------------------------------------------------------------------------------------
# (d) Gradients with respect to the flow.


def _zoom_in_flow(h: int, w: int) -> jax.Array:
    """Backward map ``psi(p) = c + 0.8 (p - c)``: pre-images of area 0.64, no piece near 0.

    Every source is used less than once (no fail-safe, remainders near 0.36), and with ``c`` off
    the lattice no polygon edge lies within 0.02 of a cell line, so the warp is smooth in the flow
    around it (``sqrt`` of an area or remainder is not differentiable at 0).
    """
    yy, xx = jnp.meshgrid(jnp.arange(h) + 0.5, jnp.arange(w) + 0.5, indexing="ij")
    cy, cx = h / 2 + 0.13, w / 2 + 0.13
    return jnp.stack([-0.2 * (xx - cx), -0.2 * (yy - cy)], -1).astype(jnp.float32)


@pytest.mark.parametrize("method", ["grid", "particle", "chang", "nearest", "bilinear"])
def test_flow_gradient_is_finite(method):
    key = jax.random.key(0)
    x = jax.random.normal(key, (8, 8, 4))
    for flow in (jnp.full((8, 8, 2), 0.3), _zoom_in_flow(8, 8), flows.rotation(8, 8, 10.0)):
        g = jax.grad(lambda f: irwarp.warp(key, x, f, method=method).sum())(flow)
        assert np.all(np.isfinite(np.asarray(g))), method
        if method in ("chang", "nearest"):
            # Piecewise constant in the flow (sub-pixel counting, nearest cell): a zero gradient.
            assert float(jnp.abs(g).max()) == 0.0


@pytest.mark.parametrize("method", ["grid", "particle"])
def test_flow_gradient_matches_finite_differences(method):
    """Directional derivative against a central difference with step ``h``.

    The loss ``sum(w * warp(key, x, flow))`` is smooth around the zoom-in flow; the central
    difference errs by ``O(h^2 L''')`` (truncation: the smallest pieces have area ~0.02, where
    ``sqrt`` bends fast; 3 % at ``h = 1e-2``, under 0.5 % at ``h = 3e-3``) plus
    ``O(eps sum |w y| / h)`` (float32 rounding of the two losses: about 2e-3 at ``h = 3e-3``), so
    the tolerance is 2 % plus 1e-2.
    """
    h_, w_ = 8, 8
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (h_, w_, 4))
    wts = jax.random.normal(jax.random.key(2), (h_, w_, 4))
    flow = _zoom_in_flow(h_, w_)

    def loss(f):
        return jnp.sum(wts * irwarp.warp(key, x, f, method=method))

    loss = jax.jit(loss)
    g = jax.grad(loss)(flow)
    step = 3e-3
    for seed in range(3):
        v = jax.random.normal(jax.random.key(10 + seed), flow.shape)
        v = v / jnp.sqrt(jnp.mean(v**2))
        fd = (loss(flow + step * v) - loss(flow - step * v)) / (2 * step)
        ad = jnp.sum(g * v)
        np.testing.assert_allclose(float(ad), float(fd), rtol=2e-2, atol=1e-2)
