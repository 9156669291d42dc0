"""Partition-record areas and warp covariances against an independent numpy reference.

docs/DESIGN.md section 4, items 2-4: the records of ``grid``, ``particle`` and ``splat`` hold the areas
of section 3 (checked entry by entry against ``tests/reference.py``, which shares no code with
irwarp), and the warped noise has ``E[Y_d X_s] = a_ds / sqrt(A_d)``, unit variance and (where the
design promises it) no correlation between output pixels, measured by Monte Carlo with fixed keys
and tolerances of a few standard errors. Chang et al.'s baseline approaches the grid covariance as
its upsampling factor grows.

Flows are built here with numpy at pixel centres (backward flows: ``flow = psi(p) - p``).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import reference as ref

import irwarp

H, W = 7, 8  # not square, so a swapped x / y shows up
R = 20_000  # Monte Carlo draws per (method, flow)
Z_TOL = 5.0  # tolerance in standard errors; ~H^2 W^2 = 3136 entries per matrix
AREA_TOL = 1e-5


# ----------------------------------------------------------------------------------------------
# Flows (numpy, at pixel centres)


def _centres(h: int = H, w: int = W):
    y, x = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    return x, y


def _affine_flow(a, t=(0.0, 0.0), h: int = H, w: int = W) -> np.ndarray:
    """Backward flow of ``psi(p) = c + A (p - c) + t`` about the image centre ``c``."""
    x, y = _centres(h, w)
    cx, cy = w / 2, h / 2
    (a00, a01), (a10, a11) = a
    px = cx + a00 * (x - cx) + a01 * (y - cy) + t[0]
    py = cy + a10 * (x - cx) + a11 * (y - cy) + t[1]
    return np.stack([px - x, py - y], -1).astype(np.float32)


def _rotation(deg: float):
    th = np.deg2rad(deg)
    return ((np.cos(th), -np.sin(th)), (np.sin(th), np.cos(th)))


def _sinusoid_flow() -> np.ndarray:
    """Smooth non-affine flow with |d flow / d p| < 0.35: injective."""
    x, y = _centres()
    fx = 0.4 * np.sin(2 * np.pi * y / H) + 0.1
    fy = 0.3 * np.cos(2 * np.pi * x / W) - 0.15
    return np.stack([fx, fy], -1).astype(np.float32)


def _fold_flow() -> np.ndarray:
    """Non-injective flow: ``psi_x`` has slope 1 left of x = 3.5 and slope -0.8 right of it.

    Columns right of the kink mirror back onto columns already used by the left part, so the grid
    fail-safe fires. The octagons stay simple up to zero-area spikes (kink and border pixels, where
    the clamped flow turns ``psi_x`` back), which the shoelace formula handles exactly.
    """
    x, _ = _centres()
    k = 3.5
    psi_x = np.where(x <= k, x, k - 0.8 * (x - k)) + 0.2
    return np.stack([psi_x - x, np.full_like(x, 0.3)], -1).astype(np.float32)


# In the new frame the content is magnified by ``z``, so the backward map shrinks by ``1 / z``.
FLOWS = {
    "translate": _affine_flow(((1, 0), (0, 1)), (0.3, -0.45)),
    "rotate15": _affine_flow(_rotation(15.0)),
    "zoom_in_1.3": _affine_flow(((1 / 1.3, 0), (0, 1 / 1.3))),
    "zoom_out_0.7": _affine_flow(((1 / 0.7, 0), (0, 1 / 0.7))),
    "shear": _affine_flow(((1, 0.35), (0, 1)), (0.1, 0.0)),
    "sinusoid": _sinusoid_flow(),
}
FOLD = _fold_flow()
# Orientation-reversing but injective: the octagons are simple, mirrored polygons.
MIRROR = _affine_flow(((-1, 0), (0, 1)), (0.3, 0.0))

INJECTIVE = sorted(FLOWS)
ALL_FLOWS = {**FLOWS, "fold": FOLD, "mirror": MIRROR}


# Jitted once each: compiling the records op by op costs more than the tests themselves.
_GRID_RECORD = jax.jit(irwarp.grid_record)
_PARTICLE_RECORD = jax.jit(irwarp.particle_record)
_SPLAT_RECORD = jax.jit(irwarp.splat_record)


def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a.T @ b`` for ``(R, n)`` arrays, with a plain ``einsum`` loop.

    A threaded BLAS can stall for seconds on a shared, oversubscribed CPU; this one does not.
    """
    return np.einsum("ri,rj->ij", a, b)


