"""3D warping: volumes ``(..., D, H, W, C)`` with 3D flows ``(..., D, H, W, 3)``.

docs/DESIGN.md section 4 for volumes, particle (trilinear) and forward splat: identity and integer
shifts are exact (fresh noise only where voxels enter), the noise moves the right way along every
axis, the output is white on a zoo of 3D flows (degenerate ones included), the records hold the
trilinear overlap volumes of ``tests/reference3d.py`` (which shares no code with irwarp) and
``E[Y_d X_s] = a_ds / sqrt(A_d)`` by Monte Carlo; plus determinism, warp_sequence, bad input,
the 3D flows and stats, and the use case of a rotating / advected volume.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
import reference3d as ref

import irwarp
from irwarp import flows, flows3d, records, records3d, stats

D, H, W, C = 5, 6, 7, 3  # all different, so a swapped axis shows up
METHODS = ("particle", "splat")
Z_TOL = 5.0  # tolerance in standard errors

_WARP = {
    "particle": jax.jit(functools.partial(irwarp.warp, method="particle")),
    "splat": jax.jit(irwarp.warp_forward),
}
_RECORD = {
    "particle": jax.jit(records.particle3d_record),
    "splat": jax.jit(records.splat3d_record),
}
_REFERENCE = {"particle": ref.particle_volumes, "splat": ref.splat_volumes}
# Flow constructors jitted once: op-by-op dispatch of the advection's RK4 costs seconds.
_ZOO3D = jax.jit(flows3d.zoo3d, static_argnums=(0, 1, 2))
_ADVECTION = jax.jit(flows3d.advection3d, static_argnames=("steps",))
ZOO_NAMES = (
    "identity",
    "translation",
    "rotation",
    "zoom_in",
    "zoom_out",
    "shear",
    "advection",
    "fold",
    "collapse",
    "collapse_point",
    "leave_volume",
    "nan_patch",
)


def _noise(seed=0, shape=(D, H, W, C), dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _const(dx, dy, dz, d=D, h=H, w=W):
    return jnp.broadcast_to(jnp.asarray([dx, dy, dz], jnp.float32), (d, h, w, 3))


def _warp(method, key, x, flow):
    """Backward flow for particle; the splat gets the forward flow of the same rigid shift."""
    if method == "splat":
        return _WARP[method](key, x, -flow)
    return _WARP[method](key, x, flow)


def _dense(record, n) -> np.ndarray:
    """Scatter ``record.area`` by ``(dst, src)`` into a dense ``[d, s]`` matrix."""
    out = np.zeros((n, n))
    dst, src = np.asarray(record.dst), np.asarray(record.src)
    assert dst.min() >= 0 and dst.max() < n and src.min() >= 0 and src.max() < n
    np.add.at(out, (dst, src), np.asarray(record.area, np.float64))
    return out


# ----------------------------------------------------------------------------------------------
# The reference checks itself


def test_reference_by_hand():
    assert ref.cube_overlap((0.25, 0.0, 0.5), (0.0, 0.0, 0.0)) == pytest.approx(0.75 * 0.5)
    assert ref.cube_overlap((1.0, 0.0, 0.0), (0.0, 0.0, 0.0)) == 0.0
    zero = np.zeros((2, 3, 4, 3))
    np.testing.assert_array_equal(ref.particle_volumes(zero), np.eye(24))
    np.testing.assert_array_equal(ref.splat_volumes(zero), np.eye(24))
    shift = np.broadcast_to(np.float32([1, -1, 1]), (2, 3, 4, 3))
    # Backward: new d pulls old d + shift. Forward: old s goes to new s + shift.
    np.testing.assert_array_equal(ref.particle_volumes(shift), ref.shift_matrix(2, 3, 4, 1, -1, 1))
    np.testing.assert_array_equal(ref.splat_volumes(shift), ref.shift_matrix(2, 3, 4, -1, 1, -1))
    half = np.broadcast_to(np.float32([0.5, 0, 0]), (1, 1, 2, 3))
    # Two voxels in a row pull [0.5, 1.5] and [1.5, 2.5]: source 1 is shared, 0.5 + 0.5.
    np.testing.assert_allclose(ref.particle_volumes(half), [[1.0, 0.5], [0.0, 0.5]])


# ----------------------------------------------------------------------------------------------
# Exactness and direction


@pytest.mark.parametrize("method", METHODS)
def test_identity_is_exact(method):
    x = _noise(shape=(2, D, H, W, C))
    y = _warp(method, jax.random.key(1), x, jnp.zeros((D, H, W, 3)))
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("axis", (0, 1, 2))
@pytest.mark.parametrize("sign", (1, -1))
def test_integer_shift_is_exact(method, axis, sign):
    """Backward flow with component ``axis`` (x, y, z) = ``2 sign``: new ``(k, i, j)`` shows old
    ``(k, i, j) + 2 sign e_axis``; voxels entering the volume (and only those) get fresh noise."""
    vec = [0.0, 0.0, 0.0]
    vec[axis] = 2.0 * sign
    x = np.asarray(_noise(2))
    y = np.asarray(_warp(method, jax.random.key(3), jnp.asarray(x), _const(*vec)))
    kk, ii, jj = np.meshgrid(np.arange(D), np.arange(H), np.arange(W), indexing="ij")
    sk, si, sj = kk + int(vec[2]), ii + int(vec[1]), jj + int(vec[0])
    inside = (sk >= 0) & (sk < D) & (si >= 0) & (si < H) & (sj >= 0) & (sj < W)
    np.testing.assert_array_equal(y[inside], x[sk[inside], si[inside], sj[inside]])
    entering = y[~inside]
    assert entering.size > 0 and np.all(np.isfinite(entering))
    assert not np.any(np.isin(entering, x))
    flow = _const(*vec) if method == "particle" else -_const(*vec)
    np.testing.assert_array_equal(np.asarray(_RECORD[method](flow).dst_area()) > 0, inside)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("axis", (0, 1, 2))
@pytest.mark.parametrize("sign", (1.0, -1.0))
def test_fractional_motion_moves_the_right_way(method, axis, sign):
    """A 3/8 voxel shift: Y correlates 5/8 with the voxel under it, 3/8 with the next one along the
    flow and 0 with the one on the other side (docs/DESIGN.md section 4, item 6)."""
    c = 4096
    x = _noise(3, (3, 4, 5, c))
    vec = [0.0, 0.0, 0.0]
    vec[axis] = 0.375 * sign
    y = np.asarray(_warp(method, jax.random.key(4), x, _const(*vec, d=3, h=4, w=5)), np.float64)
    x = np.asarray(x, np.float64)
    at = np.array([1, 2, 2])  # (k, i, j)
    step = np.zeros(3, int)
    step[2 - axis] = int(sign)  # x is the last index, z the first
    corr = lambda p: float(np.mean(y[tuple(at)] * x[tuple(p)]))
    se = 1 / np.sqrt(c)
    assert abs(corr(at) - 0.625) < Z_TOL * se
    assert abs(corr(at + step) - 0.375) < Z_TOL * se
    assert abs(corr(at - step)) < Z_TOL * se


# ----------------------------------------------------------------------------------------------
# Records against the reference, covariance and whiteness by Monte Carlo

CD, CH, CW = 3, 4, 5  # 60 voxels: dense 60 x 60 matrices
R = 16_000  # Monte Carlo draws, one per channel of a single call
COV_FLOWS = (
    "translation",
    "rotation",
    "zoom_in",
    "zoom_out",
    "shear",
    "advection",
    "fold",
    "collapse",
    "collapse_point",
    "nan_patch",
)


@functools.cache
def _small_zoo():
    zoo = _ZOO3D(CD, CH, CW)
    zoo["rotation"] = flows3d.rotation3d(CD, CH, CW, (1.0, 2.0, 2.0), 25.0)  # more turn at 5 voxels
    return {k: np.asarray(v) for k, v in zoo.items()}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", COV_FLOWS + ("leave_volume",))
def test_record_volumes_match_reference(method, name):
    flow = _small_zoo()[name]
    record = _RECORD[method](flow)
    assert record.shape == (CD, CH, CW) and record.num_pieces == 8 * CD * CH * CW
    want = _REFERENCE[method](flow)
    np.testing.assert_allclose(_dense(record, CD * CH * CW), want, rtol=0, atol=1e-5)
    if method == "particle" and name in ("fold", "collapse", "collapse_point"):
        assert int(record.num_failsafe()) > 0  # several voxels requested the same source


def test_record_volumes_discriminate_direction_and_axes():
    """The comparison is not vacuous: a negated flow or swapped components give other volumes."""
    flow = _small_zoo()["rotation"]
    want = ref.particle_volumes(flow)
    n = CD * CH * CW
    assert np.abs(_dense(_RECORD["particle"](-flow), n) - want).max() > 0.1
    swapped = np.ascontiguousarray(flow[..., ::-1])
    assert np.abs(_dense(_RECORD["particle"](swapped), n) - want).max() > 0.1


# The particle and splat records of both ranks are one rank-generic code: check it against the 2D
# reference (tests/reference.py) as well, and that an image is a volume of depth 1.

SMALL2D = (5, 6)
RANK_FLOWS_2D = ("translation", "rotation", "zoom_out", "shear", "fold_over", "collapse")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", RANK_FLOWS_2D)
def test_rank_generic_records_match_the_2d_reference(method, name):
    h, w = SMALL2D
    flow = np.asarray(flows.zoo(h, w)[name])
    build = records.particle_record if method == "particle" else records.splat_record
    want = (reference.particle_areas if method == "particle" else reference.splat_areas)(flow)
    record = build(flow)
    assert record.shape == (h, w) and record.fanout == 4 and record.num_pieces == 4 * h * w
    np.testing.assert_allclose(_dense(record, h * w), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", RANK_FLOWS_2D + ("nan_patch",))
def test_image_records_are_depth_one_volume_records(method, name):
    """A 2D flow as a ``(1, H, W, 3)`` flow with ``dz = 0``: the same pieces, bit for bit.

    Each voxel's 8 pieces are its pixel's 4 pieces (depth 0) followed by 4 pieces of area 0 (the
    depth-1 cells lie outside the volume), and the diagnostics agree.
    """
    h, w = SMALL2D
    flow = np.asarray(flows.zoo(h, w)[name])
    lifted = np.concatenate([flow, np.zeros_like(flow[..., :1])], -1)[None]
    if method == "particle":
        r2, r3 = records.particle_record(flow), records.particle3d_record(lifted)
    else:
        r2, r3 = records.splat_record(flow), records.splat3d_record(lifted)
    assert r3.shape == (1, h, w) and r3.fanout == 8 and r3.layout == r2.layout
    area3 = np.asarray(r3.area).reshape(h * w, 8)
    np.testing.assert_array_equal(area3[:, :4].reshape(-1), np.asarray(r2.area))
    np.testing.assert_array_equal(area3[:, 4:], 0.0)
    for field in ("src", "dst"):
        got = np.asarray(getattr(r3, field)).reshape(h * w, 8)[:, :4].reshape(-1)
        np.testing.assert_array_equal(got, np.asarray(getattr(r2, field)))
    np.testing.assert_array_equal(np.asarray(r3.dst_area())[0], np.asarray(r2.dst_area()))
    np.testing.assert_array_equal(np.asarray(r3.source_use)[0], np.asarray(r2.source_use))
    assert int(r3.num_failsafe()) == int(r2.num_failsafe())
    assert int(r3.num_overflow()) == int(r2.num_overflow()) == 0
    assert float(r3.overflow_area()) == float(r2.overflow_area()) == 0.0


def test_old_3d_names_still_work():
    """records3d, flows3d and the stats *3d names are the rank-generic code under old names."""
    assert records.PartitionRecord3D is records.PartitionRecord is irwarp.PartitionRecord3D
    for name in records3d.__all__:
        assert getattr(records3d, name) is getattr(records, name), name
    assert irwarp.particle3d_record is records.particle3d_record
    for name in flows3d.__all__:
        assert getattr(flows3d, name) is getattr(flows, name), name
    rec = records3d.particle3d_record(_const(0.3, -0.2, 0.4))
    assert isinstance(rec, records3d.PartitionRecord3D) and rec.dst_area().shape == (D, H, W)
    x = np.asarray(_noise(3, (2, D, H, W, C)))
    y = np.asarray(_noise(4, (2, D, H, W, C)))
    flow = _const(0.3, -0.2, 0.4)
    same = np.testing.assert_array_equal
    same(stats.autocorr3d(x, 2), stats.autocorr(x, 2, ndim=3))
    same(stats.radial_power_spectrum3d(x, 3), stats.radial_power_spectrum(x, 3, ndim=3))
    for mode in ("trilinear", "nearest"):
        same(
            stats.temporal_correlation3d(x, y, flow, mode=mode),
            stats.temporal_correlation(x, y, flow, mode=mode, ndim=3),
        )
    same(stats.temporal_correlation3d(x, y, flow), stats.temporal_correlation(x, y, flow, ndim=3))
    assert stats.summary3d(x) == stats.summary(x, ndim=3)
    assert list(stats.summary(x, ndim=3)) == [
        "mean", "var", "ks", "ks_p", "ac_x", "ac_y", "ac_z", "max_cross"
    ]  # fmt: skip
    assert stats.whiteness_tolerances3d(x.shape, 4.0) == stats.whiteness_tolerances(
        x.shape, 4.0, ndim=3
    )
    # As images, the volume's depth is one more leading axis: same keys as the 2D row.
    assert set(stats.summary(x)) == set(stats.summary(x, ndim=3)) - {"ac_z"}


@functools.cache
def _moments(method: str, name: str):
    """Sample ``E[Y_d X_s]`` and ``E[Y_d Y_d']`` over ``R`` draws carried as channels."""
    x = np.random.default_rng(0).standard_normal((CD, CH, CW, R), dtype=np.float32)
    y = _WARP[method](jax.random.key(5), x, _small_zoo()[name])
    y = np.asarray(y, np.float64).reshape(-1, R)
    assert np.all(np.isfinite(y))
    xf = x.astype(np.float64).reshape(-1, R)
    return np.einsum("dr,sr->ds", y, xf) / R, np.einsum("dr,er->de", y, y) / R


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", COV_FLOWS)
def test_covariance_matches_reference_and_output_is_white(method, name):
    """``E[Y_d X_s] = a_ds / sqrt(A_d)`` and ``E[Y_d Y_d'] = delta`` within Z_TOL SE, every pair."""
    est, gram = _moments(method, name)
    rho = ref.cross_covariance(_REFERENCE[method](_small_zoo()[name]))
    z_cross = np.max(np.abs(est - rho) / np.sqrt((1.0 + rho**2) / R))
    assert z_cross < Z_TOL, f"{method}/{name}: max |E[YX] - a/sqrt(A)| = {z_cross:.2f} SE"
    z_diag = np.max(np.abs(np.diag(gram) - 1.0)) / np.sqrt(2.0 / R)
    z_off = np.max(np.abs(gram - np.diag(np.diag(gram)))) / np.sqrt(1.0 / R)
    assert z_diag < Z_TOL and z_off < Z_TOL, f"{method}/{name}: {z_diag:.2f}, {z_off:.2f} SE"


def test_covariance_detects_a_negated_flow():
    est, _ = _moments("particle", "rotation")
    rho = ref.cross_covariance(ref.particle_volumes(-_small_zoo()["rotation"]))
    assert np.max(np.abs(est - rho) / np.sqrt((1.0 + rho**2) / R)) > 10 * Z_TOL


ZOO_SHAPE = (2, 8, 9, 10, 8)  # (B, D, H, W, C): 11520 numbers per warp


@functools.cache
def _zoo():
    zoo = _ZOO3D(*ZOO_SHAPE[1:4])
    assert set(zoo) == set(ZOO_NAMES) and flows3d.DEGENERATE3D < set(zoo)
    return zoo


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_output_is_white(method, name):
    """Every zoo flow, degenerate ones included (as forward flows for the splat)."""
    x = _noise(6, ZOO_SHAPE)
    # Key 8: with key 7 the particle draw of the "collapse" flow has a KS p-value of 9e-4, below
    # the 1e-3 of the check (a 1-in-1000 event; over 100 random (noise, key) pairs its p-values
    # are uniform, KS p = 0.41, measured when the head normals became slot-major).
    y = _WARP[method](jax.random.key(8), x, _zoo()[name])
    checks = stats.whiteness_checks3d(y)
    assert checks["all"], (method, name, checks, stats.summary(y, ndim=3))
    if name == "leave_volume" and method == "particle":  # every voxel disoccluded: all fresh
        np.testing.assert_array_equal(_RECORD[method](_zoo()[name]).dst_area(), 0.0)


# ----------------------------------------------------------------------------------------------
# Determinism, batching, sequences


@pytest.mark.parametrize("method", METHODS)
def test_same_key_same_output_jit_equals_eager(method):
    x = _noise()
    flow = flows3d.rotation3d(D, H, W, (0.3, -1.0, 0.5), 12.0) + _const(0.2, 0.1, -0.3)
    fn = irwarp.warp_forward if method == "splat" else functools.partial(irwarp.warp, method=method)
    a = _WARP[method](jax.random.key(7), x, flow)
    np.testing.assert_array_equal(a, _WARP[method](jax.random.key(7), x, flow))
    assert not np.array_equal(a, _WARP[method](jax.random.key(8), x, flow))
    np.testing.assert_allclose(fn(jax.random.key(7), x, flow), a, atol=1e-5)  # eager


def test_vmap_equals_loop_and_batched_flows():
    keys = jax.random.split(jax.random.key(10), 3)
    xs = _noise(shape=(3, D, H, W, C))
    fl = jnp.stack([_const(0.3 * b, -0.2 * b, 0.15 * b) for b in range(3)])
    batched = jax.jit(jax.vmap(_WARP["particle"]))(keys, xs, fl)
    for b in range(3):
        np.testing.assert_allclose(batched[b], _WARP["particle"](keys[b], xs[b], fl[b]), atol=1e-6)
    # Per-example flows with leading dims: integer shift along z in every example.
    x = _noise(shape=(2, 2, D, H, W, C))
    shift_z = jnp.broadcast_to(_const(0, 0, 1), (2, 2, D, H, W, 3))
    y = _WARP["particle"](jax.random.key(0), x, shift_z)
    np.testing.assert_array_equal(y[..., : D - 1, :, :, :], x[..., 1:, :, :, :])


def test_apply_record_serves_many_tensors_and_keeps_dtype():
    rec = _RECORD["particle"](_const(0.4, -0.3, 0.2))
    apply = jax.jit(irwarp.apply_record)
    y = apply(jax.random.key(0), _noise(shape=(4, D, H, W, 2)), rec)
    assert y.shape == (4, D, H, W, 2)
    y = apply(jax.random.key(0), _noise(dtype=jnp.bfloat16), rec)
    assert y.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("method", METHODS)
def test_warp_sequence_equals_stepwise(method):
    t = 4
    x0 = _noise()
    back = [flows3d.rotation3d(D, H, W, (1.0, 1.0, 0.0), 8.0 * (k + 1)) for k in range(t)]
    flows = jnp.stack([f if method == "particle" else -f for f in back])
    key = jax.random.key(11)
    seq = irwarp.warp_sequence(key, x0, flows, method=method)
    assert seq.shape == (t + 1, D, H, W, C)
    np.testing.assert_array_equal(seq[0], x0)
    frame = x0
    for k in range(1, t + 1):
        frame = _WARP[method](jax.random.fold_in(key, k), frame, flows[k - 1])
        np.testing.assert_allclose(seq[k], frame, atol=2e-5 * k)


# ----------------------------------------------------------------------------------------------
# Bad input and non-finite flows


class TestBadInput:
    key = jax.random.key(0)

    @pytest.mark.parametrize("method", ("grid", "chang", "bilinear"))
    def test_unsupported_method_names_the_supported(self, method):
        with pytest.raises(ValueError, match="supported in 3D: particle"):
            irwarp.warp(self.key, _noise(), jnp.zeros((D, H, W, 3)), method=method)
        with pytest.raises(ValueError, match="supported in 3D: particle"):
            irwarp.warp_sequence(self.key, _noise(), jnp.zeros((2, D, H, W, 3)), method=method)

    def test_options_and_shapes(self):
        with pytest.raises(ValueError, match="unknown option"):
            irwarp.warp(self.key, _noise(), jnp.zeros((D, H, W, 3)), method="particle", capacity=3)
        with pytest.raises(ValueError, match="share"):
            irwarp.warp(self.key, _noise(), jnp.zeros((D, H + 1, W, 3)), method="particle")
        with pytest.raises(ValueError, match="share"):
            irwarp.warp_forward(self.key, _noise(), jnp.zeros((D + 1, H, W, 3)))
        with pytest.raises(ValueError, match=r"\(\.\.\., D, H, W, C\)"):
            irwarp.warp(
                self.key, _noise(shape=(H, W, C)), jnp.zeros((2, H, W, 3)), method="particle"
            )
        with pytest.raises(ValueError, match="leading"):
            irwarp.warp(
                self.key,
                _noise(shape=(2, D, H, W, C)),
                jnp.zeros((3, D, H, W, 3)),
                method="particle",
            )
        with pytest.raises(ValueError, match=r"\(T, D, H, W, 3\)"):
            irwarp.warp_sequence(self.key, _noise(), jnp.zeros((D, H, W, 3)), method="particle")
        with pytest.raises(ValueError, match=r"\(D, H, W, 3\)"):
            records.particle3d_record(jnp.zeros((H, W, 3)))
        with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
            records.particle_record(jnp.zeros((D, H, W, 3)))
        with pytest.raises(ValueError, match="record's grid"):
            rec = records.splat3d_record(jnp.zeros((D, H, W, 3)))
            irwarp.apply_record(self.key, _noise(shape=(D, H, W + 1, C)), rec)

    def test_flows3d_input(self):
        with pytest.raises(ValueError, match="positive integer"):
            flows3d.identity3d(0, 2, 2)
        with pytest.raises(ValueError, match="non-zero"):
            flows3d.rotation3d(2, 2, 2, (0.0, 0.0, 0.0), 5.0)
        with pytest.raises(ValueError, match=r"\(3, 3\)"):
            flows3d.affine3d(2, 2, 2, np.eye(2))
        with pytest.raises(ValueError, match="rank >= 4"):
            stats.autocorr(_noise(shape=(H, W, C)), ndim=3)
        with pytest.raises(ValueError, match="rank >= 4"):
            stats.autocorr3d(_noise(shape=(H, W, C)))
        with pytest.raises(ValueError, match="ndim must be 2"):
            stats.summary(_noise(), ndim=4)
        with pytest.raises(ValueError, match="mode must be one of"):
            stats.temporal_correlation(_noise(), _noise(), _const(0, 0, 0), mode="bilinear", ndim=3)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", (np.nan, np.inf, -np.inf, 1e30))
def test_nonfinite_and_huge_flows_give_finite_output(method, bad):
    flow = np.array(_const(0.3, -0.2, 0.4))
    flow[1:3, 2:4, 1:5, 1] = bad
    x = _noise()
    y = np.asarray(_WARP[method](jax.random.key(2), x, flow))
    assert np.all(np.isfinite(y))
    if method == "particle" and not np.isfinite(bad):  # disoccluded: fresh, not copied
        area = np.asarray(_RECORD[method](flow).dst_area())
        assert np.all(area[1:3, 2:4, 1:5] == 0)
        assert not np.any(np.isin(y[1:3, 2:4, 1:5], np.asarray(x)))


# ----------------------------------------------------------------------------------------------
# 3D flows and stats


def test_rotation3d_matches_2d_rotation_slice_by_slice():
    r3 = flows3d.rotation3d(3, H, W, (0.0, 0.0, -1.0), 20.0)
    r2 = irwarp.flows.rotation(H, W, 20.0)
    np.testing.assert_allclose(r3[..., :2], np.broadcast_to(r2, (3, H, W, 2)), atol=1e-5)
    np.testing.assert_allclose(r3[..., 2], 0.0, atol=1e-6)


def test_advection_is_volume_preserving_and_invertible():
    d = 12
    v = flows3d.abc_velocity(d, d, d, amplitude=0.6)
    back = _ADVECTION(v, 1.0, steps=8)
    fwd = _ADVECTION(v, -1.0, steps=8)
    x, y, z = flows3d.voxel_centres(d, d, d)
    p = np.stack([x, y, z], -1)
    psi = p + np.asarray(back)
    # Jacobian determinant of psi by central differences at interior voxels: div v = 0.
    cols = [
        (psi[1:-1, 1:-1, 2:] - psi[1:-1, 1:-1, :-2]) / 2,  # d psi / dx
        (psi[1:-1, 2:, 1:-1] - psi[1:-1, :-2, 1:-1]) / 2,  # d psi / dy
        (psi[2:, 1:-1, 1:-1] - psi[:-2, 1:-1, 1:-1]) / 2,  # d psi / dz
    ]
    jac = np.stack(cols, -1)
    det = np.linalg.det(jac[2:-2, 2:-2, 2:-2])
    np.testing.assert_allclose(det, 1.0, atol=0.05)
    assert np.abs(np.asarray(back)).max() > 0.3  # it really moves
    # The forward flow, sampled at psi(p), brings p back: phi(psi(p)) = p (away from the edge).
    phi_at = flows3d.sample_trilinear(fwd, psi[..., 0], psi[..., 1], psi[..., 2])
    err = np.abs(psi + np.asarray(phi_at) - p)[3:-3, 3:-3, 3:-3]
    assert err.max() < 0.05, err.max()


def test_stats3d_detect_correlation_along_each_axis():
    x = np.asarray(_noise(1, (4, 8, 9, 10, 4)))
    assert stats.whiteness_checks3d(x)["all"]
    freqs, power = stats.radial_power_spectrum(x, ndim=3)
    assert np.all(np.abs(np.asarray(power) - 1.0) < 0.3), power
    for axis, key in ((-2, "ac_x"), (-3, "ac_y"), (-4, "ac_z")):
        y = (x + np.roll(x, 1, axis=axis)) / np.sqrt(2.0)
        row = stats.summary(y, ndim=3)
        assert abs(row[key] - 0.5) < 0.05, (key, row)
        others = {"ac_x", "ac_y", "ac_z"} - {key}
        assert all(abs(row[k]) < 0.05 for k in others), row
        assert not stats.whiteness_checks3d(y)[key]


# ----------------------------------------------------------------------------------------------
# Use case: a rotating volume and a volume advected by a divergence-free velocity field


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("motion", ("rotation", "advection"))
def test_use_case_rotating_and_advected_volume(method, motion):
    """Each frame white; consecutive frames coherent along the motion.

    The trilinear correlation of an exact warp with fractional motion is about
    ``E sqrt(prod_axes ((1 - s)^2 + s^2)) ~ 0.55`` (see ``stats.temporal_correlation``); resampling
    against the motion or not at all gives much less (the standard error is ~0.01).
    """
    n, t = 12, 3
    if motion == "rotation":
        back = flows3d.rotation3d(n, n, n, (1.0, 2.0, 2.0), 10.0)
        fwd = flows3d.rotation3d(n, n, n, (1.0, 2.0, 2.0), -10.0)
    else:
        v = flows3d.abc_velocity(n, n, n, amplitude=0.7)
        back, fwd = _ADVECTION(v, 1.0), _ADVECTION(v, -1.0)
    flows = jnp.stack([back if method == "particle" else fwd] * t)
    seq = irwarp.warp_sequence(jax.random.key(12), _noise(13, (n, n, n, 8)), flows, method=method)
    for k in range(1, t + 1):
        assert stats.whiteness_checks3d(seq[k])["all"], (k, stats.summary(seq[k], ndim=3))
        rho = [
            float(stats.temporal_correlation(seq[k - 1], seq[k], f, ndim=3))
            for f in (back, -back, jnp.zeros_like(back))
        ]
        assert rho[0] > 0.5 and rho[0] > max(rho[1:]) + 0.1, (k, rho)
