"""3D warping: a rotating noise volume, and noise on a terrain seen by a moving camera.

    python -m experiments.warp3d --config=configs/warp3d.py --workdir=DIR

About 4 minutes on 2 CPU cores with the default config (the ``:small`` variant: about 40 s).

Part 1, volume. A noise volume ``X_0`` ``(B, D, H, W, C)`` rotates about a tilted axis through its
centre by ``volume.degrees`` per frame. It is warped frame after frame with 3D particle warping
(``irwarp.warp(key, noise, flow3d, method="particle")`` with the backward flow
``irwarp.flows3d.rotation3d``, through ``irwarp.warp_sequence``) and with the 3D forward splat
(``irwarp.warp_forward`` with the forward flow, the rotation by minus the angle).

Part 2, camera. A pinhole camera (``irwarp.flows.intrinsics_from_fov``) flies over a hilly
height field, swaying and yawing (``irwarp.flows.look_at``); the depth of every frame is ray-cast
with ``experiments.terrain.terrain_depth`` (the sky is put at ``camera.sky_depth``). The flows come from
depth and poses alone, no optical flow: the forward flow of frame ``t`` is
``camera_flow(depth_t, K, relative_pose(E_t, E_{t+1}))`` (splatted with ``irwarp.warp_forward``,
the use case of the issue: lift pixels by depth, move them with the camera, splat into the new
view), the backward flow of frame ``t+1`` is ``camera_flow(depth_{t+1}, K, relative_pose(E_{t+1},
E_t))`` (for ``irwarp.warp`` with ``"grid"`` or ``"particle"``). Points hidden in the other view
(``irwarp.flows.visibility_mask``) get NaN flow: disoccluded pixels get fresh noise and occluded
sources send nothing.

Measures, per frame ``t`` and method:

- whiteness of frame ``t`` (``irwarp.stats.summary``; for volumes also the lag-1 correlation
  along depth, ``ac_z``);
- ``coherence``: the correlation of frame ``t`` with frame 0 moved exactly to frame ``t``,
  ``corr(Y_t(d), X_0(psi_t(centre_d)))``, with ``psi_t`` the exact map from frame ``t`` to frame 0
  (the rotation by ``t`` times the angle; for the camera, ``camera_flow(depth_t, K,
  relative_pose(E_t, E_0))`` masked by visibility) and ``X_0`` interpolated bilinearly
  (trilinearly for volumes) between pixel centres; pooled over pixels whose pre-image is inside
  frame 0. This is ``irwarp.stats.temporal_correlation`` (its 3D analogue for volumes). It is
  below 1 even for a perfect warp at fractional positions, so the tables also give ``direct``:
  the same measure for one warp of ``X_0`` by the exact total flow (grid for images, particle for
  volumes, no chaining), and ``retained = coherence / direct``;
- ``lag1``: the same correlation between consecutive frames along the one-step flow.

Writes to the workdir: ``config.json``, ``metrics.jsonl`` (one line per part x method x frame),
``summary.md``, ``coherence.png``, ``volume_slices.png`` (a z slice and an x-z slice of each method
at a few frames), ``volume.gif`` / ``volume.mp4`` (the z slice over time), ``camera_frames.png``
(depth, flow and noise at a few frames) and ``camera.gif`` / ``camera.mp4``.
"""

from __future__ import annotations

import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import irwarp
from experiments import terrain
from experiments.lib import launch, media, tables
from experiments.lib import methods as methods_lib
from experiments.lib import workdir as workdir_lib
from irwarp import flows as flows_lib
from irwarp import flows3d, stats

FRESH = "fresh"
# Noise is drawn as 0.5 + NOISE_SCALE * noise (clipped), channels 0-2 as RGB.
NOISE_SCALE = 0.18
STAT_KEYS = ("mean", "var", "ks", "ks_p", "ac_x", "ac_y", "max_cross")


# --------------------------------------------------------------------------------------------------
# Shared measures and pictures.


