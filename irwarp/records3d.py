"""Partition records of 3D warps: volumes ``(D, H, W)`` as flat ``(src, dst, area)`` triples.

The 3D analogue of :mod:`irwarp.records` (DESIGN.md sections 1-3, extended by ``z``). Voxel
``(k, i, j)`` (depth ``k``, row ``i``, column ``j``) is the unit cube ``[j, j+1] x [i, i+1] x
[k, k+1]`` in ``(x, y, z)``, its centre is ``(j + 0.5, i + 0.5, k + 0.5)`` and its flat index is
``(k * H + i) * W + j``. A 3D flow vector is ``(dx, dy, dz)``; the backward map is
``psi(p) = p + flow(p)``. A record here is a :class:`PartitionRecord3D`, a
:class:`~irwarp.records.PartitionRecord` over ``D * H * W`` flat cells whose ``shape`` is
``(D, H, W)``, so :func:`irwarp.apply_record` and the order-free Brownian bridge serve it
unchanged. Two builders:

* :func:`particle3d_record`: new voxel ``d`` is a unit cube centred at ``psi(centre_d)``;
  ``w_ds`` is its trilinear overlap (the product of the three 1D overlaps) with old cell ``s``;
  each source's requests are divided by their sum.
* :func:`splat3d_record`: old voxel ``s`` is a unit cube centred at
  ``centre_s + forward_flow(s)``; its trilinear overlaps with the new cells are divided by their
  in-volume sum.

Both make the warped volume exactly i.i.d. N(0, 1) for any flow (the argument of DESIGN.md
section 2: every source's areas sum to 0 or 1). There is no 3D grid (exact-volume) record; the
README explains why.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212), algorithm "particle-based".
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from irwarp import _schedule
from irwarp.records import PartitionRecord

__all__ = ["PartitionRecord3D", "particle3d_record", "splat3d_record", "sanitize_flow3d"]

# Normalised pieces below this are set to exactly 0 (as for the 2D bilinear records).
_AREA_EPS = 1e-12
# The 8 corners of a trilinear footprint as offsets (dz, dy, dx), x fastest.
_CORNERS = tuple((a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1))


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["src", "dst", "area", "overflow", "source_use", "tail_count"],
    meta_fields=["shape", "layout", "fanout", "normalized", "tail_block"],
)
@dataclasses.dataclass(frozen=True)
class PartitionRecord3D(PartitionRecord):
    """A :class:`~irwarp.records.PartitionRecord` over the voxels of a ``(D, H, W)`` volume.

    Same fields as the 2D record, with ``src`` / ``dst`` flat voxel indices
    ``(k * H + i) * W + j``, ``overflow`` and ``source_use`` of shape ``(D, H, W)`` and the static
    ``shape == (D, H, W)``. Only the diagnostics differ: they reduce over three axes.
    """

    def num_overflow(self) -> jax.Array:
        """Number of destination voxels whose pre-image did not fit (always 0 here; int32)."""
        return jnp.sum(self.overflow > 0, axis=(-3, -2, -1), dtype=jnp.int32)

    def overflow_area(self) -> jax.Array:
        """Total volume, in voxels, that did not fit the capacity (always 0 here; float32)."""
        return jnp.sum(self.overflow, axis=(-3, -2, -1))

    def num_failsafe(self, tol: float = 1e-4) -> jax.Array:
        """Number of old voxels whose requested volume exceeded ``1 + tol`` (int32)."""
        return jnp.sum(self.source_use > 1.0 + tol, axis=(-3, -2, -1), dtype=jnp.int32)

    def dst_area(self) -> jax.Array:
        """``(D, H, W)`` sampled volume ``A_d`` of each new voxel (0 means disoccluded)."""
        d, h, w = self.shape
        n = d * h * w
        return jax.ops.segment_sum(self.area, self.dst, num_segments=n).reshape(d, h, w)


def _check_flow3d(flow: jax.Array, name: str = "flow") -> jax.Array:
    flow = jnp.asarray(flow)
    if flow.ndim != 4 or flow.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (D, H, W, 3) with (dx, dy, dz); got {flow.shape}")
    if not (jnp.issubdtype(flow.dtype, jnp.floating) or jnp.issubdtype(flow.dtype, jnp.integer)):
        raise ValueError(f"{name} must be a real-valued array; got dtype {flow.dtype}")
    return flow


def sanitize_flow3d(flow: jax.Array) -> jax.Array:
    """Float32 3D flow with +-Inf turned into NaN and huge magnitudes clamped.

    A displacement beyond ``4 (D + H + W) + 16`` voxels lands outside the volume whatever its
    exact value, so the clamp changes nothing inside and keeps later arithmetic finite. NaN (and
    +-Inf) mean "disoccluded" (DESIGN.md section 1).

    Args:
      flow: ``(D, H, W, 3)`` flow, any real dtype.

    Returns:
      ``(D, H, W, 3)`` float32 flow; non-finite entries are NaN.
    """
    d, h, w = flow.shape[:3]
    flow = jnp.asarray(flow, jnp.float32)
    bound = 4.0 * (d + h + w) + 16.0
    flow = jnp.where(jnp.isinf(flow), jnp.nan, flow)
    return jnp.clip(flow, -bound, bound)


def _trilinear_footprint(flow: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cells and trilinear overlaps of unit cubes centred at ``centre + flow``.

    The cube of voxel ``(k, i, j)`` spans ``[j + dx, j + dx + 1]`` in ``x`` (likewise ``y``, ``z``),
    so it meets cells ``j + floor(dx)`` and ``j + floor(dx) + 1`` with overlaps ``1 - t`` and ``t``,
    ``t = dx - floor(dx)``; the 3D overlap is the product over the axes.

    Args:
      flow: ``(D, H, W, 3)`` sanitised float32 flow (NaN marks a voxel with no footprint).

    Returns:
      ``(idx, weight)`` of shape ``(D, H, W, 8)``: flat indices of the 8 cells the cube touches
      (clamped into the volume) and their overlaps, 0 outside the volume or for non-finite flow.
    """
    d, h, w = flow.shape[:3]
    valid = jnp.all(jnp.isfinite(flow), -1)
    f = jnp.where(valid[..., None], flow, 0.0)
    fl = jnp.floor(f)
    t = f - fl
    kk, ii, jj = jnp.meshgrid(jnp.arange(d), jnp.arange(h), jnp.arange(w), indexing="ij")
    base = (
        jj + fl[..., 0].astype(jnp.int32),
        ii + fl[..., 1].astype(jnp.int32),
        kk + fl[..., 2].astype(jnp.int32),
    )
    frac = (t[..., 0], t[..., 1], t[..., 2])
    idxs, wts = [], []
    for oz, oy, ox in _CORNERS:
        col, row, dep = base[0] + ox, base[1] + oy, base[2] + oz
        wx = frac[0] if ox else 1.0 - frac[0]
        wy = frac[1] if oy else 1.0 - frac[1]
        wz = frac[2] if oz else 1.0 - frac[2]
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (dep >= 0) & (dep < d)
        flat = (jnp.clip(dep, 0, d - 1) * h + jnp.clip(row, 0, h - 1)) * w + jnp.clip(col, 0, w - 1)
        idxs.append(flat.astype(jnp.int32))
        wts.append(jnp.where(inside & valid, wx * wy * wz, 0.0))
    return jnp.stack(idxs, -1), jnp.stack(wts, -1)


