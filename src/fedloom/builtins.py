"""fedloom's own components, declared by name: nothing here is imported until it is used.

Each row is (kind, name, ``"module:attr"``, capabilities, meta). The capabilities are
what compatibility checks read:

- strategy: ``central_dp`` (its aggregation is a weighted mean that central DP may
  replace by a noised sum), ``dpsgd`` (clients train with the plain local trainer, so
  DP-SGD may replace it), ``robust_aggregator`` (``strategy.aggregator`` may be a robust
  rule), ``client_state`` (clients keep state between rounds), ``counts_steps`` (its
  correction assumes plain SGD steps: no weight decay), ``bounds_step_claims`` (bounds a
  client's claimed step count by the server's own data sizes), ``any_device`` (its
  client side works with ``compute.device`` other than cpu), ``ranks`` (its aggregate is
  a sum that ``simulation.workers`` ranks can all-reduce), ``heterogeneous`` (keeps one
  model per architecture, so ``clients.models`` may differ);
- aggregator: ``buffers`` (holds every update of the round until it closes);
- codec: ``lossy`` (error feedback applies), ``spec`` (part of the ``sparsifier+quantizer``
  grammar of ``fedloom.compression.spec``).
"""

from __future__ import annotations

from typing import Any

from fedloom.core.registry import REGISTRY, Component

_FEDAVG_FAMILY = frozenset({"central_dp", "dpsgd", "robust_aggregator", "any_device", "ranks"})
_S = "fedloom.algorithms.strategies"
_ROBUST = "fedloom.robust.registry"

_ROWS: list[tuple[str, str, str, frozenset[str], dict[str, Any]]] = [
    ("strategy", "fedavg", f"{_S}:FedAvg", _FEDAVG_FAMILY, {}),
    ("strategy", "fedavgm", f"{_S}:FedAvgM", _FEDAVG_FAMILY, {}),
    ("strategy", "fedadam", f"{_S}:FedAdam", _FEDAVG_FAMILY, {}),
    ("strategy", "fedyogi", f"{_S}:FedYogi", _FEDAVG_FAMILY, {}),
    ("strategy", "fedadagrad", f"{_S}:FedAdagrad", _FEDAVG_FAMILY, {}),
    (
        "strategy",
        "fedprox",
        f"{_S}:FedProx",
        frozenset({"central_dp", "robust_aggregator", "ranks"}),
        {},
    ),
    (
        "strategy",
        "scaffold",
        f"{_S}:Scaffold",
        frozenset({"client_state", "robust_aggregator", "counts_steps"}),
        {},
    ),
    (
        "strategy",
        "fednova",
        f"{_S}:FedNova",
        frozenset({"counts_steps", "bounds_step_claims", "any_device", "ranks"}),
        {},
    ),
    ("strategy", "feddf", "fedloom.distill.feddf:FedDF", frozenset({"heterogeneous"}), {}),
    ("strategy", "fedmd", "fedloom.distill.fedmd:FedMD", frozenset({"heterogeneous"}), {}),
    ("aggregator", "mean", "fedloom.server.strategy:mean_aggregator", frozenset(), {}),
    *(
        ("aggregator", rule, f"{_ROBUST}:{attr}", frozenset({"buffers"}), {})
        for rule, attr in (
            ("median", "median"),
            ("trimmed_mean", "trimmed"),
            ("krum", "krum"),
            ("multikrum", "multikrum"),
            ("norm_bound", "norm_bound"),
        )
    ),
    ("codec", "none", "fedloom.compression.codec:raw_codec", frozenset(), {}),
    *(
        ("codec", name, "fedloom.compression.blob:spec_codec", frozenset({"spec", "lossy"}), {})
        for name in ("fp16", "bf16", "int8", "int4", "topk", "randk")
    ),
    ("codec", "f32", "fedloom.compression.blob:spec_codec", frozenset({"spec"}), {}),
    ("model", "cnn", "fedloom.models.zoo:cnn", frozenset(), {"input_ndim": 3}),
    ("model", "cnn_mcmahan", "fedloom.models.zoo:cnn_mcmahan", frozenset(), {"input_ndim": 3}),
    ("model", "mlp_2nn", "fedloom.models.zoo:mlp_2nn", frozenset(), {}),
    ("model", "logreg", "fedloom.models.zoo:logreg", frozenset(), {}),
    ("dataset", "digits", "fedloom.data.digits:load_digits_dataset", frozenset(), {}),
    *(
        ("dataset", name, "fedloom.data.idx:load_idx", frozenset({"files"}), {})
        for name in ("mnist", "fashion_mnist", "kmnist")
    ),
    ("dataset", "synthetic", "fedloom.data.synthetic:load_synthetic", frozenset({"natural"}), {}),
    (
        "dataset",
        "synthetic_lazy",
        "fedloom.data.synthetic:load_synthetic_lazy",
        frozenset({"natural", "on_demand"}),
        {},
    ),
    ("dataset", "cifar10", "fedloom.data.cifar:load_cifar10", frozenset(), {}),
    ("partitioner", "iid", "fedloom.data.partition:iid_partition", frozenset(), {}),
    ("partitioner", "dirichlet", "fedloom.data.partition:dirichlet_partition", frozenset(), {}),
    ("partitioner", "shards", "fedloom.data.partition:shard_partition", frozenset(), {}),
    ("partitioner", "quantity", "fedloom.data.partition:quantity_partition", frozenset(), {}),
    ("attack", "sign_flip", "fedloom.robust.attacks:sign_flip", frozenset({"update"}), {}),
    ("attack", "scale", "fedloom.robust.attacks:scale", frozenset({"update"}), {}),
    ("attack", "gaussian", "fedloom.robust.attacks:gaussian", frozenset({"update"}), {}),
    ("attack", "label_flip", "fedloom.robust.attacks:flip_labels", frozenset({"data"}), {}),
    ("trainer", "sgd", "fedloom.client.trainer:LocalTrainer", frozenset(), {}),
    ("task", "classification", "fedloom.client.task:classification", frozenset(), {}),
    ("task", "regression", "fedloom.client.task:regression", frozenset(), {}),
    ("task", "language_model", "fedloom.client.task:language_model", frozenset(), {}),
    ("logger", "csv", "fedloom.report.loggers:CsvLogger", frozenset(), {}),
    (
        "logger",
        "tensorboard",
        "fedloom.report.loggers:TensorBoardLogger",
        frozenset(),
        {"requires": "tensorboard", "extra": "tracking"},
    ),
    (
        "logger",
        "mlflow",
        "fedloom.report.mlflow_logger:MlflowLogger",
        frozenset(),
        {"requires": "mlflow", "extra": "mlflow"},
    ),
    (
        "logger",
        "wandb",
        "fedloom.report.wandb_logger:WandbLogger",
        frozenset(),
        {"requires": "wandb", "extra": "wandb"},
    ),
]

for _kind, _name, _target, _caps, _meta in _ROWS:
    REGISTRY.add(Component(_kind, _name, _target, None, _caps, _meta))