def pooled_corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of ``a`` and ``b`` ``(L, *S, C)`` pooled over the spatial ``mask`` ``S``."""
    a = np.asarray(a, np.float64)[:, mask].ravel()
    b = np.asarray(b, np.float64)[:, mask].ravel()
    if a.size < 2:
        return math.nan
    a = a - a.mean()
    b = b - b.mean()
    return float(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)))


def _method_frames(name: str, key, x0, bflows, fflows) -> np.ndarray:
    """``(T + 1, ...)`` frames of a method: a warp sequence, or fresh noise every frame."""
    if name == FRESH:
        ts = jnp.arange(bflows.shape[0] + 1)
        fresh = jax.vmap(lambda t: jax.random.normal(jax.random.fold_in(key, t), x0.shape))(ts)
        return np.asarray(fresh.at[0].set(x0))
    return np.asarray(methods_lib.sequence_fn(name)(key, x0, bflows, fflows))


# --------------------------------------------------------------------------------------------------
# Part 1: a rotating volume.


@functools.partial(jax.jit, static_argnums=(1,))
def _resample3d(x0: jax.Array, shape: tuple[int, int, int], flow: jax.Array) -> jax.Array:
    """``x0`` ``(L, D, H, W, C)`` sampled trilinearly at ``centre + flow`` -> ``(L, D, H, W, C)``."""
    d, h, w = shape
    cx, cy, cz = flows3d.voxel_centres(d, h, w)
    field = jnp.moveaxis(x0, 0, 3).reshape(d, h, w, -1)
    out = flows3d.sample_trilinear(field, cx + flow[..., 0], cy + flow[..., 1], cz + flow[..., 2])
    return jnp.moveaxis(out.reshape(d, h, w, x0.shape[0], -1), 3, 0)


def inside_mask3d(flow: np.ndarray, margin: float) -> np.ndarray:
    """Voxels whose pre-image ``centre + flow`` lies at least ``margin`` inside the volume."""
    d, h, w = flow.shape[:3]
    z, y, x = np.meshgrid(np.arange(d) + 0.5, np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    px, py, pz = x + flow[..., 0], y + flow[..., 1], z + flow[..., 2]
    ok = np.all(np.isfinite(flow), -1)
    for p, n in ((px, w), (py, h), (pz, d)):
        ok &= (p >= margin) & (p <= n - margin)
    return ok


def ac_z(x: np.ndarray) -> float:
    """Lag-1 correlation along the depth axis of ``(L, D, H, W, C)`` noise."""
    a, b = np.asarray(x[:, 1:], np.float64).ravel(), np.asarray(x[:, :-1], np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def _volume_pictures(cfg, frames_of: dict, wd: workdir_lib.Workdir, output) -> list[str]:
    """``volume_slices.png`` and the ``volume`` animation; returns the file names."""
    d, h, w = (int(s) for s in cfg.size)
    t_frames = int(cfg.frames)
    # Pictures: z slice (H, W) and x-z slice (D, W) of the first volume at a few frames.
    zoom = int(output.zoom)
    shown = sorted({0, *[t for t in output.report_frames if t <= t_frames], t_frames})
    rows = []
    for m in cfg.methods:
        cells = []
        for t in shown:
            vol = frames_of[m][t, 0]
            zs = media.noise_to_rgb(vol[d // 2], NOISE_SCALE, zoom)
            xz = media.noise_to_rgb(vol[:, h // 2], NOISE_SCALE, zoom)
            cells.append(media.caption(media.hstack([zs, xz]), f"{m} t={t}"))
        rows.append(media.hstack(cells, gap=6))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    media.save_png(np.concatenate(rows, 0), wd.file("volume_slices.png"))
    anim = [
        media.hstack(
            [
                media.caption(
                    media.noise_to_rgb(frames_of[m][t, 0, d // 2], NOISE_SCALE, zoom), f"{m} t={t}"
                )
                for m in cfg.methods
            ]
        )
        for t in range(t_frames + 1)
    ]
    files = ["volume_slices.png"] + [
        os.path.basename(p) for p in media.write_animation(anim, wd.file("volume"), output)
    ]
    return files


def run_volume(cfg, key, wd: workdir_lib.Workdir, output) -> dict:
    """Part 1; returns ``{method: {"coherence": [...], "direct": [...], "lag1": [...], ...}}``."""
    d, h, w = (int(s) for s in cfg.size)
    t_frames = int(cfg.frames)
    deg = float(cfg.degrees)
    axis = tuple(float(a) for a in cfg.axis)
    k_noise, k_warp, k_direct = jax.random.split(key, 3)
    x0 = jax.random.normal(k_noise, (int(cfg.batch), d, h, w, int(cfg.channels)), jnp.float32)
    back = flows3d.rotation3d(d, h, w, axis, deg)
    fwd = flows3d.rotation3d(d, h, w, axis, -deg)
    bflows = jnp.broadcast_to(back, (t_frames, d, h, w, 3))
    fflows = jnp.broadcast_to(fwd, (t_frames, d, h, w, 3))
    totals = [np.asarray(flows3d.rotation3d(d, h, w, axis, t * deg)) for t in range(t_frames + 1)]
    masks = [inside_mask3d(f, float(cfg.margin)) for f in totals]
    preds = [np.asarray(_resample3d(x0, (d, h, w), jnp.asarray(f))) for f in totals]
    step_mask = inside_mask3d(np.asarray(back), float(cfg.margin))
    direct_fn = jax.jit(lambda k, x, f: irwarp.warp(k, x, f, method="particle"))
    direct = []
    for t in range(t_frames + 1):
        yd = np.asarray(direct_fn(jax.random.fold_in(k_direct, t), x0, jnp.asarray(totals[t])))
        direct.append(pooled_corr(yd, preds[t], masks[t]))
    curves, frames_of = {}, {}
    for mi, m in enumerate(cfg.methods):
        t0 = time.perf_counter()
        frames = _method_frames(m, jax.random.fold_in(k_warp, mi), x0, bflows, fflows)
        seconds = time.perf_counter() - t0
        frames_of[m] = frames
        c = {
            k: [] for k in ("coherence", "direct", "retained", "lag1", "var", "ks_p", "ac", "ac_z")
        }
        for t in range(t_frames + 1):
            row = stats.summary(frames[t])
            coh = pooled_corr(frames[t], preds[t], masks[t])
            lag1 = math.nan
            if t >= 1:
                prev = np.asarray(_resample3d(jnp.asarray(frames[t - 1]), (d, h, w), back))
                lag1 = pooled_corr(frames[t], prev, step_mask)
            acz = ac_z(frames[t])
            ac = max(abs(row["ac_x"]), abs(row["ac_y"]), abs(acz))
            for k, v in (
                ("coherence", coh),
                ("direct", direct[t]),
                ("retained", coh / direct[t]),
                ("lag1", lag1),
                ("var", row["var"]),
                ("ks_p", row["ks_p"]),
                ("ac", ac),
                ("ac_z", acz),
            ):
                c[k].append(v)
            wd.metric(
                dict(
                    part="volume",
                    method=m,
                    t=t,
                    **row,
                    ac_z=acz,
                    coherence=coh,
                    direct=direct[t],
                    retained=coh / direct[t],
                    lag1=lag1,
                    voxels=int(masks[t].sum()),
                )
            )
        c["seconds"] = seconds
        curves[m] = c
        logging.info(
            "volume %-8s coherence t=1 %.3f, t=%d %.3f (direct %.3f); var %.3f",
            m,
            c["coherence"][1],
            t_frames,
            c["coherence"][-1],
            direct[-1],
            c["var"][-1],
        )

    files = _volume_pictures(cfg, frames_of, wd, output)
    return dict(curves=curves, files=files, direct=direct)


# --------------------------------------------------------------------------------------------------
# Part 2: a camera fly-through.


def camera_path(cfg) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
    """Intrinsics, world-to-camera matrices and depth maps of frames ``0 .. T``.

    The camera moves forward by ``speed`` per frame, sways sideways by ``sway`` and yaws by
    ``yaw_deg`` (both sinusoidal), looking ``pitch_deg`` below the horizon; the sky (no terrain
    hit) is placed at ``sky_depth``.
    """
    h, w = (int(s) for s in cfg.size)
    k_mat = flows_lib.intrinsics_from_fov(h, w, float(cfg.fov_deg))
    depth_fn = jax.jit(
        lambda k, e: terrain.terrain_depth(
            h,
            w,
            k,
            e,
            ground=float(cfg.ground),
            amplitude=float(cfg.amplitude),
            wavelength=float(cfg.wavelength),
            far=float(cfg.far),
        )
    )
    pitch = math.radians(float(cfg.pitch_deg))
    poses, depths = [], []
    for t in range(int(cfg.frames) + 1):
        yaw = math.radians(float(cfg.yaw_deg)) * math.sin(0.25 * t)
        eye = np.array([float(cfg.sway) * math.sin(0.15 * t), 0.0, float(cfg.speed) * t])
        look = np.array(
            [math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)]
        )
        e = flows_lib.look_at(eye, eye + look)
        depth = depth_fn(k_mat, e)
        poses.append(e)
        depths.append(jnp.where(jnp.isfinite(depth), depth, float(cfg.sky_depth)))
    return k_mat, poses, depths


@jax.jit
def view_flow(depth_a, depth_b, k_mat, pose_a, pose_b, rtol):
    """Flow of view ``a``'s pixels into view ``b``, NaN where hidden in ``b`` (or behind it)."""
    r, t = flows_lib.relative_pose(pose_a, pose_b)
    flow, moved = flows_lib.camera_flow(depth_a, k_mat, r, t, return_depth=True)
    return flows_lib.mask_flow(flow, flows_lib.visibility_mask(flow, moved, depth_b, rtol))