def _dense(record) -> np.ndarray:
    """Scatter ``record.area`` by ``(dst, src)`` into a dense ``[d, s]`` matrix, summing duplicates."""
    n = H * W
    out = np.zeros((n, n))
    dst = np.asarray(record.dst)
    src = np.asarray(record.src)
    area = np.asarray(record.area, np.float64)
    assert dst.shape == src.shape == area.shape
    assert dst.min() >= 0 and dst.max() < n and src.min() >= 0 and src.max() < n
    np.add.at(out, (dst, src), area)
    return out


# ----------------------------------------------------------------------------------------------
# The reference checks itself on cases solvable by hand


def _shift_matrix(dx: int, dy: int) -> np.ndarray:
    """``a_ds = 1`` where old cell ``s`` is new pixel ``d`` moved by ``(dx, dy)`` and in the image."""
    a = np.zeros((H * W, H * W))
    for i in range(H):
        for j in range(W):
            si, sj = i + dy, j + dx
            if 0 <= si < H and 0 <= sj < W:
                a[i * W + j, si * W + sj] = 1.0
    return a


def test_reference_identity_and_integer_shift():
    zero = np.zeros((H, W, 2), np.float32)
    eye = np.eye(H * W)
    np.testing.assert_allclose(ref.grid_areas(zero), eye, atol=1e-12)
    np.testing.assert_allclose(ref.particle_areas(zero), eye, atol=1e-12)
    np.testing.assert_allclose(ref.splat_areas(zero), eye, atol=1e-12)
    shift = np.broadcast_to(np.float32([2, -1]), (H, W, 2))
    # Backward: new pixel d pulls old cell d + (2, -1). Forward: old s goes to new s + (2, -1).
    np.testing.assert_allclose(ref.grid_areas(shift), _shift_matrix(2, -1), atol=1e-12)
    np.testing.assert_allclose(ref.particle_areas(shift), _shift_matrix(2, -1), atol=1e-12)
    np.testing.assert_allclose(ref.splat_areas(shift), _shift_matrix(-2, 1), atol=1e-12)


def test_reference_polygon_clipping_by_hand():
    # A concave L-shape of area 3 over the cells of a 2 x 2 block: 1 in each cell but (1, 1).
    ell = [(0.0, 0.0), (2.0, 0.0), (2.0, 1.0), (1.0, 1.0), (1.0, 2.0), (0.0, 2.0)]
    assert ref.shoelace(ell) == pytest.approx(3.0)
    got = [[ref.overlap_area(ell, i, j) for j in range(2)] for i in range(2)]
    np.testing.assert_allclose(got, [[1.0, 1.0], [1.0, 0.0]], atol=1e-12)
    # A diamond through the 4 cell-edge midpoints of cell (0, 0), shifted by (0.5, 0): the halves.
    dia = [(1.0, 0.0), (1.5, 0.5), (1.0, 1.0), (0.5, 0.5)]
    assert ref.overlap_area(dia, 0, 0) == pytest.approx(0.25)
    assert ref.overlap_area(dia, 0, 1) == pytest.approx(0.25)
    assert ref.square_overlap(0.8, 0.3, 0, 0) == pytest.approx(0.7 * 0.8)
    # Clamped bilinear flow: exact between centres, constant beyond them.
    f = np.zeros((2, 2, 2))
    f[0, 1, 0] = 1.0
    assert ref.interp_flow(f, 0.75, 0.5) == pytest.approx((0.25, 0.0))
    assert ref.interp_flow(f, 5.0, -3.0) == pytest.approx((1.0, 0.0))


@pytest.mark.parametrize(
    "name,det", [("rotate15", 1.0), ("zoom_in_1.3", 1 / 1.3**2), ("shear", 1.0), ("mirror", 1.0)]
)
def test_reference_conserves_area_of_affine_maps(name, det):
    """An interior pixel's areas add up to |det A|: its octagon is the exact image of the cell."""
    a = ref.grid_areas(ALL_FLOWS[name], failsafe=False)
    for i, j in ((3, 3), (3, 4), (2, 4)):
        assert a[i * W + j].sum() == pytest.approx(det, abs=1e-6), (i, j)


