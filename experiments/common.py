"""Small helpers shared by the experiments: workdir files, tables, timing and figures.

Nothing here knows about warping; the library (``irwarp``) never imports this module.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

import irwarp


def jsonable(value: Any) -> Any:
    """``value`` with numpy/jax scalars and arrays as Python objects and non-finite floats as None.

    Strict JSON has no NaN or Infinity, so they are written as ``null``.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return jsonable(np.asarray(value).tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def write_config(workdir: str, config) -> str:
    """Writes ``config`` (a ConfigDict, or anything with ``to_json`` or a dict) to ``config.json``."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    text = config.to_json(indent=2) if hasattr(config, "to_json") else json.dumps(config, indent=2)
    with open(path, "w") as f:
        f.write(text + "\n")
    return path


class JsonlWriter:
    """Appends one JSON object per line to a file, flushing after each (a context manager)."""

    def __init__(self, path: str):
        self.path = path
        self._file = open(path, "w")  # closed in close() / __exit__

    def write(self, row: Mapping) -> None:
        self._file.write(json.dumps(jsonable(row), allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_jsonl(path: str) -> list[dict]:
    """Reads a file written by :class:`JsonlWriter`."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` decimals (``nan``/``inf`` as words), None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}" if math.isfinite(value) else str(float(value))
    return str(value)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are formatted with :func:`fmt` unless already strings."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [c if isinstance(c, str) else fmt(c) for c in row]
        if len(cells) != len(columns):
            raise ValueError(f"expected {len(columns)} cells per row; got {len(cells)}: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def block(tree: Any) -> Any:
    """``block_until_ready`` on every array of a pytree; returns it."""
    return jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)


def compile_timed(fn: Callable, *args) -> tuple[Callable, float]:
    """Jits, lowers and compiles ``fn`` for ``args``; returns ``(compiled, seconds)``."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def median_seconds(fn: Callable, *args, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall time of ``repeats`` calls of ``fn(*args)`` after ``warmup`` untimed calls.

    Every call ends in ``block_until_ready``, so asynchronous dispatch is included.
    """
    for _ in range(max(int(warmup), 0)):
        block(fn(*args))
    times = []
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Saves a matplotlib ``Figure`` as PNG (no pyplot state involved); returns ``path``."""
    fig.savefig(path, dpi=dpi, format="png", facecolor="white")
    return path


def save_image(array: Any, path: str, vmin: float = 0.0, vmax: float = 1.0) -> str:
    """Saves an ``(H, W)`` or ``(H, W, 3)`` array as an 8-bit PNG, mapping ``[vmin, vmax]`` to
    ``[0, 255]`` (clipped); returns ``path``."""
    from PIL import Image  # optional dependency (the `plots` extra)

    a = np.asarray(array, np.float32)
    a = np.clip((a - vmin) / (vmax - vmin), 0.0, 1.0)
    Image.fromarray(np.round(255.0 * a).astype(np.uint8)).save(path, format="PNG")
    return path


def hardware() -> dict:
    """Platform, CPU model, core count, jax version and device of this run."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    dev = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "jax": jax.__version__,
        "jaxlib": _jaxlib_version(),
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
    }


def _jaxlib_version() -> str:
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:
        return "unknown"


def hardware_line() -> str:
    """One line naming the CPU, the usable cores, the JAX backend and versions."""
    hw = hardware()
    return (
        f"{hw['cpu']}, {hw['usable_cores']} usable cores; jax {hw['jax']}, backend {hw['backend']} "
        f"({hw['device_kind']}); Python {hw['python']}"
    )


def parse_markdown_table(md: str, first_column: str) -> tuple[list[str], list[list[str]]]:
    """Header and body rows of the table in ``md`` whose header starts with ``| first_column |``.

    The inverse of :func:`markdown_table`, for tests and notebooks that read ``summary.md``.
    """
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            raise ValueError(f"row has {len(cells)} cells, header {len(header)}: {line}")
        rows.append(cells)
    return header, rows


# Method names of the experiments: irwarp.METHODS, "splat" (irwarp.warp_forward) and "chang<N>"
# (irwarp.warp(method="chang", upsample=N)).
_CHANG = re.compile(r"chang(\d+)")


def parse_method(name: str) -> tuple[str, dict]:
    """``"chang4"`` -> ``("chang", {"upsample": 4})``; ``"grid"`` -> ``("grid", {})``; also "splat".

    Raises:
      ValueError: for a name that is neither ``"splat"``, ``"chang<N>"`` nor in ``irwarp.METHODS``.
    """
    m = _CHANG.fullmatch(name)
    if m:
        return "chang", {"upsample": int(m.group(1))}
    if name == "splat" or (name in irwarp.METHODS and name != "chang"):
        return name, {}
    raise ValueError(
        f"unknown method {name!r}; expected 'splat', 'chang<N>' (e.g. 'chang4') or one of "
        f"{', '.join(m for m in irwarp.METHODS if m != 'chang')}"
    )


def method_label(name: str) -> str:
    """Human-readable method name for tables and legends (``"chang4"`` -> ``"chang N=4"``)."""
    m = _CHANG.fullmatch(name)
    return f"chang N={m.group(1)}" if m else name
