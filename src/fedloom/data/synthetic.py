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
samples, which then dominates the run and the memory. ``data.synthetic_samples`` gives
every device the same size instead.

``synthetic_lazy`` is the same federation for very many clients: device k's samples are
a pure function of (seed, k), generated only when client k trains (``fedloom.data.ondemand``);
its test split pools the held-out samples of the first ``LAZY_TEST_DEVICES`` devices. With
at most that many clients it equals ``synthetic`` sample for sample.
"""

from __future__ import annotations

import numpy as np
import torch

from fedloom.core.seeding import numpy_rng
from fedloom.data.base import TensorData
from fedloom.data.config import DataConfig
from fedloom.data.ondemand import OnDemandFederatedDataset
from fedloom.data.registry import LoadedData

NUM_FEATURES = 60
NUM_CLASSES = 10
MIN_SAMPLES_PER_DEVICE = 50
MAX_SAMPLES_PER_DEVICE = 1000
LAZY_TEST_DEVICES = 200
"""``synthetic_lazy``: the devices whose held-out samples form the fixed test split."""
# Sigma_jj = j^-1.2, so the per-feature standard deviation is j^-0.6.
_FEATURE_STD = np.arange(1, NUM_FEATURES + 1, dtype=np.float64) ** -0.6


def device_sample_count(rng: np.random.Generator, fixed: int | None = None) -> int:
    """``int(lognormal(4, 2)) + 50``, capped at ``MAX_SAMPLES_PER_DEVICE``; ``fixed``
    when given (then nothing is drawn)."""
    if fixed is not None:
        return fixed
    return min(int(rng.lognormal(4.0, 2.0)) + MIN_SAMPLES_PER_DEVICE, MAX_SAMPLES_PER_DEVICE)


def generate_device(
    alpha: float, beta: float, rng: np.random.Generator, fixed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One device's ``(x float32 (n, 60), y int64 (n,))`` per the module docstring."""
    num_samples = device_sample_count(rng, fixed)
    model_mean = rng.normal(0.0, alpha)
    input_mean = rng.normal(0.0, beta)
    weights = rng.normal(model_mean, 1.0, (NUM_CLASSES, NUM_FEATURES))
    bias = rng.normal(model_mean, 1.0, NUM_CLASSES)
    centre = rng.normal(input_mean, 1.0, NUM_FEATURES)
    x = centre + rng.standard_normal((num_samples, NUM_FEATURES)) * _FEATURE_STD
    # softmax is monotone, so the argmax of the logits is the argmax of softmax.
    y = np.argmax(x @ weights.T + bias, axis=1)
    return x.astype(np.float32), y.astype(np.int64)


DeviceSplit = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""One device's ``(train_x, train_y, test_x, test_y)``."""


def device_split(cfg: DataConfig, seed: int, k: int) -> DeviceSplit:
    """Device k's samples, split into its train part and its held-out part: a pure
    function of (cfg, seed, k)."""
    rng = numpy_rng(seed, "data", "synthetic", k)
    x, y = generate_device(cfg.synthetic_alpha, cfg.synthetic_beta, rng, cfg.synthetic_samples)
    order = rng.permutation(len(y))
    n_test = _holdout_count(len(y), cfg.test_fraction)
    test_part, train_part = np.sort(order[:n_test]), np.sort(order[n_test:])
    return x[train_part], y[train_part], x[test_part], y[test_part]


def device_train_size(cfg: DataConfig, seed: int, k: int) -> int:
    """The size of device k's train part, from the first draw of its stream only."""
    total = cfg.synthetic_samples
    if total is None:
        total = device_sample_count(numpy_rng(seed, "data", "synthetic", k))
    return total - _holdout_count(total, cfg.test_fraction)


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
        x, y, tx, ty = device_split(cfg, seed, k)
        train_x.append(x)
        train_y.append(y)
        test_x.append(tx)
        test_y.append(ty)
    bounds = np.cumsum([0] + [len(part) for part in train_y])
    natural = [torch.arange(int(lo), int(hi)) for lo, hi in zip(bounds, bounds[1:], strict=False)]
    return LoadedData(
        train=_as_tensor_data(train_x, train_y),
        test=_as_tensor_data(test_x, test_y),
        num_classes=NUM_CLASSES,
        natural_split=natural,
    )


def load_synthetic_lazy(cfg: DataConfig, num_clients: int, seed: int) -> OnDemandFederatedDataset:
    """``synthetic``'s federation where client k's train part is generated from (seed, k)
    each time client k trains, and never held for all clients at once.

    The test split holds the held-out parts of devices ``0 .. LAZY_TEST_DEVICES - 1``
    (or of every device when there are fewer).
    """
    tested = [device_split(cfg, seed, k) for k in range(min(num_clients, LAZY_TEST_DEVICES))]
    sizes = np.fromiter(
        (device_train_size(cfg, seed, k) for k in range(num_clients)), np.int64, num_clients
    )

    def client(k: int) -> TensorData:
        x, y, _, _ = device_split(cfg, seed, k)
        return TensorData(torch.from_numpy(x), torch.from_numpy(y))

    return OnDemandFederatedDataset(
        sizes=sizes,
        make_client=client,
        test=_as_tensor_data([t[2] for t in tested], [t[3] for t in tested]),
        num_classes=NUM_CLASSES,
        input_shape=(NUM_FEATURES,),
    )


def _as_tensor_data(xs: list[np.ndarray], ys: list[np.ndarray]) -> TensorData:
    return TensorData(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))
