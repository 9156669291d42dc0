"""The absl entry point of every experiment: ``--config`` (a config file) and ``--workdir``."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence

from experiments.lib import measure


def define_flags(name: str) -> None:
    """Defines ``--config`` and ``--workdir``; called only when run as a program, so that importing
    the experiment modules (the tests) registers no global absl flags."""
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, f"Path to configs/{name}.py (with :variant).")
    flags.DEFINE_string("workdir", None, "Output directory (created if missing).")
    flags.mark_flags_as_required(["config", "workdir"])


def run_main(name: str, run: Callable, report: Callable | None = None) -> None:
    """``python -m experiments.<name> --config=... --workdir=...``: defines the flags and runs.

    ``run(config, workdir)`` does the work; ``report(result, workdir)``, if given, prints it.
    """
    from absl import app, flags

    define_flags(name)
    # SIGTERM ends the run as an exception would, so that its temporary folder is removed (a
    # SIGKILL cannot be caught: the next run into the workdir removes the folder).
    signal.signal(signal.SIGTERM, _terminate)

    def main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"too many command-line arguments: {argv[1:]}")
        result = run(flags.FLAGS.config, flags.FLAGS.workdir)
        if report is not None:
            report(result, flags.FLAGS.workdir)
            sys.stdout.flush()

    app.run(main)


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def command_line(name: str, workdir: str) -> str:
    """The command as typed when run from the shell, or its reconstruction for in-process runs."""
    if sys.argv and sys.argv[0].endswith(os.path.join("experiments", f"{name}.py")):
        return " ".join([f"python -m experiments.{name}"] + sys.argv[1:])
    return f"python -m experiments.{name} --config=configs/{name}.py --workdir={workdir}"


def header(title: str, command: str, intro: str) -> str:
    """The top of a summary.md: title, command, hardware line and a short description."""
    return "\n".join(
        [
            f"# {title}",
            "",
            f"- Command: `{command}`",
            f"- Hardware: {measure.hardware_line()}",
            "",
            intro,
            "",
        ]
    )