# ----------------------------------------------------------------------------------------------
# Exact areas of the records


@pytest.mark.parametrize("name", INJECTIVE + ["fold", "mirror"])
def test_grid_record_areas_match_reference(name):
    flow = ALL_FLOWS[name]
    record = _GRID_RECORD(flow)
    np.testing.assert_allclose(_dense(record), ref.grid_areas(flow), rtol=0, atol=AREA_TOL)
    # Nothing fell outside the default 3 x 3 window for these flows.
    np.testing.assert_array_equal(np.asarray(record.overflow), 0.0)
    # source_use is the requested area per source, before the fail-safe.
    use = ref.grid_areas(flow, failsafe=False).sum(axis=0).reshape(H, W)
    np.testing.assert_allclose(np.asarray(record.source_use), use, rtol=0, atol=AREA_TOL)
    if name == "fold":
        assert use.max() > 1.5  # the fail-safe really fired


@pytest.mark.parametrize("name,edge_points", [("sinusoid", 3), ("rotate15", 4)])
def test_grid_record_more_edge_points_match_reference(name, edge_points):
    """``edge_points=n``: the polygon through ``psi`` of ``4 n`` boundary points."""
    flow = FLOWS[name]
    record = irwarp.grid_record(flow, edge_points=edge_points)
    want = ref.grid_areas(flow, edge_points=edge_points)
    np.testing.assert_allclose(_dense(record), want, rtol=0, atol=AREA_TOL)
    if name == "sinusoid":  # a curved map: more points give other areas than the octagon
        assert np.abs(want - ref.grid_areas(flow)).max() > 1e-3


def test_grid_record_capacity_window():
    """A 2.2x zoom-out needs a 4 x 4 window: the default 3 reports overflow, 4 is exact."""
    flow = _affine_flow(((1 / 0.45, 0), (0, 1 / 0.45)), (0.2, 0.1))
    want = ref.grid_areas(flow)
    small = _GRID_RECORD(flow)
    assert int(small.num_overflow()) > 0
    assert np.abs(_dense(small) - want).max() > 0.05
    big = irwarp.grid_record(flow, capacity=4)
    np.testing.assert_array_equal(np.asarray(big.overflow), 0.0)
    np.testing.assert_allclose(_dense(big), want, rtol=0, atol=AREA_TOL)


@pytest.mark.parametrize("name", INJECTIVE + ["fold", "mirror"])
def test_particle_record_areas_match_reference(name):
    flow = ALL_FLOWS[name]
    got = _dense(_PARTICLE_RECORD(flow))
    want = ref.particle_areas(flow)
    np.testing.assert_allclose(got, want, rtol=0, atol=AREA_TOL)


@pytest.mark.parametrize("name", INJECTIVE + ["fold", "mirror"])
def test_splat_record_areas_match_reference(name):
    fflow = ALL_FLOWS[name]  # used as a forward flow
    got = _dense(_SPLAT_RECORD(fflow))
    want = ref.splat_areas(fflow)
    np.testing.assert_allclose(got, want, rtol=0, atol=AREA_TOL)


def test_record_areas_discriminate_flow_direction():
    """The exact-area comparison is not vacuous: a negated or transposed flow gives other areas."""
    for name in ("translate", "rotate15", "shear"):
        flow = FLOWS[name]
        want = ref.grid_areas(flow)
        assert np.abs(_dense(_GRID_RECORD(-flow)) - want).max() > 0.1
        assert (
            np.abs(_dense(_GRID_RECORD(np.ascontiguousarray(flow[..., ::-1]))) - want).max() > 0.1
        )


# ----------------------------------------------------------------------------------------------
# Monte Carlo moments of the warped noise

_WARPS = {
    "grid": jax.jit(functools.partial(irwarp.warp, method="grid")),
    "particle": jax.jit(functools.partial(irwarp.warp, method="particle")),
    "splat": jax.jit(irwarp.warp_forward),
}
_REFERENCES = {
    "grid": ref.grid_areas,
    "particle": ref.particle_areas,
    "splat": ref.splat_areas,
}


