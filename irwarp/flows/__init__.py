"""Flows of images and volumes: conventions, synthetic flows, flow algebra, cameras and ``.flo`` IO.

Conventions (docs/DESIGN.md section 1): arrays are channels-last; pixel ``(i, j)`` is the unit square
``[j, j+1] x [i, i+1]`` with centre ``p = (j + 0.5, i + 0.5)``; ``x`` grows to the right and ``y``
downwards; a flow vector is ``(dx, dy)``. Every flow built here is the **backward flow** of frame
``t+1``: ``flow[i, j] = (dx, dy)`` means the point at pixel ``(i, j)``'s centre in frame ``t+1`` came
from ``p + (dx, dy)`` in frame ``t``. The backward map ``psi(p) = p + flow(p)`` maps frame ``t+1``
into frame ``t``; between pixel centres the flow is interpolated bilinearly, clamped to the edge.
NaN flow pixels mean "disoccluded" everywhere in irwarp: such a new pixel gets fresh noise.

Volumes extend this by ``z``: voxel ``(k, i, j)`` (depth ``k``, row ``i``, column ``j``) is the unit
cube ``[j, j+1] x [i, i+1] x [k, k+1]`` with centre ``(j + 0.5, i + 0.5, k + 0.5)``; ``z`` grows with
depth (so ``(x, y, z)`` is right-handed), a 3D flow is ``(D, H, W, 3)`` with vectors
``(dx, dy, dz)``, interpolated trilinearly between voxel centres. The 3D names end in ``3d``
(:func:`identity3d`, :func:`rotation3d`, :func:`zoo3d`, ...); :mod:`irwarp.flows3d` re-exports them
for compatibility.

The package is organised by concept:

* synthetic flows (``_synthetic``): :func:`identity`, :func:`translation`, :func:`affine`,
  :func:`rotation`, :func:`zoom`, :func:`shear`, :func:`vortex`, :func:`shear_waves`, the degenerate
  :func:`fold_over`, :func:`collapse`, :func:`leave_frame`, :func:`nan_patch`, and :func:`zoo`;
  their 3D counterparts, :func:`abc_velocity` and :func:`advection3d`, and :func:`zoo3d`. The
  geometric constructors are parametrised by what the *content* does between frame ``t`` and frame
  ``t+1``; the flow they return is the inverse of that motion.
* flow algebra (``_algebra``): :func:`flow_to_map`, :func:`map_to_flow`, :func:`compose`,
  :func:`backward_from_forward`, :func:`forward_from_backward`, :func:`mask_flow`,
  :func:`voxel_centres` and :func:`sample_trilinear`.
* cameras (``_camera``): :func:`camera_flow` and friends turn a depth map, pinhole intrinsics and a
  relative camera pose into a flow, so that camera-controlled warping needs no optical flow. Camera
  coordinates follow OpenCV: ``x`` right, ``y`` down, ``z`` forward (the optical axis). With the
  depth of frame ``t`` and the pose ``t -> t+1`` the result is the *forward* flow of frame ``t``
  (for :func:`irwarp.warp_forward`); with the depth of frame ``t+1`` and the pose ``t+1 -> t`` it is
  the backward flow of frame ``t+1`` (for :func:`irwarp.warp`).
* Middlebury ``.flo`` IO (``_io``): :func:`read_flo`, :func:`write_flo`.

The ray-cast terrain of the 3D camera experiment is not part of the library: it lives in
``experiments/terrain.py`` (``terrain_depth``).

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212). Baker et al., A Database and Evaluation Methodology for Optical Flow,
  IJCV 2011 (the Middlebury ``.flo`` format).
"""

from irwarp.flows._algebra import (
    backward_from_forward,
    compose,
    flow_to_map,
    forward_from_backward,
    map_to_flow,
    mask_flow,
    sample_trilinear,
    voxel_centres,
)
from irwarp.flows._camera import (
    camera_flow,
    camera_rays,
    intrinsics,
    intrinsics_from_fov,
    look_at,
    plane_depth,
    relative_pose,
    visibility_mask,
)
from irwarp.flows._io import FLO_MAGIC, read_flo, write_flo
from irwarp.flows._synthetic import (
    DEGENERATE,
    DEGENERATE3D,
    abc_velocity,
    advection3d,
    affine,
    affine3d,
    collapse,
    collapse3d,
    fold3d,
    fold_over,
    identity,
    identity3d,
    leave_frame,
    leave_volume3d,
    nan_patch,
    nan_patch3d,
    rotation,
    rotation3d,
    shear,
    shear_waves,
    translation,
    translation3d,
    vortex,
    zoo,
    zoo3d,
    zoom,
    zoom3d,
)

__all__ = [
    # Synthetic flows (images).
    "DEGENERATE",
    "affine",
    "collapse",
    "fold_over",
    "identity",
    "leave_frame",
    "nan_patch",
    "rotation",
    "shear",
    "shear_waves",
    "translation",
    "vortex",
    "zoo",
    "zoom",
    # Synthetic flows (volumes).
    "DEGENERATE3D",
    "abc_velocity",
    "advection3d",
    "affine3d",
    "collapse3d",
    "fold3d",
    "identity3d",
    "leave_volume3d",
    "nan_patch3d",
    "rotation3d",
    "translation3d",
    "zoo3d",
    "zoom3d",
    # Flow algebra and sampling.
    "backward_from_forward",
    "compose",
    "flow_to_map",
    "forward_from_backward",
    "map_to_flow",
    "mask_flow",
    "sample_trilinear",
    "voxel_centres",
    # Cameras.
    "camera_flow",
    "camera_rays",
    "intrinsics",
    "intrinsics_from_fov",
    "look_at",
    "plane_depth",
    "relative_pose",
    "visibility_mask",
    # Middlebury .flo IO.
    "FLO_MAGIC",
    "read_flo",
    "write_flo",
]


def __getattr__(name: str):
    if name == "terrain_depth":
        raise AttributeError(
            "irwarp.flows.terrain_depth has moved out of the library: it is the synthetic scene "
            "of the 3D camera experiment, now experiments/terrain.py (terrain_depth)"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
