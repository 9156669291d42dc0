"""Warp resolution for latent noise: accuracy and cost of warping at latent x s, s = 1 .. 8.

    python -m experiments.warp_resolution --config=configs/warp_resolution.py --workdir=DIR

A latent video model (CogVideoX: 480x720 video, 60x90x16 latent, spatial factor 8) takes noise at
the latent resolution. It can be warped at the latent resolution (``s = 1``), at the video
resolution (``s = factor``, the reference: the finest the flow is known at) or in between, and is
then brought to the latent by the exact integral downsampling ``irwarp.resample.downsample(noise,
s)``. For each scale ``s`` and method (``irwarp.noise_stream``), along each flow:

- **Same draws.** Frame 0 is drawn once at the video resolution and exactly downsampled to every
  warp resolution, so every scale starts from the same latent frame 0 (and scale ``s`` holds the
  reference's noise integrated over ``factor / s`` pixels). Every scale uses the same stream key;
  the fresh noise a warp draws (sub-pixel Brownian-bridge detail, disoccluded pixels) necessarily
  differs between scales. Flows at scale ``s`` are ``downsample_flow(video_flow, factor / s)``
  (a block with a disoccluded pixel stays disoccluded).
- **Accuracy.** After ``t`` frames, the Pearson correlation between the latent noise of scale
  ``s`` and of the reference, pooled over latent pixels and channels, on the latent pixels that
  *stayed valid*: their backward trajectory to frame 0 along the latent flow
  (``downsample_flow(video_flow, factor)``) stayed inside the frame (half a pixel in) and never met
  a disoccluded latent block (the cell holding each pre-image was valid in the frame before;
  NaN once fewer than 1 % are left). Fresh noise is where the scales must disagree, so the masked
  number isolates the warp's accuracy; the correlation over all pixels is reported too. With
  ``reference_repeat`` the reference is run again with another key: the correlation between two
  reference runs is the ceiling (the fine sub-pixel noise is fresh in both).
- **Whiteness** at the latent resolution, per frame (``irwarp.stats.moments``, ``autocorr`` and
  ``whiteness_checks(..., frame_axes=0)``: every frame judged on its own, Bonferroni over frames),
  and the **temporal coherence** ``irwarp.stats.temporal_correlation(prev, cur, latent_flow)``
  averaged over frames.
- **Speed**: median seconds per frame of ``stream.scan`` plus the downsample over the whole video
  after a warm-up call (compilation apart), at the experiment's latent and at a preset's latent
  (``preset_latent``, CogVideoX's 60x90 by default; a scale predicted above
  ``preset_max_s_per_frame`` is extrapolated by ``s^2`` instead, and the table says so), each
  next to ``jax.random.normal`` of the warp shape in the same run.

Writes to the workdir: ``config.json``, ``metrics.jsonl`` (one ``kind="accuracy"`` line per flow x
method x scale with the per-frame curves, one ``kind="speed"`` line per shape x method x scale),
``results.md`` (the tables) and ``warp_resolution.png`` (correlation against t per scale; speed
against scale).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import irwarp
from experiments.lib import clips, launch, media, tables
from experiments.lib import measure as measure_lib
from experiments.lib import methods as methods_lib
from experiments.lib import workdir as workdir_lib
from irwarp import flows as flows_lib
from irwarp import resample, stats

REF_REPEAT = "ref2"  # the scale label of the reference run with another key
COLUMNS_SPEED = ("method", "scale s", "warp shape", "s / frame", "normal s / frame", "x normal")


def check_config(config) -> tuple[int, int, int, tuple[int, ...]]:
    """``(latent H, latent W, factor, scales)`` of a config.

    Raises:
      ValueError: if a scale does not divide the factor, the video size is not a multiple of the
        factor, the reference scale is missing, or an eval frame is out of range.
    """
    factor = int(config.factor)
    hv, wv = (int(s) for s in config.video_size)
    scales = tuple(sorted(int(s) for s in config.scales))
    if hv % factor or wv % factor:
        raise ValueError(f"video_size {(hv, wv)} must be a multiple of factor {factor}")
    bad = [s for s in scales if s < 1 or factor % s]
    if bad or factor not in scales:
        raise ValueError(f"scales must divide factor {factor} and include it; got {scales}")
    bad_t = [t for t in config.eval_frames if not 1 <= int(t) <= int(config.frames)]
    if bad_t:
        raise ValueError(f"eval_frames must lie in [1, frames={config.frames}]; got {bad_t}")
    return hv // factor, wv // factor, factor, scales


def video_flows(config, name: str) -> np.ndarray:
    """``(T, H, W, 2)`` backward flows at the video resolution (NaN where disoccluded)."""
    hv, wv = (int(s) for s in config.video_size)
    t = int(config.frames)
    if name == "clip":
        _, flows, _, _ = clips.load_clip(
            clips.clip_path("", str(config.clip)),
            start=int(config.clip_start),
            count=t + 1,
            stride=int(config.clip_stride),
            size=(hv, wv),
            flow=str(config.flow_method),
            alpha=float(config.occlusion_alpha),
            beta=float(config.occlusion_beta),
        )
        if flows.shape[0] < t:
            raise ValueError(f"clip {config.clip!r} has fewer than {t + 1} frames")
        return flows
    if name == "rotzoom":
        # Both are affine about the centre; the sum of their displacements is the affine flow
        # with matrix R^T + 1/factor - I.
        rot = flows_lib.rotation(hv, wv, float(config.rotzoom_deg))
        zoom = flows_lib.zoom(hv, wv, float(config.rotzoom_factor))
        return np.broadcast_to(np.asarray(rot + zoom), (t, hv, wv, 2)).copy()
    raise ValueError(f"unknown flow {name!r}; known: 'clip', 'rotzoom'")


def valid_masks(latent_flows: np.ndarray) -> np.ndarray:
    """``(T, H, W)`` bool: latent pixels whose trajectory back to frame 0 stayed valid.

    Frame ``t``'s pixel ``d`` is valid when its pre-image ``q = centre_d + flow_t[d]`` is finite,
    lies at least half a pixel inside the frame, and the cell containing ``q`` was valid at frame
    ``t - 1`` (every pixel is valid at frame 0).
    """
    t_count, h, w, _ = latent_flows.shape
    y, x = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    prev = np.ones((h, w), bool)
    out = []
    for t in range(t_count):
        qx = x + latent_flows[t, ..., 0]
        qy = y + latent_flows[t, ..., 1]
        ok = np.isfinite(qx) & np.isfinite(qy)
        ok &= (qx >= 0.5) & (qx <= w - 0.5) & (qy >= 0.5) & (qy <= h - 0.5)
        # The cell containing q (the mask carried by nearest sampling: no erosion per frame).
        fx = np.clip(np.floor(np.where(ok, qx, 0.5)).astype(int), 0, w - 1)
        fy = np.clip(np.floor(np.where(ok, qy, 0.5)).astype(int), 0, h - 1)
        ok &= prev[fy, fx]
        out.append(ok)
        prev = ok
    return np.stack(out)


def pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of ``a`` and ``b`` ``(H, W, C)`` pooled over pixels ``mask`` and channels.

    NaN where ``mask`` keeps fewer than 1 % of the pixels.
    """
    if mask is not None:
        if mask.sum() < 0.01 * mask.size:  # too few valid pixels left for a number
            return float("nan")
        a, b = a[mask], b[mask]
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    if a.size < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


