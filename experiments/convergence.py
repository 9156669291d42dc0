"""Claim 2 (convergence): Chang et al. with upsampling N tends to the grid variant, at a cost ~ N^2.

    python -m experiments.convergence --config=configs/convergence.py --workdir=DIR

The law of a warp is fixed by the covariance of the new noise with the old one. For the grid
variant it is known exactly from its partition record, ``E_grid[Y_d X_s] = a_ds / sqrt(A_d)``
(docs/DESIGN.md section 2). For Chang et al. with ``N x N`` sub-pixels it is measured, on the pairs
``(d, s)`` with ``s`` in the 3x3 window of old cells of the grid record of ``d`` (which holds the
support of both warps), in two ways:

* Monte Carlo, black-box: ``R`` independent noise images ``X`` are warped (``R`` channels at once;
  the library folds them into the feature axis for a shared flow), and ``E_N[Y_d X_s]`` is the
  sample mean of ``Y_d X_s``. Its own noise, about ``1/sqrt(R)`` per pair, is reported as the
  *floor* (the mean |error| that an exact warp would show with the same ``R``, from the sample
  variances of the products), together with the debiased RMS error
  ``sqrt(max(mean((C_hat - C)^2 - se^2), 0))``. The grid itself is run through the same estimator as
  a control: its raw error must sit on the floor.
* Exact probe, noise-free: both warps are linear in ``X`` for a fixed key (``Y = A X + B z``), so
  ``Y(key, X) - Y(key, 0) = A X`` exactly. Feeding 9 "colourings" of the image (cell ``(i, j)`` set to
  1 where ``(i mod 3, j mod 3)`` is the colour) as 9 channels gives every ``A_ds`` of the window at
  once, since a 3x3 window holds one cell of each colour. This is the error without Monte-Carlo
  noise; the fitted slope uses it.

The error is ``mean |E_N[Y X] - E_grid[Y X]|`` over those pairs. Time is ms per frame of one
``(H, W, C)`` frame at ``config.timing_size``, jitted, median of ``config.repeats`` calls.

Writes to the workdir: ``config.json``; ``metrics.jsonl`` (one line per flow x N, plus grid control
rows and timing rows); ``summary.md`` (tables and fitted log-log slopes); ``convergence.png`` (error
and time against N, log-log).
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import irwarp
from experiments.lib import launch, measure, media, tables
from experiments.lib import methods as methods_lib
from experiments.lib import workdir as workdir_lib
from irwarp import flows as flows_lib

COLUMNS = (
    "flow",
    "method",
    "exact mean abs err",
    "exact RMS err",
    "MC mean abs err",
    "MC floor",
    "MC debiased RMS",
    "pairs",
)


def window_pairs(record: irwarp.PartitionRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique pairs ``(d, s)`` of a grid record's windows and ``E_grid[Y_d X_s] = a_ds / sqrt(A_d)``.

    Returns:
      ``(dst, src, cov)``, 1-D arrays over the pairs (flat pixel indices ``i * W + j``).
    """
    h, w = record.shape
    n = h * w
    src = np.asarray(record.src, np.int64)
    dst = np.asarray(record.dst, np.int64)
    area = np.asarray(record.area, np.float64)
    a_dst = np.bincount(dst, weights=area, minlength=n)
    cov = np.where(a_dst[dst] > 0, area / np.sqrt(np.where(a_dst[dst] > 0, a_dst[dst], 1.0)), 0.0)
    keys, inverse = np.unique(dst * n + src, return_inverse=True)
    return keys // n, keys % n, np.bincount(inverse, weights=cov)


def colourings(h: int, w: int, channels: int) -> np.ndarray:
    """``(H, W, channels)`` float32: channel ``3 a + b`` is 1 where ``i % 3 == a`` and ``j % 3 == b``."""
    if channels < 9:
        raise ValueError(f"the probe needs at least 9 channels; got {channels}")
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    colour = (i % 3) * 3 + (j % 3)
    x = np.zeros((h, w, channels), np.float32)
    for c in range(9):
        x[..., c] = colour == c
    return x


