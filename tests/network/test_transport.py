"""The gRPC transport alone (no model): chunked frames, deadlines, identity, min_clients."""

from __future__ import annotations

import os
import threading
import time

import torch

from fedloom.compression.codec import RawCodec
from fedloom.core.message import Message
from fedloom.server.sampler import UniformSampler
from fedloom.server.server import Server
from fedloom.server.strategy import StrategyConfig, build_strategy
from fedloom.transport.base import Failure
from fedloom.transport.grpc_client import GrpcClientChannel, GrpcClientSettings
from fedloom.transport.grpc_server import GrpcServerSettings, GrpcServerTransport
from fedloom.transport.inprocess import InProcessTransport

TOKENS = {str(k): f"token-for-client-number-{k}" for k in range(3)}
CHUNK = 4096


def _echo_client(address: str, cid: str, claim: str, delay: float) -> None:
    """Answers one fit with its payload reversed, signed as ``claim``."""
    channel = GrpcClientChannel(
        GrpcClientSettings(address, cid, TOKENS[cid], poll_s=0.5, chunk_bytes=CHUNK)
    )
    while True:
        status, work = channel.pull()
        if status == "fit" and work is not None:
            time.sleep(delay)
            reply = Message("fit_result", work.round, claim, work.payload[::-1], {"n": 1})
            assert channel.push(reply) == (True, "")
            channel.close()
            return


def test_chunked_frames_deadline_and_authenticated_identity():
    settings = GrpcServerSettings(
        "127.0.0.1:0", TOKENS, deadline_s=3.0, poll_s=0.5, chunk_bytes=CHUNK, wait_for_clients=2
    )
    transport = GrpcServerTransport(settings)
    address = f"127.0.0.1:{transport.start()}"
    payload = os.urandom(300_000)  # 74 chunks each way
    clients = [
        threading.Thread(target=_echo_client, args=(address, "0", "0", 0.3), daemon=True),
        # client 1 claims to be client 0: the transport reports the authenticated id
        threading.Thread(target=_echo_client, args=(address, "1", "0", 0.0), daemon=True),
    ]
    for thread in clients:
        thread.start()
    messages = {cid: Message("fit", 4, "server", payload, {"lr": 0.1}) for cid in "012"}
    started = time.monotonic()
    replies = list(transport.exchange(messages))
    elapsed = time.monotonic() - started
    transport.finish(linger_s=0)

    assert [cid for cid, _ in replies] == ["1", "0", "2"]  # in order of arrival
    for _, reply in replies[:2]:
        assert isinstance(reply, Message)
        assert reply.payload == payload[::-1] and reply.round == 4 and reply.sender == "0"
    assert replies[2] == ("2", Failure("2", "no update within 3 s"))
    assert 3.0 <= elapsed < 10.0  # client 2 never came: the deadline ended the round


def _state() -> dict[str, torch.Tensor]:
    return {"w": torch.zeros(3)}


def test_a_round_with_fewer_than_min_clients_leaves_the_model_unchanged():
    codec = RawCodec()

    def answer(message: Message) -> Message:
        return Message("fit_result", message.round, "0", codec.encode({"w": torch.ones(3)}),
                       {"num_examples": 5})  # fmt: skip

    def fail(message: Message) -> Message:
        raise ConnectionError("dropped")

    def server(min_updates: int) -> Server:
        s = Server(
            global_state=_state(),
            client_ids=["0", "1"],
            strategy=build_strategy(StrategyConfig()),
            sampler=UniformSampler(2, 2, seed=0),
            transport=InProcessTransport({"0": answer, "1": fail}),
            down=codec,
            up=codec,
        )
        s.min_updates = min_updates
        return s

    strict, lenient = server(2), server(1)
    assert strict.run_round(1)["num_failed"] == 1
    assert torch.equal(strict.global_state["w"], torch.zeros(3))
    lenient.run_round(1)
    assert torch.equal(lenient.global_state["w"], torch.ones(3))
