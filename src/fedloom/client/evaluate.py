"""A task's loss and metrics of a model on a split (in memory, or read lazily)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fedloom.client.task import Task, batch_metrics, classification, forward_inputs
from fedloom.core.device import device_of
from fedloom.data.base import Split, TensorData
from fedloom.data.views import to_device


@torch.inference_mode()
def evaluate_task(
    model: nn.Module,
    data: Split,
    task: Task,
    *,
    batch_size: int = 1024,
    channels_last: bool = False,
) -> dict[str, float]:
    """``task``'s loss and metrics of ``model`` on ``data``: each a mean over the split
    (batch means weighted by batch size), plus the task's derived metrics. ``model`` is
    left as it was. ``channels_last`` runs a convolutional model in that memory order
    (about 1.5x faster on CPU): only for models known to allow it (the built-in ones; a
    user's model that flattens with ``.view`` would fail)."""
    net = model
    if channels_last and isinstance(data, TensorData):
        net, x = _fast_layout(model, data.x)
        data = TensorData(x, data.y)
    device = device_of(net)
    was_training = net.training
    net.eval()
    sums: dict[str, float] = {}
    try:
        for batch in data.chunks(batch_size):
            xb, yb = to_device(batch, device)  # no copy when already there
            output = forward_inputs(net, xb)
            for name, value in batch_metrics(task, output, yb).items():
                sums[name] = sums.get(name, 0.0) + value * len(yb)
    finally:
        net.train(was_training)
    n = max(len(data), 1)
    averaged = {name: total / n for name, total in sums.items()}
    derived = task.finish(averaged) if sums else {}
    return {k: v for k, v in {**averaged, **derived}.items() if k not in task.hidden}


def evaluate(model: nn.Module, data: Split, batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of a classifier on ``data``."""
    values = evaluate_task(model, data, classification(), batch_size=batch_size)
    return values["loss"], values["accuracy"]


def _fast_layout(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """For a convolutional model on images, a channels-last copy of both: CPU convolutions
    run about 1.5x faster in that order (measured with ``cnn`` on the MNIST test images)."""
    if x.dim() != 4 or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return model, x
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return fast, x.contiguous(memory_format=torch.channels_last)
