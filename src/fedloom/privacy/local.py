"""Local DP: each client clips and noises its own update before it leaves the device.

Neighbouring relation: two runs differ in *everything one client holds* (its whole
local data set, hence its whole update), and the server is not trusted. Any two
clipped updates lie in the ball of radius C; on the grid of step γ (``fedloom.privacy.
grid``) each is rounded to integers within √d/2 of it, so the L2 sensitivity of one
release is Δ = 2C + γ√d (in grid units Δ/γ); the client adds integer discrete Gaussian
noise N_Z(0, (z·Δ/γ)²) per coordinate and sends the noised integers times γ: a
discrete Gaussian mechanism with multiplier z. The server sees every release of a client
in full, so there is no amplification by sampling: a client that took part in k rounds
has spent the ε of k Gaussian releases (Opacus' accountant with sample rate 1; the
discrete Gaussian's Rényi divergences are at most the continuous one's, docs/privacy.md).
"""

from __future__ import annotations

from typing import Any

from fedloom.client.context import FitContext, UpdateHook
from fedloom.core.tensors import Tensors
from fedloom.privacy.accountant import Accountant
from fedloom.privacy.clipping import clip_update
from fedloom.privacy.config import AccountantName
from fedloom.privacy.grid import (
    check_range,
    from_grid,
    grid_step,
    magnitude,
    rounding_slack,
    to_grid,
)
from fedloom.privacy.noise import NoiseSource, SecureNoise


class ParticipationLedger:
    """How many releases each client has made (checkpointed); ε per client follows."""

    def __init__(self, noise_multiplier: float, kind: AccountantName) -> None:
        self.noise_multiplier = noise_multiplier
        self.kind = kind
        self.counts: dict[str, int] = {}

    def record(self, client_id: str) -> None:
        self.counts[client_id] = self.counts.get(client_id, 0) + 1

    def epsilon_for(self, releases: int, delta: float) -> float:
        return self.epsilon_by(self.kind, releases, delta)[0]

    def epsilon_by(
        self, kind: AccountantName, releases: int, delta: float
    ) -> tuple[float, AccountantName]:
        if not releases:
            return 0.0, kind
        acc = Accountant(self.kind)  # its ε is cached by history, shared by all accountants
        acc.step(self.noise_multiplier, 1.0, releases)
        return acc.epsilon_by(kind, delta)

    def max_epsilon(self, delta: float, extra: int = 0) -> float:
        """The largest per-client ε (``extra`` more releases for the busiest client)."""
        return self.max_epsilon_by(self.kind, delta, extra)[0]

    def max_epsilon_by(
        self, kind: AccountantName, delta: float, extra: int = 0
    ) -> tuple[float, AccountantName]:
        """The busiest client's ε by ``kind`` (same multiplier for all: most releases)."""
        return self.epsilon_by(kind, max(self.counts.values(), default=0) + extra, delta)

    def state_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = {str(k): int(v) for k, v in state["counts"].items()}


def local_dp_hook(
    clip: float,
    noise_multiplier: float,
    noise: NoiseSource | None,
    ledger: ParticipationLedger,
    granularity: float | None = None,
) -> UpdateHook:
    """Clip the whole update to ``clip``, round it onto the grid and add discrete Gaussian
    noise of std ``z·(2·clip + γ√d)`` (in the update's units) to each coordinate.

    ``noise`` None: each client draws from its own secure source (OpenDP's sampler over
    the OS's randomness, on the client), which neither the server nor another run can
    recompute."""
    own: dict[str, NoiseSource] = {}

    def hook(update: Tensors, ctx: FitContext) -> Tensors:
        source = noise if noise is not None else own.setdefault(ctx.client_id, SecureNoise())
        clipped, _ = clip_update(update, clip)
        dim = sum(t.numel() for t in clipped.values())
        step = grid_step(clip, dim, noise_multiplier * 2 * clip, granularity)
        scale = noise_multiplier * (2 * clip + 2 * rounding_slack(step, dim)) / step
        ints = to_grid(clipped, clip, step)
        check_range(magnitude(ints), scale)
        ledger.record(ctx.client_id)
        # the server is not trusted: the local data's size and loss stay on the device
        # (the server then weights every client equally)
        ctx.meta.update(num_examples=1, train_loss=0.0)
        noised = {
            name: k + source.discrete_gaussian(k.shape, scale, ctx.round, ctx.client_id, name)
            for name, k in ints.items()
        }
        return from_grid(noised, step, 1.0, {name: t.dtype for name, t in clipped.items()})

    return hook
