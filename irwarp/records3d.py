"""Partition records of 3D warps (kept for compatibility): the names now live in :mod:`irwarp.records`.

One :class:`~irwarp.records.PartitionRecord` serves images and volumes, and one rank-generic
overlap of unit cells builds the particle and splat records of both ranks. This module re-exports
the 3D names it used to define: :func:`particle3d_record`, :func:`splat3d_record`,
:func:`sanitize_flow3d` and :data:`PartitionRecord3D` (a deprecated alias of
:class:`~irwarp.records.PartitionRecord`). New code should import them from :mod:`irwarp.records`.
"""

from __future__ import annotations

from irwarp.records import PartitionRecord3D, particle3d_record, sanitize_flow3d, splat3d_record

__all__ = ["PartitionRecord3D", "particle3d_record", "splat3d_record", "sanitize_flow3d"]
