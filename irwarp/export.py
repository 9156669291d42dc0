"""Warped noise for a latent video model, from a video: the engine of ``irwarp warp`` / ``dataset``.

A run reads a video file or a folder of frames, estimates optical flow between consecutive
frames (OpenCV DIS or Farneback, or reads a flow file), marks occluded pixels by
forward-backward consistency (their flow becomes NaN, so they get fresh noise), warps noise along
the video with any method of the registry through the noise stream (:mod:`irwarp.stream`), and
reduces it to the preset's latent resolution by the exact integral downsampling
(:func:`irwarp.resample.downsample`) and to its latent frames (:func:`irwarp.resample.
temporal_compress`). Everything is done chunk by chunk: frames are decoded as they are needed (in
a background thread, with their flows), and every output is streamed to disk as it is made, so
memory does not grow with the video's length.

Files written into the output folder (each to a temporary name, renamed when complete;
``meta.json`` last, so a folder with a ``meta.json`` holds a finished run; a run into a folder
that holds one first removes its ``meta.json``, and at the end the files of the earlier run that
it did not write itself):

- ``noise.npy`` (or ``noise.safetensors``, tensor ``noise``): the latent-frame noise,
  ``(T_latent, h, w, C)`` in the default THWC layout (``--layout`` TCHW / CTHW permute it).
- ``noise_frames.npy`` (or ``.safetensors``): the noise of every video frame at latent
  resolution ``(T, h, w, C)`` (same layout and dtype).
- ``meta.json``: versions, preset, method and options, seed and key, shapes, layout, dtype, the
  video frame of each latent frame, fps, timings.
- ``stats.json``: per video frame at latent resolution: mean, variance, KS statistic and
  p-value, and the coherence with the previous frame along the flow; the latent frames marked.
- ``preview.mp4``: the video beside its noise (channels 0-2 as RGB).

Frame ``t`` of a video's noise depends only on its key and flows, never on the chunking or on
which other videos share its batch (:func:`run_batch` runs same-shaped videos one per device).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from irwarp import __version__, files, methods, pipeline, presets, resample, stats, video
from irwarp import flows as flows_lib
from irwarp.progress import Progress
from irwarp.stream import noise_stream

__all__ = [
    "FLOW_SOURCES",
    "TEMPORAL_MODES",
    "Settings",
    "Plan",
    "plan",
    "run",
    "run_batch",
    "video_key",
    "SETTINGS_KEYS",
]

FLOW_SOURCES = video.FLOW_METHODS  # or a path to a flow file
TEMPORAL_MODES = resample.TEMPORAL_MODES
# OpenCV's DIS fails below 12 pixels a side and crashes on some frames of 16-31 (opencv 5.0).
DIS_MIN_SIDE = 32
META, STATS, PREVIEW = "meta.json", "stats.json", "preview.mp4"
# Every file a run can write besides meta.json.
_OUTPUT_NAMES = frozenset(
    {STATS, PREVIEW} | {f"{n}.{e}" for n in ("noise", "noise_frames") for e in files.FORMATS}
)
_AXIS = "videos"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a run computes (every field but the last four decides the numbers in its files).

    Attributes:
      preset: a :data:`irwarp.presets.PRESETS` name.
      method: a registry method, optionally with its shorthand option (``"chang4"``).
      options: method options, e.g. ``{"keyframe_every": 16}`` for ``lagrangian``.
      channels: latent channels for preset ``none`` (others fix their own; None: 4).
      frames: video frames to use (0: all); trimmed to the preset's ``1 + k m`` layout.
      start, stride: the first frame and the step between frames.
      size: ``(H, W)`` to resize the video to, or None (the video's own size).
      flow: ``"dis"``, ``"farneback"``, or the path of a flow file (backward flows ``(T - 1, H,
        W, 2)`` at the video size; forward flows for forward-flow methods).
      dis_preset: OpenCV DIS preset (``ultrafast``, ``fast``, ``medium``).
      flow_downscale: flows are estimated on frames downscaled by this factor (None: 2 when it
        divides the video-to-warp factor, else 1).
      warp_scale: warp resolution in multiples of the latent's (None: the preset's default).
      occlusion: mark flow-inconsistent pixels occluded (they get fresh noise).
      seed: the run's seed (``jax.random.key(seed)``; the dataset folds in each video's id).
      dtype: ``float16``, ``bfloat16`` (safetensors only) or ``float32``.
      layout: ``THWC``, ``TCHW`` or ``CTHW``.
      fmt: ``npy`` or ``safetensors``.
      temporal_mode: how latent frames are made from video frames (see temporal_compress).
      noise_frames: write ``noise_frames.*`` (every video frame's noise; off: latent frames only).
      stats: write ``stats.json`` (per-frame diagnostics).
      preview: write ``preview.mp4``.
      chunk: frames per compiled step (memory and speed; not the numbers).
      overwrite: replace a different run already in the output folder.
    """

    preset: str = "cogvideox"
    method: str = "grid"
    options: dict = dataclasses.field(default_factory=dict)
    channels: int | None = None
    frames: int = 0
    start: int = 0
    stride: int = 1
    size: tuple[int, int] | None = None
    flow: str = "dis"
    dis_preset: str = "medium"
    flow_downscale: int | None = None
    warp_scale: int | None = None
    occlusion: bool = True
    seed: int = 0
    dtype: str = "float16"
    layout: str = "THWC"
    fmt: str = "npy"
    temporal_mode: str = "subsample"
    noise_frames: bool = True
    stats: bool = True
    preview: bool = True
    chunk: int = 16
    overwrite: bool = False


