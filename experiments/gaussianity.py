"""Claim 1 (Gaussianity): which warps keep the noise i.i.d. N(0, 1)? A table of method x flow.

    python -m experiments.gaussianity --config=configs/gaussianity.py --workdir=DIR

For every flow of ``irwarp.flows.zoo`` (and, when :mod:`irwarp.video` and a clip are available,
backward flows measured with OpenCV between frames of a real video) and every method, ``B``
independent ``(H, W, C)`` N(0, 1) noise images are warped ``steps`` times along the flow (``splat``
uses the forward flow: ``irwarp.flows.forward_from_backward`` of the zoo flow, or the measured
forward flow of the video). The warped noise is pooled and measured with ``irwarp.stats``: mean,
variance, Kolmogorov-Smirnov statistic and p-value against N(0, 1), lag-1 autocorrelation in x and
y, the largest cross-channel correlation, and pass/fail of ``irwarp.stats.whiteness_checks``
(tolerances of ``num_se`` standard errors from the sample size). ``dup`` is the fraction of pixels
whose value occurs at another pixel of the same image (nearest-neighbour resampling copies values).

Writes to the workdir: ``config.json``; ``metrics.jsonl`` (one line per method x flow); ``summary.md``
(a pass/fail matrix and the full table); ``whiteness.png`` (the pass/fail matrix with the measured
variance), ``hist_<flow>.png`` (histograms against the N(0, 1) density) and ``spectrum.png`` (radially
averaged power spectra, flat at 1 for white noise) for the flows of ``config.figure_flows``.

Expected (Deng et al. 2025): grid (on injective flows), particle and splat are white; bilinear is not
(its variance drops and its spectrum is low-pass); nearest duplicates values.
"""

from __future__ import annotations

import importlib
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from experiments.lib import launch, media, tables
from experiments.lib import methods as methods_lib
from experiments.lib import workdir as workdir_lib
from irwarp import flows as flows_lib
from irwarp import stats

STATS = ("mean", "var", "ks", "ks_p", "ac_x", "ac_y", "max_cross")
CHECKS = ("mean", "var", "ks", "ac_x", "ac_y", "max_cross")
COLUMNS = (
    "method",
    "flow",
    "mean",
    "var",
    "KS",
    "KS p",
    "ac_x",
    "ac_y",
    "max cross",
    "dup",
    "white",
    "failed checks",
)


def duplicate_fraction(y: np.ndarray) -> float:
    """Fraction of pixels whose exact value occurs at another pixel of the same ``(H, W)`` image.

    ``y`` is ``(..., H, W, C)``; each leading index and channel is one image. White float32 noise
    gives ~0; nearest-neighbour resampling of a zoom-in or a rotation copies values.
    """
    h, w, c = y.shape[-3:]
    imgs = np.moveaxis(np.asarray(y).reshape((-1, h, w, c)), -1, 1).reshape(-1, h * w)
    dup = 0
    for img in imgs:
        _, inverse, counts = np.unique(img, return_inverse=True, return_counts=True)
        dup += int(np.sum(counts[inverse] > 1))
    return dup / imgs.size


