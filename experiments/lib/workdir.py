"""The workdir of a run: its resolved config, metrics (JSON lines) and outputs.

Rules every experiment follows through :class:`Workdir`:

- **One run per workdir.** A workdir is new, empty, or holds the files of one run, named by its
  ``config.json``. A run whose resolved config differs from the one there is refused before any
  work, unless the config says ``overwrite=True``; then the old run's files are removed when the
  new run's outputs move in (so a failed new run leaves the old run whole).
- **Complete or absent.** A run writes into a hidden temporary folder ``.<name>-XXXXXXXX`` inside
  the workdir and moves each file into place with ``os.replace`` only when the whole run succeeded
  (``config.json`` first, so that files in a workdir always belong to the run it names). On an
  error the folder is removed.
- **Stale temporaries.** A run killed by SIGKILL cannot remove its folder; the folder names the
  process that wrote it (``owner.json``), and the next run into the workdir removes the folders
  of processes that no longer run and logs what it removed (with what a killed final move left).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping

from absl import logging

from irwarp.files import atomic_open, jsonable, write_json  # noqa: F401 (moved; still importable here)

CONFIG = "config.json"
OWNER = "owner.json"


def config_dict(config) -> dict:
    """A plain dict of a ConfigDict (or a mapping), as written to ``config.json``."""
    if hasattr(config, "to_json"):
        return json.loads(config.to_json())
    return json.loads(json.dumps(jsonable(config)))


def write_config(workdir: str, config) -> str:
    """Writes ``config`` (a ConfigDict, or anything with ``to_json`` or a dict) to ``config.json``."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG)
    text = config.to_json(indent=2) if hasattr(config, "to_json") else json.dumps(config, indent=2)
    with atomic_open(path) as f:
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


# --------------------------------------------------------------------------------------------------
# One run per workdir, stale temporaries.


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(workdir: str, name: str) -> list[str]:
    """Removes the temporary folders ``.<name>-*`` of runs whose process is gone; returns them.

    Raises:
      ValueError: if a run of this host that still runs is writing into ``workdir``.
    """
    removed = []
    if not os.path.isdir(workdir):
        return removed
    for entry in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, entry)
        if not (entry.startswith(f".{name}-") and os.path.isdir(path)):
            continue
        try:
            with open(os.path.join(path, OWNER)) as f:
                owner = json.load(f)
        except (OSError, ValueError):
            owner = {}
        pid, host = owner.get("pid"), owner.get("host")
        if pid is not None and host == socket.gethostname() and pid != os.getpid() and _alive(pid):
            raise ValueError(
                f"workdir {workdir!r} is in use: process {pid} is writing into {entry!r}; wait "
                "for it to finish or choose another --workdir"
            )
        left = sorted(n for n in os.listdir(path) if n != OWNER)
        shutil.rmtree(path, ignore_errors=True)
        logging.warning(
            "removed %s from a run that was killed (process %s); it held %d unfinished file(s)%s",
            path,
            pid if pid is not None else "unknown",
            len(left),
            f": {', '.join(left)}" if left else "",
        )
        removed.append(path)
    return removed


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def check_run(workdir: str, config, name: str) -> bool:
    """Applies the one-run rule before any work; returns whether the old run must be cleared.

    Removes stale temporaries first (:func:`clean_stale`).

    Raises:
      ValueError: if ``workdir`` holds another run (a ``config.json`` that differs from
        ``config`` in anything but ``overwrite``) and ``config.overwrite`` is not True, or if it
        is not a folder.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir must be a folder; got the file {workdir!r}")
    clean_stale(workdir, name)
    path = os.path.join(workdir, CONFIG)
    if not os.path.exists(path):
        return False
    new = config_dict(config)
    try:
        with open(path) as f:
            old = json.load(f)
    except ValueError:
        old = {"config.json": "unreadable"}
    overwrite = bool(new.pop("overwrite", False))
    old.pop("overwrite", None)
    if old == new:
        return False
    if not overwrite:
        diff = _differences(old, new)
        shown = "; ".join(diff[:5]) + (f"; and {len(diff) - 5} more" if len(diff) > 5 else "")
        raise ValueError(
            f"workdir {workdir!r} holds another run (its config.json differs: {shown}); pass "
            "--config.overwrite=True to replace that run, or choose another --workdir"
        )
    return True


class Workdir:
    """The outputs of one run, written complete or not at all (see the module docstring).

    Use as a context manager: ``file(name)`` is where to write output ``name`` (inside the
    temporary folder until the run ends), ``metric(row)`` appends a line to ``metrics.jsonl``
    (NaN/Inf become null). On a clean exit the files move into ``path``; on an exception they are
    removed. Creating one checks the one-run rule (:func:`check_run`) and writes ``config.json``.

    Args:
      path: the workdir (created if missing).
      config: the resolved config (``config.json``); its ``overwrite`` field (if any) allows
        replacing another run.
      name: the experiment's name (names the temporary folder).
      metrics: the JSON-lines file of :meth:`metric` (None: no such file).
    """

    def __init__(self, path: str, config, name: str = "run", metrics: str | None = "metrics.jsonl"):
        self.path = path
        self._clear = check_run(path, config, name)
        self._created = not os.path.isdir(path)
        os.makedirs(path, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=path)
        with open(os.path.join(self.tmp, OWNER), "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
        self._open = True
        self._metrics = None
        try:
            write_config(self.tmp, config)
            if metrics:
                self._metrics = JsonlWriter(self.file(metrics))
        except BaseException:
            self.abort()
            raise

    def file(self, name: str) -> str:
        """The path to write output ``name`` to (a file directly in the workdir)."""
        return os.path.join(self.tmp, name)

    def final(self, name: str) -> str:
        """Where output ``name`` will be once the run has ended."""
        return os.path.join(self.path, name)

    def metric(self, row: dict) -> None:
        if self._metrics is None:
            raise ValueError("this Workdir has no metrics file (metrics=None)")
        self._metrics.write(row)

    def save_figure(self, fig, name: str, dpi: int = 110) -> str:
        from experiments.lib import media

        return media.save_figure(fig, self.file(name), dpi=dpi)

    def write_summary(self, text: str, name: str = "summary.md") -> str:
        with open(self.file(name), "w") as f:
            f.write(text.rstrip() + "\n")
        return self.file(name)

    def commit(self) -> None:
        """Moves every output into the workdir (``config.json`` first) and removes the folder."""
        if not self._open:
            return
        if self._metrics is not None:
            self._metrics.close()
        if self._clear:
            for entry in os.listdir(self.path):
                p = os.path.join(self.path, entry)
                if p == self.tmp:
                    continue
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
        names = sorted(n for n in os.listdir(self.tmp) if n not in (OWNER, CONFIG))
        for n in (CONFIG, *names):
            dest = os.path.join(self.path, n)
            if os.path.isdir(dest) and not os.path.islink(dest):
                shutil.rmtree(dest)  # a folder output (a checkpoint) of the same run before
            os.replace(os.path.join(self.tmp, n), dest)
        shutil.rmtree(self.tmp)
        self._open = False

    def abort(self) -> None:
        """Removes the temporary folder (and the workdir if this run created it and it is empty)."""
        if self._metrics is not None:
            self._metrics.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self._created and os.path.isdir(self.path) and not os.listdir(self.path):
            os.rmdir(self.path)
        self._open = False

    def close(self) -> None:
        """Ends the run successfully (:meth:`commit`)."""
        self.commit()

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
