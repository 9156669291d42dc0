"""irwarp: infinite-resolution integral noise warping (Deng et al., ICLR 2025) in JAX."""

from irwarp import flows, flows3d, pipeline, records3d, resample, sheet, stats, video
from irwarp.bridge import bridge_increments
from irwarp.records import PartitionRecord, grid_record, particle_record, splat_record
from irwarp.records3d import PartitionRecord3D, particle3d_record, splat3d_record
from irwarp.resample import downsample, temporal_compress, upsample
from irwarp.warp import METHODS, METHODS3D, apply_record, warp, warp_forward, warp_sequence

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "METHODS3D",
    "PartitionRecord",
    "PartitionRecord3D",
    "apply_record",
    "bridge_increments",
    "downsample",
    "flows",
    "flows3d",
    "grid_record",
    "particle3d_record",
    "particle_record",
    "pipeline",
    "records3d",
    "resample",
    "sheet",
    "splat3d_record",
    "splat_record",
    "stats",
    "temporal_compress",
    "upsample",
    "video",
    "warp",
    "warp_forward",
    "warp_sequence",
]
