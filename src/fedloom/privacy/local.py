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
from fedloom.privacy.schedule import NoiseSchedule


class ParticipationLedger:
    """Each client's releases, by the multiplier of the round they fell in (checkpointed);
    ε per client follows. Order does not matter to composition, so a client's history is
    its releases grouped by multiplier."""

    def __init__(self, noise_multiplier: float | NoiseSchedule, kind: AccountantName) -> None:
        self.schedule = (
            noise_multiplier
            if isinstance(noise_multiplier, NoiseSchedule)
            else NoiseSchedule((float(noise_multiplier),))
        )
        self.noise_multiplier = self.schedule.at(1)
        """The first round's multiplier (every round's without a schedule)."""
        self.kind = kind
        self.releases: dict[str, dict[float, int]] = {}

    @property
    def counts(self) -> dict[str, int]:
        """Releases per client."""
        return {cid: sum(by_z.values()) for cid, by_z in self.releases.items()}

    def multiplier_at(self, rnd: int) -> float:
        return self.schedule.at(rnd)

    def record(self, client_id: str, rnd: int = 1) -> None:
        by_z = self.releases.setdefault(client_id, {})
        z = self.multiplier_at(rnd)
        by_z[z] = by_z.get(z, 0) + 1

    def history(self, client_id: str, extra: float | None = None) -> list[tuple[float, float, int]]:
        """``client_id``'s releases as an accountant history (plus one at ``extra``)."""
        by_z = dict(self.releases.get(client_id, {}))
        if extra is not None:
            by_z[extra] = by_z.get(extra, 0) + 1
        return [(z, 1.0, n) for z, n in sorted(by_z.items())]

    @staticmethod
    def _epsilon(
        kind: AccountantName, history: list[tuple[float, float, int]], delta: float
    ) -> tuple[float, AccountantName]:
        if not history:
            return 0.0, kind
        acc = Accountant(kind)  # its ε is cached by history, shared by all accountants
        for z, q, n in history:
            acc.step(z, q, n)
        return acc.epsilon_by(kind, delta)

    def epsilon_for(self, releases: int, delta: float) -> float:
        """ε of ``releases`` releases at the first round's multiplier."""
        return self.epsilon_by(self.kind, releases, delta)[0]

    def epsilon_by(
        self, kind: AccountantName, releases: int, delta: float
    ) -> tuple[float, AccountantName]:
        history = [(self.noise_multiplier, 1.0, releases)] if releases else []
        return self._epsilon(kind, history, delta)

    def client_epsilon(self, client_id: str, delta: float, extra: float | None = None) -> float:
        """``client_id``'s ε (after one more release at multiplier ``extra``)."""
        return self._epsilon(self.kind, self.history(client_id, extra), delta)[0]

    def max_epsilon(self, delta: float, extra: int = 0, rnd: int = 1) -> float:
        """The largest per-client ε (``extra`` more releases at round ``rnd``'s multiplier)."""
        return self.max_epsilon_by(self.kind, delta, extra, rnd)[0]

    def max_epsilon_by(
        self, kind: AccountantName, delta: float, extra: int = 0, rnd: int = 1
    ) -> tuple[float, AccountantName]:
        """The largest client ε by ``kind`` over the distinct histories."""
        z = self.multiplier_at(rnd)
        histories = {tuple(self.history(cid)) for cid in self.releases} or {()}
        answers = []
        for history in histories:
            by_z = {hz: n for hz, _, n in history}
            if extra:
                by_z[z] = by_z.get(z, 0) + extra
            answers.append(
                self._epsilon(kind, [(hz, 1.0, n) for hz, n in sorted(by_z.items())], delta)
            )
        return max(answers, key=lambda answer: answer[0])

    def state_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "releases": {
                cid: [[z, n] for z, n in sorted(by_z.items())]
                for cid, by_z in self.releases.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "releases" in state:
            self.releases = {
                str(cid): {float(z): int(n) for z, n in runs}
                for cid, runs in state["releases"].items()
            }
        else:  # a checkpoint from before schedules: every release at the one multiplier
            z = self.noise_multiplier
            self.releases = {str(k): {z: int(v)} for k, v in state["counts"].items() if int(v)}


def local_dp_hook(
    clip: float,
    noise_multiplier: float,
    noise: NoiseSource | None,
    ledger: ParticipationLedger,
    granularity: float | None = None,
) -> UpdateHook:
    """Clip the whole update to ``clip``, round it onto the grid and add discrete Gaussian
    noise of std ``z·(2·clip + γ√d)`` (in the update's units) to each coordinate; z is the
    round's multiplier from ``ledger`` (``noise_multiplier`` is its first round's).

    ``noise`` None: each client draws from its own secure source (OpenDP's sampler over
    the OS's randomness, on the client), which neither the server nor another run can
    recompute."""
    own: dict[str, NoiseSource] = {}

    def hook(update: Tensors, ctx: FitContext) -> Tensors:
        source = noise if noise is not None else own.setdefault(ctx.client_id, SecureNoise())
        noise_multiplier = ledger.multiplier_at(ctx.round)
        clipped, _ = clip_update(update, clip)
        dim = sum(t.numel() for t in clipped.values())
        step = grid_step(clip, dim, noise_multiplier * 2 * clip, granularity)
        scale = noise_multiplier * (2 * clip + 2 * rounding_slack(step, dim)) / step
        ints = to_grid(clipped, clip, step)
        check_range(magnitude(ints), scale)
        ledger.record(ctx.client_id, ctx.round)
        # the server is not trusted: the local data's size and loss stay on the device
        # (the server then weights every client equally)
        ctx.meta.update(num_examples=1, train_loss=0.0)
        noised = {
            name: k + source.discrete_gaussian(k.shape, scale, ctx.round, ctx.client_id, name)
            for name, k in ints.items()
        }
        return from_grid(noised, step, 1.0, {name: t.dtype for name, t in clipped.items()})

    return hook