def camera_flows(k_mat, poses, depths, rtol: float) -> dict:
    """Forward flows ``(T, H, W, 2)`` of frames ``0 .. T-1``, backward flows of frames ``1 .. T``
    and the exact flows of frames ``0 .. T`` back to frame 0 ``(T + 1, H, W, 2)``."""
    n = len(poses)
    fwd = [
        view_flow(depths[t], depths[t + 1], k_mat, poses[t], poses[t + 1], rtol)
        for t in range(n - 1)
    ]
    bwd = [
        view_flow(depths[t + 1], depths[t], k_mat, poses[t + 1], poses[t], rtol)
        for t in range(n - 1)
    ]
    to0 = [view_flow(depths[t], depths[0], k_mat, poses[t], poses[0], rtol) for t in range(n)]
    return dict(fwd=jnp.stack(fwd), bwd=jnp.stack(bwd), to0=jnp.stack(to0))


def depth_rgb(depth: np.ndarray, sky: float) -> np.ndarray:
    """Inverse depth as gray (near = bright), the sky in light blue."""
    d = np.asarray(depth, np.float32)
    sky_mask = d >= sky * 0.999
    inv = np.where(sky_mask, 0.0, 1.0 / d)
    top = float(np.percentile(inv[~sky_mask], 99)) if (~sky_mask).any() else 1.0
    g = (np.clip(inv / max(top, 1e-6), 0, 1) * 255).astype(np.uint8)
    img = np.stack([g, g, g], -1)
    img[sky_mask] = (170, 200, 235)
    return img


