"""Middlebury ``.flo`` IO (numpy, not traceable).

References:
  Baker et al., A Database and Evaluation Methodology for Optical Flow, IJCV 2011 (the Middlebury
  ``.flo`` format).
"""

from __future__ import annotations

import os

import numpy as np
from jax.typing import ArrayLike

__all__ = ["FLO_MAGIC", "read_flo", "write_flo"]

FLO_MAGIC = 202021.25
"""Magic number opening a Middlebury ``.flo`` file (the bytes ``b"PIEH"`` as a little-endian float32)."""

_UNKNOWN_FLOW = 1e9  # Middlebury marks unknown flow with components above this value.


def write_flo(path: str | os.PathLike, flow: ArrayLike) -> None:
    """Write a flow to a Middlebury ``.flo`` file.

    Layout (little-endian): float32 magic ``202021.25`` (``b"PIEH"``), int32 width ``W``, int32
    height ``H``, then ``H * W * 2`` float32 values, row-major, ``(u, v) = (dx, dy)`` interleaved.

    Args:
      path: file to write (overwritten).
      flow: ``(H, W, 2)`` flow; written as float32 (NaN is written as is).

    Raises:
      ValueError: if ``flow`` is not ``(H, W, 2)`` with ``H, W > 0``.
    """
    arr = np.asarray(flow)
    if arr.ndim != 3 or arr.shape[-1] != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"flow must have shape (H, W, 2) with H, W > 0; got {arr.shape}")
    h, w = arr.shape[:2]
    with open(path, "wb") as f:
        f.write(np.array([FLO_MAGIC], "<f4").tobytes())
        f.write(np.array([w, h], "<i4").tobytes())
        f.write(np.ascontiguousarray(arr, "<f4").tobytes())


def read_flo(path: str | os.PathLike, *, unknown_as_nan: bool = False) -> np.ndarray:
    """Read a Middlebury ``.flo`` file (layout in :func:`write_flo`).

    Args:
      path: file to read.
      unknown_as_nan: replace components with magnitude above ``1e9`` (Middlebury's "unknown
        flow" marker) by NaN, irwarp's marker for disoccluded pixels.

    Returns:
      ``(H, W, 2)`` float32 numpy array of ``(dx, dy)``.

    Raises:
      ValueError: on a wrong magic number, non-positive sizes, or a file whose length does not
        match its header (truncated or with trailing bytes).
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12:
        raise ValueError(
            f"{os.fspath(path)!r}: expected a 12-byte .flo header; got a file of {len(data)} bytes"
        )
    magic = np.frombuffer(data, "<f4", count=1)[0]
    if magic != np.float32(FLO_MAGIC):
        raise ValueError(
            f"{os.fspath(path)!r}: expected .flo magic {FLO_MAGIC} (b'PIEH'); "
            f"got {float(magic)!r} ({data[:4]!r})"
        )
    w, h = (int(v) for v in np.frombuffer(data, "<i4", count=2, offset=4))
    if w < 1 or h < 1:
        raise ValueError(f"{os.fspath(path)!r}: expected positive width and height; got {w}x{h}")
    expected = 12 + 8 * h * w
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing bytes"
        raise ValueError(
            f"{os.fspath(path)!r}: expected {expected} bytes for a {w}x{h} (W x H) flow; "
            f"got {len(data)} ({kind})"
        )
    flow = np.frombuffer(data, "<f4", offset=12).reshape(h, w, 2).astype(np.float32)
    if unknown_as_nan:
        flow = np.where(np.abs(flow) > _UNKNOWN_FLOW, np.float32(np.nan), flow)
    return flow
