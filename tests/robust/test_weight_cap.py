"""A client claiming a huge sample count and sending a x30 update cannot move norm_bound.

``norm_bound`` bounds each update's norm but weights it by its sample count: with the
claim taken at face value, one client claiming 10**9 examples owns the mean. With
``network.client_weights=claimed`` the claim is capped at twice the round's median.
"""

from collections.abc import Sequence
from pathlib import Path

import pytest

from fedloom.config import load_config
from fedloom.experiment import Experiment
from fedloom.robust.attacks import choose_attackers
from fedloom.server.strategy import Aggregator
from fedloom.server.validate import MAX_EXAMPLES

BASE = [
    "rounds=10",
    "model.name=logreg",
    "clients.num=10",
    "clients.per_round=10",
    "train.batch_size=16",
    "strategy.aggregator=norm_bound",
    "strategy.norm_bound=0.5",
    "network.client_weights=claimed",
]
ATTACK = ["attack.kind=scale", "attack.scale=30", "attack.fraction=0.1"]


class ClaimsAsSent:
    """No cap at all: the weighting the server must not use (for the comparison)."""

    def wrap(self, inner: Aggregator) -> Aggregator:
        return inner

    def loss_weight(self, client_id: str, claim: int) -> int:
        return claim

    def population(self, client_ids: Sequence[str]) -> float | None:
        return None


def final_accuracy(
    tmp_path: Path, name: str, attack: bool, capped: bool = True, claim: int = MAX_EXAMPLES
) -> float:
    cfg = load_config(None, [*BASE, *(ATTACK if attack else []), f"output_dir={tmp_path / name}"])
    experiment = Experiment(cfg)
    attackers = choose_attackers(10, 0.1, cfg.seed)
    if attack:
        assert experiment.parts.notes["attackers"] == sorted(attackers)

        def lie(update, ctx):
            if ctx.client_id in attackers:
                ctx.meta["num_examples"] = claim
            return update

        for client in experiment.clients.values():
            client.hooks.append(lie)
    if not capped:
        experiment.server.weighting = ClaimsAsSent()
    result = experiment.run()
    rejected = sum(m["num_rejected"] for m in result.metrics)
    # above the maximum, the attacker's reply is refused in each of the 10 rounds
    assert rejected == (10 if attack and claim > MAX_EXAMPLES else 0)
    accuracy = result.summary["final_test_accuracy"]
    assert isinstance(accuracy, float)
    return accuracy


@pytest.mark.slow
def test_a_huge_claim_with_a_scaled_update_does_not_move_norm_bound(tmp_path):
    clean = final_accuracy(tmp_path, "clean", attack=False)
    capped = final_accuracy(tmp_path, "capped", attack=True)  # 10**9: the largest legal claim
    rejected = final_accuracy(tmp_path, "rejected", attack=True, claim=10**12)
    uncapped = final_accuracy(tmp_path, "uncapped", attack=True, capped=False)
    assert clean > 0.8
    assert abs(capped - clean) < 0.01  # less than one point
    assert abs(rejected - clean) < 0.01  # nine honest clients instead of ten
    assert clean - uncapped > 0.02  # the same attack without the cap moves it: the test can fail