def run_camera(cfg, key, wd: workdir_lib.Workdir, output) -> dict:
    """Part 2; returns ``{method: {"coherence": [...], ...}}`` and the file names."""
    h, w = (int(s) for s in cfg.size)
    t_frames = int(cfg.frames)
    k_noise, k_warp, k_direct = jax.random.split(key, 3)
    k_mat, poses, depths = camera_path(cfg)
    fl = camera_flows(k_mat, poses, depths, float(cfg.visibility_rtol))
    x0 = jax.random.normal(k_noise, (int(cfg.batch), h, w, int(cfg.channels)), jnp.float32)
    occluded = [float(np.mean(~np.all(np.isfinite(np.asarray(b)), -1))) for b in fl["bwd"]]
    direct_fn = jax.jit(lambda k, x, f: irwarp.warp(k, x, f, method="grid"))
    direct = []
    for t in range(t_frames + 1):
        yd = direct_fn(jax.random.fold_in(k_direct, t), x0, fl["to0"][t])
        direct.append(float(stats.temporal_correlation(x0, yd, fl["to0"][t])))
    curves, frames_of = {}, {}
    for mi, m in enumerate(cfg.methods):
        t0 = time.perf_counter()
        frames = _method_frames(m, jax.random.fold_in(k_warp, mi), x0, fl["bwd"], fl["fwd"])
        seconds = time.perf_counter() - t0
        frames_of[m] = frames
        c = {k: [] for k in ("coherence", "direct", "retained", "lag1", "var", "ks_p", "ac")}
        for t in range(t_frames + 1):
            row = stats.summary(frames[t])
            coh = float(stats.temporal_correlation(x0, frames[t], fl["to0"][t]))
            lag1 = (
                float(stats.temporal_correlation(frames[t - 1], frames[t], fl["bwd"][t - 1]))
                if t >= 1
                else math.nan
            )
            vals = dict(
                coherence=coh,
                direct=direct[t],
                retained=coh / direct[t],
                lag1=lag1,
                var=row["var"],
                ks_p=row["ks_p"],
                ac=max(abs(row["ac_x"]), abs(row["ac_y"])),
            )
            for k, v in vals.items():
                c[k].append(v)
            wd.metric(
                dict(
                    part="camera",
                    method=m,
                    t=t,
                    **row,
                    **{k: vals[k] for k in ("coherence", "direct", "retained", "lag1")},
                    occluded_fraction=occluded[t - 1] if t >= 1 else 0.0,
                )
            )
        c["seconds"] = seconds
        curves[m] = c
        logging.info(
            "camera %-8s coherence t=1 %.3f, t=%d %.3f (direct %.3f); var %.3f",
            m,
            c["coherence"][1],
            t_frames,
            c["coherence"][-1],
            direct[-1],
            c["var"][-1],
        )

    sky = float(cfg.sky_depth)

    def panel(t: int) -> np.ndarray:
        flow = np.asarray(fl["bwd"][t - 1]) if t >= 1 else np.zeros((h, w, 2), np.float32)
        cells = [
            media.caption(depth_rgb(np.asarray(depths[t]), sky), f"depth t={t}"),
            media.caption(media.flow_to_rgb(flow), "backward flow"),
        ]
        cells += [
            media.caption(media.noise_to_rgb(frames_of[m][t, 0], NOISE_SCALE), m)
            for m in cfg.methods
        ]
        return media.hstack(cells)

    shown = sorted({0, *[t for t in output.report_frames if t <= t_frames], t_frames})
    stills = [panel(t) for t in shown]
    width = max(s.shape[1] for s in stills)
    stills = [
        np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in stills
    ]
    media.save_png(np.concatenate(stills, 0), wd.file("camera_frames.png"))
    anim = [panel(t) for t in range(t_frames + 1)]
    files = ["camera_frames.png"] + [
        os.path.basename(p) for p in media.write_animation(anim, wd.file("camera"), output)
    ]
    return dict(curves=curves, files=files, direct=direct, occluded=occluded)


