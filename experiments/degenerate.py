"""Claim 4 (degenerate flows): grid against particle on folding and collapsing flows.

    python -m experiments.degenerate --config=configs/degenerate.py --workdir=DIR

On flows whose backward map is not injective (``fold_over``: the right half mirrors the left;
``collapse``: every pixel pulls from one vertical line; ``strong_vortex``: a swirl so strong that
neighbouring pixels' pre-images fold over each other), ``R`` independent noise images ``(H, W, 1)``
are warped once by each method. Measured per method and flow:

- the geometry of its partition record: old cells where the fail-safe fired (``record.num_failsafe()``:
  requested area above 1, so that cell's pieces were divided by their sum), new pixels whose
  pre-image overflowed the grid window, and disoccluded new pixels (``A_d = 0``, fresh noise);
- the deviation from white noise: ``irwarp.stats.whiteness_checks`` on the pooled samples; the
  per-pixel spatial-correlation map (``irwarp.stats.autocorr_map`` over the ``R`` samples) and the
  per-pixel variance map, as the number of pixels beyond 5 standard errors; and the largest
  correlation between *any* two pixels (the full ``HW x HW`` correlation matrix over the samples,
  for ``HW <= config.max_pairwise_pixels``), with the number of pairs beyond a Bonferroni bound;
- how much of the old noise it keeps: ``irwarp.stats.temporal_correlation`` with the input.

Writes to the workdir: ``config.json``, ``metrics.jsonl`` (one line per flow x method),
``summary.md`` (the table), ``autocorr_maps.png`` (per-pixel correlation maps), ``noise.png`` (one
sample of the warped noise under a checkerboard carried by each flow), ``kept.png`` (per-pixel
correlation with the old noise resampled along the flow: where the old noise was kept and where
fresh noise replaced it) and ``failsafe.png`` (the area requested from each old cell; above 1 is
where the fail-safe fires).
"""

from __future__ import annotations

import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import irwarp
from experiments.lib import launch, media, tables
from experiments.lib import methods as methods_lib
from experiments.lib import workdir as workdir_lib
from irwarp import flows as flows_lib
from irwarp import stats

COLUMNS = (
    "flow",
    "method",
    "fail-safe cells",
    "overflow px",
    "fresh px",
    "var",
    "max abs ac",
    "KS p",
    "white",
    "max abs map",
    "map px > 5 SE",
    "var-map px > 5 SE",
    "max pair abs corr",
    "pairs > bound",
    "corr with input",
)


def degenerate_flows(h: int, w: int, strength: float, radius_frac: float) -> dict[str, jax.Array]:
    """The named degenerate backward flows of this experiment, ``(H, W, 2)`` each."""
    radius = radius_frac * min(h, w)
    return {
        "fold_over": flows_lib.fold_over(h, w),
        "collapse": flows_lib.collapse(h, w),
        "strong_vortex": flows_lib.vortex(h, w, strength=strength, radius=radius),
        "zoom_in_4x": flows_lib.zoom(h, w, 4.0),
    }


def method_record(method: str, flow, fflow):
    """The partition record of a method, or None for methods that have none."""
    if method == "grid":
        return irwarp.grid_record(flow)
    if method == "particle":
        return irwarp.particle_record(flow)
    if method == "splat":
        return irwarp.splat_record(fflow)
    return None


def pairwise(y: np.ndarray, num_se: float) -> tuple[float, int, float]:
    """Largest |correlation| between two distinct pixels over samples, pairs beyond the bound.

    ``y`` is ``(R, H, W)``. Each off-diagonal sample correlation of white noise is ~N(0, 1/R); the
    bound is the Bonferroni-corrected two-sided ``num_se``-sigma quantile over the
    ``P = HW (HW - 1) / 2`` pairs, divided by ``sqrt(R)``.
    """
    r = y.shape[0]
    z = y.reshape(r, -1).astype(np.float64)
    z = z - z.mean(0)
    sd = z.std(0)
    z = z[:, sd > 0] / sd[sd > 0]
    corr = (z.T @ z) / r
    np.fill_diagonal(corr, 0.0)
    p = z.shape[1] * (z.shape[1] - 1) / 2
    tail = statistics.NormalDist().cdf(-num_se) / max(p, 1)
    bound = -statistics.NormalDist().inv_cdf(tail) / math.sqrt(r)
    upper = np.triu(np.abs(corr), 1)
    return float(upper.max()), int(np.sum(upper > bound)), float(bound)


