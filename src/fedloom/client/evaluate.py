"""Loss and accuracy of a model on an in-memory split."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from fedloom.data.base import TensorData


@torch.inference_mode()
def evaluate(model: nn.Module, data: TensorData, batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``data``; ``model`` is left as it was."""
    net, x = _fast_layout(model, data.x)
    was_training = net.training
    net.eval()
    loss = torch.zeros((), dtype=torch.float64)
    correct = 0
    try:
        for start in range(0, len(data), batch_size):
            xb, yb = x[start : start + batch_size], data.y[start : start + batch_size]
            logits = net(xb)
            loss += F.cross_entropy(logits, yb, reduction="sum").double()
            correct += int((logits.argmax(1) == yb).sum())
    finally:
        net.train(was_training)
    n = max(len(data), 1)
    return float(loss) / n, correct / n


def _fast_layout(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """For a convolutional model on images, a channels-last copy of both: CPU convolutions
    run about 1.5x faster in that order (measured with ``cnn`` on the MNIST test images)."""
    if x.dim() != 4 or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return model, x
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return fast, x.contiguous(memory_format=torch.channels_last)
