"""irwarp: infinite-resolution integral noise warping (Deng et al., ICLR 2025) in JAX."""

from irwarp import flows, pipeline, resample, stats, video
from irwarp.bridge import bridge_increments
from irwarp.records import PartitionRecord, grid_record, particle_record, splat_record
from irwarp.resample import downsample
from irwarp.warp import METHODS, apply_record, warp, warp_forward, warp_sequence

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "PartitionRecord",
    "apply_record",
    "bridge_increments",
    "downsample",
    "flows",
    "grid_record",
    "particle_record",
    "pipeline",
    "resample",
    "splat_record",
    "stats",
    "video",
    "warp",
    "warp_forward",
    "warp_sequence",
]
