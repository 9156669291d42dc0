"""Demo: warp noise along a synthetic flow sequence with every method, measure it, and show it.

    python -m experiments.demo --config=configs/demo.py --workdir=DIR

Builds one backward flow from ``irwarp.flows`` (by default a vortex, a slow rotation and a fractional
translation, composed), repeats it for the ``T - 1`` steps of a ``T``-frame sequence, and warps the
same initial ``(H, W, C)`` noise along it with ``irwarp.warp_sequence`` for each method of
``config.methods`` (``"splat"`` gets the forward flow of the same motion from
``irwarp.flows.forward_from_backward``). Each whole sequence is jitted; its compile time is
measured on its own, and its median run time after warm-up is reported per warped frame.

Writes to the workdir:

- ``config.json``: the resolved config;
- ``metrics.jsonl``: one line per method and frame with ``irwarp.stats.summary`` (mean, var, ks,
  ks_p, ac_x, ac_y, max_cross), the ``irwarp.stats.whiteness_checks`` verdicts, and the
  ``irwarp.stats.temporal_correlation`` with the previous frame along the flow (null at t = 0);
- ``summary.md``: one row per method, averaged over the warped frames t = 1 .. T-1 (frame 0 is the
  shared input), whether every warped frame passed the whiteness checks, the mean temporal
  correlation, and ms per frame;
- ``strip.png``: rows = methods, columns = a few frames of one noise channel in grayscale, under a
  row showing a test pattern carried along the same flow (with arrows of the per-frame motion).
"""

from __future__ import annotations

import collections
import os
import platform
import statistics
import sys
import textwrap
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import irwarp
from experiments.lib import launch, measure, media, tables
from experiments.lib import workdir as workdir_lib

STATS = ("mean", "var", "ks", "ks_p", "ac_x", "ac_y", "max_cross")
CHECKS = ("mean", "var", "ac_x", "ac_y", "max_cross", "ks")
COLUMNS = (
    "method",
    *STATS,
    "white (all frames)",
    "failed checks (frames)",
    "temporal corr",
    "ms/frame",
    "compile s",
)
FLOW_COMPONENTS = ("vortex", "rotation", "translation", "zoom", "shear_waves")


# ----------------------------------------------------------------------------- flow


def build_flow(config) -> jax.Array:
    """The per-frame backward flow ``(H, W, 2)`` of ``config.flow`` (its components composed).

    The content undergoes ``components[0]``, then ``components[1]``, ... within one frame step, so
    the backward map is ``psi_0 o psi_1 o ...``, i.e. ``compose(compose(f_0, f_1), f_2) ...``.
    """
    h, w = int(config.height), int(config.width)
    side = min(h, w)
    fc = config.flow
    parts = []
    for name in fc.components:
        if name == "vortex":
            parts.append(
                irwarp.flows.vortex(h, w, fc.vortex_strength, radius=fc.vortex_radius * side)
            )
        elif name == "rotation":
            parts.append(irwarp.flows.rotation(h, w, fc.rotation_deg))
        elif name == "translation":
            dx, dy = fc.translation
            parts.append(irwarp.flows.translation(h, w, dx, dy))
        elif name == "zoom":
            parts.append(irwarp.flows.zoom(h, w, fc.zoom))
        elif name == "shear_waves":
            parts.append(
                irwarp.flows.shear_waves(
                    h, w, fc.shear_amplitude, wavelength=fc.shear_wavelength * side
                )
            )
        else:
            raise ValueError(
                f"unknown flow component {name!r}; known: {', '.join(FLOW_COMPONENTS)}"
            )
    if not parts:
        return irwarp.flows.identity(h, w)
    flow = parts[0]
    for part in parts[1:]:
        flow = irwarp.flows.compose(flow, part)
    return flow


def describe_flow(config) -> str:
    """A short human description of ``config.flow``."""
    fc = config.flow
    words = {
        "vortex": f"vortex {fc.vortex_strength:g} deg/frame at the centre "
        f"(radius {fc.vortex_radius:g} min(H, W))",
        "rotation": f"rotation {fc.rotation_deg:g} deg/frame",
        "translation": f"content shift ({-fc.translation[0]:g}, {-fc.translation[1]:g}) px/frame",
        "zoom": f"zoom x{fc.zoom:g}/frame",
        "shear_waves": f"shear waves {fc.shear_amplitude:g} px",
    }
    return " + ".join(words.get(n, n) for n in fc.components) or "identity"