def video_flows(vcfg, h: int, w: int) -> tuple[list[tuple[str, jax.Array, jax.Array]], str]:
    """Backward and forward flows measured on a real clip, resized to ``(H, W)``.

    Returns ``([(name, backward, forward), ...], note)``; an empty list and the reason in ``note``
    when :mod:`irwarp.video`, OpenCV, a video decoder or the clip is missing.
    """
    if not vcfg.enabled:
        return [], "Real-video flows: disabled in the config (`video.enabled=False`)."
    try:
        video = importlib.import_module("irwarp.video")
    except ImportError as e:
        return [], f"Real-video flows: skipped, `irwarp.video` is not available ({e})."
    needed = ("read_frames", "estimate_flow", "default_clip")
    missing = [n for n in needed if not hasattr(video, n)]
    if missing:
        return [], f"Real-video flows: skipped, `irwarp.video` lacks {', '.join(missing)}."
    try:
        path = vcfg.path or video.default_clip(vcfg.clip)
        frames = video.read_frames(
            path,
            start=int(vcfg.start),
            count=int(vcfg.pairs) + 1,
            stride=int(vcfg.stride),
            size=(h, w),
        )
        out = []
        for t in range(len(frames) - 1):
            back = video.estimate_flow(frames[t + 1], frames[t], method=vcfg.flow_method)
            fwd = video.estimate_flow(frames[t], frames[t + 1], method=vcfg.flow_method)
            back, fwd = jnp.asarray(back, jnp.float32), jnp.asarray(fwd, jnp.float32)
            if vcfg.mask_occlusions and hasattr(video, "masked_backward_flow"):
                # Occluded pixels get NaN flow (fresh noise), in both directions.
                back, fwd = (
                    video.masked_backward_flow(back, fwd)[0],
                    video.masked_backward_flow(fwd, back)[0],
                )
            out.append((f"video{t}", back, fwd))
    except (ImportError, FileNotFoundError, OSError, ValueError, RuntimeError) as e:
        return [], f"Real-video flows: skipped ({type(e).__name__}: {e})."
    name = vcfg.path or vcfg.clip
    masked = "occlusions masked by forward-backward check" if vcfg.mask_occlusions else "unmasked"
    note = (
        f"Real-video flows `video0..video{len(out) - 1}`: OpenCV `{vcfg.flow_method}` flow between "
        f"consecutive frames of `{name}` (from frame {vcfg.start}, stride {vcfg.stride}) resized to "
        f"{h}x{w}, {masked}; splat uses the measured forward flow."
    )
    return out, note


def _flows(config, h: int, w: int) -> tuple[list[tuple[str, jax.Array, jax.Array]], str]:
    zoo = flows_lib.zoo(h, w)
    names = tuple(config.flows) or tuple(zoo)
    unknown = [n for n in names if n not in zoo]
    if unknown:
        raise ValueError(f"unknown zoo flow(s) {unknown}; known: {', '.join(zoo)}")
    fwd = jax.jit(flows_lib.forward_from_backward)
    out = [(n, zoo[n], fwd(zoo[n])) for n in names]
    vid, note = video_flows(config.video, h, w)
    return out + vid, note


def _row_cells(r: dict) -> list[str]:
    return [
        methods_lib.method_label(r["method"]),
        r["flow"],
        tables.cell(r["mean"], 4),
        tables.cell(r["var"], 3),
        tables.cell(r["ks"], 4),
        tables.cell(r["ks_p"], 3),
        tables.cell(r["ac_x"], 3),
        tables.cell(r["ac_y"], 3),
        tables.cell(r["max_cross"], 3),
        tables.cell(r["dup"], 3),
        "pass" if r["white"] else "FAIL",
        ", ".join(r["failed"]) or "-",
    ]


def _matrix_cell(r: dict) -> str:
    return "pass" if r["white"] else "FAIL (" + ", ".join(r["failed"]) + ")"


