"""The ``devices`` feature: put every simulated client on a simulated device."""

from __future__ import annotations

from collections.abc import Mapping

from fedloom.client.trainer import planned_steps
from fedloom.parts import Parts
from fedloom.simulation.devices import SimulatedDevices, draw_profiles
from fedloom.transport.base import Transport
from fedloom.transport.inprocess import Handler


def full_steps(parts: Parts) -> dict[str, int]:
    """Local steps each client runs in a round without a deadline."""
    train = parts.config.train
    return {
        str(k): planned_steps(train, len(idx)) for k, idx in enumerate(parts.data.client_indices)
    }


def apply_devices(parts: Parts) -> None:
    cfg = parts.config
    if not cfg.devices.enabled:
        return
    ids = [str(k) for k in range(cfg.clients.num)]
    devices = SimulatedDevices(
        draw_profiles(ids, cfg.devices, cfg.seed),
        full_steps(parts),
        cfg.devices,
        cfg.seed,
        name_clients=not cfg.privacy.withholds_client_info,
    )
    inner_factory = parts.transport

    def build(handlers: Mapping[str, Handler]) -> Transport:
        return devices.bind(inner_factory(handlers))

    parts.transport = build
    parts.metric_sources.append(devices.metrics)
    parts.stateful["devices"] = devices
