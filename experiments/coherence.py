"""Claim 5 (temporal coherence): how much chained warping decorrelates noise that should move rigidly.

    python -m experiments.coherence --config=configs/coherence.py --workdir=DIR

Motions: constant sub-pixel translations of ``v`` px per frame (``config.speeds``, along
``config.direction_deg``) and a smooth rotation of ``config.rotation_deg`` per frame about the
centre, over ``T`` frames. Each method warps frame 0 ``X_0`` frame after frame with
``irwarp.warp_sequence`` (``splat`` with the exact forward flow). Frame ``t`` should then be frame 0
moved by the exact composed motion (``t v``, or a rotation by ``t`` times the angle).

The measure. Let ``psi_t`` be the exact backward map from frame ``t`` to frame 0 and ``a_ds`` the
exact areas of ``psi_t(cell_d)`` in the old cells (the grid record of the composed flow). The ideal
frame ``t`` is the integral noise over ``psi_t(cell_d)``, whose best prediction from ``X_0`` is
``P_d = E[Y_d | X_0] = sum_s a_ds X_s / sqrt(A_d)`` (for a translation, exactly the bilinear resample
of ``X_0`` at ``psi_t(centre_d)``). Each method's coherence is ``rho_t = corr(Y_t, P_t)`` pooled over
pixels whose pre-image lies inside the frame (and a margin), samples and channels. An exact rigid
warp reaches ``rho*_t = sqrt(mean_d sum_s a_ds^2 / A_d)`` and no function of ``X_0`` can do
better for white noise; ``rho*_t = 1`` when the total shift is a whole number of pixels (then the
ideal frame is an exact copy). The tables report the retained coherence ``rho_t / rho*_t``; for a
unit-variance ``Y_t`` it equals ``Cov(Y_t, P_t) / Var(P_t)``, the fraction of the exact covariance
with frame 0 that the method keeps: 1 for a method that moves the noise rigidly, lower when chained
resampling has blurred the integral noise into its neighbours. Methods whose output is not white
(``bilinear``, ``nearest``) can exceed 1: they copy or blend the old values instead of sampling new
white noise.

Writes to the workdir: ``config.json``, ``metrics.jsonl`` (one line per method x motion x frame),
``summary.md`` (tables at a few frames), ``coherence.png`` (retained coherence against ``t``, one
panel per motion) and ``coherence_raw.png`` (``rho_t`` with the ideal ``rho*_t``).
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import irwarp
from experiments import common
from experiments import paper_common as pc
from irwarp import flows as flows_lib


def motions(config, h: int, w: int) -> list[dict]:
    """The motions: name, per-frame backward and forward flows, and the exact total backward flows.

    Returns a list of dicts with ``name``, ``back`` and ``fwd`` ``(H, W, 2)``, and ``total``
    ``(T + 1, H, W, 2)`` (``total[t]`` maps frame ``t`` to frame 0; ``total[0]`` is 0).
    """
    t_frames = int(config.frames)
    ts = np.arange(t_frames + 1, dtype=np.float32)
    theta = math.radians(float(config.direction_deg))
    ux, uy = math.cos(theta), -math.sin(theta)  # y grows downwards: positive angles point up
    out = []
    for v in config.speeds:
        v = float(v)
        # The content moves by (v ux, v uy) per frame: backward flow is minus that.
        back = flows_lib.translation(h, w, -v * ux, -v * uy)
        total = jnp.stack([flows_lib.translation(h, w, -t * v * ux, -t * v * uy) for t in ts])
        out.append(dict(name=f"v={v:g}", speed=v, back=back, fwd=-back, total=total))
    if config.rotation_deg:
        deg = float(config.rotation_deg)
        total = jnp.stack([flows_lib.rotation(h, w, t * deg) for t in ts])
        # The forward flow of a rotation by deg is the backward flow of a rotation by -deg.
        out.append(
            dict(
                name=f"rot {deg:g} deg",
                speed=None,
                back=flows_lib.rotation(h, w, deg),
                fwd=flows_lib.rotation(h, w, -deg),
                total=total,
            )
        )
    return out


@jax.jit
def _predictor_parts(total_flow, x0):
    """``P = E[Y | X_0]`` of the exact warp ``(L, H, W, C)``, ``sum_s a^2 / A`` and ``A`` per pixel."""
    rec = irwarp.grid_record(total_flow)
    h, w = rec.shape
    n = h * w
    a_dst = jax.ops.segment_sum(rec.area, rec.dst, num_segments=n)
    a2 = jax.ops.segment_sum(rec.area**2, rec.dst, num_segments=n)
    xf = jnp.moveaxis(x0.reshape((-1, n, x0.shape[-1])), 0, 1).reshape(n, -1)  # (n, L C)
    mean = jax.ops.segment_sum(rec.area[:, None] * xf[rec.src], rec.dst, num_segments=n)
    safe = jnp.where(a_dst > 0, a_dst, 1.0)
    mean = mean / jnp.sqrt(safe)[:, None]
    mean = jnp.moveaxis(mean.reshape(n, -1, x0.shape[-1]), 1, 0).reshape(x0.shape)
    return mean, (a2 / safe).reshape(h, w), a_dst.reshape(h, w), rec.overflow


def valid_mask(total_flow: np.ndarray, a_dst: np.ndarray, overflow, margin: int) -> np.ndarray:
    """Pixels whose whole pre-image lies inside frame 0 (``A_d = 1``), away from the border."""
    h, w = a_dst.shape
    ok = (np.abs(a_dst - 1.0) < 1e-3) & (np.asarray(overflow) == 0)
    ok &= np.all(np.isfinite(total_flow), axis=-1)
    if margin > 0:
        y, x = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        px, py = x + total_flow[..., 0], y + total_flow[..., 1]
        ok &= (px >= margin) & (px <= w - margin) & (py >= margin) & (py <= h - margin)
        ok[:margin] = ok[-margin:] = False
        ok[:, :margin] = ok[:, -margin:] = False
    return ok


def pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pooled Pearson correlation of ``a`` and ``b`` ``(..., H, W, C)`` over the ``(H, W)`` mask."""
    a = np.asarray(a, np.float64)[..., mask, :].ravel()
    b = np.asarray(b, np.float64)[..., mask, :].ravel()
    a = a - a.mean()
    b = b - b.mean()
    return float(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)))


