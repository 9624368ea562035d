"""Loss and accuracy of a model on an in-memory split."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fedloom.data.base import TensorData


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorData, batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``data``."""
    model.eval()
    loss = torch.zeros((), dtype=torch.float64)
    correct = 0
    for start in range(0, len(data), batch_size):
        x, y = data.x[start : start + batch_size], data.y[start : start + batch_size]
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        correct += int((logits.argmax(1) == y).sum())
    n = max(len(data), 1)
    return float(loss) / n, correct / n
