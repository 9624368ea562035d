"""The ``attacks`` feature: simulated hostile clients."""

from __future__ import annotations

from fedloom.client.transforms import ATTACK, CLIP, LOCAL_DP
from fedloom.core.registry import REGISTRY
from fedloom.parts import Parts
from fedloom.robust.attacks import attack_hook, choose_attackers, poisoned_data


def apply_attacks(parts: Parts) -> None:
    """Turn ``attack.fraction`` of the clients hostile, as ``attack.kind`` says."""
    cfg = parts.config
    if cfg.attack.kind == "none":
        return
    attackers = choose_attackers(cfg.clients.num, cfg.attack.fraction, cfg.seed)
    if not cfg.privacy.withholds_client_info:  # who attacks is per-client information
        parts.notes["attackers"] = sorted(attackers, key=int)
    attack = REGISTRY.component("attack", cfg.attack.kind, "attack.kind")
    if "data" in attack.capabilities:
        honest = parts.client_data or parts.data.client
        poison = attack.load()
        parts.client_data = poisoned_data(poison, honest, parts.data.num_classes, attackers)
    else:
        # the attacker forges its update before any honest step it would skip anyway
        parts.add_transform(ATTACK, attack_hook(cfg.attack, attackers), before=(CLIP, LOCAL_DP))
