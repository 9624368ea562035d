"""Ensemble distillation as pure functions over a model and tensors of class scores.

The student learns the teacher's softened class probabilities (Hinton et al. 2015) with
Adam (or plain SGD, ``distill.optimizer``). The teacher is the mean of the client models'
class scores, ``centered`` per class over the distillation inputs (each non-IID client's
label prior is a constant it adds to every input) and ``sharpened`` to a least spread (a
mean of models that disagree or barely trained is nearly uniform). With the plain mean,
Adam at a fixed lr 1e-3 moved the student a median 2 times as far as the round's averaged
update when the clients barely moved the model and kept the federation from learning, so
FedDF can set each tensor's learning rate from that update instead
(``update_step_sizes``: ``distill.step_scale`` times its root mean square); the centered,
sharpened teacher needs no such scaling.

FedDF's early stopping watches the distillation loss itself on the held-out part (the
student's KL divergence from the teacher there), checked once per pass over the
distillation inputs (an epoch): the student with the lowest held-out loss is kept, the
starting one (the average) included, and a student that agrees with the teacher (same
argmax, no true label needed) on fewer held-out examples than the start did is never
kept. FedMD's digest keeps its criterion (``BY_AGREEMENT``: agreement first, every 10
steps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fedloom.core.tensors import Tensors, clone, state_of
from fedloom.distill.config import DistillConfig
from fedloom.distill.data import Unlabeled


@torch.no_grad()
def logits_of(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """``model``'s class scores for ``x`` in eval mode, as float32 on the CPU; the model
    is left in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        parts = [
            model(x[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0)


def centered(scores: Tensor) -> Tensor:
    """``scores`` minus their mean over the rows, class by class: every class's score
    averages 0 over the inputs, so a constant preference for a class is gone and what
    is left is how much more each input shows it than the others do."""
    return scores - scores.mean(0) if len(scores) else scores


def sharpened(scores: Tensor, least: float | None) -> Tensor:
    """``scores`` scaled up so that their standard deviation over all entries is at least
    ``least``; as they are when it already is, when ``least`` is None, or when they are
    constant (nothing to sharpen; a spread below a millionth of the largest score is
    rounding left by centering, not a signal)."""
    if least is None or scores.numel() < 2:
        return scores
    spread = float(scores.std())
    floor = 1e-6 * max(1.0, float(scores.abs().max()))
    return scores * (least / spread) if floor < spread < least else scores


def teacher_of(mean: Tensor, cfg: DistillConfig) -> Tensor | None:
    """The teacher (FedDF) or the consensus (FedMD) made from the client models' mean
    class scores: ``centered`` when ``distill.teacher`` says so, then ``sharpened`` to
    ``distill.teacher_std``; a new tensor, or None when it is not finite (a sum that
    overflowed)."""
    teacher = centered(mean) if cfg.teacher == "centered" else mean.clone()
    teacher = sharpened(teacher, cfg.teacher_std)
    return teacher if bool(torch.isfinite(teacher).all()) else None


def classes_predicted(scores: Tensor) -> int:
    """How many distinct classes the class scores pick (argmax) over their rows."""
    return int(scores.argmax(1).unique().numel()) if len(scores) else 0


def agreement(student: Tensor, teacher: Tensor) -> float:
    """Share of examples on which the two sets of class scores pick the same class."""
    return float((student.argmax(1) == teacher.argmax(1)).float().mean())


def soft_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of the tempered softmaxes, times T² (gradients keep their
    scale whatever T is)."""
    t = temperature
    target = F.softmax(teacher / t, dim=1)
    return F.kl_div(F.log_softmax(student / t, dim=1), target, reduction="batchmean") * t * t


@dataclass(frozen=True)
class Distilled:
    """One distillation: steps taken, agreement on the held-out part before and after."""

    steps: int
    before: float
    after: float


def _score(model: nn.Module, x: Tensor, teacher: Tensor, temperature: float) -> tuple[float, float]:
    """(agreement, soft loss) of ``model`` with ``teacher`` on the held-out part."""
    scores = logits_of(model, x)
    return agreement(scores, teacher), float(soft_loss(scores, teacher, temperature))


BY_LOSS, BY_AGREEMENT = "loss", "agreement"
"""Early-stopping criteria: FedDF's (held-out loss, at no lower agreement than the start)
and FedMD's digest's (held-out agreement first, the loss breaking ties)."""
CRITERIA = (BY_LOSS, BY_AGREEMENT)
AGREEMENT_CHECK_EVERY = 10
"""Steps between ``BY_AGREEMENT``'s checks when ``distill.check_every`` is unset
(``BY_LOSS`` checks once per pass over the distillation inputs)."""


SGD, ADAM = "sgd", "adam"
"""The distillation optimizers (``distill.optimizer``)."""
DEFAULT_LR = {SGD: 0.01, ADAM: 1e-3}
"""Learning rate per optimizer when ``distill.lr`` is unset."""


def update_step_sizes(update: Mapping[str, Tensor], scale: float) -> dict[str, float]:
    """Adam's learning rate for each tensor of ``update``: ``scale`` times the root mean
    square of that tensor's entries (Adam's first steps move every entry by about its
    learning rate, so the distillation's steps are as large as the round's update's)."""
    return {
        name: scale * float(t.float().pow(2).mean().sqrt()) if t.numel() else 0.0
        for name, t in update.items()
    }


def make_optimizer(
    model: nn.Module, cfg: DistillConfig, step_sizes: Mapping[str, float] | None = None
) -> torch.optim.Optimizer | None:
    """``cfg.optimizer`` over ``model``'s trainable parameters at ``cfg.lr`` (unset: that
    optimizer's ``DEFAULT_LR``). With ``step_sizes`` (Adam), each parameter's own
    learning rate, and a parameter without a positive one is not trained. None when no
    parameter is left to train."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.optimizer]
    if cfg.optimizer == SGD:
        return torch.optim.SGD([p for _, p in named], lr=lr) if named else None
    if step_sizes is None:
        return torch.optim.Adam([p for _, p in named], lr=lr) if named else None
    groups = [{"params": [p], "lr": step_sizes[n]} for n, p in named if step_sizes.get(n, 0.0) > 0]
    return torch.optim.Adam(groups, lr=lr) if groups else None


def check_interval(cfg: DistillConfig, fit_size: int, criterion: str = BY_LOSS) -> int:
    """Steps between two checks: ``cfg.check_every``, or when unset, one epoch (steps per
    pass over ``fit_size`` inputs) for ``BY_LOSS`` and 10 for ``BY_AGREEMENT``."""
    if cfg.check_every is not None:
        return cfg.check_every
    if criterion == BY_AGREEMENT:
        return AGREEMENT_CHECK_EVERY
    return max(1, -(-fit_size // cfg.batch_size))


def distill_into(
    model: nn.Module,
    data: Unlabeled,
    teacher: Tensor,
    cfg: DistillConfig,
    gen: torch.Generator,
    *,
    criterion: str = BY_LOSS,
    step_sizes: Mapping[str, float] | None = None,
) -> Distilled:
    """Train ``model`` in place towards ``teacher`` (class scores of ``data.inputs``, fit
    rows then val rows) for at most ``cfg.steps`` steps. Every ``cfg.check_every`` steps
    (unset: ``check_interval``) it scores the soft loss and agreement on
    ``data.val``. By ``BY_LOSS`` a student is better when its loss is lower and it agrees
    on at least as many examples as the start did; by ``BY_AGREEMENT`` when it agrees on
    more, or as many at a lower loss. After ``cfg.patience`` checks without a better
    student it stops. The model ends with the best weights seen, the starting ones
    included, so its held-out agreement is never below the start's. ``step_sizes``:
    Adam's learning rate per parameter name (``make_optimizer``); with none positive,
    the model is left as it is."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    every = check_interval(cfg, len(data.fit), criterion)
    fit_teacher, val_teacher = teacher[: len(data.fit)], teacher[len(data.fit) :]
    device = next(model.parameters()).device
    before, best_loss = _score(model, data.val, val_teacher, cfg.temperature)
    best_agreement, best_state = before, clone(state_of(model))
    opt = make_optimizer(model, cfg, step_sizes)
    if opt is None:
        return Distilled(0, before, before)
    steps, stale = 0, 0
    model.train()
    while steps < cfg.steps and stale < cfg.patience:
        order = torch.randperm(len(data.fit), generator=gen)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            out = model(data.fit[idx].to(device))
            soft_loss(out, fit_teacher[idx].to(device), cfg.temperature).backward()
            opt.step()
            steps += 1
            if steps % every == 0 or steps == cfg.steps:
                agrees, loss = _score(model, data.val, val_teacher, cfg.temperature)
                if criterion == BY_LOSS:
                    better = loss < best_loss and agrees >= before
                else:
                    better = (agrees, -loss) > (best_agreement, -best_loss)
                if better:
                    best_agreement, best_loss = agrees, loss
                    best_state, stale = clone(state_of(model)), 0
                else:
                    stale += 1
            if steps == cfg.steps or stale == cfg.patience:
                break
    with torch.no_grad():
        for name, value in state_of(model).items():
            value.copy_(best_state[name])
    return Distilled(steps, before, best_agreement)


def state_after(model: nn.Module, names: Tensors) -> Tensors:
    """Copies of ``model``'s tensors named in ``names``, on the CPU."""
    local = state_of(model)
    return {n: local[n].detach().cpu().clone() for n in names}
