"""Cross-silo: three sites, each with its own files in its own format, train one model
over real gRPC; no client reads the federation's dataset, and the server reads none of
the sites' files."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import fedloom.data.federated as federated
from fedloom.config import load_config
from fedloom.network.client import client_settings, run_client, site_client
from fedloom.transport.grpc_client import GrpcClientChannel
from tests.network.conftest import SMALL, ThreadedServer, network_overrides, tokens_for
from tests.sites import write_site


def test_three_sites_with_their_own_files_train_one_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = [
        *SMALL,
        "rounds=4",
        "train.lr=0.2",
        "network.client_weights=claimed",  # the server cannot know the sites' sizes
        f"output_dir={tmp_path / 'run'}",
        *network_overrides(tmp_path, 3),
    ]
    server = ThreadedServer(overrides)  # digits: the server's own test split
    sites = []
    for k, fmt in enumerate(["npz", "csv", "images"]):
        folder = tmp_path / f"site{k}"
        folder.mkdir()
        sites.append(write_site(folder, fmt))

    def no_shared_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("a site client read the federation's dataset")

    monkeypatch.setattr(federated, "load_federated", no_shared_data)
    config = load_config(None, overrides)
    threads = []
    for k, site in enumerate(sites):
        client = site_client(config, k, site)
        assert len(client.client.data) == 30  # only its own file
        settings = client_settings(config, server.address, str(k), tokens_for(3)[str(k)])
        channel = GrpcClientChannel(settings)
        thread = threading.Thread(target=run_client, args=(client, channel, config), daemon=True)
        thread.start()
        threads.append(thread)
    result = server.join(timeout=300)
    for thread in threads:
        thread.join(timeout=60)
    assert [m["num_clients"] for m in result.metrics] == [3, 3, 3, 3]
    assert all(m["num_rejected"] == 0 for m in result.metrics)
    # 90 examples across the sites, evaluated on digits' own held-out split
    assert result.summary["final_test_accuracy"] > 0.6
    assert np.isfinite(result.metrics[-1]["test_loss"])
