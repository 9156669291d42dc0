"""Claim 3 (cost): time and peak memory per frame of grid, particle and splat against Chang et al.

    python -m experiments.cost --config=configs/cost.py --workdir=DIR

For each resolution ``S x S`` (``C`` channels, one frame, no batch) and method, the whole warp (record
construction and apply, or Chang et al.'s upsampling) is jitted and compiled ahead of time. Then:

- **memory**: XLA's own account of the compiled executable (``compiled.memory_analysis()``:
  temporary buffers, arguments and outputs), known before running, and the resident memory
  actually used: with ``config.isolate`` each cell runs in a fresh process, whose peak resident set
  (Linux ``VmHWM``, reset just before the first call through ``/proc/self/clear_refs``) minus its
  resident set before the call is the warp's peak (``run MB``); the process's lifetime peak
  (``resource.getrusage``) is reported too. JAX's ``memory_stats()`` is used where the backend gives
  it (GPU/TPU); the CPU backend does not.
- **time**: the first call is timed; then ``repeats`` calls (fewer if they would exceed
  ``time_budget_s``, none if the first call already did), each ending in ``block_until_ready``;
  the median is reported in ms per frame.

A cell whose XLA temporary memory exceeds ``max_temp_gb`` is compiled but not run, and a cell in
``config.skip`` is not even compiled; the tables say so. Speed-ups of grid, particle and splat over
Chang et al. at each N are computed from the same run.

Writes to the workdir: ``config.json``, ``metrics.jsonl`` (one line per method x resolution),
``summary.md`` (the cost table and the speed-up table) and ``cost.png`` (time and memory against
resolution, log-log).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import resource
import statistics
import time

import jax
import jax.numpy as jnp
from absl import logging

from experiments.lib import launch, media, tables
from experiments.lib import measure as measure_lib
from experiments.lib import methods as methods_lib
from experiments.lib import workdir as workdir_lib
from irwarp import flows as flows_lib

MB = 2.0**20
COLUMNS = (
    "method",
    "size",
    "ms / frame",
    "calls",
    "compile s",
    "XLA temp MB",
    "XLA args+out MB",
    "run MB",
    "process peak MB",
    "note",
)


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Resets the process's peak resident set (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _device_peak_mb() -> float | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # the CPU backend may raise or return None
        return None
    if isinstance(stats, dict) and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / MB
    return None


def measure(
    method: str,
    size: int,
    channels: int,
    rotation_deg: float,
    seed: int,
    repeats: int,
    time_budget_s: float,
    max_temp_gb: float,
) -> dict:
    """Compiles, runs and times one cell; meant to run in a fresh process (see module docstring)."""
    h = w = int(size)
    key = jax.random.key(seed)
    flow = flows_lib.rotation(h, w, rotation_deg)
    fflow = jax.jit(flows_lib.forward_from_backward)(flow)
    x = jax.random.normal(key, (h, w, channels), jnp.float32)
    fn = methods_lib.warp_fn(method)
    args = (key, x, flow, fflow)
    measure_lib.block(args)
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    out = dict(compile_s=time.perf_counter() - t0)
    try:
        mem = compiled.memory_analysis()
        out["xla_temp_mb"] = mem.temp_size_in_bytes / MB
        out["xla_io_mb"] = (mem.argument_size_in_bytes + mem.output_size_in_bytes) / MB
    except Exception as e:  # best effort: some backends do not implement it
        logging.warning("memory_analysis failed: %s", e)
        out["xla_temp_mb"] = out["xla_io_mb"] = None
    if out["xla_temp_mb"] is not None and out["xla_temp_mb"] > 1024 * max_temp_gb:
        out["note"] = (
            f"not run: needs {out['xla_temp_mb'] / 1024:.1f} GB of XLA temp memory "
            f"> max_temp_gb = {max_temp_gb:g}"
        )
        return out
    rss_before = _status_kb("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    measure_lib.block(compiled(*args))
    first = time.perf_counter() - t0
    hwm = _status_kb("VmHWM")
    if reset and hwm is not None and rss_before is not None:
        out["run_mb"] = max(hwm - rss_before, 0.0) / 1024
    out["first_call_s"] = first
    times, notes = [], []
    if first > time_budget_s:
        times = [first]
        notes.append(f"1 call only ({first:.0f} s > time_budget_s = {time_budget_s:g})")
    else:
        n = max(1, min(int(repeats), int((time_budget_s - first) // max(first, 1e-9))))
        if n < repeats:
            notes.append(f"{n} timed call{'s' if n > 1 else ''}, not {repeats} (time budget)")
        for _ in range(n):
            t0 = time.perf_counter()
            measure_lib.block(compiled(*args))
            times.append(time.perf_counter() - t0)
    out["ms"] = 1e3 * statistics.median(times)
    out["calls"] = len(times)
    out["process_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["device_peak_mb"] = _device_peak_mb()
    out["note"] = "; ".join(notes)
    return out


def _measure_isolated(kwargs: dict) -> dict:
    ctx = multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            return ex.submit(measure, **kwargs).result()
    except concurrent.futures.process.BrokenProcessPool:
        return {"note": "failed: the worker process died (out of memory?)"}


def _mb(v) -> str:
    if v is None:
        return "-"
    return tables.fmt(v, 2 if v < 10 else 0)


def _cells(r: dict) -> list[str]:
    return [
        methods_lib.method_label(r["method"]),
        f"{r['size']}^2",
        tables.cell(r.get("ms"), 1 if (r.get("ms") or 0) >= 10 else 2),
        str(r.get("calls", 0)),
        tables.cell(r.get("compile_s"), 1),
        _mb(r.get("xla_temp_mb")),
        _mb(r.get("xla_io_mb")),
        _mb(r.get("run_mb")),
        _mb(r.get("process_peak_mb")),
        r.get("note") or "",
    ]


def _ratio(a, b) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def draw(rows, config, wd: workdir_lib.Workdir) -> str:
    fig = media.new_figure(10, 4)
    ax_t, ax_m = fig.subplots(1, 2)
    for k, m in enumerate(config.methods):
        rr = [r for r in rows if r["method"] == m]
        sizes = [r["size"] for r in rr if r.get("ms") is not None]
        ms = [r["ms"] for r in rr if r.get("ms") is not None]
        style = "--" if m.startswith("chang") else "-"
        ax_t.plot(sizes, ms, "o" + style, color=f"C{k}", label=methods_lib.method_label(m))
        msz = [r["size"] for r in rr if r.get("xla_temp_mb") is not None]
        mem = [r["xla_temp_mb"] for r in rr if r.get("xla_temp_mb") is not None]
        ax_m.plot(msz, mem, "o" + style, color=f"C{k}", label=methods_lib.method_label(m))
    for ax, label in ((ax_t, "ms per frame"), (ax_m, "XLA temp MB (compiled)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("resolution S (S x S frame)")
        ax.set_ylabel(label)
        ax.set_xticks(list(config.sizes), [str(s) for s in config.sizes])
    ax_t.set_title(f"time per frame (C = {config.channels})")
    ax_m.set_title("memory per frame (not-run cells included)")
    handles, labels = ax_t.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside right center")
    return wd.save_figure(fig, "cost.png")


def summary_md(config, workdir: str, methods, rows: list[dict], figure: str, elapsed: float) -> str:
    """The summary.md text: the time and memory table and the ratios to Chang et al."""
    by = {(r["method"], r["size"]): r for r in rows}
    changs = [m for m in methods if m.startswith("chang")]
    ours = [m for m in methods if not m.startswith("chang")]
    speed_rows = []
    for size in config.sizes:
        for m in ours:
            r = by[m, int(size)]
            cells = [f"{size}^2", m]
            for c in changs:
                cells.append(tables.cell(_ratio(by[c, int(size)].get("ms"), r.get("ms")), 1))
            for c in changs:
                cells.append(
                    tables.cell(
                        _ratio(by[c, int(size)].get("xla_temp_mb"), r.get("xla_temp_mb")), 1
                    )
                )
            speed_rows.append(cells)
    speed_table = tables.markdown_table(
        ("size", "method")
        + tuple(f"time: {methods_lib.method_label(c)} / method" for c in changs)
        + tuple(f"memory: {methods_lib.method_label(c)} / method" for c in changs),
        speed_rows,
    )
    where = (
        "each cell in a fresh process (`run MB` = peak resident set during the first call "
        "minus the resident set before it)"
        if config.isolate
        else "all cells in this process (`process peak MB` is cumulative)"
    )
    intro = (
        f"One {config.channels}-channel frame per call along a {config.rotation_deg:g}-degree "
        f"rotation; whole warp jitted; median of up to {config.repeats} timed calls after the "
        f"first; time budget {config.time_budget_s:g} s per cell; cells needing more than "
        f"{config.max_temp_gb:g} GB of XLA temporaries are not run. Memory: {where}. "
        f"XLA temp = `compiled.memory_analysis().temp_size_in_bytes`. Wall time {elapsed:.0f} s."
    )
    return "\n".join(
        [
            launch.header(
                "Claim 3: cost per frame against Chang et al.",
                launch.command_line("cost", workdir),
                intro,
            ),
            "## Time and memory",
            "",
            tables.markdown_table(COLUMNS, [_cells(r) for r in rows]),
            "",
            "## Speed-up and memory saving over Chang et al. (same run; - = not measured)",
            "",
            speed_table,
            "",
            "## Figures",
            "",
            f"- `{figure.rsplit('/', 1)[-1]}`",
        ]
    )


def run(config, workdir: str) -> list[dict]:
    """Runs the experiment of ``config`` (configs/cost.py) and writes into ``workdir``.

    Returns:
      The metric rows, one per method x resolution, as written to ``metrics.jsonl``.
    """
    methods = methods_lib.check_methods(config.methods)
    skip = {(str(m), int(s)) for m, s in config.skip}
    rows = []
    t_start = time.perf_counter()
    with workdir_lib.Workdir(workdir, config, name="cost") as wd:
        for size in (int(s) for s in config.sizes):
            for m in methods:
                row = dict(method=m, size=size, channels=int(config.channels))
                if (m, size) in skip:
                    row["note"] = "skipped (config.skip)"
                else:
                    kwargs = dict(
                        method=m,
                        size=size,
                        channels=int(config.channels),
                        rotation_deg=float(config.rotation_deg),
                        seed=int(config.seed),
                        repeats=int(config.repeats),
                        time_budget_s=float(config.time_budget_s),
                        max_temp_gb=float(config.max_temp_gb),
                    )
                    t0 = time.perf_counter()
                    res = _measure_isolated(kwargs) if config.isolate else measure(**kwargs)
                    row.update(res, wall_s=time.perf_counter() - t0)
                row["isolated"] = bool(config.isolate)
                wd.metric(row)
                rows.append(row)
                logging.info(
                    "%-8s %4d^2: %s ms, XLA temp %s MB, run %s MB %s",
                    m,
                    size,
                    tables.cell(row.get("ms"), 1),
                    tables.cell(row.get("xla_temp_mb"), 1),
                    tables.cell(row.get("run_mb"), 0),
                    row.get("note", ""),
                )
        figure = draw(rows, config, wd)
        elapsed = time.perf_counter() - t_start

        wd.write_summary(summary_md(config, workdir, methods, rows, figure, elapsed))
    return rows


if __name__ == "__main__":
    launch.run_main("cost", run)
