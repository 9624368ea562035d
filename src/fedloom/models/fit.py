"""Does a model fit the data? One forward pass on one example, before any round.

Without this check a model built for other inputs fails inside every client with a raw
``RuntimeError`` (wrong input shape) or ``IndexError`` (too few outputs for the labels).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from fedloom.client.task import forward_inputs, prediction
from fedloom.core.errors import ConfigError

log = logging.getLogger(__name__)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _outputs_for(model: nn.Module, example: torch.Tensor | dict[str, torch.Tensor]) -> object:
    """The model's output on ``example`` (a batch of one), leaving no trace on the model.

    Eval mode (no dropout draws, no batch-norm statistics updates) and a forked RNG, so
    the check cannot change the run that follows.
    """
    was_training = model.training
    param = next(model.parameters(), None)
    if param is not None:
        device = param.device
        example = (
            {k: v.to(device) for k, v in example.items()}
            if isinstance(example, dict)
            else example.to(device)
        )
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            return forward_inputs(model, example)  # a dict batch: model(**example)
    finally:
        model.train(was_training)


def check_model_fits(
    model: nn.Module,
    example: torch.Tensor | dict[str, torch.Tensor],
    num_classes: int | None,
    *,
    model_name: str,
    data_name: str,
) -> int:
    """Check that ``model`` takes ``example`` (shape ``(1, *input_shape)``) and gives logits.

    Returns the model's number of outputs. A model that cannot take the data's inputs, or
    has fewer outputs than the data has classes, is a ``ConfigError`` naming both sides;
    more outputs than classes only logs a warning (those outputs are never a label).
    ``num_classes=None`` (a task other than classification) checks only that the model
    takes the inputs and returns a prediction (a tensor, ``.logits`` or ``{"logits"}``).
    """
    shape: object = (
        {k: tuple(v.shape[1:]) for k, v in example.items()}
        if isinstance(example, dict)
        else tuple(example.shape[1:])
    )
    try:
        out = _outputs_for(model, example)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise ConfigError(
            [
                f"model {model_name} cannot take the inputs of data {data_name}: one example "
                f"has shape {shape} ({_first_line(error)})"
            ]
        ) from None
    if num_classes is None:
        try:
            return int(prediction(out).shape[-1]) if prediction(out).ndim else 1
        except TypeError as error:
            raise ConfigError([f"model {model_name}: {error}"]) from None
    if not isinstance(out, torch.Tensor):
        try:
            out = prediction(out)  # a Hugging Face style output: its .logits
        except TypeError as error:
            raise ConfigError([f"model {model_name}: {error}"]) from None
    if out.ndim != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            [
                f"model {model_name} returns {got} for a batch of one example of data "
                f"{data_name}; fedloom needs logits of shape (batch, classes)"
            ]
        )
    outputs = int(out.shape[1])
    if outputs < num_classes:
        raise ConfigError(
            [
                f"model {model_name} has {outputs} outputs but data {data_name} has "
                f"{num_classes} classes (labels 0..{num_classes - 1}); give the model "
                f"{num_classes} outputs"
            ]
        )
    if outputs > num_classes:
        log.warning(
            "model %s has %d outputs but data %s has only %d classes; the extra outputs "
            "are never a label",
            model_name,
            outputs,
            data_name,
            num_classes,
        )
    return outputs
