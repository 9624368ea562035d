"""The ``attacks`` feature, and registration of the robust aggregators."""

from __future__ import annotations

from fedloom.parts import Parts
from fedloom.robust.attacks import attack_hook, choose_attackers, poisoned_data
from fedloom.robust.registry import register_all

register_all()


def apply_attacks(parts: Parts) -> None:
    """Turn ``attack.fraction`` of the clients hostile, as ``attack.kind`` says."""
    cfg = parts.config
    if cfg.attack.kind == "none":
        return
    attackers = choose_attackers(cfg.clients.num, cfg.attack.fraction, cfg.seed)
    parts.notes["attackers"] = sorted(attackers, key=int)
    if cfg.attack.kind == "label_flip":
        honest = parts.client_data or parts.data.client
        parts.client_data = poisoned_data(honest, parts.data.num_classes, attackers)
    else:
        parts.client_hooks.append(attack_hook(cfg.attack, attackers))
