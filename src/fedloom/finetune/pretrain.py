"""``fedloom pretrain``: train a model centrally on a config's data and save a checkpoint.

This is the offline starting point of a fine-tuning demo: pretrain on one task (say
``data.classes=[0,1,2,3,4]``), then federate on a shifted one with
``model.checkpoint=PATH``. The model is built exactly as ``fedloom run`` builds it (same
registry, same seeded init, same head size), so the checkpoint loads without mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from fedloom.client.evaluate import evaluate
from fedloom.client.trainer import LocalTrainer
from fedloom.config import FedConfig
from fedloom.core.seeding import derive_seed, generator
from fedloom.data.federated import keep_classes
from fedloom.data.registry import get_loader
from fedloom.finetune.feature import export_full
from fedloom.models.registry import build_model


@dataclass(frozen=True)
class PretrainResult:
    path: Path
    test_accuracy: float
    test_loss: float
    num_examples: int


def pretrain(config: FedConfig, out: str | Path, epochs: int) -> PretrainResult:
    """Train ``config.model.name`` on all of the (class-filtered) train split; save safetensors."""
    data_cfg = config.data
    loaded = keep_classes(get_loader(data_cfg.name)(data_cfg, 1, config.seed), data_cfg.classes)
    input_shape = tuple(loaded.train.x.shape[1:])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "init"))
        model = build_model(config.model.name, input_shape, loaded.num_classes)
        torch.manual_seed(derive_seed(config.seed, "pretrain", "dropout"))
        trainer = LocalTrainer(
            config.train.model_copy(update={"local_epochs": epochs, "local_steps": None})
        )
        trainer.train(model, loaded.train, generator(config.seed, "pretrain", "shuffle"))
    loss, accuracy = evaluate(model, loaded.test)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(export_full(model), out)
    return PretrainResult(out, accuracy, loss, len(loaded.train))
