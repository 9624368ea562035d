"""The client's side of federated evaluation: the global model on the client's own
held-out data (``eval.client_fraction``), optionally after a few personalizing steps.

The server asks a client by putting ``evaluate`` in its fit message; the client then
evaluates the weights it received, before training, on its held-out share
(``eval.client_holdout``, a seeded split carved from its data) and puts
``{"n": <examples>, <metric>: <value>, ...}`` under ``eval`` in its reply's meta.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedloom.client.config import TrainConfig
from fedloom.client.evaluate import evaluate_task
from fedloom.client.task import Task
from fedloom.client.trainer import LocalTrainer
from fedloom.core.seeding import generator
from fedloom.data.base import Split


def holdout_split(data: Split, share: float, seed: int, client: int) -> tuple[Split, Split]:
    """(train, held-out) parts of a client's data: a seeded ``ceil(share·n)`` of it is
    held out (none when the client has fewer than two examples)."""
    n = len(data)
    held = min(math.ceil(share * n), n - 1) if n >= 2 else 0
    order = torch.randperm(n, generator=generator(seed, "holdout", client))
    keep, out = order[held:].sort().values, order[:held].sort().values
    return data.subset(keep), data.subset(out)


@dataclass(frozen=True)
class ClientEvaluator:
    task: Task
    personalize_steps: int
    train: TrainConfig
    trainer: LocalTrainer

    def __call__(
        self,
        model: nn.Module,
        own: Split,
        holdout: Split,
        seed: int,
        key: tuple[Any, ...],
    ) -> dict[str, Any]:
        """The evaluation to report: ``{"n": ..., <metric>: ...}``; empty if no holdout."""
        if len(holdout) == 0:
            return {}
        net = model
        if self.personalize_steps > 0 and len(own):
            net = copy.deepcopy(model)
            steps = self.train.model_copy(update={"local_steps": self.personalize_steps})
            tuner = LocalTrainer(
                steps,
                self.trainer.loss,
                optimizer=self.trainer.make_optimizer,
                train_step=self.trainer.train_step,
                augment=self.trainer.augment,
            )
            with torch.random.fork_rng(devices=[]):
                tuner.train(net, own, generator(seed, "personalize", *key))
        values = evaluate_task(net, holdout, self.task)
        return {"n": len(holdout), **values}