# --------------------------------------------------------------------------------------------------
# Report.


def draw(volume: dict, camera: dict, wd: workdir_lib.Workdir) -> str:
    fig = media.new_figure(11.0, 6.0)
    axes = fig.subplots(2, 2, squeeze=False)
    for row, (name, part) in enumerate(
        (("rotating volume", volume), ("camera fly-through", camera))
    ):
        for col, key in enumerate(("coherence", "lag1")):
            ax = axes[row][col]
            for i, (m, c) in enumerate(part["curves"].items()):
                ax.plot(c[key], color=f"C{i}", lw=1.3, label=m)
            if key == "coherence":
                ax.plot(part["direct"], "k--", lw=1, label="direct (one exact warp)")
            ax.set_ylim(-0.05, 1.05)
            ax.set_xlabel("frame t")
            ax.set_title(
                f"{name}: corr with frame 0 moved exactly"
                if key == "coherence"
                else f"{name}: corr with frame t-1 moved (lag 1)",
                fontsize=9,
            )
            ax.legend(fontsize=7)
    return wd.save_figure(fig, "coherence.png")


def table(part: dict, ts: list[int]) -> str:
    rows = []
    for m, c in part["curves"].items():
        for t in ts:
            rows.append(
                [
                    m,
                    str(t),
                    tables.cell(c["var"][t]),
                    tables.cell(c["ks_p"][t]),
                    tables.cell(c["ac"][t]),
                    tables.cell(c["coherence"][t]),
                    tables.cell(c["direct"][t]),
                    tables.cell(c["retained"][t]),
                    tables.cell(c["lag1"][t]) if t >= 1 else "-",
                ]
            )
    cols = ("method", "t", "var", "KS p", "max abs ac", "coherence", "direct", "retained", "lag1")
    return tables.markdown_table(cols, rows)


