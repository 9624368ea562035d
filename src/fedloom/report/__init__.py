"""What a run leaves behind: metrics.jsonl, summary.json, plots and the partition table."""
