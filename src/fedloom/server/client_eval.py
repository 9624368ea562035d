"""The server's side of federated evaluation: ask a seeded share of each round's clients
to evaluate the global model on their own held-out data, check what they report, and
summarize it per round (``client_<metric>_mean`` weighted by examples, ``_p10``,
``_min``, ``_std`` across clients) and per client (``clients_eval.csv``).

A client's report is its own word: it is used only if the server asked that client this
round, ``n`` is an integer in [1, 10^9] and every metric the task reports is a finite
number of magnitude at most 10^30; anything else is logged and left out. In the weighted
mean, ``n`` is capped at twice the median of the round's reports, so no client can
claim the mean for itself.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedloom.core.clientref import client_ref
from fedloom.core.message import EVAL_META, EVALUATE_KEY
from fedloom.core.seeding import generator
from fedloom.server.validate import MAX_ABS_VALUE, MAX_EXAMPLES

log = logging.getLogger(__name__)


class ClientEvaluation:
    def __init__(
        self,
        fraction: float,
        seed: int,
        metrics: Sequence[str],
        main: str,
        table: Path | None,
    ) -> None:
        self.fraction, self.seed = fraction, seed
        self.metrics, self.main = list(metrics), main
        self.table = table
        """``clients_eval.csv``, or None when per-client results are withheld."""
        self.reports: dict[str, dict[str, float]] = {}
        self.asked: set[str] = set()
        self._table_checked = False

    def instructions(self, rnd: int, sampled: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``evaluate`` for ``ceil(fraction · sampled)`` of them, a seeded choice."""
        self.reports = {}
        count = math.ceil(self.fraction * len(sampled))
        order = torch.randperm(len(sampled), generator=generator(self.seed, "client-eval", rnd))
        chosen = [sampled[i] for i in sorted(order[:count].tolist())]
        self.asked = set(chosen)
        return {cid: {EVALUATE_KEY: True} for cid in chosen}

    def observe(self, rnd: int, cid: str, meta: Mapping[str, Any]) -> None:
        report = meta.get(EVAL_META)
        if report is None:
            return
        checked = self._checked(report) if cid in self.asked else None
        if checked is None:
            log.warning(
                "round %d: ignored the evaluation from %s (malformed)", rnd, client_ref(cid)
            )
            return
        self.reports[cid] = checked

    def _checked(self, report: object) -> dict[str, float] | None:
        if not isinstance(report, Mapping) or set(report) != {"n", *self.metrics}:
            return None
        n = report["n"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_EXAMPLES:
            return None
        values: dict[str, float] = {"n": float(n)}
        for name in self.metrics:
            v = report[name]
            if isinstance(v, bool) or not isinstance(v, int | float):
                return None
            if abs(v) > MAX_ABS_VALUE or not math.isfinite(v):  # a huge int: no float overflow
                return None
            values[name] = float(v)
        return values

    def round_metrics(self, rnd: int) -> dict[str, Any]:
        """The round's statistics of the main metric; the per-client rows go to the table."""
        reports, self.reports = self.reports, {}
        self._write(rnd, reports)
        key = f"client_{self.main}"
        if not reports:
            return {f"{key}_{s}": None for s in ("mean", "p10", "min", "std")} | {
                "num_client_evals": 0
            }
        values = np.array([r[self.main] for r in reports.values()])
        claimed = [r["n"] for r in reports.values()]
        weights = np.minimum(np.array(claimed), 2 * statistics.median_low(claimed))
        return {
            f"{key}_mean": float(np.average(values, weights=weights)),
            f"{key}_p10": float(np.percentile(values, 10)),
            f"{key}_min": float(values.min()),
            f"{key}_std": float(values.std()),
            "num_client_evals": len(reports),
        }

    def _write(self, rnd: int, reports: Mapping[str, Mapping[str, float]]) -> None:
        if self.table is None:
            return
        rows: list[list[Any]] = []
        if not self._table_checked:  # a resumed run rewrites the rounds it lost
            self._table_checked = True
            if self.table.exists():
                with open(self.table, newline="") as f:
                    rows = [r for r in list(csv.reader(f))[1:] if int(r[0]) < rnd]
            self.table.parent.mkdir(parents=True, exist_ok=True)
            with open(self.table, "w", newline="") as f:
                csv.writer(f).writerows([["round", "client", "n", *self.metrics], *rows])
        with open(self.table, "a", newline="") as f:
            writer = csv.writer(f)
            for cid in sorted(reports, key=lambda c: (len(c), c)):
                r = reports[cid]
                writer.writerow([rnd, cid, int(r["n"]), *(r[m] for m in self.metrics)])