def run(config, workdir: str) -> dict:
    """Runs both parts of ``config`` (configs/warp3d.py) and writes into ``workdir``."""
    key = jax.random.key(int(config.seed))
    k_vol, k_cam = jax.random.split(key)
    t_start = time.perf_counter()
    with workdir_lib.Workdir(workdir, config, name="warp3d") as wd:
        volume = run_volume(config.volume, k_vol, wd, config.output)
        camera = run_camera(config.camera, k_cam, wd, config.output)
        figure = draw(volume, camera, wd)
        elapsed = time.perf_counter() - t_start
        vt = sorted({t for t in config.output.report_frames if 1 <= t <= config.volume.frames})
        ct = sorted({t for t in config.output.report_frames if 1 <= t <= config.camera.frames})
        vt = sorted(set(vt) | {int(config.volume.frames)})
        ct = sorted(set(ct) | {int(config.camera.frames)})
        d, h, w = config.volume.size
        intro = (
            "Columns: var, KS p and max abs ac (lag-1 autocorrelation in x, y and, for volumes, "
            "z) of frame t pooled over the batch; coherence = corr(Y_t(d), X_0(psi_t(centre_d))) "
            "with psi_t the exact map from frame t to frame 0 and X_0 interpolated between "
            "centres, over pixels whose pre-image is inside frame 0 (and visible there); direct = "
            "the same for one warp of X_0 by the exact total flow (grid for the camera, particle "
            "for the volume): what a warp without chaining keeps; retained = coherence / direct; "
            "lag1 = the same correlation between frames t-1 and t along the one-step flow. "
            f"Wall time {elapsed:.0f} s."
        )
        vol_cfg = config.volume
        cam_cfg = config.camera
        occl = camera["occluded"]
        text = "\n".join(
            [
                launch.header(
                    "3D warping: rotating volume and camera fly-through",
                    launch.command_line("warp3d", workdir),
                    intro,
                ),
                "## Rotating volume",
                "",
                f"{vol_cfg.batch} volumes of {d}x{h}x{w}x{vol_cfg.channels}, rotating by "
                f"{vol_cfg.degrees:g} degrees per frame about the axis {tuple(vol_cfg.axis)} "
                f"through the centre, {vol_cfg.frames} frames.",
                "",
                table(volume, vt),
                "",
                "## Camera fly-through",
                "",
                f"{cam_cfg.batch} noise videos of {cam_cfg.size[0]}x{cam_cfg.size[1]}x"
                f"{cam_cfg.channels}, {cam_cfg.frames} frames, field of view {cam_cfg.fov_deg:g} "
                f"degrees, forward speed {cam_cfg.speed:g} per frame over hills of amplitude "
                f"{cam_cfg.amplitude:g} (ground {cam_cfg.ground:g} below the camera). Flows from "
                "depth and poses only (irwarp.flows.camera_flow); hidden points (visibility test) "
                f"get fresh noise: {100 * float(np.mean(occl)):.1f}% of the pixels per frame on "
                f"average (max {100 * float(np.max(occl)):.1f}%).",
                "",
                table(camera, ct),
                "",
                "## Files",
                "",
                *(
                    f"- `{f}`"
                    for f in [os.path.basename(figure), *volume["files"], *camera["files"]]
                ),
            ]
        )
        wd.write_summary(text)
    return dict(volume=volume["curves"], camera=camera["curves"])


if __name__ == "__main__":
    launch.run_main("warp3d", run)