@functools.cache
def _draws(seed: int, r: int = R) -> np.ndarray:
    """Old-frame noise ``X``: ``(R, H, W, 1)`` i.i.d. N(0, 1), float32, from a fixed seed."""
    return np.random.default_rng(seed).standard_normal((r, H, W, 1), dtype=np.float32)


@functools.cache
def _moments(method: str, name: str, negate: bool = False):
    """Sample ``E[Y_d X_s]`` and ``E[Y_d Y_d']`` over ``R`` draws, each ``(HW, HW)`` float64.

    All ``R`` draws go through one call: the leading dimension is folded into channels and shares
    the flow.
    """
    flow = ALL_FLOWS[name]
    if negate:
        flow = -flow
    x = _draws(0)
    y = _WARPS[method](jax.random.key(1234), x, flow)
    y = np.asarray(y, np.float64).reshape(R, H * W)
    xf = x.astype(np.float64).reshape(R, H * W)
    assert np.all(np.isfinite(y))
    return _gram(y, xf) / R, _gram(y, y) / R


def _max_z_cross(est: np.ndarray, rho: np.ndarray, r: int = R) -> float:
    """Largest ``|est - rho|`` in standard errors; ``Var(Y X) = 1 + rho^2`` for a Gaussian pair."""
    se = np.sqrt((1.0 + rho**2) / r)
    return float(np.max(np.abs(est - rho) / se))


def _max_z_gram(gram: np.ndarray, r: int = R) -> tuple[float, float]:
    """Largest deviation of ``E[Y_d^2]`` from 1 and of ``E[Y_d Y_d']`` from 0, in standard errors."""
    diag = np.diag(gram)
    off = gram - np.diag(diag)
    return float(np.max(np.abs(diag - 1.0)) / np.sqrt(2.0 / r)), float(
        np.max(np.abs(off)) / np.sqrt(1.0 / r)
    )


COVARIANCE_CASES = [("grid", n) for n in INJECTIVE + ["mirror"]] + [
    (m, n) for m in ("particle", "splat") for n in INJECTIVE + ["fold", "mirror"]
]


@pytest.mark.parametrize("method,name", COVARIANCE_CASES)
def test_cross_covariance_matches_reference(method, name):
    """``E[Y_d X_s] = a_ds / sqrt(A_d)`` over every pair ``(d, s)``, within ``Z_TOL`` SE."""
    est, _ = _moments(method, name)
    rho = ref.cross_covariance(_REFERENCES[method](ALL_FLOWS[name]))
    z = _max_z_cross(est, rho)
    assert z < Z_TOL, f"{method}/{name}: max |E[YX] - a/sqrt(A)| = {z:.2f} SE"


WHITE_CASES = [("grid", n) for n in INJECTIVE + ["mirror", "fold"]] + [
    (m, n) for m in ("particle", "splat") for n in INJECTIVE + ["fold", "mirror"]
]


@pytest.mark.parametrize("method,name", WHITE_CASES)
def test_output_is_white(method, name):
    """Unit variance per pixel and no correlation between pixels.

    docs/DESIGN.md promises this for grid on injective maps and for particle / splat on any map; with
    the fail-safe every cell's pieces add up to at most 1, so grid is white on the fold too.
    """
    _, gram = _moments(method, name)
    z_diag, z_off = _max_z_gram(gram)
    assert z_diag < Z_TOL, f"{method}/{name}: max |E[Y^2] - 1| = {z_diag:.2f} SE"
    assert z_off < Z_TOL, f"{method}/{name}: max |E[Y_d Y_d']| = {z_off:.2f} SE"


@pytest.mark.parametrize("method", ["grid", "particle", "splat"])
@pytest.mark.parametrize("name", ["translate", "rotate15"])
def test_cross_covariance_detects_negated_flow(method, name):
    """The test can fail: warping with the negated flow is far from the reference of the flow."""
    est, _ = _moments(method, name, negate=True)
    rho = ref.cross_covariance(_REFERENCES[method](ALL_FLOWS[name]))
    assert _max_z_cross(est, rho) > 10 * Z_TOL


