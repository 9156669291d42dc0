"""irwarp: infinite-resolution integral noise warping (Deng et al., ICLR 2025) in JAX."""

from irwarp import flows, stats
from irwarp.bridge import bridge_increments
from irwarp.records import PartitionRecord, grid_record, particle_record, splat_record
from irwarp.warp import METHODS, apply_record, warp, warp_forward, warp_sequence

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "PartitionRecord",
    "apply_record",
    "bridge_increments",
    "flows",
    "grid_record",
    "particle_record",
    "splat_record",
    "stats",
    "warp",
    "warp_forward",
    "warp_sequence",
]
