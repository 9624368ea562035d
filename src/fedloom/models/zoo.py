"""The built-in models. Layer sizes follow the papers that made them standard baselines."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


def _flat_size(body: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...]) -> int:
    """Size of ``body``'s flattened output, found with one dummy forward pass."""
    with torch.no_grad():
        return int(body(torch.zeros(1, *input_shape)).flatten(1).shape[1])


class CNN(nn.Module):
    """The classic two-conv net (PyTorch's MNIST example); fc1 is sized from the input."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.dropout1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(_flat_size(self._features, input_shape), 128)
        self.dropout2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.dropout1(F.max_pool2d(x, 2)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout2(F.relu(self.fc1(self._features(x)))))


class CNNMcMahan(nn.Module):
    """The CNN of McMahan et al. 2017: 1,663,370 parameters on 28x28 input."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(_flat_size(self._features, input_shape), 512)
        self.fc2 = nn.Linear(512, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self._features(x))))


def cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return CNN(input_shape, num_classes)


def cnn_mcmahan(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return CNNMcMahan(input_shape, num_classes)


def mlp_2nn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """McMahan et al.'s 2NN: two hidden layers of 200 (199,210 parameters on 784 inputs)."""
    inputs = math.prod(input_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(inputs, 200),
        nn.ReLU(),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, num_classes),
    )


def logreg(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))
