"""Simulated devices: a transport wrapper that runs each client on its own simulated clock.

Each client gets a seeded profile (compute speed, link bandwidth, availability). In a round
a client is offline with probability ``1 − a_k``, drops out with probability ``dropout``,
or else downloads the model, runs its local steps and uploads its update, each taking
simulated time from its profile. With a deadline, a client that cannot make it is either
left out (``drop``) or told to run only the steps that fit (``partial``: the step budget
goes in the message meta, read by ``LocalTrainer``). The round loop sees only replies and
``Failure``s; the simulated times come out as metrics. Only Messages and byte counts are
used here, never model code.

In a DP run the metrics carry counts only: which clients took part (or were offline,
dropped, late) is outside ε, and naming them would void the amplification by sampling
that ε relies on. ``privacy.release_client_info=true`` names them again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedloom.client.trainer import STEP_BUDGET_KEY
from fedloom.core.message import Message
from fedloom.core.seeding import numpy_rng
from fedloom.simulation.config import DevicesConfig
from fedloom.transport.base import Failure, Reply, Transport
from fedloom.transport.wire import frame_size


@dataclass(frozen=True)
class DeviceProfile:
    speed: float
    """Relative compute speed (1 = ``step_s`` seconds per step)."""
    bytes_per_s: float
    availability: float


def draw_profiles(ids: list[str], config: DevicesConfig, seed: int) -> dict[str, DeviceProfile]:
    rng = numpy_rng(seed, "device-profiles")
    n = len(ids)
    speed = rng.lognormal(0.0, config.speed_sigma, n)
    bandwidth = config.bandwidth_mbps * 1e6 / 8 * rng.lognormal(0.0, config.bandwidth_sigma, n)
    avail = rng.uniform(config.availability_min, 1.0, n)
    return {
        cid: DeviceProfile(float(speed[i]), float(bandwidth[i]), float(avail[i]))
        for i, cid in enumerate(ids)
    }


@dataclass
class RoundLog:
    """What the simulated clock saw in one round."""

    round_s: float = 0.0
    finish_s: dict[str, float] = field(default_factory=dict)
    offline: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    partial: dict[str, int] = field(default_factory=dict)


class SimulatedDevices:
    """Wraps a transport; decides per (round, client) from seeded draws, so resumes replay."""

    def __init__(
        self,
        profiles: Mapping[str, DeviceProfile],
        full_steps: Mapping[str, int],
        config: DevicesConfig,
        seed: int,
        inner: Transport | None = None,
        name_clients: bool = True,
    ) -> None:
        self.profiles, self.full_steps = profiles, full_steps
        self.config, self.seed = config, seed
        self.name_clients = name_clients
        """Metrics list client ids (False: counts only, as a DP run requires)."""
        self._inner = inner
        self.clock_s = 0.0
        self.last = RoundLog()

    def bind(self, inner: Transport) -> SimulatedDevices:
        """Wrap ``inner`` (the transport is built after the features run)."""
        self._inner = inner
        return self

    @property
    def inner(self) -> Transport:
        if self._inner is None:
            raise RuntimeError("SimulatedDevices has no transport to wrap: call bind() first")
        return self._inner

    def _step_s(self, cid: str) -> float:
        return self.config.step_s / self.profiles[cid].speed

    def _plan(self, cid: str, message: Message, log: RoundLog) -> Message | None:
        """The message to deliver (maybe with a step budget), or None if cid takes no part."""
        profile, cfg = self.profiles[cid], self.config
        rng = numpy_rng(self.seed, "device-round", message.round, cid)
        online, drops = rng.random() < profile.availability, rng.random() < cfg.dropout
        if not online or drops:
            (log.offline if not online else log.dropped).append(cid)
            return None
        if cfg.deadline_s is None:
            return message
        # the update is about the size of the model: the upload estimate is the download
        transfer_s = 2 * frame_size(message) / profile.bytes_per_s
        fits = math.floor((cfg.deadline_s - transfer_s) / self._step_s(cid))
        if fits >= self.full_steps[cid]:
            return message
        if cfg.policy == "drop" or fits < 1:
            log.missed.append(cid)
            return None
        log.partial[cid] = fits
        return dataclasses.replace(message, meta={**message.meta, STEP_BUDGET_KEY: fits})

    def _finish_s(self, cid: str, sent: Message, reply: Message) -> float:
        steps = reply.meta.get("steps", self.full_steps[cid])
        link = self.profiles[cid].bytes_per_s
        compute_s = float(steps) * self._step_s(cid)
        return frame_size(sent) / link + compute_s + frame_size(reply) / link

    def exchange(self, messages: Mapping[str, Message]) -> Iterator[Reply]:
        log = RoundLog()
        admitted: dict[str, Message] = {}
        for cid, message in messages.items():
            planned = self._plan(cid, message, log)
            if planned is None:
                yield cid, Failure(cid, self._why(cid, log))
            else:
                admitted[cid] = planned
        for cid, reply in self.inner.exchange(admitted):
            if isinstance(reply, Message):
                finish = self._finish_s(cid, admitted[cid], reply)
                if self.config.deadline_s is not None and finish > self.config.deadline_s:
                    log.missed.append(cid)  # the upload turned out larger than estimated
                    yield cid, Failure(cid, f"missed the deadline ({finish:.2f} s)")
                    continue
                log.finish_s[cid] = finish
            yield cid, reply
        self._close(log, len(messages))

    def _why(self, cid: str, log: RoundLog) -> str:
        if cid in log.offline:
            return "device offline"
        return "dropped out" if cid in log.dropped else "cannot finish before the deadline"

    def _close(self, log: RoundLog, sampled: int) -> None:
        slowest = max(log.finish_s.values(), default=0.0)
        # a server with a deadline waits it out whenever someone sampled has not reported
        waited = self.config.deadline_s is not None and len(log.finish_s) < sampled
        log.round_s = float(self.config.deadline_s) if waited else slowest  # type: ignore[arg-type]
        self.clock_s += log.round_s
        self.last = log

    def metrics(self, rnd: int) -> dict[str, Any]:
        log = self.last
        clock = {"sim_round_s": round(log.round_s, 6), "sim_clock_s": round(self.clock_s, 6)}
        if not self.name_clients:
            return {
                **clock,
                "num_offline": len(log.offline),
                "num_dropped": len(log.dropped),
                "num_missed_deadline": len(log.missed),
                "num_partial": len(log.partial),
            }
        return {
            **clock,
            "participants": sorted(log.finish_s, key=_numeric),
            "offline": sorted(log.offline, key=_numeric),
            "dropped": sorted(log.dropped, key=_numeric),
            "missed_deadline": sorted(log.missed, key=_numeric),
            "partial_steps": {cid: log.partial[cid] for cid in sorted(log.partial, key=_numeric)},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"clock_s": self.clock_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clock_s = float(state["clock_s"])


def _numeric(cid: str) -> tuple[int, str]:
    return (int(cid), cid) if cid.isdigit() else (-1, cid)
