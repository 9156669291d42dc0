"""Slow, obviously-correct numpy reference for the 3D warp geometry (particle and splat).

Independent of irwarp: nothing here imports the library. Everything is float64 and written with
plain loops over every (new voxel, old voxel) pair, for volumes of about 100 voxels.

Conventions (docs/DESIGN.md section 1, extended by ``z``): voxel ``(k, i, j)`` is the unit cube
``[j, j+1] x [i, i+1] x [k, k+1]`` in ``(x, y, z)``; its flat index is ``(k * H + i) * W + j``; a
flow vector is ``(dx, dy, dz)``. A voxel whose flow has a non-finite component has no footprint.

All volume matrices are dense ``(DHW, DHW)`` arrays indexed ``[d, s]``: new (destination) voxel
``d``, old (source) voxel ``s``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def voxels(d: int, h: int, w: int):
    """All voxels as ``(flat index, (k, i, j))`` in flat order."""
    yield from enumerate(itertools.product(range(d), range(h), range(w)))


def cube_overlap(lo_a, lo_b) -> float:
    """Volume of the intersection of the unit cubes with lower corners ``lo_a`` and ``lo_b``.

    Both are ``(x, y, z)`` triples; the intersection of two boxes is a box whose extent along each
    axis is the overlap of the two intervals (or empty).
    """
    vol = 1.0
    for a0, b0 in zip(lo_a, lo_b, strict=True):
        lo = max(a0, b0)
        hi = min(a0 + 1.0, b0 + 1.0)
        if hi <= lo:
            return 0.0
        vol *= hi - lo
    return vol


def _moved_corner(flow: np.ndarray, k: int, i: int, j: int):
    """Lower corner of voxel ``(k, i, j)``'s unit cube moved by its flow, or None if non-finite."""
    fx, fy, fz = (float(v) for v in flow[k, i, j])
    if not all(math.isfinite(v) for v in (fx, fy, fz)):
        return None
    return (j + fx, i + fy, k + fz)


def particle_volumes(flow: np.ndarray) -> np.ndarray:
    """Dense ``[d, s]`` particle areas: ``w_ds / sum_d' w_d's`` per source (0 for unused sources).

    ``w_ds`` is the overlap of the unit cube centred at ``centre_d + flow[d]`` with cell ``s``.
    """
    flow = np.asarray(flow, np.float64)
    d, h, w = flow.shape[:3]
    n = d * h * w
    wts = np.zeros((n, n))
    for dst, (k, i, j) in voxels(d, h, w):
        moved = _moved_corner(flow, k, i, j)
        if moved is None:
            continue
        for src, (sk, si, sj) in voxels(d, h, w):
            wts[dst, src] = cube_overlap(moved, (sj, si, sk))
    use = wts.sum(axis=0)
    return wts / np.where(use > 0, use, 1.0)[None, :]


def splat_volumes(forward_flow: np.ndarray) -> np.ndarray:
    """Dense ``[d, s]`` splat areas from a 3D forward flow.

    Old voxel ``s`` is the unit cube centred at ``centre_s + forward_flow[s]``; its overlaps with
    the new cells ``d`` are divided by their sum (a source landing fully outside sends nothing).
    """
    flow = np.asarray(forward_flow, np.float64)
    d, h, w = flow.shape[:3]
    n = d * h * w
    a = np.zeros((n, n))
    for src, (k, i, j) in voxels(d, h, w):
        moved = _moved_corner(flow, k, i, j)
        if moved is None:
            continue
        col = np.zeros(n)
        for dst, (dk, di, dj) in voxels(d, h, w):
            col[dst] = cube_overlap(moved, (dj, di, dk))
        if col.sum() > 0:
            a[:, src] = col / col.sum()
    return a


def shift_matrix(d: int, h: int, w: int, dx: int, dy: int, dz: int) -> np.ndarray:
    """``a_ds = 1`` where old voxel ``s`` is new voxel ``d`` moved by ``(dx, dy, dz)`` (if inside)."""
    n = d * h * w
    a = np.zeros((n, n))
    for dst, (k, i, j) in voxels(d, h, w):
        sk, si, sj = k + dz, i + dy, j + dx
        if 0 <= sk < d and 0 <= si < h and 0 <= sj < w:
            a[dst, (sk * h + si) * w + sj] = 1.0
    return a


def cross_covariance(volumes: np.ndarray) -> np.ndarray:
    """``E[Y_d X_s] = a_ds / sqrt(A_d)`` with ``A_d = sum_s a_ds``; rows with ``A_d = 0`` are 0."""
    total = volumes.sum(axis=1)
    scale = np.where(total > 0, 1.0 / np.sqrt(np.where(total > 0, total, 1.0)), 0.0)
    return volumes * scale[:, None]