def draw_whiteness(rows: list[dict], methods, flow_names, wd: workdir_lib.Workdir) -> str:
    by = {(r["method"], r["flow"]): r for r in rows}
    ok = np.array([[by[m, f]["white"] for f in flow_names] for m in methods], float)
    fig = media.new_figure(1.0 + 0.75 * len(flow_names), 1.0 + 0.45 * len(methods))
    ax = fig.add_subplot()
    from matplotlib.colors import ListedColormap

    ax.imshow(ok, cmap=ListedColormap(["#e8898b", "#8fd19e"]), vmin=0, vmax=1, aspect="auto")
    for i, m in enumerate(methods):
        for j, f in enumerate(flow_names):
            ax.text(j, i, f"{by[m, f]['var']:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(flow_names)), flow_names, rotation=45, ha="right")
    ax.set_yticks(range(len(methods)), [methods_lib.method_label(m) for m in methods])
    ax.set_title("whiteness checks: green = pass, red = fail; numbers = variance")
    return wd.save_figure(fig, "whiteness.png")


def draw_histograms(flow: str, hists: dict, rows: dict, methods, wd: workdir_lib.Workdir) -> str:
    ncol = min(4, len(methods))
    nrow = math.ceil(len(methods) / ncol)
    fig = media.new_figure(3.2 * ncol, 2.6 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    grid = np.linspace(-5, 5, 401)
    pdf = np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi)
    for k, m in enumerate(methods):
        ax = axes[k // ncol][k % ncol]
        edges, dens = hists[m]
        ax.stairs(dens, edges, fill=True, alpha=0.5, color="C0", label="warped")
        ax.plot(grid, pdf, "k-", lw=1, label="N(0, 1)")
        ax.set_yscale("log")
        ax.set_ylim(1e-5, 1.0)
        ax.set_xlim(-5, 5)
        r = rows[m]
        verdict = "white" if r["white"] else "not white"
        ax.set_title(
            f"{methods_lib.method_label(m)}: var {r['var']:.2f}, KS {r['ks']:.3f}\n({verdict})",
            fontsize=9,
        )
        if k == 0:
            ax.legend(fontsize=7, loc="lower center")
    for k in range(len(methods), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    fig.suptitle(f"histograms of warped noise, flow '{flow}' (log density)")
    return wd.save_figure(fig, f"hist_{flow}.png")


def draw_spectra(spectra: dict, methods, figure_flows, wd: workdir_lib.Workdir) -> str:
    fig = media.new_figure(4.2 * len(figure_flows), 3.4)
    axes = fig.subplots(1, len(figure_flows), squeeze=False)[0]
    for ax, flow in zip(axes, figure_flows, strict=True):
        for k, m in enumerate(methods):
            freqs, power = spectra[flow][m]
            ax.plot(freqs, power, color=f"C{k}", lw=1.2, label=methods_lib.method_label(m))
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        top = max(float(np.nanmax(spectra[flow][m][1])) for m in methods)
        ax.set_ylim(0.0, max(1.5, 1.05 * top))
        ax.set_xlabel("radial frequency (cycles / pixel)")
        ax.set_ylabel("power (white = 1)")
        ax.set_title(f"flow '{flow}'")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside right center")
    fig.suptitle("radially averaged power spectrum of the warped noise")
    return wd.save_figure(fig, "spectrum.png")


def _check_config(config) -> tuple[int, int]:
    h, w = (int(s) for s in config.size)
    if min(h, w) < 4:
        raise ValueError(f"size must be at least 4 x 4; got {tuple(config.size)}")
    methods_lib.check_methods(config.methods)
    if int(config.steps) < 1 or int(config.batch) < 1 or int(config.channels) < 1:
        raise ValueError("steps, batch and channels must be >= 1")
    return h, w


def summary_md(config, workdir, rows, flow_names, figures, video_note, elapsed) -> str:
    """The summary.md text: the pass/fail matrix and all statistics."""
    methods = tuple(config.methods)
    h, w = _check_config(config)
    shape = (int(config.batch), h, w, int(config.channels))
    by = {(r["method"], r["flow"]): r for r in rows}
    matrix = tables.markdown_table(
        ("method", *flow_names),
        [
            [methods_lib.method_label(m), *(_matrix_cell(by[m, f]) for f in flow_names)]
            for m in methods
        ],
    )
    table = tables.markdown_table(COLUMNS, [_row_cells(r) for r in rows])
    intro = (
        f"{shape[0]} noise images of {h}x{w}x{shape[3]} (n = {rows[0]['n']} values per cell), "
        f"warped {config.steps} time(s) along each flow. `white` = all of "
        f"`irwarp.stats.whiteness_checks` pass at {config.num_se} standard errors (KS p > "
        f"{config.ks_alpha}). Degenerate zoo flows: {', '.join(sorted(flows_lib.DEGENERATE))}. "
        f"`dup` = fraction of pixels whose value also occurs elsewhere in the same image "
        "(float32 draws of `jax.random.normal` collide by chance too: see the `fresh` rows). "
        f"Splat uses `irwarp.flows.forward_from_backward` of the zoo flow. "
        f"Wall time {elapsed:.0f} s."
    )
    text = "\n".join(
        [
            launch.header(
                "Claim 1: Gaussianity of warped noise",
                launch.command_line("gaussianity", workdir),
                intro,
            ),
            video_note,
            "",
            "## Pass/fail of the whiteness checks (failed checks in brackets)",
            "",
            matrix,
            "",
            "## All statistics",
            "",
            table,
            "",
            "## Figures",
            "",
            *(f"- `{f.rsplit('/', 1)[-1]}`" for f in figures),
        ]
    )
    return text


def run(config, workdir: str) -> list[dict]:
    """Runs the experiment of ``config`` (configs/gaussianity.py) and writes into ``workdir``.

    Returns:
      The metric rows (one per method x flow), as written to ``metrics.jsonl``.
    """
    h, w = _check_config(config)
    methods = tuple(config.methods)
    shape = (int(config.batch), h, w, int(config.channels))
    flow_list, video_note = _flows(config, h, w)
    flow_names = [f[0] for f in flow_list]
    figure_flows = [f for f in config.figure_flows if f in flow_names]
    key = jax.random.key(int(config.seed))
    k_noise, k_warp = jax.random.split(key)
    x = jax.random.normal(k_noise, shape, jnp.float32)
    rows: list[dict] = []
    hists: dict = {f: {} for f in figure_flows}
    spectra: dict = {f: {} for f in figure_flows}
    rows_by_flow: dict = {f: {} for f in figure_flows}
    t_start = time.perf_counter()
    with workdir_lib.Workdir(workdir, config, name="gaussianity") as wd:
        for fi, (fname, bflow, fflow) in enumerate(flow_list):
            for m in methods:
                fn = methods_lib.warp_fn(m)
                y = x
                for s in range(int(config.steps)):
                    k = jax.random.fold_in(jax.random.fold_in(k_warp, fi), s)
                    y = fn(k, y, bflow, fflow)
                row = stats.summary(y)
                checks = stats.whiteness_checks(y, float(config.num_se), float(config.ks_alpha))
                failed = [c for c in CHECKS if not checks[c]]
                y_np = np.asarray(y)
                r = dict(
                    method=m,
                    flow=fname,
                    **row,
                    dup=duplicate_fraction(y_np),
                    white=bool(checks["all"]),
                    failed=failed,
                    checks={c: bool(checks[c]) for c in CHECKS},
                    degenerate=fname in flows_lib.DEGENERATE,
                    n=int(y_np.size),
                    finite=bool(np.all(np.isfinite(y_np))),
                )
                if fname in figure_flows:
                    dens, edges = np.histogram(
                        y_np, bins=int(config.hist_bins), range=(-5, 5), density=True
                    )
                    hists[fname][m] = (edges, dens)
                    freqs, power = stats.radial_power_spectrum(y)
                    spectra[fname][m] = (np.asarray(freqs), np.asarray(power))
                    rows_by_flow[fname][m] = r
                    r["spectrum_freqs"] = spectra[fname][m][0]
                    r["spectrum_power"] = spectra[fname][m][1]
                wd.metric(r)
                rows.append(r)
                logging.info(
                    "%-10s %-12s var %.3f ks %.4f ac %.3f/%.3f %s",
                    m,
                    fname,
                    r["var"],
                    r["ks"],
                    r["ac_x"],
                    r["ac_y"],
                    "white" if r["white"] else "FAIL " + ",".join(failed),
                )
        figures = [draw_whiteness(rows, methods, flow_names, wd)]
        for f in figure_flows:
            figures.append(draw_histograms(f, hists[f], rows_by_flow[f], methods, wd))
        if figure_flows:
            figures.append(draw_spectra(spectra, methods, figure_flows, wd))
        elapsed = time.perf_counter() - t_start

        text = summary_md(config, workdir, rows, flow_names, figures, video_note, elapsed)
        wd.write_summary(text)
    return rows


if __name__ == "__main__":
    launch.run_main("gaussianity", run)
