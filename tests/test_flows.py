"""Tests of irwarp.flows: directions by hand-computed points, conversions, inversion and .flo IO."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irwarp import flows
from irwarp._sampling import sample_bilinear, sample_flow

H, W = 16, 24
CX, CY = W / 2.0, H / 2.0  # default centre (12, 8)


def _centres(h=H, w=W):
    y, x = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    return x, y


def _inside_lattice(positions, h=H, w=W, margin=0.0):
    """True where positions (..., 2) lie inside the pixel-centre lattice (bilinear sampling exact)."""
    px, py = positions[..., 0], positions[..., 1]
    lo = 0.5 + margin
    return (px >= lo) & (px <= w - 0.5 - margin) & (py >= lo) & (py <= h - 0.5 - margin)


# --------------------------------------------------------------------------------------------------
# Directions, by hand.


def test_identity_and_translation_values():
    np.testing.assert_array_equal(flows.identity(H, W), np.zeros((H, W, 2), np.float32))
    f = flows.translation(H, W, 0.37, -0.61)
    assert f.shape == (H, W, 2) and f.dtype == jnp.float32
    np.testing.assert_array_equal(f[..., 0], np.float32(0.37))
    np.testing.assert_array_equal(f[..., 1], np.float32(-0.61))


def test_translation_direction_moves_pattern_left():
    # Backward flow (1, 0): frame t+1 at p shows frame t at p + (1, 0); content moves left.
    old = np.zeros((H, W, 1), np.float32)
    old[5, 10] = 1.0
    m = flows.flow_to_map(flows.translation(H, W, 1.0, 0.0))
    new = np.asarray(sample_bilinear(jnp.asarray(old), m[..., 0], m[..., 1]))[..., 0]
    assert np.argwhere(new == 1.0).tolist() == [[5, 9]]


def test_rotation_plus_90_by_hand():
    # Content turns counter-clockwise on screen: right of the centre -> above it.
    f = np.asarray(flows.rotation(H, W, 90.0))
    # New pixel (i=3, j=12), centre (12.5, 3.5) = c + (0.5, -4.5): came from c + (4.5, 0.5).
    np.testing.assert_allclose(f[3, 12], [4.0, 5.0], atol=1e-5)
    # A bright old pixel at (i=8, j=16), centre c + (4.5, 0.5), shows up at new pixel (3, 12).
    old = np.zeros((H, W, 1), np.float32)
    old[8, 16] = 1.0
    m = flows.flow_to_map(f)
    new = np.asarray(sample_bilinear(jnp.asarray(old), m[..., 0], m[..., 1]))[..., 0]
    assert np.argwhere(new > 0.999).tolist() == [[3, 12]]


def test_rotation_small_angle_direction():
    # +10 degrees: a point right of the centre moves up (y decreases) on screen, so the new pixel
    # right of the centre pulls from below (dy > 0).
    f = np.asarray(flows.rotation(H, W, 10.0))
    j = 20  # x = 20.5, right of the centre; row 7/8 straddles the centre line y = 8
    assert f[7, j, 1] > 0 and f[8, j, 1] > 0


def test_rotation_custom_centre():
    c = (3.5, 4.5)  # the centre of pixel (4, 3): fixed point
    f = np.asarray(flows.rotation(H, W, 37.0, centre=c))
    np.testing.assert_allclose(f[4, 3], [0.0, 0.0], atol=1e-6)


def test_zoom_by_hand():
    # factor 2: psi(p) = c + (p - c) / 2; pixel (0, 0) centre (0.5, 0.5) -> (6.25, 4.25).
    f = np.asarray(flows.zoom(H, W, 2.0))
    np.testing.assert_allclose(f[0, 0], [5.75, 3.75], atol=1e-5)
    # Zoom-out pulls from further out than the pixel itself.
    g = np.asarray(flows.zoom(H, W, 0.5))
    np.testing.assert_allclose(g[0, 0], [-11.5, -7.5], atol=1e-5)


def test_shear_by_hand():
    # Content: (x, y) -> (x + 0.5 y, y) relative to c. New pixel (i=9, j=12), centre c + (0.5, 1.5),
    # came from c + (0.5 - 0.75, 1.5) = (11.75, 9.5): flow (-0.75, 0).
    f = np.asarray(flows.shear(H, W, 0.5))
    np.testing.assert_allclose(f[9, 12], [-0.75, 0.0], atol=1e-6)
    # Vertical shear: (x, y) -> (x, y + 0.25 x). New pixel centre c + (2.5, 0.5) from c + (2.5, -0.125).
    g = np.asarray(flows.shear(H, W, 0.0, 0.25))
    np.testing.assert_allclose(g[8, 14], [0.0, -0.625], atol=1e-6)


def test_shear_is_inverse_of_content_map():
    sx, sy = 0.3, -0.2
    m = np.asarray(flows.flow_to_map(flows.shear(H, W, sx, sy)))
    qx, qy = m[..., 0] - CX, m[..., 1] - CY
    x, y = _centres()
    np.testing.assert_allclose(qx + sx * qy + CX, x, atol=1e-4)
    np.testing.assert_allclose(qy + sy * qx + CY, y, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Affine and conversions.


def test_affine_round_trip():
    a = np.array([[1.1, -0.2], [0.15, 0.9]], np.float32)
    off = np.array([0.3, -1.2], np.float32)
    c = np.array([5.0, 7.0], np.float32)
    f = flows.affine(H, W, a, off, centre=c)
    m = np.asarray(flows.flow_to_map(f))
    x, y = _centres()
    p = np.stack([x - c[0], y - c[1]], -1)
    expect = c + p @ a.T + off
    np.testing.assert_allclose(m, expect, atol=1e-5)
    np.testing.assert_allclose(flows.map_to_flow(m), f, atol=1e-5)


def test_affine_matches_named_constructors():
    th = np.deg2rad(25.0)
    rt = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]], np.float32)
    np.testing.assert_allclose(flows.affine(H, W, rt), flows.rotation(H, W, 25.0), atol=1e-5)
    np.testing.assert_allclose(
        flows.affine(H, W, np.eye(2) / 1.3), flows.zoom(H, W, 1.3), atol=1e-5
    )
    np.testing.assert_allclose(
        flows.affine(H, W, np.eye(2), (0.5, -2.0)), flows.translation(H, W, 0.5, -2.0), atol=0
    )


def test_flow_to_map_batched():
    f = jnp.stack([flows.rotation(H, W, 5.0), flows.zoom(H, W, 1.2)])
    m = flows.flow_to_map(f)
    assert m.shape == (2, H, W, 2)
    np.testing.assert_allclose(flows.map_to_flow(m), f, atol=1e-5)


def test_mask_flow_and_nan_patch():
    f = flows.translation(H, W, 1.0, 2.0)
    valid = np.ones((H, W), bool)
    valid[2, 3] = False
    g = np.asarray(flows.mask_flow(f, valid))
    assert np.isnan(g[2, 3]).all() and np.isfinite(np.delete(g.reshape(-1, 2), 2 * W + 3, 0)).all()
    p = np.asarray(flows.nan_patch(f, 4, 5, 3, 2))
    bad = np.isnan(p[..., 0])
    assert bad.sum() == 6 and bad[4:7, 5:7].all()
    assert np.isfinite(np.asarray(f)).all()  # the input is unchanged
    # clipped at the border
    assert np.isnan(np.asarray(flows.nan_patch(f, H - 1, W - 1, 5, 5))[..., 0]).sum() == 1


# --------------------------------------------------------------------------------------------------
# Composition and inversion.


def test_compose_translations_is_sum():
    a = flows.translation(H, W, 0.37, -0.61)
    b = flows.translation(H, W, -1.25, 2.5)
    np.testing.assert_allclose(
        flows.compose(a, b), flows.translation(H, W, 0.37 - 1.25, -0.61 + 2.5), atol=1e-5
    )


def test_compose_rotations_is_summed_rotation():
    a = flows.rotation(H, W, 7.0)  # t -> t+1
    b = flows.rotation(H, W, 11.0)  # t+1 -> t+2
    ab = np.asarray(flows.compose(a, b))
    ok = _inside_lattice(np.asarray(flows.flow_to_map(b)))
    assert ok.sum() > H * W // 2
    np.testing.assert_allclose(ab[ok], np.asarray(flows.rotation(H, W, 18.0))[ok], atol=1e-4)


def test_compose_direction_with_nonaffine_order():
    # compose(fa, fb) = fb(p) + fa(p + fb(p)): check against a direct evaluation.
    fa = flows.shear_waves(H, W)
    fb = flows.translation(H, W, 2.0, 1.0)  # integer shift: fa sampled at pixel centres
    ab = np.asarray(flows.compose(fa, fb))
    np.testing.assert_allclose(ab[3, 4], np.asarray(fb)[3, 4] + np.asarray(fa)[4, 6], atol=1e-6)


def test_compose_propagates_nan():
    fa = flows.nan_patch(flows.identity(H, W), 0, 0, H, 4)  # columns 0..3 of frame t unknown
    fb = flows.nan_patch(flows.translation(H, W, -6.0, 0.0), 0, W - 2, H, 2)
    ab = np.asarray(flows.compose(fa, fb))
    assert np.isnan(ab[:, W - 2 :]).all()  # NaN in fb
    assert np.isnan(ab[:, 6:8]).all()  # pulled from columns 0..1 of frame t: all samples NaN
    assert np.isfinite(ab[:, 12 : W - 2]).all()


def test_backward_from_forward_translation():
    fwd = flows.translation(H, W, 1.3, -0.7)
    np.testing.assert_allclose(
        flows.backward_from_forward(fwd), flows.translation(H, W, -1.3, 0.7), atol=1e-6
    )
    np.testing.assert_allclose(
        flows.forward_from_backward(fwd), flows.translation(H, W, -1.3, 0.7), atol=1e-6
    )


def test_inverse_of_small_rotation():
    # The forward flow of content rotating by +6 degrees is the backward flow of rotation(-6).
    fwd = flows.rotation(H, W, -6.0)
    bwd = np.asarray(flows.backward_from_forward(fwd))
    ref = np.asarray(flows.rotation(H, W, 6.0))
    ok = _inside_lattice(np.asarray(flows.flow_to_map(ref)))
    assert ok.sum() > H * W // 2
    np.testing.assert_allclose(bwd[ok], ref[ok], atol=1e-3)
    fwd2 = np.asarray(flows.forward_from_backward(ref))
    ok2 = _inside_lattice(np.asarray(flows.flow_to_map(fwd)))
    np.testing.assert_allclose(fwd2[ok2], np.asarray(fwd)[ok2], atol=1e-3)


def test_inverse_of_vortex_satisfies_fixed_point():
    fwd = flows.vortex(H, W, strength=-20.0)
    bwd = flows.backward_from_forward(fwd, iterations=30)
    # b(p) + f(p + b(p)) = compose(f, b) = 0.
    residual = np.asarray(flows.compose(fwd, bwd))
    assert np.abs(residual).max() < 1e-4
    # and it is close to the swirl the other way (not exact: bilinear f between centres).
    np.testing.assert_allclose(bwd, flows.vortex(H, W, strength=20.0), atol=0.03)


# --------------------------------------------------------------------------------------------------
# The zoo.


def _quad_areas(m):
    """Signed areas of the quads of psi over the centre lattice, (H-1, W-1)."""
    p00, p01, p11, p10 = m[:-1, :-1], m[:-1, 1:], m[1:, 1:], m[1:, :-1]
    poly = [p00, p01, p11, p10]
    s = 0.0
    for k in range(4):
        a, b = poly[k], poly[(k + 1) % 4]
        s = s + a[..., 0] * b[..., 1] - b[..., 0] * a[..., 1]
    return 0.5 * s


def test_zoo_entries():
    z = flows.zoo(H, W)
    required = {
        "identity",
        "translation",
        "rotation",
        "zoom_in",
        "zoom_out",
        "shear",
        "vortex",
        "shear_waves",
        "fold_over",
        "collapse",
        "leave_frame",
        "nan_patch",
    }
    assert required <= set(z)
    assert flows.DEGENERATE <= set(z)
    assert {"fold_over", "collapse", "leave_frame", "nan_patch"} <= flows.DEGENERATE
    for name, f in z.items():
        assert f.shape == (H, W, 2), name
        assert f.dtype == jnp.float32, name
        if name not in flows.DEGENERATE:
            m = np.asarray(flows.flow_to_map(f))
            assert np.isfinite(m).all(), name
            # orientation-preserving on the pixel lattice (locally injective)
            assert (_quad_areas(m) > 0.1).all(), name


def test_zoo_deformed_cells_fit_a_3x3_window():
    # The image of each cell's corners and edge midpoints spans fewer than 2 cells in x and y.
    z = flows.zoo(H, W)
    xs = np.arange(2 * W + 1) / 2.0
    ys = np.arange(2 * H + 1) / 2.0
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    for name, f in z.items():
        if name in flows.DEGENERATE:
            continue
        d = np.asarray(sample_flow(f, jnp.asarray(gx), jnp.asarray(gy)))
        px, py = gx + d[..., 0], gy + d[..., 1]
        for q in (px, py):
            win = np.lib.stride_tricks.sliding_window_view(q, (3, 3))[::2, ::2]
            extent = win.max(axis=(-1, -2)) - win.min(axis=(-1, -2))
            assert extent.shape == (H, W)
            assert (extent < 2.0).all(), name


def test_degenerate_entries_are_degenerate():
    z = flows.zoo(H, W)
    fold = np.asarray(flows.flow_to_map(z["fold_over"]))
    x, _ = _centres()
    np.testing.assert_allclose(fold[:, W // 2 :, 0], x[:, : W // 2][:, ::-1], atol=1e-6)
    np.testing.assert_allclose(fold[:, : W // 2, 0], x[:, : W // 2], atol=1e-6)
    col = np.asarray(flows.flow_to_map(z["collapse"]))
    np.testing.assert_allclose(col[..., 0], W / 2.0, atol=1e-5)
    away = np.asarray(flows.flow_to_map(z["leave_frame"]))
    assert ((away[..., 0] - 0.5 > W) | (away[..., 1] - 0.5 > H)).all()
    nanp = np.asarray(z["nan_patch"])
    assert np.isnan(nanp).any() and np.isfinite(nanp).any()


def test_shear_waves_and_vortex_shapes_and_values():
    f = np.asarray(flows.shear_waves(H, W, amplitude=2.0, wavelength=8.0))
    x, y = _centres()
    np.testing.assert_allclose(f[..., 0], 2.0 * np.sin(2 * np.pi * y / 8.0), atol=1e-5)
    np.testing.assert_allclose(f[..., 1], 2.0 * np.sin(2 * np.pi * x / 8.0), atol=1e-5)
    # the vortex preserves the distance to its centre and turns like rotation() near it
    v = np.asarray(flows.flow_to_map(flows.vortex(H, W, strength=30.0, radius=1e4)))
    r0 = np.hypot(x - CX, y - CY)
    np.testing.assert_allclose(np.hypot(v[..., 0] - CX, v[..., 1] - CY), r0, atol=1e-4)
    np.testing.assert_allclose(
        flows.vortex(H, W, 30.0, radius=1e4), flows.rotation(H, W, 30.0), atol=1e-3
    )


# --------------------------------------------------------------------------------------------------
# jit.


@pytest.mark.parametrize(
    "fn, args",
    [
        (flows.identity, ()),
        (flows.translation, (0.37, -0.61)),
        (flows.affine, (jnp.array([[1.0, 0.1], [0.0, 0.9]]), jnp.array([0.2, 0.3]))),
        (flows.rotation, (10.0,)),
        (flows.zoom, (0.7,)),
        (flows.shear, (0.2, 0.1)),
        (flows.vortex, (25.0,)),
        (flows.shear_waves, (1.0, 12.0)),
        (flows.fold_over, ()),
        (flows.collapse, ()),
        (flows.leave_frame, ()),
    ],
)
def test_constructors_jit(fn, args):
    eager = fn(H, W, *args)
    jitted = jax.jit(fn, static_argnums=(0, 1))(H, W, *args)
    np.testing.assert_allclose(jitted, eager, atol=1e-6)


def test_flow_ops_jit():
    a = flows.rotation(H, W, 8.0)
    b = flows.vortex(H, W)
    valid = jnp.arange(H * W).reshape(H, W) % 3 > 0
    cases = [
        (flows.compose, (a, b)),
        (flows.backward_from_forward, (a,)),
        (flows.forward_from_backward, (b,)),
        (flows.flow_to_map, (a,)),
        (flows.map_to_flow, (a,)),
        (flows.mask_flow, (a, valid)),
        (lambda f: flows.nan_patch(f, 2, 3, 4, 5), (a,)),
    ]
    for fn, args in cases:
        np.testing.assert_allclose(jax.jit(fn)(*args), fn(*args), atol=1e-5)
    # traced rectangle bounds and angles
    np.testing.assert_array_equal(
        np.isnan(jax.jit(flows.nan_patch)(a, 2, 3, 4, 5)), np.isnan(flows.nan_patch(a, 2, 3, 4, 5))
    )
    assert jax.vmap(lambda d: flows.rotation(H, W, d))(jnp.array([1.0, 2.0])).shape == (2, H, W, 2)


# --------------------------------------------------------------------------------------------------
# .flo IO.


def test_flo_round_trip_bit_equal(tmp_path):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 7, 2)).astype(np.float32) * 10
    f[1, 2, 0] = np.nan
    f[3, 4, 1] = -0.0
    path = tmp_path / "a.flo"
    flows.write_flo(path, f)
    raw = path.read_bytes()
    assert raw[:4] == b"PIEH"
    assert np.frombuffer(raw, "<i4", count=2, offset=4).tolist() == [7, 5]  # width, height
    assert len(raw) == 12 + 5 * 7 * 2 * 4
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4", count=2, offset=12), f[0, 0])
    g = flows.read_flo(path)
    assert g.shape == (5, 7, 2) and g.dtype == np.float32
    np.testing.assert_array_equal(g.view(np.uint32), f.view(np.uint32))
    # jax arrays are accepted too
    flows.write_flo(str(tmp_path / "b.flo"), jnp.asarray(f))
    assert (tmp_path / "b.flo").read_bytes() == raw


def test_flo_unknown_as_nan(tmp_path):
    f = np.zeros((2, 3, 2), np.float32)
    f[1, 1] = 1e10
    flows.write_flo(tmp_path / "u.flo", f)
    g = flows.read_flo(tmp_path / "u.flo", unknown_as_nan=True)
    assert np.isnan(g[1, 1]).all() and np.isfinite(np.delete(g.reshape(-1, 2), 4, 0)).all()
    assert np.isfinite(flows.read_flo(tmp_path / "u.flo")).all()


def test_flo_errors(tmp_path):
    f = np.ones((3, 4, 2), np.float32)
    path = tmp_path / "ok.flo"
    flows.write_flo(path, f)
    raw = path.read_bytes()
    bad = tmp_path / "bad.flo"
    bad.write_bytes(b"XXXX" + raw[4:])
    with pytest.raises(ValueError, match="magic"):
        flows.read_flo(bad)
    short = tmp_path / "short.flo"
    short.write_bytes(raw[:-4])
    with pytest.raises(ValueError, match=r"expected 108 bytes.*got 104"):
        flows.read_flo(short)
    header = tmp_path / "header.flo"
    header.write_bytes(raw[:6])
    with pytest.raises(ValueError, match="header"):
        flows.read_flo(header)
    long = tmp_path / "long.flo"
    long.write_bytes(raw + b"\0\0\0\0")
    with pytest.raises(ValueError, match="trailing"):
        flows.read_flo(long)
    with pytest.raises(ValueError, match=r"\(H, W, 2\).*\(3, 4\)"):
        flows.write_flo(tmp_path / "x.flo", np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"\(3, 4, 3\)"):
        flows.write_flo(tmp_path / "x.flo", np.ones((3, 4, 3)))


# --------------------------------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize(
    "fn",
    [
        flows.identity,
        lambda h, w: flows.translation(h, w, 1.0, 0.0),
        lambda h, w: flows.affine(h, w, np.eye(2)),
        lambda h, w: flows.rotation(h, w, 1.0),
        lambda h, w: flows.zoom(h, w, 1.1),
        lambda h, w: flows.shear(h, w, 0.1),
        flows.vortex,
        flows.shear_waves,
        flows.fold_over,
        flows.collapse,
        flows.leave_frame,
        flows.zoo,
    ],
)
@pytest.mark.parametrize("size", [(0, 4), (4, -1), (2.5, 4)])
def test_bad_sizes(fn, size):
    with pytest.raises(ValueError, match="positive integer sizes"):
        fn(*size)


def test_bad_shapes():
    good = flows.identity(4, 5)
    bad = jnp.zeros((4, 5, 3))
    for fn in (
        flows.flow_to_map,
        flows.map_to_flow,
        flows.backward_from_forward,
        flows.forward_from_backward,
        lambda f: flows.nan_patch(f, 0, 0, 1, 1),
        lambda f: flows.mask_flow(f, np.ones((4, 5), bool)),
        lambda f: flows.compose(good, f),
    ):
        with pytest.raises(ValueError, match=r"\(4, 5, 3\)"):
            fn(bad)
    with pytest.raises(ValueError, match=r"same shape.*\(4, 5, 2\).*\(4, 6, 2\)"):
        flows.compose(good, flows.identity(4, 6))
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        flows.mask_flow(good, np.ones((5, 4), bool))
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 3\)"):
        flows.affine(4, 5, np.eye(3))
    with pytest.raises(ValueError, match=r"centre.*\(3,\)"):
        flows.rotation(4, 5, 1.0, centre=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="singular"):
        flows.shear(4, 5, 2.0, 0.5)
    with pytest.raises(ValueError, match="non-zero"):
        flows.zoom(4, 5, 0.0)
    with pytest.raises(ValueError, match="iterations"):
        flows.backward_from_forward(good, iterations=-1)


# --------------------------------------------------------------------------------------------------
# The package: organised by concept, every public name of the old module kept.

# flows.__all__ before irwarp.flows became a package (terrain_depth moved to experiments/terrain.py).
OLD_PUBLIC = (
    "DEGENERATE",
    "FLO_MAGIC",
    "affine",
    "backward_from_forward",
    "camera_flow",
    "collapse",
    "compose",
    "flow_to_map",
    "fold_over",
    "forward_from_backward",
    "identity",
    "intrinsics",
    "intrinsics_from_fov",
    "leave_frame",
    "look_at",
    "map_to_flow",
    "mask_flow",
    "nan_patch",
    "plane_depth",
    "read_flo",
    "relative_pose",
    "rotation",
    "shear",
    "shear_waves",
    "translation",
    "visibility_mask",
    "vortex",
    "write_flo",
    "zoo",
    "zoom",
)


def test_old_public_names_are_kept_and_grouped_by_concept():
    from irwarp.flows import _algebra, _camera, _io, _synthetic

    assert set(OLD_PUBLIC) <= set(flows.__all__)
    assert len(set(flows.__all__)) == len(flows.__all__)
    for name in flows.__all__:
        assert getattr(flows, name) is not None, name
    owners = {}
    for module in (_synthetic, _algebra, _camera, _io):
        for name in module.__all__:
            assert getattr(flows, name) is getattr(module, name), (module.__name__, name)
            owners[name] = module.__name__
    assert set(owners) == set(flows.__all__)  # each public name has one home
    assert owners["compose"].endswith("_algebra") and owners["zoo3d"].endswith("_synthetic")
    assert owners["camera_flow"].endswith("_camera") and owners["read_flo"].endswith("_io")


def test_no_module_outside_the_package_reaches_into_it():
    """Library and experiments use only public names of irwarp.flows (STYLE.md)."""
    import pathlib
    import re

    root = pathlib.Path(flows.__file__).resolve().parents[2]
    pattern = re.compile(r"\bflows(3d|_lib)?\._\w|irwarp\.flows\._\w|from irwarp\.flows\._")
    offenders = []
    for folder in ("irwarp", "experiments"):
        for path in (root / folder).rglob("*.py"):
            if path.parent.name == "flows" and path.parent.parent.name == "irwarp":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not offenders, offenders