def test_cross_covariance_tells_particle_from_grid_under_rotation():
    """Particle's covariance differs from the exact areas under rotation (docs/DESIGN.md section 3)."""
    est, _ = _moments("particle", "rotate15")
    rho_grid = ref.cross_covariance(ref.grid_areas(FLOWS["rotate15"]))
    assert _max_z_cross(est, rho_grid) > 10 * Z_TOL


# ----------------------------------------------------------------------------------------------
# Chang et al. converges to the grid covariance

CH, CW = 6, 6
CHANG_R = 16_000
CHANG_CHUNK = 4_000


def _chang_flow() -> np.ndarray:
    return _affine_flow(_rotation(12.0), (0.3, 0.2), CH, CW)


def _chang_errors(n: int) -> tuple[float, float, float]:
    """Max |error|, its max in SE, and the RMS bias of Chang's ``E[Y X]`` against the grid reference.

    The squared bias is estimated without the Monte Carlo variance:
    ``mean((est - rho)^2 - var_hat)`` with ``var_hat`` the sample variance of ``Y_d X_s`` over R.
    """
    flow = _chang_flow()
    rho = ref.cross_covariance(ref.grid_areas(flow))
    fn = jax.jit(functools.partial(irwarp.warp, method="chang", upsample=n))
    rng = np.random.default_rng(7)
    m = CH * CW
    s1 = np.zeros((m, m))
    s2 = np.zeros((m, m))
    for c in range(CHANG_R // CHANG_CHUNK):
        x = rng.standard_normal((CHANG_CHUNK, CH, CW, 1), dtype=np.float32)
        y = fn(jax.random.fold_in(jax.random.key(99), c), x, flow)
        y = np.asarray(y, np.float64).reshape(CHANG_CHUNK, m)
        xf = x.astype(np.float64).reshape(CHANG_CHUNK, m)
        s1 += _gram(y, xf)
        s2 += _gram(y**2, xf**2)
    est = s1 / CHANG_R
    var_hat = (s2 / CHANG_R - est**2) / CHANG_R
    err = est - rho
    bias2 = float(np.mean(err**2 - var_hat))
    return float(np.abs(err).max()), _max_z_cross(est, rho, CHANG_R), np.sqrt(max(bias2, 0.0))


def test_chang_converges_to_grid_covariance():
    """Max error and RMS bias of Chang et al. shrink from N = 1 to 4 to 16 (docs/DESIGN.md 4.4)."""
    e1, _, b1 = _chang_errors(1)
    e4, _, b4 = _chang_errors(4)
    e16, z16, b16 = _chang_errors(16)
    report = f"max err {e1:.4f} {e4:.4f} {e16:.4f}; rms bias {b1:.4f} {b4:.4f} {b16:.4f}"
    assert e4 < 0.5 * e1, report
    assert e16 < 0.5 * e4, report
    assert b4 < 0.3 * b1, report
    assert b16 < 0.3 * b4, report
    # At N = 16 the remaining bias is below the Monte Carlo resolution of this test.
    assert z16 < Z_TOL, report


@pytest.mark.parametrize("edge_points", [1, 2, 3, 4])
def test_shared_lattice_points_equal_per_pixel_stencils(edge_points):
    """The grid record's polygon points (lattice grids shared by neighbouring pixels) equal the
    per-pixel bilinear stencils of ``flow_at_offsets``, NaN pattern included; bit for bit at 1 and
    2 points per edge (the same terms in the same order)."""
    from irwarp import records

    h, w = 7, 9
    flow = np.array(jax.random.normal(jax.random.key(4), (h, w, 2)) * 2.0)
    flow[2, 3, 0] = np.nan
    flow[5, 0:3] = np.nan
    xs, ys = records._polygon_vertices(jax.numpy.asarray(flow), edge_points)
    offs = records.polygon_offsets(edge_points)
    ref_pts = np.asarray(records.flow_at_offsets(jax.numpy.asarray(flow), offs))
    assert len(xs) == 4 * edge_points
    for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
        got = np.stack([np.asarray(x), np.asarray(y)], -1)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref_pts[:, :, k]))
        if edge_points <= 2:
            np.testing.assert_array_equal(got, ref_pts[:, :, k])
        else:
            np.testing.assert_allclose(got, ref_pts[:, :, k], rtol=0, atol=1e-6)
