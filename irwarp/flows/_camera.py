"""Cameras: depth + pinhole intrinsics + relative pose -> flow, and the depth test.

Camera coordinates follow OpenCV: ``x`` right, ``y`` down, ``z`` forward (the optical axis), so
image and camera ``y`` agree. With the depth of frame ``t`` and the pose ``t -> t+1`` the result of
:func:`camera_flow` is the *forward* flow of frame ``t`` (for :func:`irwarp.warp_forward`); with
the depth of frame ``t+1`` and the pose ``t+1 -> t`` it is the backward flow of frame ``t+1`` (for
:func:`irwarp.warp`).

References:
  Hartley and Zisserman, Multiple View Geometry, 2nd ed. (2004), chapter 6 (pinhole camera).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from irwarp._sampling import pixel_centres
from irwarp.flows._common import check_flow, check_size, is_concrete_number

__all__ = [
    "camera_flow",
    "camera_rays",
    "intrinsics",
    "intrinsics_from_fov",
    "look_at",
    "plane_depth",
    "relative_pose",
    "visibility_mask",
]


def _check_matrix(value: ArrayLike, shape: tuple[int, ...], name: str) -> jax.Array:
    arr = jnp.asarray(value, jnp.float32)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {arr.shape}")
    return arr


def _check_depth(depth: ArrayLike, name: str = "depth") -> jax.Array:
    shape = jnp.shape(depth)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{name} must have shape (H, W) with H, W > 0; got {shape}")
    return jnp.asarray(depth, jnp.float32)


def intrinsics(fx: ArrayLike, fy: ArrayLike, cx: ArrayLike, cy: ArrayLike) -> jax.Array:
    """Pinhole intrinsic matrix ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.

    A camera-space point ``(X, Y, Z)`` projects to ``(u, v) = (fx X / Z + cx, fy Y / Z + cy)`` in
    the continuous pixel coordinates of docs/DESIGN.md section 1 (pixel ``(i, j)`` has its centre at
    ``(j + 0.5, i + 0.5)``), so the image centre of an ``H x W`` image is ``(W / 2, H / 2)``.

    Args:
      fx: horizontal focal length in pixels.
      fy: vertical focal length in pixels.
      cx: ``x`` of the principal point in pixels.
      cy: ``y`` of the principal point in pixels.

    Returns:
      ``(3, 3)`` float32 matrix.

    Raises:
      ValueError: if a concrete focal length is not positive, or an argument is not a scalar.
    """
    for name, f in (("fx", fx), ("fy", fy)):
        if is_concrete_number(f) and f <= 0:
            raise ValueError(f"{name} must be positive; got {f!r}")
    vals = [jnp.asarray(v, jnp.float32) for v in (fx, fy, cx, cy)]
    if any(v.shape != () for v in vals):
        raise ValueError(f"fx, fy, cx, cy must be scalars; got shapes {[v.shape for v in vals]}")
    fx_, fy_, cx_, cy_ = vals
    zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
    return jnp.stack(
        [jnp.stack([fx_, zero, cx_]), jnp.stack([zero, fy_, cy_]), jnp.stack([zero, zero, one])]
    )


def intrinsics_from_fov(h: int, w: int, fov_deg: ArrayLike) -> jax.Array:
    """Intrinsics of an ``H x W`` camera with horizontal field of view ``fov_deg``.

    Square pixels and the principal point at the image centre:
    ``fx = fy = (W / 2) / tan(fov / 2)``, ``(cx, cy) = (W / 2, H / 2)``.

    Args:
      h: image height ``H``.
      w: image width ``W``.
      fov_deg: horizontal field of view in degrees, in ``(0, 180)``.

    Returns:
      ``(3, 3)`` float32 intrinsic matrix (see :func:`intrinsics`).

    Raises:
      ValueError: for non-positive sizes or a concrete field of view outside ``(0, 180)``.
    """
    h, w = check_size(h, w)
    if is_concrete_number(fov_deg) and not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must lie in (0, 180) degrees; got {fov_deg!r}")
    f = (w / 2.0) / jnp.tan(jnp.deg2rad(jnp.asarray(fov_deg, jnp.float32)) / 2.0)
    return intrinsics(f, f, w / 2.0, h / 2.0)


def _pose_rt(pose: ArrayLike, name: str) -> tuple[jax.Array, jax.Array]:
    p = jnp.asarray(pose, jnp.float32)
    if p.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"{name} must be a (4, 4) or (3, 4) matrix [R | t]; got {p.shape}")
    return p[:3, :3], p[:3, 3]


def look_at(eye: ArrayLike, target: ArrayLike, up: ArrayLike = (0.0, -1.0, 0.0)) -> jax.Array:
    """World-to-camera matrix of a camera at ``eye`` looking at ``target`` (OpenCV axes).

    The camera's ``z`` axis points from ``eye`` to ``target``, its ``x`` axis to the right
    (``forward x up``, normalised) and its ``y`` axis down (``forward x right``), so that a
    world point ``P`` has camera coordinates ``R (P - eye)``. The default ``up = (0, -1, 0)``
    suits a world whose ``y`` axis points down, like the camera's.

    Args:
      eye: ``(3,)`` camera centre in world coordinates.
      target: ``(3,)`` point the optical axis passes through.
      up: ``(3,)`` world direction that appears up in the image (not parallel to the view).

    Returns:
      ``(4, 4)`` float32 matrix ``[[R, -R eye], [0, 0, 0, 1]]``.

    Raises:
      ValueError: if an argument is not a 3-vector.
    """
    eye = _check_matrix(eye, (3,), "eye")
    target = _check_matrix(target, (3,), "target")
    up = _check_matrix(up, (3,), "up")
    fwd = target - eye
    fwd = fwd / jnp.linalg.norm(fwd)
    right = jnp.cross(fwd, up)
    right = right / jnp.linalg.norm(right)
    down = jnp.cross(fwd, right)
    r = jnp.stack([right, down, fwd])
    top = jnp.concatenate([r, (-r @ eye)[:, None]], axis=1)
    return jnp.concatenate([top, jnp.array([[0.0, 0.0, 0.0, 1.0]], jnp.float32)], axis=0)


def relative_pose(
    world_to_cam_a: ArrayLike, world_to_cam_b: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """Rotation and translation taking camera-``a`` coordinates to camera-``b`` coordinates.

    With ``X_a = R_a P + t_a`` and ``X_b = R_b P + t_b`` for a world point ``P``:
    ``X_b = R X_a + t`` with ``R = R_b R_a^T`` and ``t = t_b - R t_a``.

    Args:
      world_to_cam_a: ``(4, 4)`` or ``(3, 4)`` extrinsic matrix ``[R_a | t_a]`` of camera ``a``.
      world_to_cam_b: the same for camera ``b``.

    Returns:
      ``(R, t)``: ``(3, 3)`` and ``(3,)`` float32, the arguments of :func:`camera_flow`.

    Raises:
      ValueError: if a matrix is not ``(4, 4)`` or ``(3, 4)``.
    """
    ra, ta = _pose_rt(world_to_cam_a, "world_to_cam_a")
    rb, tb = _pose_rt(world_to_cam_b, "world_to_cam_b")
    r = rb @ ra.T
    return r, tb - r @ ta


def _rays(h: int, w: int, k_mat: jax.Array) -> jax.Array:
    """``K^-1 (u, v, 1)`` at the pixel centres: ``(H, W, 3)`` camera rays with ``z = 1``."""
    x, y = pixel_centres(h, w)
    rx = (x - k_mat[0, 2] - k_mat[0, 1] * (y - k_mat[1, 2]) / k_mat[1, 1]) / k_mat[0, 0]
    ry = (y - k_mat[1, 2]) / k_mat[1, 1]
    return jnp.stack([rx, ry, jnp.ones_like(rx)], axis=-1)


def camera_rays(h: int, w: int, intrinsics: ArrayLike) -> jax.Array:
    """Camera rays ``K^-1 (u, v, 1)`` through the pixel centres, with ``z = 1``.

    A point at z-depth ``Z`` on the ray of pixel ``(i, j)`` is ``Z * rays[i, j]`` in camera
    coordinates (the lift used by :func:`camera_flow` and :func:`plane_depth`).

    Args:
      h: image height ``H``.
      w: image width ``W``.
      intrinsics: ``(3, 3)`` intrinsic matrix ``K`` (see :func:`intrinsics`).

    Returns:
      ``(H, W, 3)`` float32 rays.

    Raises:
      ValueError: for non-positive sizes or an ``intrinsics`` that is not ``(3, 3)``.
    """
    h, w = check_size(h, w)
    return _rays(h, w, _check_matrix(intrinsics, (3, 3), "intrinsics"))


def camera_flow(
    depth: ArrayLike,
    intrinsics: ArrayLike,
    rotation: ArrayLike,
    translation: ArrayLike,
    *,
    min_depth: float = 1e-3,
    return_depth: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Flow of a rigid scene seen by a moving pinhole camera: depth + intrinsics + pose -> flow.

    Pixel centre ``p = (j + 0.5, i + 0.5)`` with z-depth ``Z = depth[i, j]`` (distance along the
    optical axis) is lifted to ``X = Z K^-1 (p, 1)``, moved into the other camera by
    ``X' = R X + t`` and projected, ``p' = (K X')_{xy} / X'_z``; the flow is ``p' - p``.

    - With the depth of frame ``t`` and the pose ``t -> t+1`` (``relative_pose(E_t, E_{t+1})``) it
      is the **forward** flow of frame ``t``: splat with :func:`irwarp.warp_forward`.
    - With the depth of frame ``t+1`` and the pose ``t+1 -> t`` it is the **backward** flow of
      frame ``t+1``: warp with :func:`irwarp.warp`.

    A camera translating by ``c`` (so ``t = -c``) parallel to a fronto-parallel plane at depth
    ``Z`` gives the uniform flow ``(fx t_x / Z, fy t_y / Z) = -f c / Z``: the picture moves
    against the camera. A pure rotation (``t = 0``) gives a flow that does not depend on the depth.
    Pixels with a non-finite or non-positive depth, and points that end up behind the other camera
    (``X'_z <= min_depth``), get NaN flow (irwarp gives those pixels fresh noise). Occlusions are
    not detected here; see :func:`visibility_mask`.

    Args:
      depth: ``(H, W)`` z-depth of the pixel centres (any positive unit; ``t`` in the same unit).
      intrinsics: ``(3, 3)`` intrinsic matrix ``K`` (see :func:`intrinsics`), shared by both views.
      rotation: ``(3, 3)`` rotation ``R`` from this camera's coordinates to the other's.
      translation: ``(3,)`` translation ``t`` (``X' = R X + t``).
      min_depth: points with ``X'_z <= min_depth`` are behind the other camera (NaN flow).
      return_depth: also return ``X'_z``, the depth of each point in the other camera.

    Returns:
      ``(H, W, 2)`` float32 flow ``(dx, dy)``; with ``return_depth``, ``(flow, depth_other)`` where
      ``depth_other`` is ``(H, W)`` float32 (NaN where the flow is NaN).

    Raises:
      ValueError: if ``depth`` is not ``(H, W)``, ``intrinsics`` or ``rotation`` not ``(3, 3)``, or
        ``translation`` not ``(3,)``.

    References:
      Hartley and Zisserman, Multiple View Geometry, 2nd ed. (2004), chapter 6 (pinhole camera);
      Deng et al. 2025 (arXiv:2411.01212) for the warp.
    """
    depth = _check_depth(depth)
    k_mat = _check_matrix(intrinsics, (3, 3), "intrinsics")
    r = _check_matrix(rotation, (3, 3), "rotation")
    t = _check_matrix(translation, (3,), "translation")
    h, w = depth.shape
    ok = jnp.isfinite(depth) & (depth > 0)
    z = jnp.where(ok, depth, 1.0)
    pts = z[..., None] * _rays(h, w, k_mat)  # (H, W, 3) in this camera
    moved = pts @ r.T + t  # (H, W, 3) in the other camera
    zp = moved[..., 2]
    ok = ok & (zp > min_depth)
    zs = jnp.where(ok, zp, 1.0)
    proj = moved @ k_mat.T
    u, v = proj[..., 0] / zs, proj[..., 1] / zs
    x, y = pixel_centres(h, w)
    flow = jnp.stack([u - x, v - y], axis=-1)
    flow = jnp.where(ok[..., None], flow, jnp.nan).astype(jnp.float32)
    if return_depth:
        return flow, jnp.where(ok, zp, jnp.nan).astype(jnp.float32)
    return flow


