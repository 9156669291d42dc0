"""3D flows (kept for compatibility): the names now live in :mod:`irwarp.flows`.

:mod:`irwarp.flows` holds the flows of images and volumes together, organised by concept; this
module re-exports the 3D names it used to define (conventions there: docs/DESIGN.md section 1 extended
by ``z``, flows ``(D, H, W, 3)`` with vectors ``(dx, dy, dz)``). New code should use
:mod:`irwarp.flows`.
"""

from __future__ import annotations

from irwarp.flows import (
    DEGENERATE3D,
    abc_velocity,
    advection3d,
    affine3d,
    collapse3d,
    fold3d,
    identity3d,
    leave_volume3d,
    nan_patch3d,
    rotation3d,
    sample_trilinear,
    translation3d,
    voxel_centres,
    zoo3d,
    zoom3d,
)

__all__ = [
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
    "sample_trilinear",
    "translation3d",
    "voxel_centres",
    "zoo3d",
    "zoom3d",
]
