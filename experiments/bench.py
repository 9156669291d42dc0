"""Benchmark: time and memory of each warp method, relative to ``jax.random.normal``.

    python -m experiments.bench --config=configs/bench.py --workdir=DIR

For each shape ``(H, W, C)`` and method, the whole warp (record construction and apply) is jitted
and compiled ahead of time (compile time and XLA's memory analysis of the executable are recorded),
called ``warmup`` times, then ``repeats`` times with ``block_until_ready``; the median is reported
in ms per frame and as a ratio to ``jax.random.normal(key, (H, W, C))`` timed the same way in the
same run. For the partition-record methods, record construction and ``apply_record`` are also
timed separately.

Volumes: for each shape ``(D, H, W, C)`` of ``config.volume_shapes`` the 3D warps of
``config.volume_methods`` (``"particle"``: ``irwarp.warp`` with a 3D backward flow; ``"splat"``:
``irwarp.warp_forward`` with the forward flow of the same motion) are timed the same way, as a
ratio to ``jax.random.normal(key, (D, H, W, C))`` timed just before each of them.

Eager: for each shape ``(B, H, W, C)`` of ``config.eager_shapes`` and method of
``config.eager_methods``, the public call exactly as the README's quick start writes it,
``irwarp.warp(key, noise, flow, method=m)`` un-jitted, is timed per call (median after warm-up)
next to the same call jitted, with the ratio eager / jit.

Writes to the workdir: ``config.json`` (resolved config), ``bench.jsonl`` (one JSON line per row of
the main table), ``split.jsonl`` (record vs apply rows), ``bench3d.jsonl`` (volume rows),
``eager.jsonl`` (eager vs jit rows) and ``bench.md`` (the tables under a header naming the
hardware). The main table is also printed to stdout.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import irwarp
from experiments.lib import launch, measure, tables
from experiments.lib import methods as methods_lib
from irwarp import flows3d
from irwarp.warp import METHODS3D

REFERENCE = "random.normal"
COLUMNS = (
    "method",
    "H x W x C",
    "compile s",
    "median ms/frame",
    "ratio to random.normal",
    "XLA temp MB",
    "note",
)
VOLUME_COLUMNS = ("method", "D x H x W x C") + COLUMNS[2:]
EAGER_COLUMNS = (
    "method",
    "B x H x W x C",
    "jit ms/call",
    "eager ms/call",
    "eager / jit",
    "note",
)
SPLIT_COLUMNS = (
    "method",
    "H x W x C",
    "record ms",
    "apply_record ms",
    "record + apply ms",
    "full warp ms",
    "record share",
    "record / normal",
    "apply / normal",
    "note",
)


# ----------------------------------------------------------------------------- flows


def synthetic_flows(
    name: str, h: int, w: int, *, angle_deg: float, zoom: float, shift: Sequence[float]
) -> tuple[jax.Array, jax.Array]:
    """Backward and forward flows ``(H, W, 2)`` of a rigid motion, sampled at pixel centres.

    The backward map is ``psi(p) = c + A (p - c) + t`` with ``c`` the image centre,
    ``A = R(angle) / zoom`` and ``t = shift``; the forward flow is that of its inverse,
    ``phi(q) = c + A^{-1} (q - c - t)``, so ``splat`` warps along the same motion.

    Args:
      name: ``"rotation"``, ``"translation"``, ``"zoom"`` or ``"identity"``.
      h, w: grid size.
      angle_deg: rotation angle (``"rotation"`` only).
      zoom: scale factor (``"zoom"`` only).
      shift: ``(dx, dy)`` translation in pixels (all but ``"identity"``).

    Returns:
      ``(backward_flow, forward_flow)``, float32 ``(H, W, 2)`` each, ``(dx, dy)`` in pixels.
    """
    theta, scale, t = 0.0, 1.0, tuple(float(s) for s in shift)
    if name == "rotation":
        theta = math.radians(angle_deg)
    elif name == "zoom":
        scale = float(zoom)
    elif name == "identity":
        t = (0.0, 0.0)
    elif name != "translation":
        raise ValueError(
            f"unknown flow {name!r}; known: 'rotation', 'translation', 'zoom', 'identity'"
        )
    a = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) / scale
    a_inv = np.linalg.inv(a)
    back = irwarp.flows.affine(h, w, a, offset=t)
    fwd = irwarp.flows.affine(h, w, a_inv, offset=-(a_inv @ np.asarray(t)))
    return back, fwd


def synthetic_flows3d(
    name: str,
    d: int,
    h: int,
    w: int,
    *,
    axis: Sequence[float],
    angle_deg: float,
    zoom: float,
    shift: Sequence[float],
) -> tuple[jax.Array, jax.Array]:
    """Backward and forward flows ``(D, H, W, 3)`` of a rigid 3D motion, at voxel centres.

    As :func:`synthetic_flows` in 3D: ``psi(p) = c + A (p - c) + t`` with ``c`` the volume centre,
    ``A = R(axis, angle) / zoom`` (``R`` the right-hand rotation) and ``t = shift``; the forward
    flow is that of ``phi(q) = c + A^{-1} (q - c - t)``.

    Args:
      name: ``"rotation"``, ``"translation"``, ``"zoom"`` or ``"identity"``.
      d, h, w: volume size.
      axis: rotation axis ``(ax, ay, az)`` (``"rotation"`` only).
      angle_deg: rotation angle (``"rotation"`` only).
      zoom: scale factor (``"zoom"`` only).
      shift: ``(dx, dy, dz)`` translation in voxels (all but ``"identity"``).

    Returns:
      ``(backward_flow, forward_flow)``, float32 ``(D, H, W, 3)`` each.
    """
    theta, scale, t = 0.0, 1.0, np.asarray([float(s) for s in shift], np.float64)
    if name == "rotation":
        theta = math.radians(angle_deg)
    elif name == "zoom":
        scale = float(zoom)
    elif name == "identity":
        t = np.zeros(3)
    elif name != "translation":
        raise ValueError(
            f"unknown flow {name!r}; known: 'rotation', 'translation', 'zoom', 'identity'"
        )
    u = np.asarray(axis, np.float64)
    u = u / np.linalg.norm(u)
    cross = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    rot = math.cos(theta) * np.eye(3) + math.sin(theta) * cross
    rot = rot + (1.0 - math.cos(theta)) * np.outer(u, u)
    a = rot / scale
    a_inv = np.linalg.inv(a)
    back = flows3d.affine3d(d, h, w, a, offset=t)
    fwd = flows3d.affine3d(d, h, w, a_inv, offset=-(a_inv @ t))
    return back, fwd


# ----------------------------------------------------------------------------- methods


def make_warp(method: str, *, grid_capacity: int) -> Callable:
    """``f(key, noise, backward_flow, forward_flow) -> warped noise`` for a benchmark method name.

    Names as in :func:`experiments.methods_lib.parse_method`; the grid uses ``grid_capacity``.
    """
    try:
        base, opts = methods_lib.parse_method(method)
    except ValueError as e:
        raise ValueError(f"unknown benchmark method {method!r}: {e}") from None
    if base == "splat":
        return lambda key, x, bflow, fflow: irwarp.warp_forward(key, x, fflow)
    if base == "grid":
        opts = {"capacity": grid_capacity}
    return lambda key, x, bflow, fflow: irwarp.warp(key, x, bflow, method=base, **opts)


def make_record(method: str, *, grid_capacity: int) -> Callable:
    """``f(backward_flow, forward_flow) -> PartitionRecord`` for grid, particle and splat."""
    if method == "grid":
        return lambda bflow, fflow: irwarp.grid_record(bflow, capacity=grid_capacity)
    if method == "particle":
        return lambda bflow, fflow: irwarp.particle_record(bflow)
    if method == "splat":
        return lambda bflow, fflow: irwarp.splat_record(fflow)
    raise ValueError(f"record/apply split only exists for grid, particle and splat; got {method!r}")


# ----------------------------------------------------------------------------- timing


def compile_fn(fn: Callable, args: tuple) -> tuple[Callable, float, float]:
    """Jit, lower and compile ``fn`` for ``args``; returns ``(compiled, seconds, XLA temp MB)``."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - t0
    temp_mb = float("nan")
    try:
        stats = compiled.memory_analysis()
        if stats is not None:
            temp_mb = stats.temp_size_in_bytes / 2**20
    except Exception as e:  # memory analysis is best effort; some backends do not implement it
        logging.warning("memory_analysis failed: %s", e)
    return compiled, seconds, temp_mb