def visibility_mask(
    flow: ArrayLike, depth_moved: ArrayLike, depth_other: ArrayLike, rtol: float = 0.02
) -> jax.Array:
    """Depth test for a :func:`camera_flow`: is each point the visible surface in the other view?

    Point ``d`` lands at ``q = centre_d + flow[d]`` in the other view with depth
    ``depth_moved[d]`` (the ``depth_other`` output of :func:`camera_flow`). It is visible there
    when the other view's depth at ``q`` (value of the cell containing ``q``) is not smaller:
    ``depth_other(q) >= (1 - rtol) depth_moved[d]``. Points landing outside the other frame, or
    where its depth is not finite, count as visible (the warpers treat them on their own).
    For a backward flow (depth of frame ``t+1``, pose ``t+1 -> t``) an invisible point was hidden
    in frame ``t``: it is disoccluded and should get fresh noise, e.g.
    ``mask_flow(flow, visibility_mask(...))``. For a forward flow an invisible source is occluded
    in frame ``t+1`` and should not be splatted (NaN forward flow sends nothing).

    Args:
      flow: ``(H, W, 2)`` flow from :func:`camera_flow`.
      depth_moved: ``(H, W)`` depth of each point in the other camera.
      depth_other: ``(H, W)`` depth map of the other view.
      rtol: relative depth tolerance.

    Returns:
      ``(H, W)`` boolean mask, False where the point is hidden or the flow is NaN.

    Raises:
      ValueError: on shape mismatches.
    """
    flow = check_flow(flow)
    h, w = flow.shape[:2]
    zm = _check_depth(depth_moved, "depth_moved")
    zo = _check_depth(depth_other, "depth_other")
    if zm.shape != (h, w) or zo.shape != (h, w):
        raise ValueError(
            f"depth_moved and depth_other must have shape (H, W) = {(h, w)} to match flow "
            f"{flow.shape}; got {zm.shape} and {zo.shape}"
        )
    x, y = pixel_centres(h, w)
    finite = jnp.all(jnp.isfinite(flow), -1) & jnp.isfinite(zm)
    qx = jnp.where(finite, x + flow[..., 0], -1.0)
    qy = jnp.where(finite, y + flow[..., 1], -1.0)
    inside = (qx >= 0) & (qx < w) & (qy >= 0) & (qy < h)
    cols = jnp.clip(jnp.floor(qx).astype(jnp.int32), 0, w - 1)
    rows = jnp.clip(jnp.floor(qy).astype(jnp.int32), 0, h - 1)
    there = zo[rows, cols]
    hidden = inside & jnp.isfinite(there) & (there < (1.0 - rtol) * zm)
    return finite & ~hidden


