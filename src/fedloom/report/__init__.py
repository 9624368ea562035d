"""What a run leaves behind: metrics.jsonl, summary.json, plots and the partition table."""

from typing import TYPE_CHECKING

from fedloom.core.lazy import lazy_exports

if TYPE_CHECKING:
    from fedloom.report.metrics import MetricsLog as MetricsLog
    from fedloom.report.metrics import read_metrics as read_metrics
    from fedloom.report.plots import plot_metrics as plot_metrics
    from fedloom.report.plots import plot_partition as plot_partition
    from fedloom.report.plots import write_partition_table as write_partition_table

_EXPORTS = {
    "MetricsLog": "fedloom.report.metrics",
    "read_metrics": "fedloom.report.metrics",
    "plot_metrics": "fedloom.report.plots",
    "plot_partition": "fedloom.report.plots",
    "write_partition_table": "fedloom.report.plots",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