# ----------------------------------------------------------------------------- warping


def method_options(config, method: str) -> dict:
    """Keyword options of ``method`` from ``config.method_options`` (empty when not listed)."""
    opts = config.method_options.get(method)
    return {} if opts is None else dict(opts.to_dict())


def make_sequence_fn(method: str, options: dict):
    """``f(key, noise0, backward_flows, forward_flows) -> (T, H, W, C)`` frames for ``method``."""
    if method == "splat":
        if options:
            raise ValueError(f"method 'splat' takes no options; got {sorted(options)}")
        return lambda key, x0, bflows, fflows: irwarp.warp_sequence(key, x0, fflows, method="splat")
    if method not in irwarp.METHODS:
        raise ValueError(f"unknown method {method!r}; known: splat, {', '.join(irwarp.METHODS)}")
    return lambda key, x0, bflows, fflows: irwarp.warp_sequence(
        key, x0, bflows, method=method, **options
    )


def record_note(method: str, options: dict, flow: jax.Array) -> str:
    """Partition-record diagnostics of the per-frame flow (grid and particle), else ``""``."""
    if method == "grid":
        rec = irwarp.grid_record(flow, **options)
        return (
            f"{int(rec.num_overflow())} px over the record capacity; non-injective fail-safe "
            f"fired in {int(rec.num_failsafe())} source cells"
        )
    if method == "particle":
        rec = irwarp.particle_record(flow)
        return (
            f"{int(rec.num_failsafe())} source cells requested more than their area (particle "
            "always renormalises each source, so the output stays white)"
        )
    return ""


def frame_metrics(frames: jax.Array, flow: jax.Array, config) -> list[dict]:
    """Per-frame statistics of ``frames`` ``(T, H, W, C)``; see the module docstring."""
    sc = config.stats
    rows = []
    for t in range(frames.shape[0]):
        row = {"t": t, **irwarp.stats.summary(frames[t])}
        checks = irwarp.stats.whiteness_checks(frames[t], num_se=sc.num_se, ks_alpha=sc.ks_alpha)
        row["white"] = bool(checks["all"])
        row["failed"] = [c for c in CHECKS if not checks[c]]
        row["temporal_corr"] = (
            None
            if t == 0
            else float(
                irwarp.stats.temporal_correlation(
                    frames[t - 1], frames[t], flow, mode=sc.temporal_mode
                )
            )
        )
        rows.append(row)
    return rows


def summarise(method: str, rows: list[dict], ms_per_frame: float, compile_s: float) -> dict:
    """One ``summary.md`` row from the per-frame rows of the warped frames (t >= 1)."""
    warped = [r for r in rows if r["t"] >= 1]
    out = {"method": method}
    for k in STATS:
        out[k] = statistics.fmean(r[k] for r in warped)
    failed = collections.Counter(c for r in warped for c in r["failed"])
    out["white"] = all(r["white"] for r in warped)
    out["failed"] = {c: failed[c] for c in CHECKS if failed[c]}
    out["temporal_corr"] = statistics.fmean(r["temporal_corr"] for r in warped)
    out["ms_per_frame"] = ms_per_frame
    out["compile_s"] = compile_s
    out["num_warped_frames"] = len(warped)
    return out


def _table_cells(s: dict) -> list:
    failed = ", ".join(f"{c} ({n})" for c, n in s["failed"].items()) or "-"
    return [
        s["method"],
        *(tables.fmt(s[k], 3) for k in STATS),
        tables.fmt(s["white"]),
        failed,
        tables.fmt(s["temporal_corr"], 3),
        tables.fmt(s["ms_per_frame"], 2),
        tables.fmt(s["compile_s"], 1),
    ]


# ----------------------------------------------------------------------------- figure


