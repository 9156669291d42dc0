"""Noise and flow as pictures, captions, and PNG / GIF / MP4 writers.

Pictures are ``(H, W, 3)`` uint8 RGB arrays. Pillow (the ``plots`` extra) writes PNG and GIF,
imageio-ffmpeg (the ``video`` extra) MP4, OpenCV draws text and flow colours.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

# imageio starts ffmpeg with fork + exec, which is safe; Python warns about any fork under JAX.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


def noise_to_rgb(x: Any, scale: float = 0.25, zoom: int = 1) -> np.ndarray:
    """``(H, W, C)`` noise -> ``(zoom H, zoom W, 3)`` uint8: ``0.5 + scale * x`` clipped, channels 0-2
    as RGB (channel 0 as gray if C < 3), each pixel repeated ``zoom`` times in both axes."""
    x = np.asarray(x, np.float32)
    x = x[..., :3] if x.shape[-1] >= 3 else np.repeat(x[..., :1], 3, axis=-1)
    img = (np.clip(0.5 + scale * x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return zoomed(img, zoom)


def zoomed(img: np.ndarray, zoom: int) -> np.ndarray:
    """``img`` with every pixel repeated ``zoom`` times in both axes (nearest neighbour)."""
    return img if zoom == 1 else np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)


def flow_to_rgb(flow: np.ndarray) -> np.ndarray:
    """``(H, W, 2)`` flow -> ``(H, W, 3)`` uint8: hue = direction, saturation = speed (white: no
    motion, as in the Middlebury colour coding), black where the flow is NaN (occluded)."""
    import cv2

    finite = np.all(np.isfinite(flow), axis=-1)
    f = np.where(finite[..., None], flow, 0.0).astype(np.float32)
    mag, ang = cv2.cartToPolar(f[..., 0], f[..., 1], angleInDegrees=True)
    top = max(float(np.percentile(mag[finite], 99)) if finite.any() else 0.0, 1.0)
    hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (ang / 2).astype(np.uint8)
    hsv[..., 1] = (np.clip(mag / top, 0, 1) * 255).astype(np.uint8)
    hsv[..., 2] = 255
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    rgb[~finite] = 0
    return rgb


def label(img: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``img`` with ``text`` drawn in its top-left corner (white on a black outline)."""
    import cv2

    img = np.array(img, np.uint8, copy=True)  # never draw on the caller's frame
    scale = max(0.3, img.shape[0] / 320.0)
    org = (3, int(14 * scale / 0.4))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def caption(
    img: np.ndarray,
    text: str,
    height: int = 14,
    font_scale: float = 0.35,
    origin: tuple[int, int] = (2, 3),
) -> np.ndarray:
    """``img`` under a black strip ``height`` pixels high with ``text`` in white (OpenCV font),
    starting ``origin[0]`` pixels from the left, its baseline ``origin[1]`` above the strip's foot."""
    import cv2

    strip = np.zeros((height, img.shape[1], 3), np.uint8)
    org = (origin[0], height - origin[1])
    cv2.putText(strip, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1)
    return np.concatenate([strip, img], axis=0)


def caption_light(img: np.ndarray, text: str, height: int = 12) -> np.ndarray:
    """``img`` under a white strip ``height`` pixels high with ``text`` in black (Pillow's font)."""
    from PIL import Image, ImageDraw

    h, w = img.shape[:2]
    out = Image.new("RGB", (w, h + height), (255, 255, 255))
    out.paste(Image.fromarray(img), (0, height))
    ImageDraw.Draw(out).text((2, 0), text, fill=(0, 0, 0))
    return np.asarray(out)


def even(img: np.ndarray) -> np.ndarray:
    """``img`` padded with black to an even height and width (what video codecs need)."""
    pad = ((0, img.shape[0] % 2), (0, img.shape[1] % 2), (0, 0))
    return np.pad(img, pad) if any(p[1] for p in pad) else img


def hstack(images: Sequence[np.ndarray], gap: int = 3) -> np.ndarray:
    """Images side by side with white gaps (shorter ones padded white below); even-sized."""
    h = max(i.shape[0] for i in images)
    parts = []
    for i in images:
        parts.append(np.pad(i, ((0, h - i.shape[0]), (0, 0), (0, 0)), constant_values=255))
        parts.append(np.full((h, gap, 3), 255, np.uint8))
    img = np.concatenate(parts[:-1], axis=1)
    return np.pad(img, ((0, img.shape[0] % 2), (0, img.shape[1] % 2), (0, 0)))


def save_png(img: np.ndarray, path: str) -> str:
    """Writes a uint8 picture as PNG; returns ``path``."""
    from PIL import Image

    Image.fromarray(np.asarray(img)).save(path, format="PNG")
    return path


def save_image(array: Any, path: str, vmin: float = 0.0, vmax: float = 1.0) -> str:
    """Saves an ``(H, W)`` or ``(H, W, 3)`` array as an 8-bit PNG, mapping ``[vmin, vmax]`` to
    ``[0, 255]`` (clipped); returns ``path``."""
    a = np.asarray(array, np.float32)
    a = np.clip((a - vmin) / (vmax - vmin), 0.0, 1.0)
    return save_png(np.round(255.0 * a).astype(np.uint8), path)


def save_gif(frames: Sequence[np.ndarray], path: str, fps: float) -> str:
    """Writes uint8 pictures as a looping GIF at ``fps`` (at least 20 ms a frame); returns ``path``."""
    from PIL import Image

    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=ims[1:],
        duration=max(int(round(1000.0 / fps)), 20),
        loop=0,
    )
    return path


def can_write_mp4() -> bool:
    """Whether imageio-ffmpeg (the MP4 encoder) is installed."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def mp4_writer(path: str, fps: float):
    """An imageio writer of H.264 MP4 (``append_data(frame)``, ``close()``; a context manager)."""
    import imageio.v2 as imageio

    return imageio.get_writer(
        path,
        format="FFMPEG",
        fps=fps,
        codec="libx264",
        quality=8,
        macro_block_size=1,
        ffmpeg_log_level="error",
    )


def save_mp4(frames: Sequence[np.ndarray], path: str, fps: float) -> str:
    """Writes uint8 pictures (even sizes) as an H.264 MP4; returns ``path``."""
    with mp4_writer(path, fps) as writer:
        for f in frames:
            writer.append_data(f)
    return path


def write_animation(frames: list[np.ndarray], stem: str, output) -> list[str]:
    """Writes ``stem.gif`` and/or ``stem.mp4`` (per ``output.gif`` / ``output.mp4`` at
    ``output.fps``); returns the paths written."""
    paths = []
    if output.gif:
        paths.append(save_gif(frames, stem + ".gif", output.fps))
    if output.mp4:
        paths.append(save_mp4(frames, stem + ".mp4", output.fps))
    return paths


def new_figure(width: float, height: float):
    """A matplotlib ``Figure`` of ``width x height`` inches, not attached to pyplot state."""
    from matplotlib.figure import Figure  # optional dependency (the `plots` extra)

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Saves a matplotlib ``Figure`` as PNG (no pyplot state involved); returns ``path``."""
    fig.savefig(path, dpi=dpi, format="png", facecolor="white")
    return path