def plane_depth(
    h: int,
    w: int,
    intrinsics: ArrayLike,
    normal: ArrayLike = (0.0, 0.0, 1.0),
    offset: ArrayLike = 1.0,
) -> jax.Array:
    """Depth map of the plane ``{X : n . X = offset}`` given in camera coordinates.

    The ray through pixel centre ``p`` is ``Z K^-1 (p, 1)``; it meets the plane at
    ``Z = offset / (n . K^-1 (p, 1))``. The default is the fronto-parallel plane ``Z = offset``.
    Pixels whose ray misses the plane (``Z`` not positive and finite) are NaN.

    Args:
      h: image height ``H``.
      w: image width ``W``.
      intrinsics: ``(3, 3)`` intrinsic matrix.
      normal: ``(3,)`` plane normal ``n`` in camera coordinates (need not be unit length).
      offset: plane offset (``n . X = offset``).

    Returns:
      ``(H, W)`` float32 z-depth.

    Raises:
      ValueError: for non-positive sizes or wrongly shaped ``intrinsics`` or ``normal``.
    """
    h, w = check_size(h, w)
    k_mat = _check_matrix(intrinsics, (3, 3), "intrinsics")
    n = _check_matrix(normal, (3,), "normal")
    denom = _rays(h, w, k_mat) @ n
    z = jnp.asarray(offset, jnp.float32) / jnp.where(denom != 0, denom, jnp.nan)
    return jnp.where(jnp.isfinite(z) & (z > 0), z, jnp.nan).astype(jnp.float32)
