"""Shared by the red-team tests: hand-built frames, a hostile client that speaks them over
real gRPC, and the honest-only run the attacked runs must end equal to."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import grpc
import torch

from fedloom.config import load_config
from fedloom.core.message import Message
from fedloom.core.tensors import Tensors
from fedloom.experiment import Experiment
from fedloom.network.client import client_settings
from fedloom.transport.grpc_client import GrpcClientChannel
from fedloom.transport.inprocess import InProcessTransport
from fedloom.transport.wire import MAGIC


def raw_frame(header: Any, payload: bytes = b"", magic: bytes = MAGIC) -> bytes:
    """A frame with any header: a dict (dumped as JSON) or the header's raw bytes."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return magic + struct.pack("<I", len(text)) + text + payload


def header(rnd: int, sender: str, meta: Any, kind: str = "fit_result") -> dict[str, Any]:
    return {"kind": kind, "meta": meta, "round": rnd, "sender": sender}


def meta_text(rnd: int, sender: str, meta_json: str) -> bytes:
    """A header whose meta is ``meta_json`` verbatim (NaN, 1e999, 400-digit integers)."""
    head = f'{{"kind":"fit_result","meta":{meta_json},"round":{rnd},"sender":"{sender}"}}'
    return head.encode()


class Hostile:
    """A client with a valid token that pushes whatever bytes it likes."""

    def __init__(self, overrides: list[str], address: str, cid: str, token: str) -> None:
        config = load_config(None, overrides)
        self.cid = cid
        self.channel = GrpcClientChannel(client_settings(config, address, cid, token))
        self.rpc_errors: list[str] = []

    def wait_for_work(self, rnd: int) -> Message:
        """Poll until the server hands out round ``rnd``'s work (the round is open)."""
        for _ in range(600):
            status, work = self.channel.pull()
            if status == "fit" and work is not None and work.round == rnd:
                return work
        raise AssertionError(f"client {self.cid}: no work for round {rnd}")

    def push(self, chunks: list[bytes], size: int | None = None) -> tuple[bool, str]:
        """Stream ``chunks`` as one upload; an RPC error (a server fault) is recorded."""
        try:
            return self.channel.push_chunks(chunks, size)
        except grpc.RpcError as error:
            self.rpc_errors.append(f"{error.code()}: {error.details()}")
            return False, f"rpc error {error.code()}"

    def close(self) -> None:
        self.channel.close()


def honest_only_model(overrides: list[str], run_dir: Path, honest: str = "0") -> Tensors:
    """The global model of the same federation simulated with only ``honest`` answering
    (every other sampled client fails), which is what an attacked run must end with."""
    kept = [o for o in overrides if not o.startswith("output_dir=")]
    experiment = Experiment(load_config(None, [*kept, f"output_dir={run_dir}"]))
    experiment.server.transport = InProcessTransport({honest: experiment.clients[honest].handle})
    experiment.run()
    return experiment.server.global_state


def assert_same_model(got: Tensors, expected: Tensors) -> None:
    assert got.keys() == expected.keys()
    for name, tensor in got.items():
        assert bool(torch.isfinite(tensor).all()), f"{name} is not finite"
        assert torch.equal(tensor, expected[name]), f"{name} differs from the honest-only run"
