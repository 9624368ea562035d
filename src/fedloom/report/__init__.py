"""What a run leaves behind: metrics.jsonl, summary.json, plots and the partition table."""

from fedloom.report.metrics import MetricsLog, read_metrics
from fedloom.report.plots import plot_metrics, plot_partition, write_partition_table

__all__ = ["MetricsLog", "plot_metrics", "plot_partition", "read_metrics", "write_partition_table"]
