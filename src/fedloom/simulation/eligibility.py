"""Whether a run's clients can be vectorized, and if not, why (one reason per line).

Three things decide it: the model (no batch-norm running statistics, no module that
fails under ``vmap``; dropout only with vmap's ``randomness='different'``, which draws
other masks than the sequential path), the trainer (plain ``LocalTrainer`` SGD with no
custom optimizer, train step or augmentation; FedProx's penalty and SCAFFOLD's drift
correction are the only extras the vectorized step knows), and a trial: one vmapped
gradient of two copies of the model on two examples, which catches data-dependent
control flow and operators vmap has no rule for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from fedloom.algorithms.scaffold import drift_correction
from fedloom.client.trainer import LocalTrainer
from fedloom.data.base import TensorData
from fedloom.simulation.vectorized import ClientJob, Randomness, StepRule, train_group


@dataclass(frozen=True)
class Eligibility:
    blockers: list[str] = field(default_factory=list)
    """Why the clients cannot be vectorized; empty: they can."""
    random_modules: list[str] = field(default_factory=list)
    """Modules that draw random numbers in training (dropout): vectorizable only with
    per-client masks that differ from the sequential path's."""

    @property
    def eligible(self) -> bool:
        return not self.blockers


def _label(name: str, module: nn.Module) -> str:
    return f"{name or 'the model'} ({type(module).__name__})"


def model_blockers(model: nn.Module) -> tuple[list[str], list[str]]:
    """``(blockers, random modules)`` found by walking the model's modules."""
    blockers, random = [], []
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            blockers.append(
                f"{_label(name, module)} updates batch-norm running statistics in training"
            )
        elif isinstance(module, _DropoutNd) and module.p > 0:
            random.append(_label(name, module))
    return blockers, random


def trainer_blockers(trainer: LocalTrainer, fedprox: bool) -> list[str]:
    """What the trainer does that the vectorized SGD step does not."""
    blockers = []
    if type(trainer) is not LocalTrainer:
        blockers.append(
            f"the local trainer is {type(trainer).__name__} (e.g. privacy.mode=dpsgd's "
            "per-sample clipping with Poisson batches), not plain SGD"
        )
    for what in ("make_optimizer", "train_step", "augment"):
        if getattr(trainer, what) is not None:
            blockers.append(f"a custom {what.removeprefix('make_')} (task.custom) is used")
    if len(trainer.penalties) > (1 if fedprox else 0):
        blockers.append("the trainer has a loss penalty other than FedProx's")
    if any(hook is not drift_correction for hook in trainer.grad_hooks):
        blockers.append("the trainer has a gradient hook other than SCAFFOLD's")
    return blockers


def trial_blocker(
    model: nn.Module, trainer: LocalTrainer, example: TensorData, randomness: Randomness
) -> str | None:
    """Train two copies of ``model`` for one step on two examples, vectorized; the reason
    it fails, or None. The model's own weights are not changed."""
    n = min(2, len(example))
    if n == 0:
        return None
    start = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    jobs = [ClientJob(example, [torch.arange(n)]) for _ in range(2)]
    try:
        with torch.random.fork_rng(devices=[]):
            train_group(model, jobs, start, StepRule(lr=0.0), trainer.loss, randomness=randomness)
    except Exception as error:  # any failure means: not vmap-compatible
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return (
            f"{type(model).__name__} fails under torch.func.vmap: {type(error).__name__}: {first}"
        )
    return None


def check_eligibility(
    model: nn.Module, trainer: LocalTrainer, example: TensorData, *, fedprox: bool
) -> Eligibility:
    blockers, random = model_blockers(model)
    blockers += trainer_blockers(trainer, fedprox)
    if not blockers:
        randomness: Randomness = "different" if random else "error"
        why = trial_blocker(model, trainer, example, randomness)
        if why:
            blockers.append(why)
    return Eligibility(blockers, random)