def draw(curves, motion_names, methods, t_frames, wd: pc.Workdir, raw: bool) -> str:
    ncol = min(5, len(motion_names))
    nrow = math.ceil(len(motion_names) / ncol)
    fig = pc.new_figure(3.0 * ncol, 2.6 * nrow + 0.4)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey=True)
    ts = np.arange(t_frames + 1)
    for k, mo in enumerate(motion_names):
        ax = axes[k // ncol][k % ncol]
        for i, m in enumerate(methods):
            c = curves[m, mo]
            ax.plot(
                ts,
                c["rho"] if raw else c["retained"],
                color=f"C{i}",
                lw=1.3,
                label=pc.method_label(m),
            )
        if raw:
            ax.plot(ts, curves[methods[0], mo]["ideal"], "k--", lw=1, label="ideal rho*")
        else:
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_title(mo, fontsize=9)
        ax.set_ylim(0.0, 1.6 if not raw else 1.05)
        if k // ncol == nrow - 1:
            ax.set_xlabel("frame t")
        if k % ncol == 0:
            ax.set_ylabel("rho_t" if raw else "rho_t / rho*_t")
    for k in range(len(motion_names), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside right center")
    title = (
        "correlation of frame t with the exact rigid prediction from frame 0 (dashed: ideal)"
        if raw
        else "retained coherence: corr(Y_t, E[ideal Y_t | X_0]) / its ideal value (1 = rigid)"
    )
    fig.suptitle(title)
    return wd.save_figure(fig, "coherence_raw.png" if raw else "coherence.png")


def run(config, workdir: str) -> dict:
    """Runs the experiment of ``config`` (configs/coherence.py) and writes into ``workdir``.

    Returns:
      ``{(method, motion): {"rho": [...], "ideal": [...], "retained": [...]}}``.
    """
    h, w = (int(s) for s in config.size)
    methods = pc.check_methods(config.methods)
    t_frames = int(config.frames)
    if t_frames < 1:
        raise ValueError(f"frames must be >= 1; got {t_frames}")
    key = jax.random.key(int(config.seed))
    k_noise, k_warp = jax.random.split(key)
    x0 = jax.random.normal(k_noise, (int(config.batch), h, w, int(config.channels)), jnp.float32)
    mos = motions(config, h, w)
    curves = {}
    t_start = time.perf_counter()
    with pc.Workdir(workdir, config) as wd:
        refs = []
        for mo in mos:
            per_t = []
            for t in range(t_frames + 1):
                pred, a2, a_dst, overflow = _predictor_parts(mo["total"][t], x0)
                mask = valid_mask(
                    np.asarray(mo["total"][t]), np.asarray(a_dst), overflow, int(config.margin)
                )
                ideal = math.sqrt(float(np.mean(np.asarray(a2)[mask]))) if mask.any() else math.nan
                per_t.append((np.asarray(pred), mask, ideal))
            refs.append(per_t)
        for mi, m in enumerate(methods):
            fn = pc.sequence_fn(m)
            for k, mo in enumerate(mos):
                bflows = jnp.broadcast_to(mo["back"], (t_frames, h, w, 2))
                fflows = jnp.broadcast_to(mo["fwd"], (t_frames, h, w, 2))
                frames = np.asarray(
                    fn(jax.random.fold_in(k_warp, mi * 1000 + k), x0, bflows, fflows)
                )
                rho, ideal, retained = [], [], []
                for t in range(t_frames + 1):
                    pred, mask, rho_star = refs[k][t]
                    r_t = pearson(frames[t], pred, mask) if mask.any() else math.nan
                    rho.append(r_t)
                    ideal.append(rho_star)
                    retained.append(r_t / rho_star)
                    wd.metric(
                        dict(
                            method=m,
                            motion=mo["name"],
                            speed=mo["speed"],
                            t=t,
                            rho=r_t,
                            ideal=rho_star,
                            retained=r_t / rho_star,
                            pixels=int(mask.sum()),
                        )
                    )
                curves[m, mo["name"]] = dict(rho=rho, ideal=ideal, retained=retained)
                logging.info(
                    "%-9s %-12s retained t=1 %.3f, t=%d %.3f",
                    m,
                    mo["name"],
                    retained[1],
                    t_frames,
                    retained[-1],
                )
        names = [mo["name"] for mo in mos]
        figures = [
            draw(curves, names, methods, t_frames, wd, raw=False),
            draw(curves, names, methods, t_frames, wd, raw=True),
        ]
        elapsed = time.perf_counter() - t_start

        report_ts = sorted({t for t in config.report_frames if 1 <= t <= t_frames} | {t_frames})
        tables = []
        for t in report_ts:
            rows = [
                [pc.method_label(m), *(pc.cell(curves[m, n]["retained"][t], 2) for n in names)]
                for m in methods
            ]
            rows.append(
                ["ideal rho*_t", *(pc.cell(curves[methods[0], n]["ideal"][t], 2) for n in names)]
            )
            tables += [
                f"### t = {t}: retained coherence rho_t / rho*_t (last row: rho*_t itself)",
                "",
                common.markdown_table(("method", *names), rows),
                "",
            ]
        intro = (
            f"{config.batch} noise images of {h}x{w}x{config.channels}, {t_frames} frames per "
            f"motion; translations along {config.direction_deg:g} degrees. rho_t = pooled "
            "correlation of frame t with P_t = E[exact frame t | X_0] (the exact-area prediction "
            "from frame 0, which is the bilinear resample of X_0 for a translation), over pixels "
            f"whose pre-image is inside frame 0, {config.margin} px from the border. rho*_t is the "
            "ideal (an exact rigid move of integral noise); the tables divide by it, so 1 means "
            "the method moved the noise rigidly. Non-white methods (bilinear, nearest) can exceed "
            f"1. Wall time {elapsed:.0f} s."
        )
        text = "\n".join(
            [
                pc.header(
                    "Claim 5: temporal coherence of chained warps",
                    pc.command_line("coherence", workdir),
                    intro,
                ),
                *tables,
                "## Figures",
                "",
                *(f"- `{f.rsplit('/', 1)[-1]}`" for f in figures),
            ]
        )
        wd.write_summary(text)
    return curves


if __name__ == "__main__":
    pc.run_main("coherence", run)
