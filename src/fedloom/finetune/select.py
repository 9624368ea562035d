"""``finetune.mode`` -> the set of parameter names that train (a registry, one per mode)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from fedloom.core.errors import ConfigError
from fedloom.core.seeding import generator
from fedloom.finetune.importance import importance_selection, select_by_budget, weight_scores
from fedloom.finetune.lora import LORA_MARK, inject_lora
from fedloom.parts import Parts
from fedloom.report.progress import phase

Selector = Callable[[Parts], set[str]]
SELECTORS: dict[str, Selector] = {}


def register_mode(name: str) -> Callable[[Selector], Selector]:
    def decorate(fn: Selector) -> Selector:
        SELECTORS[name] = fn
        return fn

    return decorate


@register_mode("full")
def _full(parts: Parts) -> set[str]:
    return {name for name, _ in parts.model.named_parameters()}


@register_mode("names")
def _names(parts: Parts) -> set[str]:
    patterns = parts.config.finetune.names
    names = [name for name, _ in parts.model.named_parameters()]
    if not patterns:
        raise ConfigError(["finetune.names: give at least one glob pattern for mode 'names'"])
    unmatched = [p for p in patterns if not fnmatch.filter(names, p)]
    if unmatched:
        raise ConfigError(
            [
                f"finetune.names: {p!r} matches no parameter; parameters are {names}"
                for p in unmatched
            ]
        )
    return {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def parameterised_layers(model: nn.Module) -> list[str]:
    """Modules that own parameters directly, in registration order."""
    return [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]


@register_mode("last_k")
def _last_k(parts: Parts) -> set[str]:
    k = parts.config.finetune.last_k
    layers = parameterised_layers(parts.model)
    if k > len(layers):
        raise ConfigError([f"finetune.last_k: {k} exceeds the model's {len(layers)} layers"])
    chosen = layers[-k:]
    parts.notes["finetune_layers"] = chosen
    return {
        f"{layer}.{p}" if layer else p
        for layer in chosen
        for p, _ in parts.model.get_submodule(layer).named_parameters(recurse=False)
    }


@register_mode("importance")
def _importance(parts: Parts) -> set[str]:
    cfg = parts.config.finetune
    if cfg.importance_source == "weights":
        scores = weight_scores(parts.model)
        sizes = {name: p.numel() for name, p in parts.model.named_parameters()}
        chosen = select_by_budget(scores, sizes, cfg.fraction)
        parts.notes["finetune_importance"] = {n: scores[n] for n in sorted(chosen)}
        return chosen
    # with DP, importance on the clients' data is refused at config time (fedloom.compat)
    with phase("importance pass"):
        chosen, scores = importance_selection(
            parts.model,
            parts.client_data or parts.data.client,
            parts.config.clients.num,
            cfg.fraction,
            cfg.importance_samples,
        )
    parts.notes["finetune_importance"] = {n: scores[n] for n in sorted(chosen)}
    return chosen


@register_mode("lora")
def _lora(parts: Parts) -> set[str]:
    """Adapters everywhere, except on layers matched by ``finetune.names``: those train fully.

    That is peft's ``modules_to_save``: a head for new classes needs its bias and full
    weight, which a low-rank update of a frozen head cannot provide.
    """
    cfg = parts.config.finetune
    full = _names(parts) if cfg.names else set()
    whole_layers = frozenset(name.rpartition(".")[0] for name in full)
    gen = generator(parts.config.seed, "lora")
    count = inject_lora(parts.model, cfg.lora_rank, cfg.lora_alpha, gen, skip=whole_layers)
    parts.notes["lora_layers"] = count
    adapters = {
        name
        for name, _ in parts.model.named_parameters()
        if name.rpartition(".")[2].startswith(LORA_MARK)
    }
    return adapters | {
        n for n, _ in parts.model.named_parameters() if n.rpartition(".")[0] in whole_layers
    }
