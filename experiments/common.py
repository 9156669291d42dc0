"""Deprecated: the helpers of the experiments now live in :mod:`experiments.lib`, one module per
concept. This module re-exports the names it used to define, so that older code keeps working.
"""

from experiments.lib.measure import (  # noqa: F401
    block,
    compile_timed,
    hardware,
    hardware_line,
    median_seconds,
)
from experiments.lib.media import save_figure, save_image  # noqa: F401
from experiments.lib.methods import method_label, parse_method  # noqa: F401
from experiments.lib.tables import fmt, markdown_table, parse_markdown_table  # noqa: F401
from experiments.lib.workdir import (  # noqa: F401
    JsonlWriter,
    jsonable,
    read_jsonl,
    write_config,
)
