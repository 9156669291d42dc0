"""Private argument checks shared by several irwarp modules (records, baselines).

Each check raises ``ValueError`` naming what was expected and what came; they run at trace time,
so they cost nothing under ``jit``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_int_option"]


def check_int_option(name: str, value, minimum: int) -> int:
    """Returns ``value`` as a Python int if it is an integer (not a bool) ``>= minimum``.

    Raises:
      ValueError: naming ``name``, the bound and the value received.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)
