"""Camera flows: depth + intrinsics + relative pose -> flow (irwarp.flows camera helpers).

Conventions (docs/DESIGN.md section 1 and irwarp.flows): pixel centres at ``(j + 0.5, i + 0.5)``, ``y``
down; camera axes ``x`` right, ``y`` down, ``z`` forward; ``X' = R X + t`` maps this camera's
coordinates to the other camera's. A camera that moves by ``c`` has ``t = -c`` (for ``R = I``).
Derivation of the expected flows: a point at depth ``Z`` on the ray of pixel ``p`` is
``X = Z K^-1 (p, 1)``; it projects to ``u' = fx (X_x + t_x) / (Z + t_z) + cx`` in the other camera,
so for ``t_z = 0`` the flow is ``(fx t_x / Z, fy t_y / Z)``, uniform over a fronto-parallel plane.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp import flows

H, W = 24, 32


def _k():
    return flows.intrinsics(40.0, 44.0, 15.5, 12.25)


def _rot(axis, deg):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)


def _slow_camera_flow(depth, k, r, t):
    """Per-pixel reference in float64: lift, move, project, subtract (no vectorisation)."""
    depth = np.asarray(depth, np.float64)
    k = np.asarray(k, np.float64)
    r = np.asarray(r, np.float64)
    t = np.asarray(t, np.float64)
    kinv = np.linalg.inv(k)
    out = np.full(depth.shape + (2,), np.nan)
    for i in range(depth.shape[0]):
        for j in range(depth.shape[1]):
            p = np.array([j + 0.5, i + 0.5, 1.0])
            x2 = r @ (depth[i, j] * (kinv @ p)) + t
            if x2[2] <= 1e-3:
                continue
            q = k @ x2
            out[i, j] = q[:2] / q[2] - p[:2]
    return out


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_translation_over_fronto_parallel_plane_is_uniform(axis, sign):
    """Camera moving by c parallel to the plane Z = 4: uniform flow -f c / Z, in both axes."""
    k = _k()
    z = 4.0
    depth = flows.plane_depth(H, W, k, offset=z)
    np.testing.assert_allclose(np.asarray(depth), z, rtol=1e-6)
    move = np.zeros(3, np.float32)
    move[axis] = sign * 0.3  # the camera moves by c
    e0 = np.eye(4, dtype=np.float32)
    e1 = np.eye(4, dtype=np.float32)
    e1[:3, 3] = -move  # world-to-camera of a camera centred at c: X_cam = P - c
    r, t = flows.relative_pose(e0, e1)
    np.testing.assert_allclose(np.asarray(t), -move, atol=1e-7)
    flow = np.asarray(flows.camera_flow(depth, k, r, t))
    f = float(k[axis, axis])
    expected = np.zeros(2, np.float32)
    expected[axis] = -f * move[axis] / z
    np.testing.assert_allclose(flow, np.broadcast_to(expected, (H, W, 2)), atol=2e-5)


def test_camera_translation_moves_the_noise_the_right_way():
    """End to end (docs/DESIGN.md section 4, point 6): a camera moving right by f c / Z = 2 px moves the
    picture 2 px to the left; the forward splat (depth of frame t, pose t -> t+1) and the backward
    grid warp (depth of frame t+1, pose t+1 -> t) both shift the noise exactly."""
    k = _k()
    z = 5.0
    c = 2.0 * z / float(k[0, 0])  # camera motion giving exactly 2 px
    depth = flows.plane_depth(H, W, k, offset=z)
    e0 = np.eye(4, dtype=np.float32)
    e1 = np.eye(4, dtype=np.float32)
    e1[0, 3] = -c
    fwd = flows.camera_flow(depth, k, *flows.relative_pose(e0, e1))
    bwd = flows.camera_flow(depth, k, *flows.relative_pose(e1, e0))
    np.testing.assert_allclose(np.asarray(fwd), np.broadcast_to([-2.0, 0.0], (H, W, 2)), atol=1e-4)
    np.testing.assert_allclose(np.asarray(bwd), np.broadcast_to([2.0, 0.0], (H, W, 2)), atol=1e-4)
    x = jax.random.normal(jax.random.key(0), (H, W, 2))
    # Round the tiny float error away so that the shift is an exact integer one.
    splat = np.asarray(irwarp.warp_forward(jax.random.key(1), x, jnp.round(fwd)))
    grid = np.asarray(irwarp.warp(jax.random.key(2), x, jnp.round(bwd), method="grid"))
    np.testing.assert_allclose(splat[:, : W - 2], np.asarray(x)[:, 2:], atol=1e-5)
    np.testing.assert_allclose(grid[:, : W - 2], np.asarray(x)[:, 2:], atol=1e-5)


def test_moving_towards_the_plane_zooms_about_the_principal_point():
    k = _k()
    z, d = 4.0, 1.0
    depth = flows.plane_depth(H, W, k, offset=z)
    flow = np.asarray(flows.camera_flow(depth, k, np.eye(3), np.array([0.0, 0.0, -d])))
    y, x = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    scale = z / (z - d) - 1.0  # magnification 4/3: points move away from the principal point
    expected = np.stack([(x - float(k[0, 2])) * scale, (y - float(k[1, 2])) * scale], -1)
    np.testing.assert_allclose(flow, expected, atol=1e-4)


def test_rotation_only_flow_does_not_depend_on_depth():
    """t = 0: the flow is the homography K R K^-1, whatever the depth."""
    k = _k()
    r = _rot("y", 3.0) @ _rot("x", -2.0) @ _rot("z", 4.0)
    d1 = 1.0 + 9.0 * jax.random.uniform(jax.random.key(3), (H, W))
    d2 = 0.5 + 50.0 * jax.random.uniform(jax.random.key(4), (H, W))
    f1 = np.asarray(flows.camera_flow(d1, k, r, np.zeros(3)))
    f2 = np.asarray(flows.camera_flow(d2, k, r, np.zeros(3)))
    np.testing.assert_allclose(f1, f2, atol=2e-4)
    np.testing.assert_allclose(f1, _slow_camera_flow(np.ones((H, W)), k, r, np.zeros(3)), atol=2e-4)
    # A translation makes it depth dependent.
    g1 = np.asarray(flows.camera_flow(d1, k, r, np.array([0.2, 0.0, 0.0])))
    g2 = np.asarray(flows.camera_flow(d2, k, r, np.array([0.2, 0.0, 0.0])))
    assert np.max(np.abs(g1 - g2)) > 0.5


def test_matches_slow_reference_for_a_general_pose():
    k = np.array([[40.0, 0.5, 15.5], [0.0, 44.0, 12.25], [0.0, 0.0, 1.0]], np.float32)  # with skew
    r = _rot("x", 5.0) @ _rot("y", -7.0)
    t = np.array([0.3, -0.2, 0.4], np.float32)
    depth = 2.0 + 6.0 * np.asarray(jax.random.uniform(jax.random.key(5), (H, W)))
    depth[3, 4] = -1.0  # invalid depth -> NaN
    depth[5, 6] = np.inf
    flow = np.asarray(flows.camera_flow(depth, k, r, t))
    ref = _slow_camera_flow(np.where(np.isfinite(depth) & (depth > 0), depth, np.nan), k, r, t)
    np.testing.assert_allclose(flow, ref, atol=1e-3, rtol=1e-4)
    assert np.isnan(flow[3, 4]).all() and np.isnan(flow[5, 6]).all()
    assert np.isfinite(np.delete(flow.reshape(-1, 2), [3 * W + 4, 5 * W + 6], 0)).all()


def test_points_behind_the_other_camera_get_nan_and_fresh_noise():
    k = _k()
    depth = np.full((H, W), 3.0, np.float32)
    depth[:, : W // 2] = 1.0  # the near half ends up behind a camera that moves 2 forward
    flow, zp = flows.camera_flow(depth, k, np.eye(3), np.array([0.0, 0.0, -2.0]), return_depth=True)
    flow, zp = np.asarray(flow), np.asarray(zp)
    assert np.isnan(flow[:, : W // 2]).all() and np.isnan(zp[:, : W // 2]).all()
    assert np.isfinite(flow[:, W // 2 :]).all()
    np.testing.assert_allclose(zp[:, W // 2 :], 1.0, rtol=1e-6)
    y = irwarp.warp_forward(jax.random.key(6), jnp.ones((H, W, 1)), flow)
    assert np.isfinite(np.asarray(y)).all()


def test_relative_pose_maps_camera_a_to_camera_b():
    rng = np.random.default_rng(0)
    ea = flows.look_at(np.array([0.5, -1.0, -3.0]), np.array([0.0, 0.2, 2.0]))
    eb = flows.look_at(np.array([1.5, -0.5, -2.0]), np.array([-0.5, 0.0, 3.0]))
    r, t = flows.relative_pose(ea, eb)
    np.testing.assert_allclose(np.asarray(r @ r.T), np.eye(3), atol=1e-5)
    for _ in range(5):
        p = rng.normal(size=3).astype(np.float32)
        xa = np.asarray(ea[:3, :3] @ p + ea[:3, 3])
        xb = np.asarray(eb[:3, :3] @ p + eb[:3, 3])
        np.testing.assert_allclose(np.asarray(r @ xa + t), xb, atol=1e-5)
    # (3, 4) matrices work too.
    r2, t2 = flows.relative_pose(ea[:3], eb[:3])
    np.testing.assert_allclose(np.asarray(r2), np.asarray(r))
    np.testing.assert_allclose(np.asarray(t2), np.asarray(t))


def test_look_at_puts_the_target_on_the_principal_point_and_up_up():
    k = _k()
    eye, target = np.array([1.0, -2.0, -4.0]), np.array([0.0, 0.5, 3.0])
    e = np.asarray(flows.look_at(eye, target))
    np.testing.assert_allclose(e[:3, :3] @ e[:3, :3].T, np.eye(3), atol=1e-5)
    assert np.linalg.det(e[:3, :3]) > 0  # right-handed

    def project(p):
        q = np.asarray(k) @ (e[:3, :3] @ p + e[:3, 3])
        return q[:2] / q[2]

    np.testing.assert_allclose(project(target), np.asarray(k)[:2, 2], atol=1e-4)
    # World y points down, so a point above the target (smaller y) is higher in the image.
    assert project(target + np.array([0.0, -1.0, 0.0]))[1] < float(k[1, 2])


def test_forward_and_backward_camera_flows_are_inverse():
    """Depth of frame t + pose t->t+1 (forward) and depth of frame t+1 + pose t+1->t (backward)
    describe the same motion: b(p + f(p)) = -f(p) on a tilted plane seen by both cameras."""
    k = _k()
    e0 = np.eye(4, dtype=np.float32)
    e1 = np.asarray(flows.look_at(np.array([0.2, -0.1, 0.3]), np.array([0.0, 0.0, 6.0])))
    n_world, off = np.array([0.0, -0.3, 1.0]), 5.0  # plane n . P = off in world coordinates
    d0 = flows.plane_depth(H, W, k, n_world, off)
    # In camera 1, X = R P + t, so n . P = n . R^T (X - t): normal R n, offset off + (R n) . t.
    n1 = e1[:3, :3] @ n_world
    d1 = flows.plane_depth(H, W, k, n1, off + n1 @ e1[:3, 3])
    fwd = np.asarray(flows.camera_flow(d0, k, *flows.relative_pose(e0, e1)))
    bwd = flows.camera_flow(d1, k, *flows.relative_pose(e1, e0))
    y, x = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    qx, qy = x + fwd[..., 0], y + fwd[..., 1]
    inside = (qx > 1) & (qx < W - 1) & (qy > 1) & (qy < H - 1)
    assert inside.mean() > 0.5
    back = np.asarray(irwarp._sampling.sample_flow(bwd, jnp.asarray(qx), jnp.asarray(qy)))
    # Bilinear interpolation of a smooth (projective) flow: small error only.
    np.testing.assert_allclose(back[inside], -fwd[inside], atol=0.05)


def test_visibility_mask_flags_hidden_points():
    flow = jnp.zeros((H, W, 2))
    moved = jnp.full((H, W), 2.0)
    other = jnp.full((H, W), 3.0).at[:, : W // 2].set(1.0)  # a closer surface on the left
    mask = np.asarray(flows.visibility_mask(flow, moved, other))
    assert not mask[:, : W // 2].any() and mask[:, W // 2 :].all()
    # NaN flow is never visible; landing outside the frame counts as visible.
    flow2 = flow.at[0, 0].set(jnp.nan).at[1, 1].set(jnp.array([100.0, 0.0]))
    mask2 = np.asarray(flows.visibility_mask(flow2, moved, other))
    assert not mask2[0, 0] and mask2[1, 1]


def test_plane_depth_lies_on_its_plane():
    k = _k()
    n, off = np.array([0.1, -0.4, 1.0]), 3.0
    d = np.asarray(flows.plane_depth(H, W, k, n, off))
    y, x = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    rays = np.stack(
        [(x - float(k[0, 2])) / float(k[0, 0]), (y - float(k[1, 2])) / float(k[1, 1])], -1
    )
    rays = np.concatenate([rays, np.ones((H, W, 1))], -1)
    ok = np.isfinite(d)
    assert ok.mean() > 0.5
    np.testing.assert_allclose((d[..., None] * rays)[ok] @ n, off, rtol=1e-5)
    assert (rays[~ok] @ n <= 0).all()  # misses are rays that point away from the plane
    # camera_rays are those rays (K^-1 (u, v, 1) at the pixel centres).
    np.testing.assert_allclose(np.asarray(flows.camera_rays(H, W, k)), rays, rtol=1e-6, atol=1e-6)


def test_terrain_depth_moved_to_the_experiments():
    """The ray-cast terrain is experiments/terrain.py (tests/test_terrain.py); the library says so."""
    assert "terrain_depth" not in flows.__all__
    with pytest.raises(AttributeError, match="experiments/terrain.py"):
        flows.terrain_depth  # noqa: B018


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: flows.camera_flow(jnp.ones((4, 4, 1)), _k(), np.eye(3), np.zeros(3)), "depth"),
        (lambda: flows.camera_flow(jnp.ones((4, 4)), np.eye(2), np.eye(3), np.zeros(3)), "intr"),
        (lambda: flows.camera_flow(jnp.ones((4, 4)), _k(), np.eye(4), np.zeros(3)), "rotation"),
        (lambda: flows.camera_flow(jnp.ones((4, 4)), _k(), np.eye(3), np.zeros(4)), "translation"),
        (lambda: flows.relative_pose(np.eye(3), np.eye(4)), r"\(4, 4\) or \(3, 4\)"),
        (lambda: flows.intrinsics(-1.0, 1.0, 0.0, 0.0), "fx must be positive"),
        (lambda: flows.intrinsics_from_fov(4, 4, 180.0), "fov_deg"),
        (lambda: flows.plane_depth(4, 4, _k(), (0.0, 1.0)), "normal"),
        (lambda: flows.camera_rays(4, 0, _k()), "positive integer"),
        (lambda: flows.camera_rays(4, 4, np.eye(2)), "intrinsics"),
        (
            lambda: flows.visibility_mask(jnp.zeros((4, 4, 2)), jnp.ones((4, 5)), jnp.ones((4, 4))),
            "depth_moved",
        ),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
