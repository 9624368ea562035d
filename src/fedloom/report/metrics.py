"""``metrics.jsonl``: one JSON object per round, appended and flushed as each round ends."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity; write them as null rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, rnd: int) -> None:
        """Drop lines past ``rnd``: a resumed run rewrites the rounds it lost to the kill."""
        kept = [m for m in read_metrics(self.path) if m["round"] <= rnd]
        text = "".join(json.dumps(m) + "\n" for m in kept)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)

    def append(self, metrics: dict[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(line + "\n")
