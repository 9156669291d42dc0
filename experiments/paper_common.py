"""Helpers shared by the five paper experiments (gaussianity, convergence, cost, degenerate, coherence).

Generic workdir, table and figure helpers live in :mod:`experiments.common`; this module adds what
the paper experiments have in common: method names with options (``"chang4"``), cached jitted
warps, the workdir layout (``config.json``, ``metrics.jsonl``, ``summary.md``, PNG figures), the
absl entry point, and small numeric helpers (log-log slope fits, hardware description).

Nothing here is imported by the library.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable, Sequence

import jax
import numpy as np

import irwarp
from experiments import common

parse_method = common.parse_method
method_label = common.method_label


@functools.cache
def warp_fn(name: str) -> Callable:
    """Jitted ``f(key, noise, backward_flow, forward_flow) -> warped noise`` for a method name.

    ``"splat"`` uses the forward flow (``irwarp.warp_forward``), every other method the backward
    flow (``irwarp.warp``). Cached, so experiments that share shapes share compilations.
    """
    base, options = parse_method(name)
    if base == "splat":
        return jax.jit(lambda key, x, bflow, fflow: irwarp.warp_forward(key, x, fflow))
    return jax.jit(lambda key, x, bflow, fflow: irwarp.warp(key, x, bflow, method=base, **options))


@functools.cache
def sequence_fn(name: str) -> Callable:
    """Jitted ``f(key, noise0, backward_flows, forward_flows) -> (T + 1, ...) frames``."""
    base, options = parse_method(name)
    if base == "splat":
        return jax.jit(
            lambda key, x, bflows, fflows: irwarp.warp_sequence(key, x, fflows, method="splat")
        )
    return jax.jit(
        lambda key, x, bflows, fflows: irwarp.warp_sequence(key, x, bflows, method=base, **options)
    )


def check_methods(names: Sequence[str]) -> tuple[str, ...]:
    """Validates every method name (see :func:`parse_method`); returns them as a tuple."""
    for n in names:
        parse_method(n)
    return tuple(names)


# --------------------------------------------------------------------------------------------------
# Workdir.


class Workdir:
    """The outputs of one experiment run: ``config.json``, ``metrics.jsonl``, figures, summary.md.

    Use as a context manager; ``metric(row)`` appends one JSON line (NaN/Inf become null).
    """

    def __init__(self, path: str, config):
        self.path = path
        os.makedirs(path, exist_ok=True)
        common.write_config(path, config)
        self._metrics = common.JsonlWriter(os.path.join(path, "metrics.jsonl"))

    def metric(self, row: dict) -> None:
        self._metrics.write(row)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def save_figure(self, fig, name: str, dpi: int = 110) -> str:
        return common.save_figure(fig, self.file(name), dpi=dpi)

    def write_summary(self, text: str) -> str:
        path = self.file("summary.md")
        with open(path, "w") as f:
            f.write(text.rstrip() + "\n")
        return path

    def close(self) -> None:
        self._metrics.close()

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def new_figure(width: float, height: float):
    """A matplotlib ``Figure`` of ``width x height`` inches, not attached to pyplot state."""
    from matplotlib.figure import Figure  # optional dependency (the `plots` extra)

    return Figure(figsize=(width, height), layout="constrained")


def header(title: str, command: str, intro: str) -> str:
    """The top of a summary.md: title, command, hardware line and a short description."""
    return "\n".join(
        [
            f"# {title}",
            "",
            f"- Command: `{command}`",
            f"- Hardware: {common.hardware_line()}",
            "",
            intro,
            "",
        ]
    )


def command_line(name: str, workdir: str) -> str:
    """The command as typed when run from the shell, or its reconstruction for in-process runs."""
    if sys.argv and sys.argv[0].endswith(os.path.join("experiments", f"{name}.py")):
        return " ".join([f"python -m experiments.{name}"] + sys.argv[1:])
    return f"python -m experiments.{name} --config=configs/{name}.py --workdir={workdir}"


# --------------------------------------------------------------------------------------------------
# Numbers.


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` over the positive finite pairs (NaN if < 2)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def cell(value, digits: int = 3) -> str:
    """A table cell: a float with ``digits`` decimals, or in scientific notation when tiny."""
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        if value != 0 and abs(value) < 10.0 ** (-digits):
            return f"{value:.1e}"
    return common.fmt(value, digits)


# --------------------------------------------------------------------------------------------------
# Entry point.


def define_flags(name: str) -> None:
    """Defines ``--config`` and ``--workdir``; called only when run as a program, so that importing
    the experiment modules (the tests) registers no global absl flags."""
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, f"Path to configs/{name}.py (with :variant).")
    flags.DEFINE_string("workdir", None, "Output directory (created if missing).")
    flags.mark_flags_as_required(["config", "workdir"])


def run_main(name: str, run: Callable) -> None:
    """``python -m experiments.<name> --config=... --workdir=...``: defines the flags and runs."""
    from absl import app, flags

    define_flags(name)

    def main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"too many command-line arguments: {argv[1:]}")
        run(flags.FLAGS.config, flags.FLAGS.workdir)

    app.run(main)
