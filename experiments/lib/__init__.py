"""The small shared library of the experiments, one module per concept.

- :mod:`~experiments.lib.workdir`: the workdir of a run (resolved config, metrics JSON lines,
  atomic writes, the one-run-per-workdir rule, stale temporaries).
- :mod:`~experiments.lib.clips`: video clips and their optical flows.
- :mod:`~experiments.lib.media`: noise and flow as pictures, captions, PNG / GIF / MP4 writers.
- :mod:`~experiments.lib.tables`: table cells, markdown tables, and reading them back.
- :mod:`~experiments.lib.measure`: timing, compile time, hardware description, slope fits.
- :mod:`~experiments.lib.methods`: method names of the command line (``"chang4"``) and their
  cached jitted warps.
- :mod:`~experiments.lib.launch`: the absl entry point ``--config`` / ``--workdir``.

Nothing here is imported by the library (``irwarp``).
"""