def particle3d_record(flow: jax.Array) -> PartitionRecord3D:
    """Particle partition record of a 3D backward flow (the 3D particle-based algorithm).

    New voxel ``d`` is a unit cube centred at ``psi(centre_d) = centre_d + flow[d]``; ``w_ds`` is
    its trilinear overlap with old cell ``s`` (cells outside the volume dropped), and each source's
    requests are divided by their sum: ``a_ds = w_ds / sum_d' w_d's``. The warped volume is exactly
    white for any flow, folding and collapsing ones included; NaN/Inf flow voxels are disoccluded
    (fresh noise).

    Args:
      flow: ``(D, H, W, 3)`` backward flow ``(dx, dy, dz)`` in voxels.

    Returns:
      A :class:`PartitionRecord3D` with ``M = 8 D H W`` pieces, layout ``"dst"``, normalised.

    Raises:
      ValueError: if ``flow`` is not ``(D, H, W, 3)`` or not real-valued.

    References:
      Deng et al. 2025 (arXiv:2411.01212), particle-based algorithm, with trilinear overlaps.
    """
    flow = _check_flow3d(flow)
    d, h, w = flow.shape[:3]
    n = d * h * w
    idx, wts = _trilinear_footprint(sanitize_flow3d(flow))
    src = idx.reshape(-1)
    wts = wts.reshape(-1)
    use = _schedule.segment_sum(wts, src, n)
    area = wts / jnp.where(use > 0, use, 1.0)[src]
    area = jnp.where(area < _AREA_EPS, 0.0, area)
    return PartitionRecord3D(
        src=src,
        dst=jnp.repeat(jnp.arange(n, dtype=jnp.int32), 8),
        area=area,
        overflow=jnp.zeros((d, h, w), jnp.float32),
        source_use=use.reshape(d, h, w),
        shape=(d, h, w),
        layout="dst",
        fanout=8,
        normalized=True,
    )


def splat3d_record(forward_flow: jax.Array) -> PartitionRecord3D:
    """Forward-splat partition record of a 3D forward flow.

    Old voxel ``s`` becomes a unit cube centred at ``centre_s + forward_flow[s]``; ``w_sd`` is its
    trilinear overlap with new cell ``d``, and each source's in-volume overlaps are divided by
    their sum. The output is exactly white for any flow; new voxels that receive nothing (and
    sources with a NaN/Inf flow send nothing) get fresh noise.

    Args:
      forward_flow: ``(D, H, W, 3)`` forward flow of the old volume: where voxel ``(k, i, j)``
        goes, ``(dx, dy, dz)`` in voxels.

    Returns:
      A :class:`PartitionRecord3D` with ``M = 8 D H W`` pieces, layout ``"src"``, normalised.

    Raises:
      ValueError: if ``forward_flow`` is not ``(D, H, W, 3)`` or not real-valued.

    References:
      DESIGN.md section 3 (forward splat), with trilinear overlaps; Deng et al. 2025
      (arXiv:2411.01212).
    """
    forward_flow = _check_flow3d(forward_flow, "forward_flow")
    d, h, w = forward_flow.shape[:3]
    n = d * h * w
    idx, wts = _trilinear_footprint(sanitize_flow3d(forward_flow))
    tot = wts.sum(-1, keepdims=True)
    area = wts / jnp.where(tot > 0, tot, 1.0)
    area = jnp.where(area < _AREA_EPS, 0.0, area)
    return PartitionRecord3D(
        src=jnp.repeat(jnp.arange(n, dtype=jnp.int32), 8),
        dst=idx.reshape(-1),
        area=area.reshape(-1),
        overflow=jnp.zeros((d, h, w), jnp.float32),
        source_use=tot[..., 0],
        shape=(d, h, w),
        layout="src",
        fanout=8,
        normalized=True,
    )