def probe_covariance(fn, key, flow, fflow, pairs, h: int, w: int, channels: int) -> np.ndarray:
    """Exact ``E[Y_d X_s]`` on ``pairs`` of a warp that is linear in ``X`` for a fixed key."""
    dst, src, _ = pairs
    x = jnp.asarray(colourings(h, w, channels))
    resp = np.asarray(fn(key, x, flow, fflow), np.float64) - np.asarray(
        fn(key, jnp.zeros_like(x), flow, fflow), np.float64
    )
    resp = resp.reshape(h * w, channels)
    colour = ((src // w) % 3) * 3 + (src % w) % 3
    return resp[dst, colour]


def mc_covariance(fn, key, flow, fflow, pairs, h: int, w: int, samples: int, chunk: int):
    """Monte-Carlo ``E[Y_d X_s]`` on ``pairs`` and the squared standard error of each estimate."""
    dst, src, _ = pairs
    total = np.zeros(dst.shape, np.float64)
    total_sq = np.zeros(dst.shape, np.float64)
    k_x, k_w = jax.random.split(key)
    num = 0
    for r in range(math.ceil(samples / chunk)):
        x = jax.random.normal(jax.random.fold_in(k_x, r), (h, w, chunk), jnp.float32)
        y = fn(jax.random.fold_in(k_w, r), x, flow, fflow)
        xs = np.asarray(x, np.float64).reshape(h * w, chunk)[src]
        ys = np.asarray(y, np.float64).reshape(h * w, chunk)[dst]
        prod = xs * ys
        total += prod.sum(1)
        total_sq += (prod * prod).sum(1)
        num += chunk
    mean = total / num
    var = np.maximum(total_sq / num - mean * mean, 0.0) * num / max(num - 1, 1)
    return mean, var / num


def errors(c_hat: np.ndarray, se2: np.ndarray | None, c_ref: np.ndarray) -> dict:
    """Error statistics of an estimated covariance against the grid's exact one."""
    diff = c_hat - c_ref
    out = {"mae": float(np.mean(np.abs(diff))), "rms": float(np.sqrt(np.mean(diff * diff)))}
    if se2 is not None:
        excess = diff * diff - se2
        ms = float(np.mean(excess))
        ms_se = float(np.std(excess) / math.sqrt(excess.size))
        out.update(
            floor=float(np.mean(np.sqrt(2.0 / math.pi * se2))),
            bias_rms=math.sqrt(max(ms, 0.0)),
            bias_ms=ms,
            bias_ms_se=ms_se,
            resolved=bool(ms > 3.0 * ms_se),
        )
    return out


def time_method(name: str, size, channels: int, repeats: int, key) -> tuple[float, float]:
    """``(ms per frame, compile s)`` of one jitted ``(H, W, C)`` warp along the zoo rotation."""
    h, w = size
    flow = flows_lib.zoo(h, w)["rotation"]
    fflow = flows_lib.forward_from_backward(flow)
    x = jax.random.normal(key, (h, w, channels), jnp.float32)
    fn = methods_lib.warp_fn(name)
    t0 = time.perf_counter()
    measure.block(fn(key, x, flow, fflow))  # compiles (or reuses) the cached jit
    first = time.perf_counter() - t0
    sec = measure.median_seconds(fn, key, x, flow, fflow, warmup=0, repeats=repeats)
    return 1e3 * sec, first


def draw(rows, timing, config, wd: workdir_lib.Workdir) -> str:
    ns = np.asarray(config.upsample, float)
    fig = media.new_figure(11, 4.2)
    ax_e, ax_t = fig.subplots(1, 2)
    for k, flow in enumerate(config.flows):
        rr = [r for r in rows if r["flow"] == flow and r["method"] == "chang"]
        ax_e.plot(ns, [r["exact_mae"] for r in rr], "o-", color=f"C{k}", label=f"{flow} (exact)")
        ax_e.plot(
            ns,
            [r["mc_mae"] for r in rr],
            "s--",
            color=f"C{k}",
            mfc="none",
            alpha=0.7,
            label=f"{flow} (MC raw)",
        )
        floor = np.mean([r["mc_floor"] for r in rr])
        ax_e.axhline(floor, color=f"C{k}", ls=":", lw=0.8)
    first = np.mean([r["exact_mae"] for r in rows if r["method"] == "chang" and r["n"] == ns[0]])
    ax_e.plot(ns, first * ns[0] / ns, "k--", lw=0.8, label="1/N reference")
    ax_e.set_xscale("log", base=2)
    ax_e.set_xticks(ns, [str(int(n)) for n in ns])
    ax_e.set_yscale("log")
    ax_e.set_xlabel("upsampling N")
    ax_e.set_ylabel("mean |E_N[YX] - E_grid[YX]|")
    ax_e.set_title("covariance error (dotted: Monte-Carlo floor)")
    ax_e.legend(fontsize=7, ncol=2)
    t_ms = [timing[f"chang{int(n)}"]["ms"] for n in ns]
    ax_t.plot(ns, t_ms, "o-", color="C3", label="chang N")
    ax_t.plot(ns, t_ms[-1] * (ns / ns[-1]) ** 2, "k--", lw=0.8, label="N^2 reference")
    ax_t.axhline(timing["grid"]["ms"], color="C0", ls="-.", label="grid")
    ax_t.set_xscale("log", base=2)
    ax_t.set_xticks(ns, [str(int(n)) for n in ns])
    ax_t.set_yscale("log")
    ax_t.set_xlabel("upsampling N")
    ax_t.set_ylabel("ms per frame")
    h, w = config.timing_size
    ax_t.set_title(f"time per {h}x{w}x{config.timing_channels} frame")
    ax_t.legend(fontsize=8)
    return wd.save_figure(fig, "convergence.png")


def _row_cells(r: dict) -> list[str]:
    label = f"chang N={r['n']}" if r["method"] == "chang" else "grid (control)"
    return [
        r["flow"],
        label,
        tables.cell(r["exact_mae"], 4),
        tables.cell(r["exact_rms"], 4),
        tables.cell(r["mc_mae"], 4),
        tables.cell(r["mc_floor"], 4),
        tables.cell(r["mc_bias_rms"], 4) + ("" if r["mc_resolved"] else " (at floor)"),
        str(r["pairs"]),
    ]


def fit_slopes(config, rows: list[dict], timing: dict, ns) -> tuple[dict, list[int]]:
    """Log-log slopes of the error (exact, MC debiased) per flow and of the time over N."""
    slopes = {}
    chang = [r for r in rows if r["method"] == "chang"]
    for fname in config.flows:
        rr = [r for r in chang if r["flow"] == fname]
        resolved = [r for r in rr if r["mc_resolved"]]
        slopes[fname] = {
            "exact": measure.loglog_slope([r["n"] for r in rr], [r["exact_mae"] for r in rr]),
            "mc_debiased": measure.loglog_slope(
                [r["n"] for r in resolved], [r["mc_bias_rms"] for r in resolved]
            ),
            "mc_resolved_n": [r["n"] for r in resolved],
        }
    fit_n = [n for n in ns if n >= int(config.time_fit_min_n)]
    if len(fit_n) < 2:
        fit_n = list(ns)
    slopes["time"] = measure.loglog_slope(fit_n, [timing[f"chang{n}"]["ms"] for n in fit_n])
    slopes["time_fit_n"] = fit_n
    slopes["time_all"] = measure.loglog_slope(ns, [timing[f"chang{n}"]["ms"] for n in ns])
    return slopes, fit_n


def summary_md(config, workdir, rows, timing, slopes, fit_n, figure, elapsed) -> str:
    """The summary.md text: the error, slope and time tables."""
    h, w = (int(s) for s in config.size)
    chunk = int(config.chunk)
    ns = tuple(int(n) for n in config.upsample)
    size = tuple(int(s) for s in config.timing_size)
    table = tables.markdown_table(COLUMNS, [_row_cells(r) for r in rows])
    slope_table = tables.markdown_table(
        ("flow", "error slope (exact)", "error slope (MC debiased)", "MC resolved at N"),
        [
            [
                f,
                tables.cell(slopes[f]["exact"], 2),
                tables.cell(slopes[f]["mc_debiased"], 2),
                ", ".join(map(str, slopes[f]["mc_resolved_n"])) or "-",
            ]
            for f in config.flows
        ],
    )
    time_table = tables.markdown_table(
        ("method", "ms per frame", "x grid"),
        [
            [
                "grid" if n == "grid" else methods_lib.method_label(n),
                tables.cell(timing[n]["ms"], 2),
                tables.cell(timing[n]["ms"] / timing["grid"]["ms"], 1),
            ]
            for n in ["grid"] + [f"chang{n}" for n in ns]
        ],
    )
    th, tw = size
    intro = (
        f"Frames of {h}x{w}; the (d, s) pairs of each flow are those of its grid windows (3x3). "
        f"Monte Carlo with R = {rows[0]['samples']} noise samples (chunks of {chunk} channels); "
        "*floor* = mean |error| an exact warp shows with that R; *debiased RMS* removes the "
        "Monte-Carlo variance ('at floor' = not resolved at 3 standard errors). *Exact* = the "
        "noise-free linear probe. Timing: one "
        f"{th}x{tw}x{config.timing_channels} frame along the zoo rotation, median of "
        f"{config.repeats} calls after compilation. Wall time {elapsed:.0f} s."
    )
    text = "\n".join(
        [
            launch.header(
                "Claim 2: Chang et al. converges to the grid variant as N grows",
                launch.command_line("convergence", workdir),
                intro,
            ),
            "## Covariance error against the grid variant",
            "",
            table,
            "",
            "## Fitted log-log slopes (expected: error ~ N^-1, time ~ N^2)",
            "",
            slope_table,
            "",
            f"Time slope over N in {fit_n}: **{slopes['time']:.2f}** (over all N: "
            f"{slopes['time_all']:.2f}).",
            "",
            "## Time per frame",
            "",
            time_table,
            "",
            "## Figures",
            "",
            f"- `{figure.rsplit('/', 1)[-1]}`",
        ]
    )
    return text


def run(config, workdir: str) -> dict:
    """Runs the experiment of ``config`` (configs/convergence.py) and writes into ``workdir``.

    Returns:
      ``{"rows": [...], "timing": {...}, "slopes": {...}}``.
    """
    h, w = (int(s) for s in config.size)
    chunk = int(config.chunk)
    if chunk < 9:
        raise ValueError(f"chunk must be >= 9 (the probe's channels); got {chunk}")
    ns = tuple(int(n) for n in config.upsample)
    if len(ns) < 2 or min(ns) < 1:
        raise ValueError(f"upsample needs at least two values >= 1; got {ns}")
    zoo = flows_lib.zoo(h, w)
    for f in config.flows:
        if f not in zoo:
            raise ValueError(f"unknown zoo flow {f!r}; known: {', '.join(zoo)}")
    key = jax.random.key(int(config.seed))
    rows: list[dict] = []
    t_start = time.perf_counter()
    with workdir_lib.Workdir(workdir, config, name="convergence") as wd:
        for fi, fname in enumerate(config.flows):
            flow = zoo[fname]
            fflow = flow  # unused by grid and chang
            record = irwarp.grid_record(flow)
            pairs = window_pairs(record)
            c_grid = pairs[2]
            k_flow = jax.random.fold_in(key, fi)
            for name in ["grid"] + [f"chang{n}" for n in ns]:
                fn = methods_lib.warp_fn(name)
                k_probe, k_mc = jax.random.split(jax.random.fold_in(k_flow, len(rows)))
                c_probe = probe_covariance(fn, k_probe, flow, fflow, pairs, h, w, chunk)
                c_mc, se2 = mc_covariance(
                    fn, k_mc, flow, fflow, pairs, h, w, int(config.samples), chunk
                )
                ex = errors(c_probe, None, c_grid)
                mc = errors(c_mc, se2, c_grid)
                r = dict(
                    kind="error",
                    flow=fname,
                    method="grid" if name == "grid" else "chang",
                    n=None if name == "grid" else int(name[5:]),
                    exact_mae=ex["mae"],
                    exact_rms=ex["rms"],
                    mc_mae=mc["mae"],
                    mc_floor=mc["floor"],
                    mc_bias_rms=mc["bias_rms"],
                    mc_bias_ms=mc["bias_ms"],
                    mc_bias_ms_se=mc["bias_ms_se"],
                    mc_resolved=mc["resolved"],
                    samples=int(math.ceil(int(config.samples) / chunk) * chunk),
                    pairs=int(c_grid.size),
                )
                wd.metric(r)
                rows.append(r)
                logging.info(
                    "%-12s %-8s exact %.5f  MC %.5f (floor %.5f, debiased %.5f)",
                    fname,
                    name,
                    r["exact_mae"],
                    r["mc_mae"],
                    r["mc_floor"],
                    r["mc_bias_rms"],
                )

        timing = {}
        k_time = jax.random.fold_in(key, 10_000)
        size = tuple(int(s) for s in config.timing_size)
        for name in ["grid"] + [f"chang{n}" for n in ns]:
            ms, first_s = time_method(
                name, size, int(config.timing_channels), int(config.repeats), k_time
            )
            timing[name] = {"ms": ms, "first_call_s": first_s}
            wd.metric(
                dict(
                    kind="time",
                    method=name,
                    size=list(size),
                    channels=int(config.timing_channels),
                    ms=ms,
                    first_call_s=first_s,
                )
            )
            logging.info("time %-8s %.2f ms", name, ms)

        slopes, fit_n = fit_slopes(config, rows, timing, ns)
        wd.metric(dict(kind="slopes", **slopes))
        figure = draw(rows, timing, config, wd)
        elapsed = time.perf_counter() - t_start

        text = summary_md(config, workdir, rows, timing, slopes, fit_n, figure, elapsed)
        wd.write_summary(text)
    return {"rows": rows, "timing": timing, "slopes": slopes}


if __name__ == "__main__":
    launch.run_main("convergence", run)
