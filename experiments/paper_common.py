"""Deprecated: the helpers of the paper experiments now live in :mod:`experiments.lib`. This
module re-exports the names it used to define, so that older code keeps working.
"""

from experiments.lib.launch import command_line, define_flags, header, run_main  # noqa: F401
from experiments.lib.measure import loglog_slope  # noqa: F401
from experiments.lib.media import new_figure  # noqa: F401
from experiments.lib.methods import (  # noqa: F401
    check_methods,
    method_label,
    parse_method,
    sequence_fn,
    warp_fn,
)
from experiments.lib.tables import cell  # noqa: F401
from experiments.lib.workdir import Workdir  # noqa: F401