# The fields that decide the numbers (a run with other values is a different run).
SETTINGS_KEYS = tuple(
    f.name
    for f in dataclasses.fields(Settings)
    if f.name not in ("stats", "preview", "chunk", "overwrite")
)


def video_key(seed: int, video_id: str) -> jax.Array:
    """The key of one video of a dataset: ``seed`` folded with two 32-bit words of sha256(id).

    Depends only on ``(seed, id)``, not on the manifest's order or how the work is split.
    """
    import hashlib

    digest = hashlib.sha256(str(video_id).encode("utf-8")).digest()
    key = jax.random.key(int(seed))
    for i in (0, 4):
        key = jax.random.fold_in(key, int.from_bytes(digest[i : i + 4], "little"))
    return key


# ----------------------------------------------------------------------------- plan


@dataclasses.dataclass
class Plan:
    """A checked run: every size, option and path, decided before any work.

    Attributes:
      source: the video file or frame folder; ``info`` its :class:`irwarp.video.VideoInfo`.
      out: the output folder.
      settings: the :class:`Settings`; ``preset`` the :class:`irwarp.presets.LatentPreset`.
      indices: the video frames used (a range into the source).
      size, flow_size, warp_size, latent_size: ``(H, W)`` of the video, the flow, the warp
        and the latent grid.
      channels: latent channels ``C``.
      method, options: the registry method and its resolved options.
      num_frames, latent_frames: ``T`` and ``T_latent``; ``latent_index[j]`` is the video frame
        (0-based, within the used frames) of latent frame ``j``.
      key: the video's PRNG key; ``key_info`` how it was made.
    """

    source: str
    out: str
    settings: Settings
    preset: presets.LatentPreset
    info: video.VideoInfo
    indices: range
    size: tuple[int, int]
    flow_size: tuple[int, int]
    warp_size: tuple[int, int]
    latent_size: tuple[int, int]
    channels: int
    method: str
    options: dict
    num_frames: int
    latent_frames: int
    latent_index: tuple[int, ...]
    key: jax.Array
    key_info: str
    flow_files: video.FlowFiles | None = None
    fps: float = 0.0

    @property
    def shape_key(self) -> tuple:
        """Videos with equal shape keys can share a compiled batch."""
        s = self.settings
        return (
            self.num_frames,
            self.flow_size,
            self.warp_size,
            self.channels,
            self.method,
            tuple(sorted(self.options.items())),
            self.flow_files is not None,
            s.occlusion,
            s.stats,
            s.chunk,
        )

    def file_names(self) -> dict[str, str]:
        ext = ".npy" if self.settings.fmt == "npy" else ".safetensors"
        names = {"noise": "noise" + ext, "noise_frames": "noise_frames" + ext}
        if not self.settings.noise_frames:
            del names["noise_frames"]
        return names

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each noise file in the run's layout."""
        h, w = self.latent_size
        counts = {"noise": self.latent_frames, "noise_frames": self.num_frames}
        return {
            what: files.layout_shape((counts[what], h, w, self.channels), self.settings.layout)
            for what in self.file_names()
        }

    def settings_dict(self) -> dict:
        d = {k: getattr(self.settings, k) for k in SETTINGS_KEYS}
        d["options"] = dict(self.options)
        d["size"] = list(self.size)
        d["channels"] = self.channels
        d["warp_scale"] = self.warp_size[0] // self.latent_size[0]
        d["flow_downscale"] = self.size[0] // self.flow_size[0]
        d["source"] = os.path.abspath(self.source)
        d["key"] = self.key_info
        return files.jsonable(d)


