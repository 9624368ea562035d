"""The run's weighting (``network.client_weights``), built from its ``Parts``.

The experiment gives it to the server; SCAFFOLD asks it for the federation's total weight
and FedNova's step bound for the sizes. All build it here, so they always agree.
"""

from __future__ import annotations

from fedloom.parts import Parts
from fedloom.server.weights import Weighting, load_sizes, weighting_for


def _sizes_file(parts: Parts) -> str | None:
    net = parts.config.network
    # a server-side file: a client process builds this federation in simulation mode
    return net.client_sizes_file if net.mode == "grpc" else None


def partition_sizes(parts: Parts) -> dict[str, int]:
    """Client k's number of examples in the partition this config builds."""
    return {str(k): len(idx) for k, idx in enumerate(parts.data.client_indices)}


def server_sizes(parts: Parts) -> dict[str, int] | None:
    """The sizes the server trusts (its partition, or the sizes file); ``None`` when the
    clients bring their own data (``client_weights=claimed``)."""
    net = parts.config.network
    if net.client_weights == "claimed":
        return None
    path = _sizes_file(parts)
    sizes = partition_sizes(parts)
    return sizes if path is None else load_sizes(path, list(sizes))


def run_weighting(parts: Parts) -> Weighting:
    """The weighting the run's server uses: the server's own partition sizes by default."""
    cfg = parts.config
    net = cfg.network
    return weighting_for(
        net.client_weights,
        sizes=partition_sizes(parts),
        sizes_file=_sizes_file(parts),
        max_ratio=net.max_weight_ratio,
        privacy_mode=cfg.privacy.mode,
    )