def pixel_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel Pearson correlation over the samples of ``a`` and ``b`` ``(R, H, W)``."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    return np.where(den > 0, (a * b).sum(0) / np.where(den > 0, den, 1.0), np.nan)


def checker(flow: np.ndarray) -> np.ndarray:
    """A checkerboard (squares of min(H, W) / 8) carried by the flow: the old frame's pattern at
    ``psi(centre_d)`` (0 or 1; 0.5 where that point is outside the old frame)."""
    h, w = flow.shape[:2]
    period = max(2, min(h, w) // 8)
    y, x = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    px, py = x + flow[..., 0], y + flow[..., 1]
    img = ((np.floor(px / period) + np.floor(py / period)) % 2).astype(np.float32)
    outside = ~np.isfinite(px) | (px < 0) | (px >= w) | (py < 0) | (py >= h)
    return np.where(outside, 0.5, img)


def _draw_grid(
    results, flows, methods, wd, *, key, vmin, vmax, cmap, title, stat, label, suptitle, name
):
    """One heat map per (method, flow) of ``results[flow, method][key]``, with one colour bar."""
    fig = media.new_figure(2.6 * len(flows) + 0.8, 2.5 * len(methods))
    axes = fig.subplots(len(methods), len(flows), squeeze=False)
    im = None
    for i, m in enumerate(methods):
        for j, f in enumerate(flows):
            values = results[f, m][key]
            ax = axes[i][j]
            im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{f}: {title} {stat(values):.2f}", fontsize=8)
            if j == 0:
                ax.set_ylabel(methods_lib.method_label(m))
    fig.colorbar(im, ax=axes, shrink=0.8, label=label)
    fig.suptitle(suptitle)
    return wd.save_figure(fig, name)


def draw_maps(results, flows, methods, bound, wd: workdir_lib.Workdir) -> str:
    return _draw_grid(
        results,
        flows,
        methods,
        wd,
        key="map",
        vmin=-bound,
        vmax=bound,
        cmap="RdBu_r",
        title="max |.|",
        stat=lambda v: np.nanmax(np.abs(v)),
        label="neighbour correlation",
        suptitle="per-pixel spatial correlation (autocorr_map over the samples; white = 0)",
        name="autocorr_maps.png",
    )


def draw_noise(results, flows, methods, flow_arrays, wd: workdir_lib.Workdir) -> str:
    fig = media.new_figure(2.4 * len(flows), 2.4 * (len(methods) + 1))
    axes = fig.subplots(len(methods) + 1, len(flows), squeeze=False)
    for j, f in enumerate(flows):
        ax = axes[0][j]
        ax.imshow(checker(np.asarray(flow_arrays[f])), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f, fontsize=9)
        for i, m in enumerate(methods):
            axes[i + 1][j].imshow(results[f, m]["sample"], cmap="gray", vmin=-3, vmax=3)
    for i, label in enumerate(["checkerboard"] + [methods_lib.method_label(m) for m in methods]):
        axes[i][0].set_ylabel(label)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("a checkerboard carried by each flow, and one sample of the warped noise")
    return wd.save_figure(fig, "noise.png")


def draw_kept(results, flows, methods, wd: workdir_lib.Workdir) -> str:
    return _draw_grid(
        results,
        flows,
        methods,
        wd,
        key="kept",
        vmin=-0.2,
        vmax=1.0,
        cmap="viridis",
        title="mean",
        stat=np.nanmean,
        label="corr(Y_d, X at psi(centre_d))",
        suptitle="per-pixel correlation with the old noise resampled along the flow (0 = fresh)",
        name="kept.png",
    )


def draw_failsafe(results, flows, methods, wd: workdir_lib.Workdir) -> str | None:
    with_rec = [m for m in methods if results[flows[0], m]["source_use"] is not None]
    if not with_rec:
        return None
    fig = media.new_figure(2.6 * len(flows) + 0.8, 2.5 * len(with_rec))
    axes = fig.subplots(len(with_rec), len(flows), squeeze=False)
    im = None
    for i, m in enumerate(with_rec):
        for j, f in enumerate(flows):
            r = results[f, m]
            ax = axes[i][j]
            im = ax.imshow(np.minimum(r["source_use"], 3.0), cmap="magma", vmin=0, vmax=3)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{f}: fail-safe {r['row']['failsafe']} cells", fontsize=8)
            if j == 0:
                ax.set_ylabel(methods_lib.method_label(m))
    fig.colorbar(im, ax=axes, shrink=0.8, label="area requested from the old cell (clipped at 3)")
    fig.suptitle("record.source_use: above 1 the fail-safe divides the cell's pieces by their sum")
    return wd.save_figure(fig, "failsafe.png")


def _cells(r: dict) -> list[str]:
    def opt(v):
        return "-" if v is None else str(v)

    return [
        r["flow"],
        methods_lib.method_label(r["method"]),
        opt(r["failsafe"]),
        opt(r["overflow"]),
        opt(r["fresh"]),
        tables.cell(r["var"], 3),
        tables.cell(max(abs(r["ac_x"]), abs(r["ac_y"])), 3),
        tables.cell(r["ks_p"], 3),
        "pass" if r["white"] else "FAIL (" + ", ".join(r["failed"]) + ")",
        tables.cell(r["map_max"], 3),
        str(r["map_beyond"]),
        str(r["varmap_beyond"]),
        tables.cell(r["pair_max"], 3),
        opt(r["pair_beyond"]),
        tables.cell(r["corr_input"], 3),
    ]


def measure(config, fname: str, m: str, flow, fflow, x, k_warp, fi: int) -> tuple[dict, dict]:
    """Warps the samples ``x`` along one flow with one method; returns its metric row and the
    maps and samples the figures draw."""
    h, w = (int(s) for s in config.size)
    r_samples = int(config.samples)
    num_se = float(config.num_se)
    y = methods_lib.warp_fn(m)(jax.random.fold_in(k_warp, fi), x, flow, fflow)
    rec = method_record(m, flow, fflow)
    summ = stats.summary(y)
    checks = stats.whiteness_checks(y, num_se)
    failed = [c for c in ("mean", "var", "ks", "ac_x", "ac_y") if not checks[c]]
    amap = np.asarray(stats.autocorr_map(y))
    # Per-pixel correlation, over the samples, with the old noise resampled at
    # psi(centre_d) (bilinear; fresh noise where that point leaves the frame).
    x_at = np.asarray(methods_lib.warp_fn("bilinear")(k_warp, x, flow, fflow))[..., 0]
    se_map = 1.0 / math.sqrt(2.0 * r_samples)
    y_np = np.asarray(y)[..., 0]
    var_map = y_np.var(0)
    se_var = math.sqrt(2.0 / r_samples)
    if h * w <= int(config.max_pairwise_pixels):
        pair_max, pair_beyond, pair_bound = pairwise(y_np, num_se)
    else:
        pair_max = pair_beyond = pair_bound = None
    row = dict(
        flow=fname,
        method=m,
        failsafe=None if rec is None else int(rec.num_failsafe()),
        overflow=None if rec is None else int(rec.num_overflow()),
        fresh=None if rec is None else int(jnp.sum(rec.dst_area() == 0)),
        **summ,
        white=bool(checks["all"]),
        failed=failed,
        map_max=float(np.nanmax(np.abs(amap))),
        map_mean_abs=float(np.nanmean(np.abs(amap))),
        map_beyond=int(np.sum(np.abs(amap) > num_se * se_map)),
        map_se=se_map,
        varmap_beyond=int(np.sum(np.abs(var_map - 1.0) > num_se * se_var)),
        varmap_max_dev=float(np.max(np.abs(var_map - 1.0))),
        pair_max=pair_max,
        pair_beyond=pair_beyond,
        pair_bound=pair_bound,
        corr_input=float(stats.temporal_correlation(x, y, flow)),
        samples=r_samples,
        finite=bool(np.all(np.isfinite(y_np))),
    )
    result = dict(
        row=row,
        map=amap,
        sample=y_np[0],
        kept=pixel_corr(y_np, x_at),
        source_use=None if rec is None else np.asarray(rec.source_use),
    )
    return row, result


def run(config, workdir: str) -> list[dict]:
    """Runs the experiment of ``config`` (configs/degenerate.py) and writes into ``workdir``.

    Returns:
      The metric rows, one per flow x method, as written to ``metrics.jsonl``.
    """
    h, w = (int(s) for s in config.size)
    methods = methods_lib.check_methods(config.methods)
    all_flows = degenerate_flows(h, w, float(config.vortex_strength), float(config.vortex_radius))
    names = tuple(config.flows)
    unknown = [f for f in names if f not in all_flows]
    if unknown:
        raise ValueError(f"unknown flow(s) {unknown}; known: {', '.join(all_flows)}")
    r_samples = int(config.samples)
    num_se = float(config.num_se)
    key = jax.random.key(int(config.seed))
    k_noise, k_warp = jax.random.split(key)
    # R samples of one channel, warped at once: the library folds the leading dim into channels.
    x = jax.random.normal(k_noise, (r_samples, h, w, 1), jnp.float32)
    results, rows = {}, []
    t_start = time.perf_counter()
    with workdir_lib.Workdir(workdir, config, name="degenerate") as wd:
        for fi, fname in enumerate(names):
            flow = all_flows[fname]
            fflow = flows_lib.forward_from_backward(flow)
            for m in methods:
                row, results[fname, m] = measure(config, fname, m, flow, fflow, x, k_warp, fi)
                wd.metric(row)
                rows.append(row)
                logging.info(
                    "%-14s %-9s fail-safe %s overflow %s fresh %s | white %s | map>5SE %d | "
                    "pairs>bound %s | corr %.3f",
                    fname,
                    m,
                    row["failsafe"],
                    row["overflow"],
                    row["fresh"],
                    row["white"],
                    row["map_beyond"],
                    row["pair_beyond"],
                    row["corr_input"],
                )
        figures = [
            draw_maps(results, names, methods, float(config.map_range), wd),
            draw_noise(results, names, methods, all_flows, wd),
            draw_kept(results, names, methods, wd),
        ]
        fs = draw_failsafe(results, names, methods, wd)
        if fs:
            figures.append(fs)
        elapsed = time.perf_counter() - t_start
        bound = rows[0]["pair_bound"]
        intro = (
            f"R = {r_samples} noise samples of {h}x{w}x1 per flow and method (warped at once). "
            f"*fail-safe cells*: old cells whose requested area exceeded 1 "
            f"(`record.num_failsafe()`); *overflow px*: new pixels whose pre-image did not fit the "
            f"grid window (capacity 3, the area is dropped and the pixel renormalised); *fresh px*: "
            f"disoccluded new pixels (A_d = 0). Whiteness at {num_se:g} standard errors; per-pixel "
            f"maps over the samples (SE {1 / math.sqrt(2 * r_samples):.3f} for the correlation "
            f"map, {math.sqrt(2 / r_samples):.3f} for the variance map, {h * w} pixels each); "
            + (
                f"pairs: all {h * w * (h * w - 1) // 2} pixel pairs, bound {bound:.3f} "
                "(Bonferroni, 5 sigma). "
                if bound is not None
                else "pairs: not computed (more than max_pairwise_pixels). "
            )
            + "*corr with input*: `irwarp.stats.temporal_correlation(X, Y, flow)` (bilinear). "
            f"Strong vortex: {config.vortex_strength:g} degrees at the centre, radius "
            f"{config.vortex_radius:g} min(H, W). Wall time {elapsed:.0f} s."
        )
        text = "\n".join(
            [
                launch.header(
                    "Claim 4: grid against particle on degenerate flows",
                    launch.command_line("degenerate", workdir),
                    intro,
                ),
                "## Fail-safe, deviation from white noise, and what is kept of the old noise",
                "",
                tables.markdown_table(COLUMNS, [_cells(r) for r in rows]),
                "",
                "## Figures",
                "",
                *(f"- `{f.rsplit('/', 1)[-1]}`" for f in figures),
            ]
        )
        wd.write_summary(text)
    return rows


if __name__ == "__main__":
    launch.run_main("degenerate", run)