def _positive(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {value!r}")
    return int(value)


def _check_settings(s: Settings) -> tuple[presets.LatentPreset, str, dict]:
    preset = presets.get_preset(s.preset)
    name, shorthand = methods.parse_method(s.method)
    m = methods.get_method(name)
    options = m.resolve({**shorthand, **dict(s.options)}, rank=2)
    if s.dtype not in files.DTYPES:
        raise ValueError(f"unknown dtype {s.dtype!r}; known: {', '.join(files.DTYPES)}")
    if s.layout not in files.LAYOUTS:
        raise ValueError(f"unknown layout {s.layout!r}; known: {', '.join(files.LAYOUTS)}")
    if s.fmt not in files.FORMATS:
        raise ValueError(f"unknown format {s.fmt!r}; known: {', '.join(files.FORMATS)}")
    files.check_format_dtype(s.fmt, s.dtype)
    if s.temporal_mode not in TEMPORAL_MODES:
        raise ValueError(
            f"unknown temporal mode {s.temporal_mode!r}; known: {', '.join(TEMPORAL_MODES)}"
        )
    _positive("frames", s.frames, 0)
    _positive("start", s.start, 0)
    _positive("stride", s.stride)
    _positive("chunk", s.chunk)
    if not isinstance(s.seed, (int, np.integer)) or isinstance(s.seed, bool):
        raise ValueError(f"seed must be an integer; got {s.seed!r}")
    if preset.channels is not None and s.channels not in (None, preset.channels):
        raise ValueError(
            f"preset {preset.name!r} has {preset.channels} latent channels; got channels="
            f"{s.channels} (use --preset none for another number)"
        )
    if s.flow not in FLOW_SOURCES and not os.path.exists(s.flow):
        raise ValueError(
            f"flow must be one of {', '.join(FLOW_SOURCES)} or an existing flow file; got "
            f"{s.flow!r}"
        )
    return preset, name, options


def _scales(s: Settings, preset, size) -> tuple[int, int]:
    f = preset.spatial
    scale = preset.warp_scale if s.warp_scale is None else _positive("warp_scale", s.warp_scale)
    if f % scale:
        divisors = [d for d in range(1, f + 1) if f % d == 0]
        raise ValueError(
            f"warp_scale must divide preset {preset.name!r}'s spatial factor {f} (one of "
            f"{divisors}); got {scale}"
        )
    rest = f // scale  # video pixels per warp pixel
    if s.flow_downscale is None:
        down = 2 if rest % 2 == 0 and min(size) // 2 >= DIS_MIN_SIDE else 1
    else:
        down = _positive("flow_downscale", s.flow_downscale)
        if rest % down:
            raise ValueError(
                f"flow_downscale must divide the video-to-warp factor {rest} (spatial {f} / "
                f"warp_scale {scale}); got {down}"
            )
    return scale, down


def plan(
    source: str | os.PathLike,
    out: str | os.PathLike,
    settings: Settings | None = None,
    *,
    key: jax.Array | None = None,
    key_info: str | None = None,
) -> Plan:
    """Check a run and decide its sizes, before any work or output.

    Args:
      source: a video file or a folder of frames.
      out: the output folder (created if missing).
      settings: the run's :class:`Settings`.
      key: the video's key (default ``jax.random.key(settings.seed)``).
      key_info: how ``key`` was made (for ``meta.json``).

    Raises:
      FileNotFoundError: for a missing video or flow file.
      ValueError: for an unreadable video, too few frames for one latent step, a size the
        preset's spatial factor does not divide (naming the size to pass), an unknown preset,
        method, option, layout, dtype or format, a flow file of the wrong shape, an unwritable
        output folder, or an output folder holding a different run (unless ``overwrite``).
    """
    s = Settings() if settings is None else settings
    preset, name, options = _check_settings(s)
    source = os.fspath(source)
    info = video.probe(source)
    idx = video.select_frames(
        info.num_frames, start=s.start, count=s.frames or None, stride=s.stride
    )
    if len(idx) < preset.min_frames():
        raise ValueError(
            f"preset {preset.name!r} needs at least {preset.min_frames()} video frames (two latent "
            f"frames); {source!r} gives {len(idx)} with start={s.start}, frames={s.frames}, "
            f"stride={s.stride} (it has {info.num_frames})"
        )
    num = preset.used_frames(len(idx))
    idx = idx[:num]
    size = tuple(int(v) for v in (s.size or info.size))
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with positive sides; got {s.size}")
    latent = preset.latent_size(size)
    if min(latent) < 2:
        f = preset.spatial
        raise ValueError(
            f"the latent grid {latent} of video size {size} needs both sides >= 2 (the per-frame "
            f"statistics); pass --size {max(size[0], 2 * f)}x{max(size[1], 2 * f)} or larger"
        )
    scale, down = _scales(s, preset, size)
    warp = (latent[0] * scale, latent[1] * scale)
    flow_size = (size[0] // down, size[1] // down)
    flow_files = None
    if s.flow in FLOW_SOURCES:
        if s.flow == "dis" and min(flow_size) < DIS_MIN_SIDE:
            raise ValueError(
                f"flow 'dis' needs frames of at least {DIS_MIN_SIDE} pixels a side; the flow is "
                f"estimated at {flow_size} (video {size} / flow_downscale {down}); pass a larger "
                "--size, --flow-downscale 1, or --flow farneback"
            )
        video.flow_estimator(s.flow, **({"preset": s.dis_preset} if s.flow == "dis" else {}))
    else:
        flow_files = video.load_flows(s.flow)
        expected = (num - 1, *size, 2)
        if tuple(flow_files.shape[1:]) != expected[1:] or flow_files.shape[0] < num - 1:
            raise ValueError(
                f"flow file {s.flow!r}: expected flows of shape (T - 1, H, W, 2) = {expected} "
                f"for the {num} frames used at video size {size}; got {tuple(flow_files.shape)}"
            )
        flow_size = size
    channels = preset.channels or _positive("channels", s.channels or 4)
    out = os.fspath(out)
    if key is None:
        key, key_info = jax.random.key(int(s.seed)), f"jax.random.key({int(s.seed)})"
    p = Plan(
        source=source,
        out=out,
        settings=s,
        preset=preset,
        info=info,
        indices=idx,
        size=size,
        flow_size=flow_size,
        warp_size=warp,
        latent_size=latent,
        channels=channels,
        method=name,
        options=options,
        num_frames=num,
        latent_frames=preset.latent_frames(num),
        latent_index=tuple(preset.video_frame(j) for j in range(preset.latent_frames(num))),
        key=key,
        key_info=key_info or "given",
        flow_files=flow_files,
        fps=(info.fps or 0.0) / s.stride,
    )
    _check_out(out, s.overwrite, p.settings_dict())
    return p


def _check_out(out: str, overwrite: bool, settings: dict) -> None:
    """An output folder we can write, holding no other run (unless ``overwrite``)."""
    try:
        os.makedirs(out, exist_ok=True)
        probe_fd, probe_path = files.temp_beside(os.path.join(out, "write-test"))
        os.close(probe_fd)
        os.remove(probe_path)
    except OSError as e:
        raise ValueError(f"cannot write to the output folder {out!r}: {e}") from e
    meta = os.path.join(out, META)
    if overwrite or not os.path.exists(meta):
        return
    try:
        with open(meta) as f:
            old = json.load(f).get("settings")
    except (OSError, ValueError):
        old = None
    if old != settings:
        changed = sorted(
            k for k in set(old or {}) | set(settings) if (old or {}).get(k) != settings.get(k)
        )
        raise ValueError(
            f"the output folder {out!r} already holds a different run (differs in: "
            f"{', '.join(changed) or 'unreadable meta.json'}); pass --overwrite to replace it, "
            "or another --out"
        )


# ----------------------------------------------------------------------------- flows (thread)


@jax.jit
def _masked(bwd, fwd, alpha, beta):
    return video.masked_backward_flow(bwd, fwd, alpha, beta)


class _Source:
    """Decodes one video's frames and computes their warp-resolution flows in a thread.

    ``get()`` returns ``(image, flow, backward_flow, occluded_fraction)`` for frames ``1 .. T - 1``
    in order
    (``image`` at the flow resolution, for the preview), after ``first()`` gave frame 0's image.
    Errors in the thread are raised by ``get``.
    """

    def __init__(self, p: Plan, maxsize: int, alpha: float = 0.01, beta: float = 0.5):
        self.p = p
        self.alpha, self.beta = alpha, beta
        self.times = {"decode": 0.0, "flow": 0.0, "occlusion": 0.0}
        self.forward = methods.get_method(p.method).flow == "forward"
        self._q: queue.Queue = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._frames = video.iter_frames(
            p.source,
            start=p.indices.start,
            count=p.num_frames,
            stride=p.indices.step,
            size=p.flow_size,
            info=p.info,
        )
        s = p.settings
        self._est = None
        if p.flow_files is None:
            params = {"preset": s.dis_preset} if s.flow == "dis" else {}
            self._est = video.flow_estimator(s.flow, **params)
        self.first_image = self._next_frame()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _next_frame(self):
        t0 = time.perf_counter()
        frame = next(self._frames, None)
        self.times["decode"] += time.perf_counter() - t0
        if frame is None:
            raise ValueError(
                f"{self.p.source!r}: expected {self.p.num_frames} frames; the video ended early"
            )
        return frame

    def _flow(self, k: int, prev, cur):
        """The method's flow and the backward flow (for the statistics) at warp resolution."""
        p, s = self.p, self.p.settings
        t0 = time.perf_counter()
        if self._est is not None:
            bwd = self._est(cur, prev)
            fwd = self._est(prev, cur) if (s.occlusion or self.forward) else None
        else:
            given = p.flow_files[k]
            bwd, fwd = (None, given) if self.forward else (given, None)
        t1 = time.perf_counter()
        self.times["flow"] += t1 - t0
        if s.occlusion and bwd is not None and fwd is not None:
            back, valid = _masked(jnp.asarray(bwd), jnp.asarray(fwd), self.alpha, self.beta)
            if self.forward:
                flow, valid = _masked(jnp.asarray(fwd), jnp.asarray(bwd), self.alpha, self.beta)
        else:
            if bwd is None:  # a forward flow file: its backward flow by inversion (statistics)
                bwd = flows_lib.backward_from_forward(jnp.asarray(fwd, jnp.float32))
            back = jnp.asarray(bwd, jnp.float32)
            valid = jnp.all(jnp.isfinite(back), axis=-1)
        if not self.forward:
            flow = back
        elif not (s.occlusion and bwd is not None and fwd is not None):
            flow = jnp.asarray(fwd, jnp.float32)
        down = p.flow_size[0] // p.warp_size[0]
        if down > 1:
            flow = resample.downsample_flow(flow, down)
            back = resample.downsample_flow(back, down) if self.forward else flow
        elif not self.forward:
            back = flow
        flow, back, valid = np.asarray(flow), np.asarray(back), np.asarray(valid)
        self.times["occlusion"] += time.perf_counter() - t1
        return flow, back, float(1.0 - valid.mean())

    def _work(self):
        try:
            prev = self.first_image
            for k in range(self.p.num_frames - 1):
                if self._stop.is_set():
                    return
                cur = self._next_frame()
                flow, back, occ = self._flow(k, prev, cur)
                self._put((cur, flow, back, occ))
                prev = cur
        except BaseException as e:  # handed to the consumer
            self._put(e)

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self):
        item = self._q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        close = getattr(self._frames, "close", None)
        if close is not None and not self._thread.is_alive():
            close()  # (a generator still running in the thread cannot be closed from here)


# ----------------------------------------------------------------------------- compiled steps


def _frame_stats(prev, cur, flow):
    """mean, variance of ``cur`` and its coherence with ``prev`` (KS is done on the host)."""
    m = cur.mean()
    v = jnp.mean(jnp.square(cur - m))
    coh = stats.temporal_correlation(prev, cur, flow)
    return jnp.stack([m, v, coh])


def _ks_rows(frames: np.ndarray) -> np.ndarray:
    """``(n, 2)`` KS statistic and p-value of each frame ``(n, h, w, C)`` against N(0, 1).

    The sort runs in numpy (about 4x faster than XLA's on CPU at 60x90x16), the rest in
    :func:`irwarp.stats.ks_normal_sorted`.
    """
    v = np.sort(frames.reshape(frames.shape[0], -1).astype(np.float32), axis=-1)
    d, p = stats.ks_normal_sorted(v)
    return np.stack([np.asarray(d), np.asarray(p)], axis=-1)


def _downsample(x, scale):
    return resample.downsample(x, scale) if scale > 1 else x


def _first_one(stream, scale, shape, key):
    noise0 = pipeline.first_frame(key, shape)
    return stream.init(noise0), _downsample(noise0, scale)


def _chunk_one(stream, scale, with_stats, key, state, flows, back, prev):
    """``chunk`` frames: the stream along ``flows``, latent frames, and their statistics.

    ``back`` is the backward flow of each frame (``flows`` itself for backward-flow methods),
    along which the coherence with the previous latent frame is measured.
    """
    state, y = stream.scan(key, state, flows)
    lat = jax.vmap(lambda a: _downsample(a, scale))(y)
    if not with_stats:
        return state, lat, jnp.zeros((flows.shape[0], 3), jnp.float32)
    lflow = resample.downsample_flow(back, scale) if scale > 1 else back
    before = jnp.concatenate([prev[None], lat[:-1]])
    return state, lat, jax.vmap(_frame_stats)(before, lat, lflow)


_COMPILED: dict = {}


def _per_device(fn):
    """``fn`` of one video, run on each device's block of one video (batch axis squeezed)."""

    def block(*args):
        out = fn(*jax.tree.map(lambda a: a[0], args))
        return jax.tree.map(lambda a: a[None], out)

    return block


def _compiled(kind: str, mesh: Mesh, *static):
    """One jit per (kind, devices, static args): ``shard_map`` over the batch, one video a device.

    Each device runs the one-video program on its own video (no ``vmap``), so a video's noise is
    the same bits whether it runs alone or in a batch of any size.
    """
    cache_key = (kind, tuple(d.id for d in mesh.devices.flat), static)
    if cache_key not in _COMPILED:
        spec = PartitionSpec(_AXIS)
        if kind == "first":
            stream, scale, shape = static
            fn = functools.partial(_first_one, stream, scale, shape)
        else:
            stream, scale, with_stats = static
            fn = functools.partial(_chunk_one, stream, scale, with_stats)
        mapped = jax.shard_map(
            _per_device(fn), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False
        )
        shard = NamedSharding(mesh, spec)
        _COMPILED[cache_key] = jax.jit(mapped, in_shardings=shard, out_shardings=shard)
    return _COMPILED[cache_key]


# ----------------------------------------------------------------------------- outputs


class _Outputs:
    """The files of one video: noise writers, stats rows, preview; committed at the end."""

    def __init__(self, p: Plan):
        self.p = p
        s = p.settings
        names = p.file_names()
        self.writers = {}
        # The folder stops looking finished before any of its files is replaced (a rerun or an
        # --overwrite that fails half-way must not leave an old meta.json beside new files).
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(p.out, META))
        try:
            for what in names:
                h, w = p.latent_size
                count = p.latent_frames if what == "noise" else p.num_frames
                meta = {"irwarp": __version__, "preset": p.preset.name, "layout": s.layout}
                self.writers[what] = files.open_writer(
                    os.path.join(p.out, names[what]),
                    s.fmt,
                    (count, h, w, p.channels),
                    s.dtype,
                    name="noise",
                    metadata=meta if s.fmt == "safetensors" else None,
                    layout=s.layout,
                )
            self.preview = _Preview(p) if s.preview else None
        except BaseException:
            self.abort()
            raise
        self.rows: list[dict] = []
        self.occluded: list[float] = []
        self.groups: list[np.ndarray] = []
        self.t = 0
        self.seconds = {"write": 0.0, "preview": 0.0}

    def add(self, latent: np.ndarray, image: np.ndarray, row: np.ndarray | None, occ: float | None):
        """Video frame ``t`` (latent resolution, THWC float32) and its image and stats."""
        p, t = self.p, self.t
        t0 = time.perf_counter()
        if "noise_frames" in self.writers:
            self.writers["noise_frames"].append(latent)
        frame = self._latent_frame(latent)
        if frame is not None:
            self.writers["noise"].append(frame)
        t1 = time.perf_counter()
        self.seconds["write"] += t1 - t0
        if self.preview is not None:
            self.preview.add(image, latent)
            self.seconds["preview"] += time.perf_counter() - t1
        if row is not None:
            r = {"t": t, "video_frame": p.indices[t], "latent_frame": None}
            r.update(zip(("mean", "var", "coherence", "ks", "ks_p"), row.tolist(), strict=True))
            if t == 0:
                r["coherence"] = None
            if occ is not None:
                r["occluded"] = occ
            self.rows.append(r)
        if occ is not None:
            self.occluded.append(occ)
        self.t += 1

    def _latent_frame(self, x: np.ndarray) -> np.ndarray | None:
        """The latent frame completed by video frame ``t``, or None (streaming temporal_compress)."""
        pre, t, mode = self.p.preset, self.t, self.p.settings.temporal_mode
        k = pre.temporal
        if k == 1:
            return x
        if pre.causal:
            if t == 0:
                return x
            self.groups.append(x)
            if len(self.groups) < k:
                return None
            # Frame 0 stands in front so that the causal rule of temporal_compress picks the group.
            group = np.stack([x, *self.groups])
            self.groups = []
            return np.asarray(resample.temporal_compress(group, k, mode=mode, causal=True)[1])
        self.groups.append(x)
        if len(self.groups) < k:
            return None
        group, self.groups = np.stack(self.groups), []
        return np.asarray(resample.temporal_compress(group, k, mode=mode)[0])

    def commit(self, meta: dict) -> None:
        for w in self.writers.values():
            w.close()
        if self.preview is not None:
            self.preview.close()
        if self.rows:
            for j, t in enumerate(self.p.latent_index):
                self.rows[t]["latent_frame"] = j
            files.write_json(os.path.join(self.p.out, STATS), _stats_doc(self.p, self.rows))
        # Outputs of an earlier run that this one does not write (another format, --latent-only,
        # --no-stats, --no-preview) would sit beside a meta.json that does not describe them.
        kept = set(self.p.file_names().values())
        if self.rows:
            kept.add(STATS)
        if self.preview is not None:
            kept.add(PREVIEW)
        for name in _OUTPUT_NAMES - kept:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.p.out, name))
        files.write_json(os.path.join(self.p.out, META), meta)

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()
        if getattr(self, "preview", None) is not None:
            self.preview.abort()