class Timing(NamedTuple):
    """Result of :func:`time_calls`; times in seconds."""

    median: float  # median of the timed calls
    minimum: float  # fastest timed call
    repeats: int  # number of timed calls
    note: str  # why fewer calls were timed, or ""


def _timed(compiled: Callable, args: tuple) -> float:
    t0 = time.perf_counter()
    measure.block(compiled(*args))
    return time.perf_counter() - t0


def time_calls(
    compiled: Callable,
    args: tuple,
    *,
    warmup: int,
    repeats: int,
    min_repeats: int,
    budget_s: float,
    may_skip: bool = False,
) -> Timing:
    """Times calls of a compiled function, each ending in ``block_until_ready``.

    The first warm-up call is timed to estimate the cost; if the remaining warm-up and timed calls
    would exceed ``budget_s``, the timed calls are reduced (to at least ``min_repeats``), or, when
    ``may_skip``, skipped in favour of that first call.

    Calls are back to back on purpose: XLA on CPU may free a call's temporary buffers while the
    next call runs (unmapping 4 GB takes about 0.3 s), so interleaving calls of another function
    would move that cost from one function to the other.
    """
    first = _timed(compiled, args)
    n_warm, n_rep, note = max(warmup - 1, 0), max(repeats, 1), ""
    if may_skip and first > budget_s:
        note = f"1 call only ({first:.3g} s > {budget_s:.3g} s budget; config.skip)"
        return Timing(first, first, 1, note)
    if first * (n_warm + n_rep) > budget_s:
        n_warm = 0
        n_rep = max(min(n_rep, int(budget_s // max(first, 1e-9))), max(min_repeats, 1))
        if n_rep < repeats:
            note = f"{n_rep} repeats, not {repeats} (time budget)"
    for _ in range(n_warm):
        measure.block(compiled(*args))
    times = [_timed(compiled, args) for _ in range(n_rep)]
    return Timing(statistics.median(times), min(times), n_rep, note)


def device_peak_mb() -> float | None:
    """Process-wide peak device memory in MB where the backend reports it (GPU/TPU), else None."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    if isinstance(stats, dict) and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return None


# ----------------------------------------------------------------------------- reporting


def reference_row(
    shape: tuple[int, ...], key: jax.Array, timing: dict, base: dict, **extra
) -> tuple[Callable, float, dict]:
    """Compiles and times ``jax.random.normal`` of ``shape``: the reference of every ratio.

    Returns the compiled draw (to re-time it next to each method), its median in seconds and its
    table row (``base`` plus the timings; ``extra`` fields go before the note).
    """
    ref = jax.jit(lambda k: jax.random.normal(k, shape, jnp.float32))
    ref_c, comp_s, temp_mb = compile_fn(ref, (key,))
    t = time_calls(ref_c, (key,), **timing)
    logging.info(
        "%-13s %s: median %.3f ms, n=%d", REFERENCE, base["shape_str"], 1e3 * t.median, t.repeats
    )
    row = dict(
        base,
        method=REFERENCE,
        compile_s=comp_s,
        median_ms=1e3 * t.median,
        min_ms=1e3 * t.minimum,
        ratio=1.0,
        ratio_to_first_normal=1.0,
        xla_temp_mb=temp_mb,
        repeats=t.repeats,
        device_peak_mb=device_peak_mb(),
        **extra,
        note=t.note or "reference",
    )
    return ref_c, t.median, row


def _fmt(v, digits: int) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def _main_cells(r: dict) -> list[str]:
    return [
        r["method"],
        r["shape_str"],
        _fmt(r["compile_s"], 2),
        _fmt(r["median_ms"], 3 if r["median_ms"] < 10 else 1),
        _fmt(r["ratio"], 2),
        _fmt(r["xla_temp_mb"], 1 if r["xla_temp_mb"] >= 10 else 3),
        r["note"],
    ]


def _split_cells(r: dict) -> list[str]:
    return [
        r["method"],
        r["shape_str"],
        _fmt(r["record_ms"], 1),
        _fmt(r["apply_ms"], 1),
        _fmt(r["record_ms"] + r["apply_ms"], 1),
        _fmt(r.get("full_ms"), 1),
        _fmt(r["record_share"], 2),
        _fmt(r["record_ratio"], 1),
        _fmt(r["apply_ratio"], 1),
        r["note"],
    ]


# ----------------------------------------------------------------------------- run


def _shape_str(shape) -> str:
    return " x ".join(str(int(s)) for s in shape)


def _bench_shape(
    config, shape, k_noise, k_warp, hw, timing, skip, emit: Callable[[str, dict], None]
) -> None:
    """Times one shape ``(H, W, C)``; each row goes to ``emit("main" | "split", row)`` when done."""
    h, w, c = shape
    sstr = _shape_str(shape)
    bflow, fflow = synthetic_flows(
        config.flow, h, w, angle_deg=config.angle_deg, zoom=config.zoom, shift=config.shift
    )
    noise = jax.random.normal(k_noise, shape, jnp.float32)
    cap = int(config.grid_capacity)
    grid_overflow = int(
        jax.jit(lambda f: irwarp.grid_record(f, capacity=cap).num_overflow())(bflow)
    )
    base = dict(shape=list(shape), shape_str=sstr, flow=config.flow, **hw)

    # Reference: a fresh normal draw of the same shape, timed the same way.
    ref_c, ref_s, row = reference_row(shape, k_warp, timing, base, grid_overflow=None)
    emit("main", row)

    full_ms = {}
    for method in config.methods:
        fn = make_warp(method, grid_capacity=cap)
        args = (k_warp, noise, bflow, fflow)
        compiled, comp_s, temp_mb = compile_fn(fn, args)
        # random.normal is timed again just before each method (a block of its own), so that the
        # ratio compares timings taken under the same load of a possibly shared machine.
        ref_s_here = time_calls(ref_c, (k_warp,), **timing).median
        t = time_calls(compiled, args, may_skip=(method, shape) in skip, **timing)
        med_s, n_rep, note = t.median, t.repeats, t.note
        overflow = grid_overflow if method == "grid" else None
        if overflow is not None:
            extra = f"grid overflow {overflow} px"
            note = f"{note}; {extra}" if note else extra
        full_ms[method] = 1e3 * med_s
        emit(
            "main",
            dict(
                base,
                method=method,
                compile_s=comp_s,
                median_ms=1e3 * med_s,
                min_ms=1e3 * t.minimum,
                ratio=med_s / ref_s_here,
                ratio_to_first_normal=med_s / ref_s,
                normal_ms=1e3 * ref_s_here,
                xla_temp_mb=temp_mb,
                repeats=n_rep,
                device_peak_mb=device_peak_mb(),
                grid_overflow=overflow,
                note=note,
            ),
        )
        logging.info(
            "%-13s %s: compile %.2f s, median %.3f ms (x%.1f normal), XLA temp %.1f MB, n=%d %s",
            method,
            sstr,
            comp_s,
            1e3 * med_s,
            med_s / ref_s_here,
            temp_mb,
            n_rep,
            note,
        )

    for method in config.split_methods:
        emit(
            "split",
            _split_row(method, cap, bflow, fflow, noise, k_warp, ref_c, timing, base, full_ms),
        )


def _split_row(method, cap, bflow, fflow, noise, k_warp, ref_c, timing, base, full_ms) -> dict:
    """Times record construction and ``apply_record`` of one method apart (the split table)."""
    rec_fn = make_record(method, grid_capacity=cap)
    rec_c, rec_comp, rec_temp = compile_fn(rec_fn, (bflow, fflow))
    ref_rec = time_calls(ref_c, (k_warp,), **timing).median
    t_rec = time_calls(rec_c, (bflow, fflow), **timing)
    record = rec_c(bflow, fflow)
    app_args = (k_warp, noise, record)
    app_c, app_comp, app_temp = compile_fn(irwarp.apply_record, app_args)
    ref_app = time_calls(ref_c, (k_warp,), **timing).median
    t_app = time_calls(app_c, app_args, **timing)
    rec_s, app_s = t_rec.median, t_app.median
    row = dict(
        base,
        method=method,
        record_ms=1e3 * rec_s,
        apply_ms=1e3 * app_s,
        full_ms=full_ms.get(method),
        record_share=rec_s / (rec_s + app_s),
        record_compile_s=rec_comp,
        apply_compile_s=app_comp,
        record_xla_temp_mb=rec_temp,
        apply_xla_temp_mb=app_temp,
        record_ratio=rec_s / ref_rec,
        apply_ratio=app_s / ref_app,
        record_repeats=t_rec.repeats,
        apply_repeats=t_app.repeats,
        num_pieces=int(record.num_pieces),
        note="; ".join(
            f"{part}: {t.note}" for part, t in (("record", t_rec), ("apply", t_app)) if t.note
        ),
    )
    logging.info(
        "split %-7s %s: record %.1f ms + apply_record %.1f ms",
        method,
        base["shape_str"],
        1e3 * rec_s,
        1e3 * app_s,
    )
    return row


def make_warp3d(method: str) -> Callable:
    """``f(key, noise, backward_flow, forward_flow) -> warped volume`` for a 3D method name."""
    if method == "splat":
        return lambda key, x, bflow, fflow: irwarp.warp_forward(key, x, fflow)
    if method in METHODS3D:
        return lambda key, x, bflow, fflow: irwarp.warp(key, x, bflow, method=method)
    known = ", ".join(METHODS3D + ("splat",))
    raise ValueError(f"unknown 3D benchmark method {method!r}; known: {known}")


def _bench_volume(config, shape, k_noise, k_warp, hw, timing, emit: Callable[[str, dict], None]):
    """Times one volume shape ``(D, H, W, C)``; rows go to ``emit("volume", row)``."""
    d, h, w, c = shape
    sstr = _shape_str(shape)
    bflow, fflow = synthetic_flows3d(
        config.flow,
        d,
        h,
        w,
        axis=config.volume_axis,
        angle_deg=config.angle_deg,
        zoom=config.zoom,
        shift=config.volume_shift,
    )
    noise = jax.random.normal(k_noise, shape, jnp.float32)
    base = dict(shape=list(shape), shape_str=sstr, flow=config.flow, **hw)
    ref_c, ref_s, row = reference_row(shape, k_warp, timing, base)
    emit("volume", row)
    for method in config.volume_methods:
        fn = make_warp3d(method)
        args = (k_warp, noise, bflow, fflow)
        compiled, comp_s, temp_mb = compile_fn(fn, args)
        ref_s_here = time_calls(ref_c, (k_warp,), **timing).median
        t = time_calls(compiled, args, **timing)
        emit(
            "volume",
            dict(
                base,
                method=method,
                compile_s=comp_s,
                median_ms=1e3 * t.median,
                min_ms=1e3 * t.minimum,
                ratio=t.median / ref_s_here,
                ratio_to_first_normal=t.median / ref_s,
                normal_ms=1e3 * ref_s_here,
                xla_temp_mb=temp_mb,
                repeats=t.repeats,
                device_peak_mb=device_peak_mb(),
                note=t.note,
            ),
        )
        logging.info(
            "%-13s %s: compile %.2f s, median %.3f ms (x%.1f normal), XLA temp %.1f MB, n=%d %s",
            method,
            sstr,
            comp_s,
            1e3 * t.median,
            t.median / ref_s_here,
            temp_mb,
            t.repeats,
            t.note,
        )


def _bench_eager(config, k_noise, k_warp, hw, timing, emit: Callable[[str, dict], None]) -> None:
    """The public call as the README's quick start writes it, un-jitted, next to its jitted time.

    For each shape of ``config.eager_shapes`` and method of ``config.eager_methods``:
    ``irwarp.warp(key, noise, flow, method=m)`` called as is (eager: the library's own dispatch),
    and the same call under ``jax.jit``; both medians after warm-up; rows go to
    ``emit("eager", row)``.
    """
    for dims in config.eager_shapes:
        shape = tuple(int(s) for s in dims)
        h, w = shape[-3:-1]
        bflow, _ = synthetic_flows(
            config.flow, h, w, angle_deg=config.angle_deg, zoom=config.zoom, shift=config.shift
        )
        noise = jax.random.normal(k_noise, shape, jnp.float32)
        args = (k_warp, noise, bflow)
        base = dict(shape=list(shape), shape_str=_shape_str(shape), flow=config.flow, **hw)
        for method in config.eager_methods:

            def call(key, x, flow, method=method):
                return irwarp.warp(key, x, flow, method=method)

            compiled, comp_s, _ = compile_fn(call, args)
            t_jit = time_calls(compiled, args, **timing)
            t_eager = time_calls(call, args, **timing)
            note = "; ".join(
                f"{n}: {t.note}" for n, t in (("jit", t_jit), ("eager", t_eager)) if t.note
            )
            emit(
                "eager",
                dict(
                    base,
                    method=method,
                    compile_s=comp_s,
                    jit_ms=1e3 * t_jit.median,
                    eager_ms=1e3 * t_eager.median,
                    eager_over_jit=t_eager.median / t_jit.median,
                    jit_repeats=t_jit.repeats,
                    eager_repeats=t_eager.repeats,
                    note=note,
                ),
            )
            logging.info(
                "eager %-8s %s: jit %.2f ms, eager %.2f ms (x%.1f)",
                method,
                base["shape_str"],
                1e3 * t_jit.median,
                1e3 * t_eager.median,
                t_eager.median / t_jit.median,
            )


def _eager_cells(r: dict) -> list[str]:
    return [
        r["method"],
        r["shape_str"],
        _fmt(r["jit_ms"], 2),
        _fmt(r["eager_ms"], 2),
        _fmt(r["eager_over_jit"], 1),
        r["note"],
    ]


def run(config, workdir: str, command: str | None = None) -> list[dict]:
    """Runs the benchmark of ``config`` and writes its outputs into ``workdir``.

    Args:
      config: a ConfigDict from ``configs/bench.py``.
      workdir: output directory (created if missing).
      command: the command line to record in ``bench.md`` (default: a reconstruction).

    Returns:
      The rows of the main table as dicts (the lines of ``bench.jsonl``).
    """
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2) + "\n")
    hw = measure.hardware()
    logging.info("hardware: %s", hw)
    if command is None:
        command = launch.command_line("bench", workdir)
    skip = {(str(m), tuple(int(s) for s in shape)) for m, shape in config.skip}
    timing = dict(
        warmup=int(config.warmup),
        repeats=int(config.repeats),
        min_repeats=int(config.min_repeats),
        budget_s=float(config.time_budget_s),
    )
    key = jax.random.key(config.seed)
    k_noise, k_warp = jax.random.split(key)
    by_table: dict[str, list[dict]] = {"main": [], "split": [], "volume": [], "eager": []}
    with (
        open(os.path.join(workdir, "bench.jsonl"), "w") as main_out,
        open(os.path.join(workdir, "split.jsonl"), "w") as split_out,
        open(os.path.join(workdir, "bench3d.jsonl"), "w") as volume_out,
        open(os.path.join(workdir, "eager.jsonl"), "w") as eager_out,
    ):
        outs = {"main": main_out, "split": split_out, "volume": volume_out, "eager": eager_out}

        def emit(table: str, row: dict) -> None:
            by_table[table].append(row)
            outs[table].write(json.dumps(row) + "\n")
            outs[table].flush()

        for hwc in config.shapes:
            shape = tuple(int(s) for s in hwc)
            _bench_shape(config, shape, k_noise, k_warp, hw, timing, skip, emit)
        for dhwc in config.volume_shapes:
            shape = tuple(int(s) for s in dhwc)
            _bench_volume(config, shape, k_noise, k_warp, hw, timing, emit)
        _bench_eager(config, k_noise, k_warp, hw, timing, emit)
    md, table, split_table = _report(config, hw, command, by_table)
    with open(os.path.join(workdir, "bench.md"), "w") as f:
        f.write(md)
    print(table)
    print()
    print(split_table)
    sys.stdout.flush()
    return by_table["main"]


def _report(config, hw: dict, command: str, by_table: dict) -> tuple[str, str, str]:
    """``(bench.md, main table, split table)``: the tables under a header naming the hardware."""
    rows, split_rows = by_table["main"], by_table["split"]

    table = tables.markdown_table(COLUMNS, [_main_cells(r) for r in rows])
    split_table = tables.markdown_table(SPLIT_COLUMNS, [_split_cells(r) for r in split_rows])
    flow_desc = {
        "rotation": f"rotation by {config.angle_deg} deg about the centre + shift {tuple(config.shift)}",
        "translation": f"shift {tuple(config.shift)} px",
        "zoom": f"zoom x{config.zoom} about the centre + shift {tuple(config.shift)}",
        "identity": "identity",
    }[config.flow]
    header = "\n".join(
        [
            "# irwarp benchmark",
            "",
            f"- Hardware: {hw['cpu']}, {hw['cores']} cores ({hw['usable_cores']} usable); "
            f"{hw['platform']}",
            f"- Software: Python {hw['python']}, jax {hw['jax']}, jaxlib {hw['jaxlib']}; backend "
            f"{hw['backend']}, device kind {hw['device_kind']} (x{hw['device_count']})",
            f"- Command: `{command}`",
            f"- Flow: {flow_desc}. One frame per call (no batch). Median of {config.repeats} "
            f"timed calls after {config.warmup} warm-up calls, each ending in block_until_ready; "
            "compile s is jit + lower + compile of the whole warp (record construction + apply).",
            f"- Ratio: the method's median over the median of a block of `{REFERENCE}` calls of "
            "the same shape timed just before it, so both see the same load on a shared machine; "
            f"the `{REFERENCE}` rows show the first such block of each shape.",
            "- XLA temp MB: temporary buffers of the compiled executable "
            "(`compiled.memory_analysis().temp_size_in_bytes`), arguments and outputs excluded."
            + (
                " The backend also reports device memory: `device_peak_mb` in bench.jsonl is the "
                "process-wide peak so far (cumulative over rows)."
                if any(r.get("device_peak_mb") is not None for r in rows)
                else ""
            ),
        ]
    )
    parts = [
        header,
        "",
        table,
        "",
        "## Record construction vs apply_record",
        "",
        "Each part jitted and timed on its own; full warp ms is from the table above.",
        "",
        split_table,
        "",
    ]
    if by_table["volume"]:
        shift3 = tuple(config.volume_shift)
        volume_desc = {
            "rotation": f"rotation by {config.angle_deg} deg about the axis "
            f"{tuple(config.volume_axis)} through the centre + shift {shift3} voxels",
            "translation": f"shift {shift3} voxels",
            "zoom": f"zoom x{config.zoom} about the centre + shift {shift3} voxels",
            "identity": "identity",
        }[config.flow]
        volume_table = tables.markdown_table(
            VOLUME_COLUMNS, [_main_cells(r) for r in by_table["volume"]]
        )
        parts += [
            "## Volumes (3D warping)",
            "",
            f"Noise `(D, H, W, C)`, one volume per call; flow: {volume_desc}. Ratio: to "
            f"`{REFERENCE}` of the same `(D, H, W, C)` timed just before each row.",
            "",
            volume_table,
            "",
        ]
    if by_table["eager"]:
        parts += [
            "## The public call, eager and jitted",
            "",
            "`irwarp.warp(key, noise, flow, method=m)` exactly as the README's quick start calls it "
            "(un-jitted: eager ms/call), and the same call under `jax.jit` (jit ms/call); medians "
            "after warm-up, each call ending in block_until_ready.",
            "",
            tables.markdown_table(EAGER_COLUMNS, [_eager_cells(r) for r in by_table["eager"]]),
            "",
        ]
    return "\n".join(parts), table, split_table


if __name__ == "__main__":
    launch.run_main("bench", run)