@jax.jit
def _frame_stats(latent):
    """Per-frame mean, variance and lag-1 autocorrelations of ``(T, H, W, C)`` latent frames."""
    mom = jax.vmap(stats.moments)(latent)
    ac_x, ac_y = jax.vmap(lambda f: stats.autocorr(f, 1))(latent)
    return mom["mean"], mom["var"], ac_x, ac_y


@jax.jit
def _coherence(prev, cur, flows):
    return jax.vmap(stats.temporal_correlation)(prev, cur, flows)


def warp_latent(method: str, key, noise0, flows, s: int):
    """``(T, H/s, W/s, C)``: ``stream.scan`` from ``noise0`` along ``flows``, downsampled by ``s``."""
    stream = irwarp.noise_stream(method)
    _, frames = stream.scan(key, stream.init(noise0), flows)
    return resample.downsample(frames, s)


def time_scale(method: str, key, noise0, flows, s: int, repeats: int) -> tuple[float, float]:
    """``(seconds per frame of scan + downsample, seconds per frame of jax.random.normal)``."""
    t = flows.shape[0]
    warp_s = measure_lib.median_seconds(
        lambda: warp_latent(method, key, noise0, flows, s), repeats=repeats
    )
    normal = jax.jit(lambda k: jax.random.normal(k, (t, *noise0.shape), jnp.float32))
    normal_s = measure_lib.median_seconds(lambda: normal(key), repeats=repeats)
    return warp_s / t, normal_s / t


