"""Noise for latent models: temporal compression, and warping at high resolution then downsampling.

    python -m experiments.latent_noise --config=configs/latent_noise.py --workdir=DIR

About 10 minutes on 2 busy CPU cores with the default config, mostly XLA compilation (the
``:small`` variant: about 40 s).

Part A, temporal compression. Noise videos of ``T`` frames are warped along constant translations
and a rotation (``irwarp.warp_sequence``), plus two extremes: ``fresh`` (independent frames) and
``static`` (the same frame repeated). Each is compressed to ``T / k`` frames with
``irwarp.resample.temporal_compress`` in the modes ``subsample``, ``integral`` (sum / sqrt(k)) and
``mean`` (sum / k, the variance-shrinking average). Per mode, motion and ``k`` we report the
variance, the KS p-value (the smallest over the compressed frames, each tested on its own), the
largest lag-1 spatial autocorrelation, and the temporal coherence of the compressed video: the
lag-1 correlation between consecutive compressed frames along the ``k``-frame motion
(``irwarp.stats.temporal_correlation`` with the composed flow, bilinear), next to the same number
for the uncompressed video at lag 1.

Part B, resolution consistency. A coarse (latent) noise ``X`` ``(B, H, W, C)`` is warped by a
flow in two ways: directly (``irwarp.warp``), and at ``k`` times the resolution:
``downsample(warp(upsample(X, k), upsample_flow(flow, k)), k)``. Both outputs are white, so they
are compared through their conditional means given ``X``, ``P = E[Y | X]``, which hold all their
covariance with ``X`` (``P_d = sum_s a_ds X_s / sqrt(A_d)`` for a record with areas ``a``; for the
fine path, the fine record applied to ``E[upsample(X)] = X / k`` and downsampled). The reference is
the fine grid path at ``reference_factor`` (the exact areas in the infinite-resolution limit).
Reported: ``corr(P, P_ref)``, the relative error ``|P - P_ref| / |P_ref|``, the coherence
``rho = sqrt(mean_d Var(P_d))`` (the correlation an output keeps with ``X``), whiteness of the
actual samples, and the wall time of each path (jitted, median).

Writes to the workdir: ``config.json``, ``metrics.jsonl``, ``summary.md``, ``temporal.png``
(variance and compressed-video coherence per mode) and ``resolution.png`` (relative error and time
against ``k``).
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import irwarp
from experiments import warp3d
from experiments.lib import launch, measure, media, tables
from experiments.lib import methods as methods_lib
from experiments.lib import workdir as workdir_lib
from irwarp import flows as flows_lib
from irwarp import resample, stats

# --------------------------------------------------------------------------------------------------
# Part A: temporal compression.


def temporal_motions(cfg, h: int, w: int) -> list[dict]:
    """Motions: name, one-step backward flow, and a function ``k -> k-step backward flow``."""
    out = []
    for v in cfg.speeds:
        v = float(v)
        out.append(
            dict(
                name=f"v={v:g}",
                back=flows_lib.translation(h, w, -v, 0.0),
                multi=lambda k, v=v: flows_lib.translation(h, w, -k * v, 0.0),
            )
        )
    if cfg.rotation_deg:
        deg = float(cfg.rotation_deg)
        out.append(
            dict(
                name=f"rot {deg:g} deg",
                back=flows_lib.rotation(h, w, deg),
                multi=lambda k, deg=deg: flows_lib.rotation(h, w, k * deg),
            )
        )
    zero = flows_lib.identity(h, w)
    out.append(dict(name="static", back=zero, multi=lambda k: zero))
    out.append(dict(name="fresh", back=zero, multi=lambda k: zero))
    return out


def _border_mask(h: int, w: int, margin: int) -> jax.Array:
    m = np.zeros((h, w), bool)
    m[margin : h - margin, margin : w - margin] = True
    return jnp.asarray(m)


def run_temporal(cfg, key, wd: workdir_lib.Workdir) -> list[dict]:
    h, w = (int(s) for s in cfg.size)
    t_frames = int(cfg.frames)
    factors = tuple(int(k) for k in cfg.factors)
    for k in factors:
        if t_frames % k:
            raise ValueError(
                f"temporal.frames = {t_frames} must be a multiple of every factor {factors}"
            )
    k_noise, k_warp = jax.random.split(key)
    shape = (int(cfg.batch), h, w, int(cfg.channels))
    x0 = jax.random.normal(k_noise, shape, jnp.float32)
    seq = methods_lib.sequence_fn(str(cfg.method))
    mask = _border_mask(h, w, int(cfg.margin))
    rows = []
    for mi, mo in enumerate(temporal_motions(cfg, h, w)):
        kk = jax.random.fold_in(k_warp, mi)
        if mo["name"] == "static":
            video = jnp.broadcast_to(x0, (t_frames, *shape))
        elif mo["name"] == "fresh":
            video = jax.random.normal(kk, (t_frames, *shape))
        else:
            bflows = jnp.broadcast_to(mo["back"], (t_frames - 1, h, w, 2))
            video = seq(kk, x0, bflows, -bflows)  # -bflows: forward flows of a translation only
        base = float(
            np.mean(
                [
                    stats.temporal_correlation(video[t], video[t + 1], mo["back"], mask=mask)
                    for t in range(t_frames - 1)
                ]
            )
        )
        for k in factors:
            flow_k = mo["multi"](k)
            for mode in resample.TEMPORAL_MODES:
                z = resample.temporal_compress(video, k, mode=mode)
                per = [stats.summary(z[g]) for g in range(z.shape[0])]
                lag = [
                    float(stats.temporal_correlation(z[g], z[g + 1], flow_k, mask=mask))
                    for g in range(z.shape[0] - 1)
                ]
                row = dict(
                    part="temporal",
                    motion=mo["name"],
                    k=k,
                    mode=mode,
                    var=float(np.mean([p["var"] for p in per])),
                    mean=float(np.mean([p["mean"] for p in per])),
                    ks_p=float(np.min([p["ks_p"] for p in per])),
                    ac=float(np.max([max(abs(p["ac_x"]), abs(p["ac_y"])) for p in per])),
                    lag1=float(np.mean(lag)) if lag else math.nan,
                    video_lag1=base,
                    frames=int(z.shape[0]),
                )
                rows.append(row)
                wd.metric(row)
        logging.info("temporal %-10s video lag-1 coherence %.3f", mo["name"], base)
    return rows


# --------------------------------------------------------------------------------------------------
# Part B: resolution consistency.


def resolution_flows(cfg, h: int, w: int) -> dict[str, jax.Array]:
    """The coarse backward flows compared: rotation, zoom, vortex, shear waves and a camera flow."""
    out = {}
    if cfg.rotation_deg:
        out[f"rotation {cfg.rotation_deg:g} deg"] = flows_lib.rotation(
            h, w, float(cfg.rotation_deg)
        )
    if cfg.zoom:
        out[f"zoom {cfg.zoom:g}"] = flows_lib.zoom(h, w, float(cfg.zoom))
    if cfg.vortex:
        out[f"vortex {cfg.vortex:g} deg"] = flows_lib.vortex(h, w, float(cfg.vortex))
    if cfg.shear_amplitude:
        out[f"shear waves {cfg.shear_amplitude:g} px"] = flows_lib.shear_waves(
            h, w, float(cfg.shear_amplitude), min(h, w) / 2.0
        )
    if cfg.camera:
        from configs import warp3d as warp3d_config

        cam = warp3d_config.get_config().camera
        cam.size = (h, w)
        cam.frames = 1
        cam.speed = 0.15
        k_mat, poses, depths = warp3d.camera_path(cam)
        out["camera (terrain)"] = warp3d.view_flow(
            depths[1], depths[0], k_mat, poses[1], poses[0], float(cam.visibility_rtol)
        )
    return out


def _record(flow: jax.Array, method: str):
    if method == "grid":
        return irwarp.grid_record(flow)
    return irwarp.particle_record(flow)


@functools.partial(jax.jit, static_argnums=(2,))
def conditional_mean(x: jax.Array, flow: jax.Array, method: str) -> jax.Array:
    """``E[warp(x, flow) | x] = sum_s a_ds x_s / sqrt(A_d)`` for ``x`` ``(L, H, W, C)``."""
    rec = _record(flow, method)
    h, w = rec.shape
    n = h * w
    xf = jnp.moveaxis(x, 0, 2).reshape(n, -1)
    a_dst = jax.ops.segment_sum(rec.area, rec.dst, num_segments=n)
    mean = jax.ops.segment_sum(rec.area[:, None] * xf[rec.src], rec.dst, num_segments=n)
    mean = mean / jnp.sqrt(jnp.where(a_dst > 0, a_dst, 1.0))[:, None]
    return jnp.moveaxis(mean.reshape(h, w, x.shape[0], x.shape[-1]), 2, 0)


@functools.partial(jax.jit, static_argnums=(2, 3))
def fine_conditional_mean(x: jax.Array, flow: jax.Array, method: str, k: int) -> jax.Array:
    """``E[downsample(warp(upsample(x), upsample_flow(flow)), k) | x]`` (linear in ``x``)."""
    up = jnp.repeat(jnp.repeat(x, k, axis=-3), k, axis=-2) / k  # E[upsample(x) | x]
    return resample.downsample(conditional_mean(up, resample.upsample_flow(flow, k), method), k)


def run_resolution(cfg, key, wd: workdir_lib.Workdir) -> list[dict]:
    h, w = (int(s) for s in cfg.size)
    shape = (int(cfg.batch), h, w, int(cfg.channels))
    k_noise, k_up, k_warp = jax.random.split(key, 3)
    x = jax.random.normal(k_noise, shape, jnp.float32)
    m = int(cfg.margin)
    inner = np.zeros((h, w), bool)
    inner[m : h - m, m : w - m] = True
    ref_k = int(cfg.reference_factor)
    rows = []
    for name, flow in resolution_flows(cfg, h, w).items():
        ok = inner & np.all(np.isfinite(np.asarray(flow)), -1)
        ref = np.asarray(fine_conditional_mean(x, flow, "grid", ref_k))[:, ok]
        for method in cfg.methods:
            direct_fn = jax.jit(
                lambda kk, xx, ff, method=method: irwarp.warp(kk, xx, ff, method=method)
            )
            for k in (1, *(int(f) for f in cfg.factors)):
                if k == 1:
                    p = np.asarray(conditional_mean(x, flow, method))[:, ok]
                    fn = direct_fn
                    args = (k_warp, x, flow)
                else:
                    p = np.asarray(fine_conditional_mean(x, flow, method, k))[:, ok]

                    def fn(kk, xx, ff, k=k, method=method):
                        k1, k2 = jax.random.split(kk)
                        fine = resample.upsample(k1, xx, k)
                        y = irwarp.warp(k2, fine, resample.upsample_flow(ff, k), method=method)
                        return resample.downsample(y, k)

                    fn = jax.jit(fn)
                    args = (k_up, x, flow)
                y = fn(*args)
                white = stats.summary(y)
                seconds = measure.median_seconds(fn, *args, repeats=int(cfg.repeats))
                pc_, rc = p.ravel().astype(np.float64), ref.ravel().astype(np.float64)
                row = dict(
                    part="resolution",
                    flow=name,
                    method=method,
                    k=k,
                    corr_ref=float(np.corrcoef(pc_, rc)[0, 1]),
                    rel_err=float(np.linalg.norm(pc_ - rc) / np.linalg.norm(rc)),
                    rho=float(math.sqrt(np.mean(pc_**2))),
                    rho_ref=float(math.sqrt(np.mean(rc**2))),
                    var=white["var"],
                    ac=max(abs(white["ac_x"]), abs(white["ac_y"])),
                    ks_p=white["ks_p"],
                    ms=1e3 * seconds,
                )
                rows.append(row)
                wd.metric(row)
                logging.info(
                    "resolution %-22s %-8s k=%d rel_err %.4f corr %.4f %.1f ms",
                    name,
                    method,
                    k,
                    row["rel_err"],
                    row["corr_ref"],
                    row["ms"],
                )
    return rows


# --------------------------------------------------------------------------------------------------
# Report.


def draw_temporal(rows: list[dict], wd: workdir_lib.Workdir) -> str:
    motions = list(dict.fromkeys(r["motion"] for r in rows))
    ks = sorted({r["k"] for r in rows})
    fig = media.new_figure(11.0, 3.6)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    xs = np.arange(len(motions))
    width = 0.8 / (len(ks) * len(resample.TEMPORAL_MODES))
    i = 0
    for k in ks:
        for mode in resample.TEMPORAL_MODES:
            sel = {r["motion"]: r for r in rows if r["k"] == k and r["mode"] == mode}
            for ax, key in zip(axes, ("var", "lag1"), strict=True):
                ax.bar(xs + i * width, [sel[m][key] for m in motions], width, label=f"{mode} k={k}")
            i += 1
    for ax, title in zip(
        axes,
        ("variance of compressed frames (1 = N(0, 1))", "lag-1 coherence of the compressed video"),
        strict=True,
    ):
        ax.set_xticks(xs + 0.4 - width / 2, motions, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
    axes[1].legend(fontsize=7, ncol=2)
    return wd.save_figure(fig, "temporal.png")


def draw_resolution(rows: list[dict], wd: workdir_lib.Workdir) -> str:
    fig = media.new_figure(11.0, 3.6)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    i = 0
    for name in dict.fromkeys(r["flow"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["flow"] == name and r["method"] == method]
            ks = [r["k"] for r in sel]
            axes[0].plot(
                ks, [r["rel_err"] for r in sel], "o-", color=f"C{i % 10}", label=f"{method}: {name}"
            )
            axes[1].plot(ks, [r["ms"] for r in sel], "o-", color=f"C{i % 10}")
            i += 1
    axes[0].set_yscale("log")
    axes[0].set_title("|E[Y|X] - reference| / |reference| (k = 1: direct warp)", fontsize=9)
    axes[1].set_yscale("log")
    axes[1].set_title("wall time per warp (ms)", fontsize=9)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("resolution factor k")
    axes[0].legend(fontsize=6)
    return wd.save_figure(fig, "resolution.png")


def temporal_tables(rows: list[dict]) -> list[str]:
    out = []
    for k in sorted({r["k"] for r in rows}):
        body = []
        for motion in dict.fromkeys(r["motion"] for r in rows):
            sel = {r["mode"]: r for r in rows if r["k"] == k and r["motion"] == motion}
            first = next(iter(sel.values()))
            cells = [motion, tables.cell(first["video_lag1"])]
            for mode in resample.TEMPORAL_MODES:
                r = sel[mode]
                cells += [tables.cell(r["var"]), tables.cell(r["ac"]), tables.cell(r["lag1"])]
            body.append(cells)
        cols = ["motion", "video lag1"]
        for mode in resample.TEMPORAL_MODES:
            cols += [f"{mode} var", f"{mode} ac", f"{mode} lag1"]
        out += [f"### k = {k}", "", tables.markdown_table(cols, body), ""]
    return out


def resolution_table(rows: list[dict]) -> str:
    body = []
    direct = {(r["flow"], r["method"]): r["ms"] for r in rows if r["k"] == 1}
    for r in rows:
        body.append(
            [
                r["flow"],
                r["method"],
                "direct" if r["k"] == 1 else f"k={r['k']}",
                tables.cell(r["corr_ref"], 4),
                tables.cell(r["rel_err"], 4),
                tables.cell(r["rho"]),
                tables.cell(r["rho_ref"]),
                tables.cell(r["var"]),
                tables.cell(r["ac"]),
                tables.cell(r["ms"], 1),
                tables.cell(r["ms"] / direct[r["flow"], r["method"]], 1),
            ]
        )
    cols = (
        "flow",
        "method",
        "path",
        "corr(P, P_ref)",
        "rel err",
        "rho",
        "rho ref",
        "var",
        "max ac",
        "ms",
        "time ratio",
    )
    return tables.markdown_table(cols, body)


def run(config, workdir: str) -> dict:
    """Runs both parts of ``config`` (configs/latent_noise.py) and writes into ``workdir``."""
    key = jax.random.key(int(config.seed))
    k_t, k_r = jax.random.split(key)
    t_start = time.perf_counter()
    with workdir_lib.Workdir(workdir, config, name="latent_noise") as wd:
        trows = run_temporal(config.temporal, k_t, wd)
        rrows = run_resolution(config.resolution, k_r, wd)
        figures = [draw_temporal(trows, wd), draw_resolution(rrows, wd)]
        elapsed = time.perf_counter() - t_start
        tc, rc = config.temporal, config.resolution
        text = "\n".join(
            [
                launch.header(
                    "Noise for latent models: temporal compression and resolution consistency",
                    launch.command_line("latent_noise", workdir),
                    f"Wall time {elapsed:.0f} s.",
                ),
                "## Temporal compression",
                "",
                f"{tc.batch} videos of {tc.frames} frames of {tc.size[0]}x{tc.size[1]}x{tc.channels}, "
                f"warped with {tc.method}; static = one frame repeated, fresh = independent frames. "
                "var = mean variance of the compressed frames (N(0, 1): 1); ac = largest lag-1 "
                "spatial autocorrelation (white: 0); lag1 = correlation between consecutive "
                "compressed frames along the k-frame motion (bilinear resampling, "
                "irwarp.stats.temporal_correlation); video lag1 = the same at lag 1 before "
                "compression.",
                "",
                *temporal_tables(trows),
                "## Resolution consistency",
                "",
                f"{rc.batch} coarse noise images of {rc.size[0]}x{rc.size[1]}x{rc.channels}. "
                "direct = irwarp.warp at the coarse resolution; k = downsample(warp(upsample(X, k), "
                "upsample_flow(flow, k)), k). P = E[Y | X] (all of an output's covariance with X); "
                f"reference = the fine grid path at k = {rc.reference_factor}. rho = "
                "sqrt(mean Var(P)), the correlation the output keeps with X; var and max ac: "
                "whiteness of one sample; ms: median wall time of the jitted path; time ratio: "
                f"against the direct warp of the same method. Pixels within {rc.margin} of the "
                "border are left out.",
                "",
                resolution_table(rrows),
                "",
                "## Figures",
                "",
                *(f"- `{f.rsplit('/', 1)[-1]}`" for f in figures),
            ]
        )
        wd.write_summary(text)
    return dict(temporal=trows, resolution=rrows)


if __name__ == "__main__":
    launch.run_main("latent_noise", run)
