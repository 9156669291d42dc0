"""Synthetic clips with known motion for the command-line tests (written, never downloaded)."""

from __future__ import annotations

import os

import numpy as np


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture ``(h, w, 3)`` uint8 (blurred noise: optical flow finds it)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((h // 4 + 2, w // 4 + 2, 3))
    x = np.repeat(np.repeat(x, 4, axis=0), 4, axis=1)[:h, :w]
    for axis in (0, 1):  # two box blurs: smooth enough for DIS, rich enough to track
        for _ in range(2):
            x = (np.roll(x, 1, axis) + x + np.roll(x, -1, axis)) / 3
    x = (x - x.min()) / (x.max() - x.min())
    return (x * 255).astype(np.uint8)


def pan_frames(num: int, h: int, w: int, dx: int, dy: int = 0, seed: int = 0) -> np.ndarray:
    """``(num, h, w, 3)`` frames of a texture moving ``(dx, dy)`` pixels per frame.

    Frame ``t`` is the window at offset ``(-t dy, -t dx)`` of a larger texture, so content at
    pixel ``p`` of frame ``t`` is at ``p + (dx, dy)`` in frame ``t + 1``.
    """
    big_h, big_w = h + abs(dy) * num + 8, w + abs(dx) * num + 8
    tex = texture(big_h, big_w, seed)
    oy0 = abs(dy) * num if dy > 0 else 0
    ox0 = abs(dx) * num if dx > 0 else 0
    out = []
    for t in range(num):
        oy, ox = oy0 - t * dy, ox0 - t * dx
        out.append(tex[oy : oy + h, ox : ox + w])
    return np.stack(out)


def write_folder(path: str, frames: np.ndarray) -> str:
    """Writes frames as ``frame_000.png ...`` into ``path``; returns ``path``."""
    import imageio.v3 as iio

    os.makedirs(path, exist_ok=True)
    for t, f in enumerate(frames):
        iio.imwrite(os.path.join(path, f"frame_{t:03d}.png"), f)
    return path


def write_mp4(path: str, frames: np.ndarray, fps: float = 25.0) -> str:
    """Writes frames as an H.264 mp4 (near-lossless); returns ``path``."""
    import imageio.v2 as imageio

    with imageio.get_writer(
        path,
        format="FFMPEG",
        fps=fps,
        codec="libx264",
        quality=9,
        macro_block_size=1,
        ffmpeg_log_level="error",
    ) as w:
        for f in frames:
            w.append_data(f)
    return path
