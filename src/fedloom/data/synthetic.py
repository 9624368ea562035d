"""Synthetic(alpha, beta) of Li et al. 2020, "Federated Optimization in Heterogeneous Networks".

Every device k draws its own softmax-regression model and its own input distribution:

    u_k ~ N(0, alpha^2),  B_k ~ N(0, beta^2)
    W_k in R^{10x60}, b_k in R^10 with entries ~ N(u_k, 1)
    v_k in R^60 with entries ~ N(B_k, 1)
    x ~ N(v_k, Sigma), Sigma diagonal, Sigma_jj = j^-1.2 (j = 1..60)
    y = argmax softmax(W_k x + b_k)

alpha controls how much the devices' models differ, beta how much their inputs differ.
The paper writes N(0, alpha), but its reference code (litian96/FedProx, data/synthetic_*)
passes alpha and beta to ``np.random.normal`` as the standard deviation; fedloom follows
the code, so synthetic_alpha = beta = 0.5 has the distribution of its "synthetic_0.5_0.5".
Like the reference, W_k and b_k share the same mean u_k.

Device sizes follow the reference: ``int(lognormal(4, 2)) + 50``. fedloom additionally
caps them at ``MAX_SAMPLES_PER_DEVICE`` = 1000 (about 7% of devices hit the cap): the
reference has no cap, and its heavy tail gives an occasional device with many thousands of
samples, which then dominates the run and the memory.
"""

from __future__ import annotations

import numpy as np
import torch

from fedloom.core.seeding import numpy_rng
from fedloom.data.base import TensorData
from fedloom.data.config import DataConfig
from fedloom.data.registry import LoadedData

NUM_FEATURES = 60
NUM_CLASSES = 10
MIN_SAMPLES_PER_DEVICE = 50
MAX_SAMPLES_PER_DEVICE = 1000
# Sigma_jj = j^-1.2, so the per-feature standard deviation is j^-0.6.
_FEATURE_STD = np.arange(1, NUM_FEATURES + 1, dtype=np.float64) ** -0.6


def device_sample_count(rng: np.random.Generator) -> int:
    """``int(lognormal(4, 2)) + 50``, capped at ``MAX_SAMPLES_PER_DEVICE``."""
    return min(int(rng.lognormal(4.0, 2.0)) + MIN_SAMPLES_PER_DEVICE, MAX_SAMPLES_PER_DEVICE)


def generate_device(
    alpha: float, beta: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One device's ``(x float32 (n, 60), y int64 (n,))`` per the module docstring."""
    num_samples = device_sample_count(rng)
    model_mean = rng.normal(0.0, alpha)
    input_mean = rng.normal(0.0, beta)
    weights = rng.normal(model_mean, 1.0, (NUM_CLASSES, NUM_FEATURES))
    bias = rng.normal(model_mean, 1.0, NUM_CLASSES)
    centre = rng.normal(input_mean, 1.0, NUM_FEATURES)
    x = centre + rng.standard_normal((num_samples, NUM_FEATURES)) * _FEATURE_STD
    # softmax is monotone, so the argmax of the logits is the argmax of softmax.
    y = np.argmax(x @ weights.T + bias, axis=1)
    return x.astype(np.float32), y.astype(np.int64)


def _holdout_count(num_samples: int, fraction: float) -> int:
    # Keep at least one sample on each side so every device trains and is tested.
    return min(max(int(np.floor(fraction * num_samples + 0.5)), 1), num_samples - 1)


def load_synthetic(cfg: DataConfig, num_clients: int, seed: int) -> LoadedData:
    """``num_clients`` devices; each keeps its train part as one client (the natural split).

    ``cfg.test_fraction`` of each device's samples is pooled into the test split. Device k
    is drawn from ``numpy_rng(seed, ..., k)``, so its data does not depend on how many
    devices there are.
    """
    train_x, train_y, test_x, test_y = [], [], [], []
    for k in range(num_clients):
        rng = numpy_rng(seed, "data", "synthetic", k)
        x, y = generate_device(cfg.synthetic_alpha, cfg.synthetic_beta, rng)
        order = rng.permutation(len(y))
        n_test = _holdout_count(len(y), cfg.test_fraction)
        test_part, train_part = np.sort(order[:n_test]), np.sort(order[n_test:])
        train_x.append(x[train_part])
        train_y.append(y[train_part])
        test_x.append(x[test_part])
        test_y.append(y[test_part])
    bounds = np.cumsum([0] + [len(part) for part in train_y])
    natural = [torch.arange(int(lo), int(hi)) for lo, hi in zip(bounds, bounds[1:], strict=False)]
    return LoadedData(
        train=_as_tensor_data(train_x, train_y),
        test=_as_tensor_data(test_x, test_y),
        num_classes=NUM_CLASSES,
        natural_split=natural,
    )


def _as_tensor_data(xs: list[np.ndarray], ys: list[np.ndarray]) -> TensorData:
    return TensorData(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))
