"""The ``eval`` feature: with ``eval.client_fraction > 0``, each client holds out
``eval.client_holdout`` of its data (it trains on the rest), and a seeded share of each
round's clients evaluates the global model on it before training."""

from __future__ import annotations

import functools
from pathlib import Path

from fedloom.client.federated_eval import ClientEvaluator, holdout_split
from fedloom.data.base import Split
from fedloom.parts import Parts
from fedloom.server.client_eval import ClientEvaluation

TABLE = "clients_eval.csv"


def client_evaluation(parts: Parts) -> None:
    cfg, fed = parts.config.eval, parts.config
    if cfg.client_fraction == 0:
        return
    own = parts.client_data or parts.data.client

    @functools.cache
    def split(k: int) -> tuple[Split, Split]:  # one draw per client
        return holdout_split(own(k), cfg.client_holdout, fed.seed, k)

    def train_part(k: int) -> Split:
        return split(k)[0]

    def held_out(k: int) -> Split:
        return split(k)[1]

    parts.client_data, parts.client_holdout = train_part, held_out
    parts.client_evaluator = ClientEvaluator(
        parts.task, cfg.personalize_steps, fed.train, parts.trainer
    )
    # per-client results are withheld in a DP run (compat refuses it without release)
    table = None if fed.privacy.withholds_client_info else Path(str(fed.output_dir)) / TABLE
    evaluation = ClientEvaluation(
        cfg.client_fraction, fed.seed, parts.task.reported, parts.task.main, table
    )
    parts.instructions.append(evaluation.instructions)
    parts.observers.append(evaluation.observe)
    parts.metric_sources.append(evaluation.round_metrics)
