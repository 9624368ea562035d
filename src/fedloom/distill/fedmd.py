"""FedMD (Li and Wang 2019): clients exchange only class scores on a public set.

Each round a client digests the consensus (the mean class scores of the previous round's
clients) on the public set, revisits its own data, and sends its class scores on the
public set. The server averages them into the next consensus. There is no global model:
the traffic is (public examples x classes) floats each way, whatever the architectures.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from fedloom.core.errors import UpdateRejected
from fedloom.core.tensors import Tensors
from fedloom.distill.clients import DIGEST_KEY, LOGITS, REPORT_KEY, FedMDClient
from fedloom.distill.ensemble import teacher_of
from fedloom.distill.setup import client_maker, parameter_counts
from fedloom.distill.strategy import DistillStrategy
from fedloom.server.config import StrategyConfig
from fedloom.server.strategy import SampleWeightedMean

log = logging.getLogger(__name__)


class ScoreMean(SampleWeightedMean):
    """The unweighted mean of the clients' class scores: every client counts once."""

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        self.sum.add(update, 1.0)


def check_report(client_id: str, meta: Mapping[str, Any]) -> None:
    """The client's test report, if any: accuracy in [0, 1], a finite loss, a count."""
    report = meta.get(REPORT_KEY)
    if report is None:
        return
    if not isinstance(report, Mapping):
        raise UpdateRejected(f"{REPORT_KEY} must be an object")
    accuracy, loss, n = report.get("accuracy"), report.get("loss"), report.get("n")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (accuracy, loss))
    if not numbers or not 0 <= float(accuracy) <= 1 or not math.isfinite(float(loss)):  # type: ignore[arg-type]
        raise UpdateRejected(f"{REPORT_KEY}: accuracy must be in [0, 1] and loss finite")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UpdateRejected(f"{REPORT_KEY}.n must be a positive integer")


class Reports:
    """The round's client reports: the metrics of a run with no global model."""

    def __init__(self) -> None:
        self.round = 0
        self.reports: list[Mapping[str, Any]] = []

    def observe(self, rnd: int, client_id: str, meta: Mapping[str, Any]) -> None:
        if rnd != self.round:
            self.round, self.reports = rnd, []
        if REPORT_KEY in meta:  # checked by check_report before the update was accepted
            self.reports.append(meta[REPORT_KEY])

    def evaluate(self, state: Tensors) -> dict[str, float]:
        """``test_accuracy`` and ``test_loss``: the means over this round's client models."""
        if not self.reports:
            return {}
        return {
            "test_accuracy": statistics.fmean(float(r["accuracy"]) for r in self.reports),
            "test_loss": statistics.fmean(float(r["loss"]) for r in self.reports),
        }

    def metrics(self, rnd: int) -> dict[str, Any]:
        accuracies = [float(r["accuracy"]) for r in self.reports] if rnd == self.round else []
        return {
            "client_accuracy_mean": statistics.fmean(accuracies) if accuracies else None,
            "client_accuracy_min": min(accuracies, default=None),
        }


class FedMD(DistillStrategy):
    """``strategy.name=fedmd``; the server's state is the consensus class scores."""

    def __init__(self, config: StrategyConfig, params: Any = None) -> None:
        super().__init__("fedmd", config)
        self.aggregator_factory = ScoreMean
        self.meta_checks.append(check_report)
        self.ready = False
        """Whether a consensus exists (a round has been applied)."""
        self.reports = Reports()

    def prepare(self, parts: Any) -> None:
        fed = self.fed
        public = fed.unlabeled

        def extra(arch: str) -> dict[str, Any]:
            return {
                "public": public,
                "distill": fed.config,
                "initial": fed.initial[arch],
                "width": max(parameter_counts(fed).values()),
                "num_classes": fed.num_classes,
                "test": fed.test,
                "task": fed.task,
            }

        parts.make_client = client_maker(parts, fed, FedMDClient, extra)
        size = len(public.fit) + len(public.val)
        parts.initial_state = {LOGITS: torch.zeros(size, fed.num_classes)}
        parts.evaluate = self.reports.evaluate
        parts.observers.append(self.reports.observe)
        parts.metric_sources.append(self.reports.metrics)
        parts.notes["models"] = parameter_counts(fed)
        parts.notes["clients_per_model"] = {a: fed.assignment.count(a) for a in fed.archs}
        parts.notes["public_examples"] = size

    def start(self, global_state: Mapping[str, Tensor]) -> None:
        """No server optimizer: the consensus is replaced, not stepped."""

    def views(self, global_state: Mapping[str, Tensor]) -> dict[str, Tensors]:
        return dict.fromkeys(self.fed.archs, dict(global_state))

    def fit_config(self, rnd: int) -> dict[str, Any]:
        return {DIGEST_KEY: self.ready, REPORT_KEY: self.fed.evaluated(rnd)}

    def apply(self, global_state: Mapping[str, Tensor], aggregate: Mapping[str, Tensor]) -> Tensors:
        self.ready = True
        consensus = teacher_of(aggregate[LOGITS], self.fed.config)
        if consensus is None:
            log.warning("the consensus class scores overflow; the previous one is kept")
            return {LOGITS: global_state[LOGITS].clone()}
        return {LOGITS: consensus}

    def state_dict(self) -> tuple[Tensors, dict[str, Any]]:
        return {}, {"ready": self.ready, **self.settings()}

    def load_state_dict(self, tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> None:
        self.check_settings(rest)
        self.ready = bool(rest["ready"])