def _stats_doc(p: Plan, rows: list[dict]) -> dict:
    lat = [rows[t] for t in p.latent_index]
    coh = [
        r["coherence"] for r in rows if r["coherence"] is not None and math.isfinite(r["coherence"])
    ]
    summary = {
        "frames": len(rows),
        "mean_abs_max": max(abs(r["mean"]) for r in rows),
        "var_min": min(r["var"] for r in rows),
        "var_max": max(r["var"] for r in rows),
        "ks_p_min_latent": min(r["ks_p"] for r in lat),
        "coherence_median": float(np.median(coh)) if coh else None,
        "n_per_frame": int(np.prod(p.latent_size) * p.channels),
    }
    return {"summary": summary, "frames": rows}


class _Preview:
    """``preview.mp4``: the video beside its noise (channels 0-2 as RGB), written as it goes."""

    def __init__(self, p: Plan):
        imageio = video.require_module("imageio.v2", "imageio imageio-ffmpeg")
        self.path = os.path.join(p.out, PREVIEW)
        fd, self.tmp = files.temp_beside(self.path, ".mp4")
        os.close(fd)
        self.h, self.w = p.flow_size
        self.writer = imageio.get_writer(
            self.tmp,
            format="FFMPEG",
            fps=max(p.fps, 1.0),
            codec="libx264",
            quality=6,
            macro_block_size=1,
            ffmpeg_log_level="error",
        )

    def add(self, image: np.ndarray, latent: np.ndarray) -> None:
        rgb = np.clip(latent[..., :3] * 0.25 * 255 + 127.5, 0, 255).astype(np.uint8)
        if rgb.shape[-1] < 3:
            rgb = np.repeat(rgb[..., :1], 3, axis=-1)
        zoom_h, zoom_w = -(-self.h // rgb.shape[0]), -(-self.w // rgb.shape[1])
        big = np.repeat(np.repeat(rgb, zoom_h, axis=0), zoom_w, axis=1)[: self.h, : self.w]
        frame = np.concatenate([image, big], axis=1)
        pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))
        self.writer.append_data(frame)

    def close(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:  # the preview is best effort on the way out
            pass
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


# ----------------------------------------------------------------------------- run


def run(p: Plan, *, progress: bool = True) -> dict:
    """Run one planned video; returns its ``meta.json`` content. See :func:`run_batch`."""
    return run_batch([p], progress=progress)[0]


def run_batch(
    plans: Sequence[Plan],
    *,
    devices: Sequence[jax.Device] | None = None,
    progress: bool | Callable[[int], None] = True,
) -> list[dict]:
    """Warp several planned videos of one shape together, one video per device.

    The batch axis is sharded over ``len(plans)`` of ``devices`` (default: this process's
    local devices), one video each, so every video runs the same per-device program whatever
    the batch: its noise is bit-identical to a run on its own.

    Returns:
      the ``meta.json`` content of each video.

    Raises:
      ValueError: if the plans differ in shape, or there are more plans than devices; and what
        decoding or flow estimation raises (no video of the batch is then committed).
    """
    plans = list(plans)
    if not plans:
        return []
    keys = {p.shape_key for p in plans}
    if len(keys) != 1:
        raise ValueError(f"run_batch needs plans of one shape; got {len(keys)} different shapes")
    devices = list(devices or jax.local_devices())
    if len(plans) > len(devices):
        raise ValueError(
            f"expected at most {len(devices)} plans (one per device); got {len(plans)}"
        )
    mesh = Mesh(np.array(devices[: len(plans)]), (_AXIS,))
    p0, b = plans[0], len(plans)
    s = p0.settings
    stream = noise_stream(p0.method, **p0.options)
    scale = p0.warp_size[0] // p0.latent_size[0]
    shape = (*p0.warp_size, p0.channels)
    t_start = time.perf_counter()
    sources, outs = [], []
    try:
        for p in plans:
            sources.append(_Source(p, maxsize=2 * s.chunk))
            outs.append(_Outputs(p))
        keys = jnp.stack([jax.random.key_data(p.key) for p in plans])
        keys = jax.random.wrap_key_data(keys)
        first = _compiled("first", mesh, stream, scale, shape)
        step = _compiled("chunk", mesh, stream, scale, bool(s.stats))
        t0 = time.perf_counter()
        state, lat0 = first(keys)
        lat0 = np.asarray(lat0)
        compile_s = time.perf_counter() - t0
        prev = jnp.asarray(lat0)
        bar = _bar(progress, p0.num_frames * b)
        for i, (src, o) in enumerate(zip(sources, outs, strict=True)):
            o.add(lat0[i], src.first_image, _stats0(lat0[i]) if s.stats else None, None)
        done, warp_s, first_chunk_s = 1, 0.0, None
        fh, fw = p0.warp_size
        while done < p0.num_frames:
            n = min(s.chunk, p0.num_frames - done)
            flows = np.zeros((b, s.chunk, fh, fw, 2), np.float32)
            backs = np.zeros_like(flows) if sources[0].forward else flows
            images, occ = [[] for _ in plans], [[] for _ in plans]
            for i, src in enumerate(sources):
                for j in range(n):
                    image, flow, back, o_frac = src.get()
                    images[i].append(image)
                    occ[i].append(o_frac)
                    flows[i, j] = flow
                    backs[i, j] = back
            t0 = time.perf_counter()
            flows_j = jnp.asarray(flows)
            backs_j = jnp.asarray(backs) if sources[0].forward else flows_j
            state, lat, rows = step(keys, state, flows_j, backs_j, prev)
            lat, rows = np.asarray(lat), np.asarray(rows)
            if s.stats:
                ks = _ks_rows(lat[:, :n].reshape(-1, *lat.shape[2:])).reshape(b, n, 2)
                rows = np.concatenate([rows[:, :n], ks], axis=-1)
            dt = time.perf_counter() - t0
            if first_chunk_s is None:
                first_chunk_s = dt
            else:
                warp_s += dt
            prev = jnp.asarray(lat[:, n - 1])
            for i, o in enumerate(outs):
                for j in range(n):
                    o.add(lat[i, j], images[i][j], rows[i, j] if s.stats else None, occ[i][j])
            done += n
            bar(done * b)
        total = time.perf_counter() - t_start
        metas = []
        for p, src, o in zip(plans, sources, outs, strict=True):
            timings = {
                "total_s": total,
                "compile_first_s": compile_s,
                "first_chunk_s": first_chunk_s,
                "warp_s": warp_s,
                **{k + "_s": v for k, v in src.times.items()},
                **{k + "_s": v for k, v in o.seconds.items()},
                "batch": b,
                "frames_per_s": p.num_frames * b / total,
            }
            meta = _meta(p, o, timings)
            o.commit(meta)
            metas.append(meta)
        return metas
    except BaseException:
        for o in outs:
            o.abort()
        raise
    finally:
        for src in sources:
            src.close()


def _stats0(x: np.ndarray) -> np.ndarray:
    """Frame 0's row: mean, variance, no coherence, KS."""
    m = float(np.mean(x, dtype=np.float64))
    v = float(np.mean(np.square(x.astype(np.float64) - m)))
    return np.concatenate([[m, v, np.nan], _ks_rows(x[None])[0]])


def _bar(progress, total: int) -> Callable[[int], None]:
    if callable(progress):
        return progress
    return Progress(total, enabled=bool(progress), unit="frames").update


def _meta(p: Plan, o: _Outputs, timings: dict) -> dict:
    s = p.settings
    names, shapes = p.file_names(), p.shapes()
    return files.jsonable(
        {
            "irwarp": __version__,
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "settings": p.settings_dict(),
            "preset": dataclasses.asdict(p.preset),
            "method": p.method,
            "options": dict(p.options),
            "seed": s.seed,
            "key": p.key_info,
            "source": os.path.abspath(p.source),
            "video": {
                "frames_used": list(p.indices) if len(p.indices) <= 100000 else None,
                "num_frames": p.num_frames,
                "size": list(p.size),
                "native_size": list(p.info.size),
                "fps": p.fps,
            },
            "flow_size": list(p.flow_size),
            "warp_size": list(p.warp_size),
            "latent_size": list(p.latent_size),
            "files": {
                what: {
                    "name": names[what],
                    "shape": list(shapes[what]),
                    "layout": s.layout,
                    "dtype": s.dtype,
                }
                for what in names
            },
            "latent_frames": p.latent_frames,
            "latent_video_frames": list(p.latent_index),
            "temporal_mode": s.temporal_mode,
            "occluded_mean": float(np.mean(o.occluded)) if o.occluded else 0.0,
            "timings": timings,
        }
    )
