"""Benchmark: the plain schedule (what non-CPU backends run) against the CPU schedule, on CPU.

    python -m experiments.bench_schedule --config=configs/bench_schedule.py --workdir=DIR

irwarp's schedule runs XLA-on-CPU devices (materialising conds, static tail prefixes,
scatter-adds) when a program is lowered for CPU and a plain path elsewhere, whose sums over
repeated indices are sorted segment sums (deterministic on every backend: no floating-point
scatter-add with atomics). Here both are forced on CPU (``irwarp.force_schedule``) for each method of
``config.methods``: the whole jitted warp is compiled ahead of time (compile time apart), called
``warmup`` times, then ``repeats`` times; the median is reported in ms and as a ratio to
``jax.random.normal`` of the noise's shape timed the same way in the same run.

Writes ``config.json``, ``bench_schedule.jsonl`` (one line per row) and ``bench_schedule.md``
(the table under a line naming the hardware) into the workdir; prints the table.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

import irwarp
from experiments import common
from irwarp import flows

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory.")

COLUMNS = (
    "method",
    "B x H x W x C",
    "schedule",
    "compile s",
    "median ms",
    "ratio to random.normal",
    "plain / cpu",
)


def _flow(h: int, w: int, angle_deg: float, shift) -> jax.Array:
    return flows.rotation(h, w, angle_deg) + jnp.asarray(shift, jnp.float32)


def run(config, workdir: str) -> list[dict]:
    """Times every method under both schedules; writes and returns the rows."""
    common.write_config(workdir, config)
    b, h, w, c = (int(s) for s in config.shape)
    key = jax.random.key(config.seed)
    x = jax.random.normal(jax.random.key(config.seed + 1), (b, h, w, c))
    flow = _flow(h, w, config.angle_deg, config.shift)
    timing = dict(warmup=config.warmup, repeats=config.repeats)
    rows = []
    with common.JsonlWriter(os.path.join(workdir, "bench_schedule.jsonl")) as out:
        for method in config.methods:
            cpu_ms = None
            for which in irwarp.SCHEDULES:
                normal = jax.jit(lambda k: jax.random.normal(k, (b, h, w, c)))
                ref = common.median_seconds(normal, key, **timing)
                with irwarp.force_schedule(which):
                    fn = functools.partial(irwarp.warp, method=method)
                    compiled, compile_s = common.compile_timed(fn, key, x, flow)
                    ms = 1e3 * common.median_seconds(compiled, key, x, flow, **timing)
                if which == "cpu":
                    cpu_ms = ms
                row = {
                    "method": method,
                    "B x H x W x C": f"{b} x {h} x {w} x {c}",
                    "schedule": which,
                    "compile s": compile_s,
                    "median ms": ms,
                    "ratio to random.normal": ms / (1e3 * ref),
                    "plain / cpu": ms / cpu_ms,
                    "normal ms": 1e3 * ref,
                }
                out.write(row)
                rows.append(row)
    table = common.markdown_table(COLUMNS, [[r[k] for k in COLUMNS] for r in rows])
    text = f"Hardware: {common.hardware_line()}\n\n{table}\n"
    with open(os.path.join(workdir, "bench_schedule.md"), "w") as f:
        f.write(text)
    print(text)
    return rows


def main(argv):
    del argv
    run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
