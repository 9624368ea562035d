"""What is learned: the loss a client trains on and the metrics a model is judged by.

A ``Task`` bundles

- ``loss(output, target) -> scalar``: torch's loss-function convention, a **mean** over
  the batch (DP-SGD's per-sample gradients assume a mean);
- ``metrics``: ``{name: fn(output, target) -> float}``, each a mean over the batch;
  evaluation averages them over the test split weighted by batch size, and writes
  ``test_<name>`` in each metrics line (``test_loss`` always);
- ``finish``: derived metrics computed from the averaged ones (perplexity = exp(loss));
- ``prediction(output)``: the tensor inside a model's output (a tensor, an object with
  ``.logits``, or a dict with ``"logits"``), so Hugging Face style models work as they are.

Built in (``task.name``): ``classification`` (cross-entropy; ``test_accuracy``),
``regression`` (mean squared error; ``test_mse``, ``test_mae``, ``test_r2``) and
``language_model`` (next-token cross-entropy over every position; ``test_perplexity``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

Loss = Callable[[Tensor, Tensor], Tensor]
Metric = Callable[[Tensor, Tensor], float]


def forward_inputs(model: Callable[..., Any], inputs: Any) -> Any:
    """``model(inputs)``, or ``model(**inputs)`` for a dict batch (Hugging Face style)."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def prediction(output: Any) -> Tensor:
    """The prediction tensor inside a model's output."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"the model returned a {type(output).__name__}; fedloom needs a tensor, an "
            "object with .logits, or a dict with 'logits'"
        )
    return logits


@dataclass(frozen=True)
class Task:
    name: str
    loss: Loss
    metrics: Mapping[str, Metric] = field(default_factory=dict)
    main: str = "loss"
    """The metric a progress line and a summary lead with (``accuracy``, ``mse``, ...)."""
    finish: Callable[[Mapping[str, float]], dict[str, float]] = lambda averaged: {}
    """Metrics derived from the averaged ones (e.g. perplexity from the mean loss)."""
    higher_is_better: bool = True
    """Whether a larger ``main`` is better (accuracy) or worse (mse, perplexity)."""
    hidden: frozenset[str] = frozenset()
    """Metrics computed only for ``finish`` (e.g. the target's moments), not reported."""
    derived: tuple[str, ...] = ()
    """The names ``finish`` returns."""

    @property
    def reported(self) -> list[str]:
        """Every metric an evaluation reports: the metrics, the loss, the derived ones."""
        names = [*self.metrics, "loss", *self.derived]
        return [n for n in dict.fromkeys(names) if n not in self.hidden]

    def objective(self, output: Any, target: Tensor) -> Tensor:
        """The training loss of a model's raw output."""
        return self.loss(prediction(output), target)

    def with_overrides(
        self, loss: Loss | None = None, metrics: Mapping[str, Metric] | None = None
    ) -> Task:
        """This task with the user's loss and extra metrics (theirs win on a name clash)."""
        return replace(self, loss=loss or self.loss, metrics={**self.metrics, **(metrics or {})})


def accuracy(output: Tensor, target: Tensor) -> float:
    return float((output.argmax(-1) == target).double().mean())


def mae(output: Tensor, target: Tensor) -> float:
    return float((output.reshape(target.shape) - target).abs().mean())


def _mse(output: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(output.reshape(target.shape), target)


def _token_cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over every position: ``output`` (N, T, V), ``target`` (N, T)."""
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def _target_second_moment(output: Tensor, target: Tensor) -> float:
    return float(target.double().pow(2).mean())


def _target_mean(output: Tensor, target: Tensor) -> float:
    return float(target.double().mean())


def classification() -> Task:
    return Task("classification", F.cross_entropy, {"accuracy": accuracy}, main="accuracy")


def regression() -> Task:
    def finish(averaged: Mapping[str, float]) -> dict[str, float]:
        var = averaged["y2"] - averaged["y"] ** 2  # E[y²] − E[y]² over the split
        return {"r2": 1.0 - averaged["mse"] / var if var > 0 else math.nan}

    return Task(
        "regression",
        _mse,
        {
            "mse": lambda o, t: float(_mse(o, t)),
            "mae": mae,
            "y": _target_mean,
            "y2": _target_second_moment,
        },
        main="mse",
        finish=finish,
        higher_is_better=False,
        hidden=frozenset({"y", "y2"}),
        derived=("r2",),
    )


def language_model() -> Task:
    def finish(averaged: Mapping[str, float]) -> dict[str, float]:
        return {"perplexity": math.exp(min(averaged["loss"], 700.0))}

    return Task(
        "language_model",
        _token_cross_entropy,
        {"accuracy": lambda o, t: accuracy(o, t)},
        main="perplexity",
        finish=finish,
        higher_is_better=False,
        derived=("perplexity",),
    )


@torch.inference_mode()
def batch_metrics(task: Task, output: Any, target: Tensor) -> dict[str, float]:
    """The loss and every metric of one batch (means over it)."""
    pred = prediction(output)
    values = {"loss": float(task.loss(pred, target))}
    values.update({name: float(fn(pred, target)) for name, fn in task.metrics.items()})
    return values
