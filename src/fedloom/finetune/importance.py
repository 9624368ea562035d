"""Importance selection: which whole tensors to train, agreed on by all clients.

Agreement protocol (a round 0 before training): every client computes, on up to
``importance_samples`` of its local examples and the pretrained weights, the mean absolute
gradient of the loss for each parameter tensor, one number per tensor, and reports that
vector (a few bytes). The server averages the vectors weighted by the clients' example
counts and selects tensors in decreasing order of score while the selected parameters
fit in ``fraction`` of the model (always at least the top tensor). Every client then
trains, and sends, the same tensors. The selection is per tensor, not per entry, so the
wire format and aggregation stay dense and no masks travel.

That round 0 reads raw client data without noise, so a differentially private run
refuses it. ``weight_scores`` is the data-free alternative: the mean |w| of each tensor
of the pretrained model, a public quantity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn
from torch.nn import functional as F

from fedloom.data.base import Split


def tensor_scores(model: nn.Module, data: Split, samples: int) -> dict[str, float]:
    """Mean |dL/dw| per parameter tensor on the first ``samples`` examples (eval mode)."""
    was_training = model.training
    model.eval()  # no dropout: the score is a property of the weights and the data
    model.zero_grad(set_to_none=True)
    n = min(samples, len(data))
    F.cross_entropy(model(data.x[:n]), data.y[:n]).backward()
    scores = {
        name: float(p.grad.abs().mean()) if p.grad is not None else 0.0
        for name, p in model.named_parameters()
    }
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return scores


def weight_scores(model: nn.Module) -> dict[str, float]:
    """Mean |w| per parameter tensor: computed from the (pretrained) weights alone."""
    return {name: float(p.detach().abs().mean()) for name, p in model.named_parameters()}


def aggregate_scores(reports: Sequence[tuple[dict[str, float], int]]) -> dict[str, float]:
    """Example-weighted mean of the clients' per-tensor scores."""
    total = sum(n for _, n in reports)
    names = reports[0][0]
    return {name: sum(s[name] * n for s, n in reports) / total for name in names}


def select_by_budget(scores: dict[str, float], sizes: dict[str, int], fraction: float) -> set[str]:
    """Highest-scoring tensors while their parameters fit in ``fraction`` of the total."""
    budget = fraction * sum(sizes.values())
    chosen: set[str] = set()
    used = 0
    for name in sorted(scores, key=lambda n: (-scores[n], n)):
        if not chosen or used + sizes[name] <= budget:
            chosen.add(name)
            used += sizes[name]
    return chosen


def importance_selection(
    model: nn.Module,
    client_data: Callable[[int], Split],
    num_clients: int,
    fraction: float,
    samples: int,
) -> tuple[set[str], dict[str, float]]:
    reports = []
    for k in range(num_clients):
        data = client_data(k)
        reports.append((tensor_scores(model, data, samples), len(data)))
    scores = aggregate_scores(reports)
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    return select_by_budget(scores, sizes, fraction), scores
