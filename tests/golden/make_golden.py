"""Writes ``tests/golden/public_api.npz``: the frozen outputs of irwarp's public API at a31bd78.

The file is the record of what irwarp's public functions returned at commit a31bd78 (before the
redesign) for the fixed keys and inputs of ``cases.py``; ``tests/test_golden.py`` compares the
current code against it, so that a refactor keeps "the same noise for the same key". It is not
regenerated as a matter of course: the script refuses to overwrite an existing file unless given
``--force``, which is only right together with a deliberate, documented change of the random
stream (CHANGELOG).

Run from the repository root:

    PYTHONPATH=$PWD python tests/golden/make_golden.py [--force] [--out PATH]

Floating arrays are stored as float32 (bfloat16 outputs widened exactly), integer ones as they
are; ``__meta__`` holds JSON with the jax / jaxlib / numpy versions, the commit and, per array, the
dtype the function returned and its shape. A summary table (case, output, shape, dtype) is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import cases  # tests/golden/cases.py: the script's own folder is first on sys.path
import jax
import jaxlib
import numpy as np

import irwarp

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "public_api.npz")
BASE_COMMIT = "a31bd78"
MAX_BYTES = 2 * 1024 * 1024


def _commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output .npz (default: %(default)s)")
    args = parser.parse_args(argv)
    if os.path.exists(args.out) and not args.force:
        print(
            f"{args.out} exists: it is the frozen record of irwarp at {BASE_COMMIT}; pass --force "
            "to overwrite it (only with a deliberate, documented change of the random stream)",
            file=sys.stderr,
        )
        return 1

    arrays: dict[str, np.ndarray] = {}
    meta_arrays: dict[str, dict] = {}
    rows = []
    start = time.perf_counter()
    for case in cases.CASES:
        for name, (a, dtype) in cases.evaluate(case).items():
            key = case + cases.SEP + name
            arrays[key] = a
            meta_arrays[key] = {"dtype": dtype, "shape": list(a.shape)}
            rows.append((case, name, str(a.shape), dtype))
    elapsed = time.perf_counter() - start
    commit = _commit()
    meta = {
        "description": "frozen outputs of irwarp's public API (tests/golden/cases.py)",
        "base_commit": BASE_COMMIT,
        "generated_at_commit": commit,
        "irwarp_version": irwarp.__version__,
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "numpy_version": np.__version__,
        "backend": jax.default_backend(),
        "cases": list(cases.CASES),
        "arrays": meta_arrays,
    }
    arrays["__meta__"] = np.array(json.dumps(meta, sort_keys=True))
    np.savez_compressed(args.out, **arrays)
    size = os.path.getsize(args.out)

    w_case = max(len(r[0]) for r in rows)
    w_name = max(len(r[1]) for r in rows)
    w_shape = max(len(r[2]) for r in rows)
    print(f"{'case':<{w_case}}  {'output':<{w_name}}  {'shape':<{w_shape}}  dtype")
    for case, name, shape, dtype in rows:
        print(f"{case:<{w_case}}  {name:<{w_name}}  {shape:<{w_shape}}  {dtype}")
    print(
        f"\n{len(cases.CASES)} cases, {len(rows)} arrays, {size / 1024:.0f} KiB -> {args.out} "
        f"(jax {jax.__version__}, {jax.default_backend()}, commit {commit}; {elapsed:.1f} s)"
    )
    if size > MAX_BYTES:
        os.remove(args.out)
        print(f"error: {size} bytes is over the {MAX_BYTES}-byte limit (removed)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