def pattern_image(h: int, w: int, checker: float) -> np.ndarray:
    """An ``(H, W, 3)`` RGB pattern in ``[0, 1]``: a gray checkerboard with three coloured discs."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    size = max(1.0, checker * min(h, w))
    board = ((np.floor(x / size) + np.floor(y / size)) % 2).astype(np.float32)
    img = np.repeat((0.45 + 0.4 * board)[..., None], 3, axis=-1)
    discs = (
        ((0.5, 0.22), (0.85, 0.15, 0.1)),  # red, above the centre
        ((0.25, 0.7), (0.1, 0.6, 0.2)),  # green, lower left
        ((0.75, 0.7), (0.15, 0.3, 0.9)),  # blue, lower right
    )
    radius = 0.1 * min(h, w)
    for (cx, cy), colour in discs:
        inside = (x - cx * w) ** 2 + (y - cy * h) ** 2 <= radius**2
        img[inside] = 0.35 * img[inside] + 0.65 * np.asarray(colour, np.float32)
    return img


def carry_pattern(pattern: np.ndarray, flow: jax.Array, frames: Sequence[int]) -> list[np.ndarray]:
    """``pattern`` as frame 0, carried along the per-frame backward ``flow`` to each of ``frames``.

    Frame ``t`` samples frame 0 once (bilinearly) through the composed backward map
    ``psi^t = psi o ... o psi``, so the pattern stays sharp; points pulled from outside frame 0
    (content that entered the frame) are dark.
    """
    h, w = pattern.shape[:2]
    y, x = jnp.mgrid[0:h, 0:w].astype(jnp.float32) + 0.5
    img = jnp.asarray(pattern)
    out, cumulative, t = [], None, 0
    for target in sorted(frames):
        while t < target:
            cumulative = flow if cumulative is None else irwarp.flows.compose(cumulative, flow)
            t += 1
        if cumulative is None:
            out.append(np.asarray(pattern))
            continue
        px, py = x + cumulative[..., 0], y + cumulative[..., 1]
        coords = [py - 0.5, px - 0.5]
        warped = jnp.stack(
            [
                jax.scipy.ndimage.map_coordinates(img[..., c], coords, order=1, mode="nearest")
                for c in range(img.shape[-1])
            ],
            axis=-1,
        )
        inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        out.append(np.asarray(jnp.where(inside[..., None], warped, 0.12)))
    order = {f: i for i, f in enumerate(sorted(frames))}
    return [out[order[f]] for f in frames]


def draw_strip(config, flow, noise: dict, summaries: dict, path: str) -> str:
    """Draws ``strip.png``: a flow row, then one row per method; returns ``path``.

    The layout is computed in screen pixels so that every image cell is exactly
    ``plot.cell_pixels`` wide (1:1 noise pixels for a 128 x 128 frame at the default), which avoids
    the moire of non-integer resampling.
    """
    from matplotlib.figure import Figure  # optional dependency (the `plots` extra)

    plot = config.plot
    frames = tuple(int(t) for t in plot.frames)
    methods = list(noise)
    h, w = int(config.height), int(config.width)
    nrows, ncols = 1 + len(methods), len(frames)
    dpi = float(plot.dpi)
    cell_w = int(plot.cell_pixels)
    cell_h = max(1, round(cell_w * h / w))
    gap, label_w, line_h = 6, 170, 14  # pixels; line_h fits one 9-point line at 100 dpi
    fig_w = label_w + ncols * cell_w + (ncols - 1) * gap + gap
    title = (
        f"irwarp demo: {h}x{w}x{config.channels} noise, {config.num_frames} frames; "
        f"channel {plot.channel} shown as gray, clipped to [-{plot.clip:g}, {plot.clip:g}]. "
        f"Flow per frame: {describe_flow(config)}"
    )
    title = textwrap.fill(title, max(30, int(fig_w / 7.5)))  # under 7.5 px per character at 9 pt
    top = (title.count("\n") + 1) * line_h + 12 + line_h + 6  # title, spacing, column titles
    fig_h = top + nrows * cell_h + (nrows - 1) * gap + gap
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    fig.text(0.5, 1.0 - 6 / fig_h, title, ha="center", va="top", fontsize=9)

    def cell_axes(row: int, col: int):
        left = label_w + col * (cell_w + gap)
        bottom = fig_h - top - (row + 1) * cell_h - row * gap
        ax = fig.add_axes((left / fig_w, bottom / fig_h, cell_w / fig_w, cell_h / fig_h))
        ax.set_xticks([])
        ax.set_yticks([])
        return ax

    def row_label(ax, text: str) -> None:
        ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=9, labelpad=6)

    patterns = carry_pattern(pattern_image(h, w, plot.checker), flow, frames)
    first = None
    for col, (t, img) in enumerate(zip(frames, patterns, strict=True)):
        ax = cell_axes(0, col)
        ax.imshow(img, interpolation="nearest", aspect="auto")
        ax.set_title(f"t = {t}", fontsize=9, pad=3)
        first = ax if col == 0 else first
    # Arrows of the content motion in one frame step (minus the backward flow), magnified.
    n = max(int(plot.arrows), 1)
    ii = ((np.arange(n) + 0.5) * h / n).astype(int)
    jj = ((np.arange(n) + 0.5) * w / n).astype(int)
    f = np.asarray(flow)[np.ix_(ii, jj)]
    u, v = -f[..., 0], -f[..., 1]
    longest = float(np.nanmax(np.hypot(u, v)))
    if longest > 0:
        gain = 0.8 * min(h, w) / n / longest
        jx, iy = np.meshgrid(jj, ii)
        first.quiver(
            jx, iy, u, v, angles="xy", scale_units="xy", scale=1.0 / gain, color="yellow",
            edgecolor="black", linewidth=0.5, width=0.014, headwidth=3, headlength=3.5,
            headaxislength=3,
        )  # fmt: skip
        row_label(
            first,
            f"flow: a test\npattern carried\nalong it (arrows:\nmotion per\nframe x{gain:.1f})",
        )
    else:
        row_label(first, "flow: identity")

    clip = float(plot.clip)
    for row, method in enumerate(methods, start=1):
        for col in range(ncols):
            ax = cell_axes(row, col)
            ax.imshow(
                noise[method][col],
                cmap="gray",
                vmin=-clip,
                vmax=clip,
                interpolation="nearest",
                aspect="auto",
            )
            if col == 0:
                s = summaries[method]
                row_label(
                    ax,
                    f"{method}\nvar {s['var']:.2f}\ntemporal corr {s['temporal_corr']:.2f}\n"
                    f"white: {'yes' if s['white'] else 'no'}",
                )
    return media.save_figure(fig, path, dpi=int(dpi))


# ----------------------------------------------------------------------------- run


def _check_config(config) -> None:
    if int(config.num_frames) < 2:
        raise ValueError(f"num_frames must be >= 2 (frame 0 plus warps); got {config.num_frames}")
    bad = [t for t in config.plot.frames if not 0 <= int(t) < int(config.num_frames)]
    if bad:
        raise ValueError(
            f"plot.frames must lie in [0, num_frames = {config.num_frames}); got {bad}"
        )
    if not config.methods:
        raise ValueError("config.methods is empty")
    for method in config.methods:
        make_sequence_fn(method, method_options(config, method))  # validates names and options


def summary_md(
    config, command: str, summaries: dict, notes: dict, seconds: float
) -> tuple[str, str]:
    """The summary.md text and its table (one row per method)."""
    h, w, c, nt = (int(config[k]) for k in ("height", "width", "channels", "num_frames"))
    table = tables.markdown_table(COLUMNS, [_table_cells(s) for s in summaries.values()])
    record_notes = [f"- {m}: {n}" for m, n in notes.items() if n]
    md = "\n".join(
        [
            "# irwarp demo",
            "",
            f"- Command: `{command}`",
            f"- Noise: {h} x {w} x {c}, {nt} frames (frame 0 shared, {nt - 1} warps), "
            f"seed {config.seed}.",
            f"- Flow per frame: {describe_flow(config)}.",
            "- Statistics: irwarp.stats.summary averaged over the warped frames t = 1 .. "
            f"{nt - 1}; white = every warped frame passed irwarp.stats.whiteness_checks "
            f"({config.stats.num_se:g} standard errors, KS p > {config.stats.ks_alpha:g}); the "
            "failed-checks column counts the frames that failed each check; temporal corr = "
            "mean irwarp.stats.temporal_correlation of each frame with the previous one resampled "
            f"({config.stats.temporal_mode}) along the flow (bilinear warping scores 1 under "
            "bilinear resampling by construction; its price is the lost variance).",
            "- Timing: the whole sequence jitted (compile s, measured on its own), then the median "
            f"of {config.timing.repeats} calls after {config.timing.warmup} warm-up, divided by "
            f"the {nt - 1} warps. Hardware: {platform.machine()}, {os.cpu_count()} cores, "
            f"jax {jax.__version__} on {jax.default_backend()}.",
            f"- Wall time of the whole run: {seconds:.0f} s.",
            "",
            table,
            "",
            *(["Partition records of the per-frame flow:", "", *record_notes, ""] * bool(notes)),
            "![strip](strip.png)",
            "",
        ]
    )
    return md, table


def run(config, workdir: str, command: str | None = None) -> dict:
    """Runs the demo of ``config`` and writes its outputs into ``workdir``.

    Args:
      config: a ConfigDict from ``configs/demo.py``.
      workdir: output directory (created if missing).
      command: the command line recorded in ``summary.md`` (default: a reconstruction).

    Returns:
      Dict with ``summary`` (method -> the summary row as a dict), ``outputs`` (name -> path)
      and ``seconds`` (wall time of the whole run).
    """
    start = time.perf_counter()
    _check_config(config)
    os.makedirs(workdir, exist_ok=True)
    workdir_lib.write_config(workdir, config)
    if command is None:
        command = launch.command_line("demo", workdir)
    h, w, c, nt = (int(config[k]) for k in ("height", "width", "channels", "num_frames"))
    flow = build_flow(config)
    fflow = irwarp.flows.forward_from_backward(flow, iterations=int(config.flow.splat_iterations))
    bflows = jnp.broadcast_to(flow, (nt - 1, h, w, 2))
    fflows = jnp.broadcast_to(fflow, (nt - 1, h, w, 2))
    k_noise, k_warp = jax.random.split(jax.random.key(int(config.seed)))
    noise0 = jax.random.normal(k_noise, (h, w, c), jnp.float32)
    logging.info("flow: %s; noise %dx%dx%d, %d frames", describe_flow(config), h, w, c, nt)

    frames_shown = tuple(int(t) for t in config.plot.frames)
    summaries, shown, notes = {}, {}, {}
    with workdir_lib.JsonlWriter(os.path.join(workdir, "metrics.jsonl")) as metrics:
        for i, method in enumerate(config.methods, start=1):
            opts = method_options(config, method)
            fn = make_sequence_fn(method, opts)
            args = (k_warp, noise0, bflows, fflows)
            compiled, compile_s = measure.compile_timed(fn, *args)
            frames = measure.block(compiled(*args))
            seconds = measure.median_seconds(
                compiled, *args, warmup=config.timing.warmup, repeats=config.timing.repeats
            )
            ms_per_frame = 1e3 * seconds / (nt - 1)
            rows = frame_metrics(frames, flow, config)
            for row in rows:
                metrics.write({"method": method, **row})
            summaries[method] = summarise(method, rows, ms_per_frame, compile_s)
            notes[method] = record_note(method, opts, flow)
            shown[method] = np.asarray(frames[jnp.asarray(frames_shown), ..., config.plot.channel])
            s = summaries[method]
            logging.info(
                "[%d/%d] %-8s compile %.1f s, %.2f ms/frame; var %.3f, ks_p %.3f, "
                "temporal corr %.3f, white in all frames: %s %s",
                i,
                len(config.methods),
                method,
                compile_s,
                ms_per_frame,
                s["var"],
                s["ks_p"],
                s["temporal_corr"],
                s["white"],
                notes[method],
            )

    strip = draw_strip(config, flow, shown, summaries, os.path.join(workdir, "strip.png"))
    seconds = time.perf_counter() - start
    md, table = summary_md(config, command, summaries, notes, seconds)
    summary_path = os.path.join(workdir, "summary.md")
    with open(summary_path, "w") as f:
        f.write(md)
    print(table)
    sys.stdout.flush()
    logging.info("wrote %s in %.0f s", workdir, seconds)
    return {
        "summary": summaries,
        "outputs": {
            "config": os.path.join(workdir, "config.json"),
            "metrics": os.path.join(workdir, "metrics.jsonl"),
            "summary": summary_path,
            "strip": strip,
        },
        "seconds": seconds,
    }


if __name__ == "__main__":
    launch.run_main("demo", run)
