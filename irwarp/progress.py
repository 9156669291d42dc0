"""A text progress bar on stderr, for long work (``irwarp warp``, ``irwarp dataset``, the jobs)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``[####....] done/total unit, rate/s, ETA`` on stderr.

    On a terminal the line is redrawn in place (``\\r``); otherwise (logs, CI) one line is
    written per tenth of the work, so a log is not flooded.
    """

    def __init__(self, total: int, enabled: bool = True, width: int = 30, unit: str = "frames"):
        self.total, self.enabled, self.width, self.unit = total, enabled, width, unit
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.last_decile = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        frac = min(done / max(self.total, 1), 1.0)
        decile = int(10 * frac)
        if not self.tty and decile == self.last_decile and done < self.total:
            return
        self.last_decile = decile
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        filled = int(self.width * frac)
        bar = "#" * filled + "." * (self.width - filled)
        msg = f"[{bar}] {done}/{self.total} {self.unit}, {rate:.1f}/s, ETA {eta:.0f} s"
        sys.stderr.write(("\r" + msg) if self.tty else (msg + "\n"))
        if self.tty and done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()
