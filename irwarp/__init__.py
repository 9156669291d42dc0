"""irwarp: infinite-resolution integral noise warping (Deng et al., ICLR 2025) in JAX."""

from irwarp import (
    files,
    flows,
    flows3d,
    methods,
    pipeline,
    presets,
    records3d,
    resample,
    sheet,
    stats,
    stream,
    video,
)
from irwarp._schedule import MODES as SCHEDULES
from irwarp._schedule import force as force_schedule
from irwarp.bridge import bridge_increments
from irwarp.methods import Method, Option, get_method, parse_method, register_method
from irwarp.records import PartitionRecord, grid_record, particle_record, splat_record
from irwarp.records3d import PartitionRecord3D, particle3d_record, splat3d_record
from irwarp.resample import downsample, temporal_compress, upsample
from irwarp.stream import NoiseStream, StreamState, noise_stream, warp_sequence
from irwarp.warp import METHODS, METHODS3D, apply_record, warp, warp_forward

__version__ = "0.3.0"

__all__ = [
    "METHODS",
    "METHODS3D",
    "Method",
    "NoiseStream",
    "Option",
    "PartitionRecord",
    "PartitionRecord3D",
    "SCHEDULES",
    "StreamState",
    "apply_record",
    "bridge_increments",
    "downsample",
    "files",
    "flows",
    "flows3d",
    "force_schedule",
    "get_method",
    "grid_record",
    "methods",
    "noise_stream",
    "parse_method",
    "particle3d_record",
    "particle_record",
    "pipeline",
    "presets",
    "records3d",
    "register_method",
    "resample",
    "sheet",
    "splat3d_record",
    "splat_record",
    "stats",
    "stream",
    "temporal_compress",
    "upsample",
    "video",
    "warp",
    "warp_forward",
    "warp_sequence",
]