def accuracy(config, flows_v, key0, key_warp):
    """Runs every scale and method along the video-resolution flows ``flows_v``.

    Returns ``{(method, label): dict(latent=(T+1, h, w, C) array, seconds=...)}`` with label
    the scale (an int) or :data:`REF_REPEAT`.
    """
    h, w, factor, scales = check_config(config)
    c = int(config.channels)
    hv, wv = h * factor, w * factor
    x_video = jax.random.normal(key0, (hv, wv, c), jnp.float32)
    x_latent0 = np.asarray(resample.downsample(x_video, factor))
    runs = {}
    for m in config.methods:
        labels = list(scales) + ([REF_REPEAT] if config.reference_repeat else [])
        for label in labels:
            s = factor if label == REF_REPEAT else label
            k = jax.random.fold_in(key_warp, 1) if label == REF_REPEAT else key_warp
            noise0 = resample.downsample(x_video, factor // s)
            flows_s = resample.downsample_flow(jnp.asarray(flows_v), factor // s)
            t0 = time.perf_counter()
            latent = np.asarray(warp_latent(m, k, noise0, flows_s, s))
            first = time.perf_counter() - t0
            runs[m, label] = dict(
                latent=np.concatenate([x_latent0[None], latent]), first_s=first, s=s, key=k
            )
            runs[m, label]["noise0"], runs[m, label]["flows"] = noise0, flows_s
            logging.info("%s s=%s: first call %.2f s", m, label, first)
    return runs


def accuracy_rows(config, fname, flows_v, runs, speed) -> list[dict]:
    """One metric row per method x scale of one flow."""
    h, w, factor, scales = check_config(config)
    latent_flows = np.asarray(resample.downsample_flow(jnp.asarray(flows_v), factor))
    masks = valid_masks(latent_flows)
    n = h * w * int(config.channels)
    rows = []
    for (m, label), run in runs.items():
        z = run["latent"]
        ref = runs[m, factor]["latent"]
        t_all = z.shape[0] - 1
        corr_valid = [pearson(z[t], ref[t], masks[t - 1]) for t in range(1, t_all + 1)]
        corr_all = [pearson(z[t], ref[t]) for t in range(1, t_all + 1)]
        mean, var, ac_x, ac_y = (np.asarray(a) for a in _frame_stats(jnp.asarray(z[1:])))
        checks = stats.whiteness_checks(jnp.asarray(z[1:]), frame_axes=0)
        coh = np.asarray(_coherence(jnp.asarray(z[:-1]), jnp.asarray(z[1:]), latent_flows))
        sec, normal_sec = speed[m, run["s"]]
        rows.append(
            dict(
                kind="accuracy",
                flow=fname,
                method=m,
                scale=label,
                warp_shape=[h * run["s"], w * run["s"]],
                corr_valid=corr_valid,
                corr_all=corr_all,
                valid_frac=[float(k.mean()) for k in masks],
                disoccluded_frac=float(np.mean(~np.isfinite(latent_flows[..., 0]))),
                mean=float(mean.mean()),
                var=float(var.mean()),
                max_abs_mean_z=float(np.max(np.abs(mean)) * np.sqrt(n)),
                max_abs_var_z=float(np.max(np.abs(var - 1.0)) / np.sqrt(2.0 / n)),
                max_abs_ac=float(max(np.max(np.abs(ac_x)), np.max(np.abs(ac_y)))),
                white=bool(checks["all"]),
                failed=[k for k in ("mean", "var", "ks", "ac_x", "ac_y") if not checks[k]],
                coherence=[float(v) for v in coh],
                coherence_mean=float(np.nanmean(coh)),
                s_per_frame=sec,
                normal_s_per_frame=normal_sec,
                samples_per_frame=n,
            )
        )
    return rows


def preset_speed(config) -> list[dict]:
    """Seconds per frame at the preset latent for every method and scale (extrapolated past the
    budget)."""
    if not config.preset_latent:
        return []
    h, w = (int(s) for s in config.preset_latent)
    _, _, factor, scales = check_config(config)
    c, t = int(config.channels), int(config.preset_frames)
    key = jax.random.key(int(config.seed) + 1)
    rows = []
    for m in config.methods:
        last = None
        for s in scales:
            hs, ws = h * s, w * s
            predicted = None if last is None else last[1] * (s / last[0]) ** 2
            row = dict(kind="speed", shape="preset", method=m, scale=s, warp_shape=[hs, ws])
            if predicted is not None and predicted > float(config.preset_max_s_per_frame):
                row.update(s_per_frame=predicted, normal_s_per_frame=None, extrapolated=True)
            else:
                flow = flows_lib.rotation(hs, ws, float(config.preset_rotation_deg))
                flows = jnp.broadcast_to(flow, (t, hs, ws, 2))
                noise0 = jax.random.normal(key, (hs, ws, c), jnp.float32)
                sec, normal_sec = time_scale(m, key, noise0, flows, s, int(config.repeats))
                row.update(s_per_frame=sec, normal_s_per_frame=normal_sec, extrapolated=False)
                last = (s, sec)
            logging.info("preset %s s=%d %dx%d: %.4f s/frame", m, s, hs, ws, row["s_per_frame"])
            rows.append(row)
    return rows


def _accuracy_columns(eval_frames) -> tuple[str, ...]:
    return (
        "flow",
        "method",
        "scale s",
        "warp res",
        *(f"corr t={t}" for t in eval_frames),
        *(f"all px t={t}" for t in eval_frames),
        *(f"valid px t={t}" for t in eval_frames),
        "mean",
        "var",
        "max abs ac",
        "white",
        "coherence",
        "s / frame",
        "x normal",
    )


def _accuracy_cells(r: dict, eval_frames) -> list[str]:
    return [
        r["flow"],
        r["method"],
        r["label"],
        f"{r['warp_shape'][0]}x{r['warp_shape'][1]}",
        *(tables.cell(r["corr_valid"][t - 1], 3) for t in eval_frames),
        *(tables.cell(r["corr_all"][t - 1], 3) for t in eval_frames),
        *(tables.cell(r["valid_frac"][t - 1], 2) for t in eval_frames),
        tables.cell(r["mean"], 4),
        tables.cell(r["var"], 3),
        tables.cell(r["max_abs_ac"], 3),
        "pass" if r["white"] else "FAIL (" + ", ".join(r["failed"]) + ")",
        tables.cell(r["coherence_mean"], 3),
        tables.cell(r["s_per_frame"], 4),
        tables.cell(r["s_per_frame"] / r["normal_s_per_frame"], 1),
    ]


def _speed_cells(r: dict) -> list[str]:
    ratio = None if r["normal_s_per_frame"] is None else r["s_per_frame"] / r["normal_s_per_frame"]
    sec = tables.cell(r["s_per_frame"], 4) + (" (extrapolated)" if r["extrapolated"] else "")
    return [
        r["method"],
        str(r["scale"]),
        f"{r['warp_shape'][0]}x{r['warp_shape'][1]}",
        sec,
        tables.cell(r["normal_s_per_frame"], 5),
        "-" if ratio is None else tables.cell(ratio, 1),
    ]


def draw(rows, preset_rows, config, wd: workdir_lib.Workdir) -> str:
    flows = list(config.flows)
    methods = list(config.methods)
    fig = media.new_figure(3.2 * len(flows) + 3.4, 2.6 * len(methods))
    grid = fig.subplots(len(methods), len(flows) + 1, squeeze=False)
    for i, m in enumerate(methods):
        for j, f in enumerate(flows):
            ax = grid[i][j]
            for r in rows:
                if r["flow"] != f or r["method"] != m:
                    continue
                t = np.arange(1, len(r["corr_valid"]) + 1)
                ax.plot(t, r["corr_valid"], label=r["label"], lw=1.2)
            ax.set_ylim(-0.05, 1.05)
            ax.set_xscale("log")
            ax.set_title(f"{f}, {methods_lib.method_label(m)}", fontsize=9)
            ax.set_xlabel("frame t")
            if j == 0:
                ax.set_ylabel("corr with s = ref (valid px)")
            ax.legend(fontsize=7, title="scale s", title_fontsize=7)
        ax = grid[i][-1]
        latent_pts = [
            r
            for r in rows
            if r["method"] == m and r["flow"] == flows[0] and r["scale"] != REF_REPEAT
        ]
        preset_pts = [r for r in preset_rows if r["method"] == m]
        for label, pts in (("experiment latent", latent_pts), ("preset", preset_pts)):
            if not pts:
                continue
            xs = [r["scale"] for r in pts]
            ax.plot(xs, [r["s_per_frame"] for r in pts], "o-", label=f"{m}, {label}")
            norm = [(x, r["normal_s_per_frame"]) for x, r in zip(xs, pts, strict=True)]
            norm = [p for p in norm if p[1]]
            if norm:
                ax.plot(*zip(*norm, strict=True), "x--", label=f"random.normal, {label}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("scale s")
        ax.set_ylabel("s / frame")
        ax.legend(fontsize=6)
    fig.suptitle("warping at latent x s, downsampled: correlation with s = factor, and cost")
    return wd.save_figure(fig, "warp_resolution.png")


def run(config, workdir: str) -> list[dict]:
    """Runs the experiment of ``config`` (configs/warp_resolution.py) and writes into ``workdir``.

    Returns:
      The metric rows as written to ``metrics.jsonl`` (accuracy rows, then speed rows).
    """
    h, w, factor, scales = check_config(config)
    methods_lib.check_methods(config.methods)
    eval_frames = tuple(int(t) for t in config.eval_frames)
    key = jax.random.key(int(config.seed))
    key0, key_warp = jax.random.split(key)
    t_start = time.perf_counter()
    rows = []
    with workdir_lib.Workdir(workdir, config, name="warp_resolution") as wd:
        speed = {}
        for fi, fname in enumerate(config.flows):
            flows_v = video_flows(config, fname)
            runs = accuracy(config, flows_v, key0, key_warp)
            if fi == 0:  # timed on the first flow (the cost does not depend on its content)
                for (m, label), r in runs.items():
                    if label != REF_REPEAT:
                        speed[m, label] = time_scale(
                            m, r["key"], r["noise0"], r["flows"], label, int(config.repeats)
                        )
            for r in accuracy_rows(config, fname, flows_v, runs, speed):
                r["label"] = f"{factor}, other key" if r["scale"] == REF_REPEAT else str(r["scale"])
                wd.metric(r)
                rows.append(r)
                logging.info(
                    "%s %s s=%s corr %s white %s coherence %.3f",
                    fname,
                    r["method"],
                    r["label"],
                    [round(r["corr_valid"][t - 1], 3) for t in eval_frames],
                    r["white"],
                    r["coherence_mean"],
                )
        preset_rows = preset_speed(config)
        for r in preset_rows:
            wd.metric(r)
        figure = draw(rows, preset_rows, config, wd)
        elapsed = time.perf_counter() - t_start
        hv, wv = h * factor, w * factor
        intro = (
            f"Latent {h}x{w}x{config.channels} (video {hv}x{wv}, factor {factor}), T = "
            f"{config.frames} warped frames. Flows: `clip` = DIS optical flow of "
            f"`{config.clip}` (frames {config.clip_start}.., stride {config.clip_stride}) at "
            f"{hv}x{wv} with forward-backward occlusion masks; `rotzoom` = "
            f"{config.rotzoom_deg:g} deg rotation + {config.rotzoom_factor:g}x zoom per frame. "
            f"Scale s warps at latent x s along `downsample_flow(video_flow, {factor} / s)` from "
            f"`downsample(frame0_video, {factor} / s)` and downsamples by s. *corr t*: Pearson "
            "correlation with the latent noise of the reference s = "
            f"{factor} after t frames, pooled over channels and the latent pixels whose trajectory "
            "back to frame 0 stayed in the frame and clear of disocclusions (*valid px*: their "
            f"fraction). *{factor}, other key*: the reference run again with another stream key "
            "(the ceiling: fresh sub-pixel noise differs between any two runs). *mean*, *var*: "
            "averaged over frames; *max abs ac*: largest lag-1 spatial autocorrelation over "
            "frames; *white*: `whiteness_checks(frames, frame_axes=0)`; *coherence*: "
            "`temporal_correlation(prev, cur, latent_flow)` averaged over frames; *s / frame*: "
            "median of `stream.scan` + `downsample` over the video after a warm-up call, divided "
            f"by T; *x normal*: over `jax.random.normal` of the warp shape. Wall time "
            f"{elapsed:.0f} s."
        )
        parts = [
            launch.header(
                "Warp resolution for latent noise",
                launch.command_line("warp_resolution", workdir),
                intro,
            ),
            "## Correlation with the reference, whiteness, coherence and cost",
            "",
            tables.markdown_table(
                _accuracy_columns(eval_frames), [_accuracy_cells(r, eval_frames) for r in rows]
            ),
            "",
        ]
        if preset_rows:
            ph, pw = (int(s) for s in config.preset_latent)
            parts += [
                f"## Speed at the preset latent {ph}x{pw}x{config.channels}",
                "",
                f"{config.preset_frames} frames per timed scan, {config.preset_rotation_deg:g} "
                "deg rotation per frame; a scale predicted above "
                f"{config.preset_max_s_per_frame:g} s / frame is extrapolated by s^2 from the "
                "previous one.",
                "",
                tables.markdown_table(COLUMNS_SPEED, [_speed_cells(r) for r in preset_rows]),
                "",
            ]
        parts += ["## Figures", "", f"- `{figure.rsplit('/', 1)[-1]}`"]
        wd.write_summary("\n".join(parts), name="results.md")
    return rows + preset_rows


if __name__ == "__main__":
    launch.run_main("warp_resolution", run)
