"""The gRPC transport alone (no model): chunked frames, deadlines, identity, min_clients."""

from __future__ import annotations

import logging
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


def _echo_client(
    address: str,
    cid: str,
    claim: str,
    wait: threading.Event | None = None,
    answered: threading.Event | None = None,
) -> None:
    """Answers one fit with its payload reversed, signed as ``claim`` (once ``wait`` is set)."""
    channel = GrpcClientChannel(
        GrpcClientSettings(address, cid, TOKENS[cid], poll_s=0.5, chunk_bytes=CHUNK)
    )
    while True:
        status, work = channel.pull()
        if status == "fit" and work is not None:
            if wait is not None:
                wait.wait()
            reply = Message("fit_result", work.round, claim, work.payload[::-1], {"n": 1})
            assert channel.push(reply) == (True, "")
            if answered is not None:
                answered.set()
            channel.close()
            return


def test_chunked_frames_deadline_and_authenticated_identity():
    settings = GrpcServerSettings(
        "127.0.0.1:0", TOKENS, deadline_s=3.0, poll_s=0.5, chunk_bytes=CHUNK, wait_for_clients=2
    )
    transport = GrpcServerTransport(settings)
    address = f"127.0.0.1:{transport.start()}"
    payload = os.urandom(300_000)  # 74 chunks each way
    first_in = threading.Event()
    clients = [
        # client 0 answers only once client 1's update is in: a known order of arrival
        threading.Thread(target=_echo_client, args=(address, "0", "0", first_in), daemon=True),
        # client 1 claims to be client 0: the transport reports the authenticated id
        threading.Thread(
            target=_echo_client, args=(address, "1", "0", None, first_in), daemon=True
        ),
    ]
    for thread in clients:
        thread.start()
    assert transport.await_clients(resumed=False) == 2
    messages = {cid: Message("fit", 1, "server", payload, {"lr": 0.1}) for cid in "012"}
    started = time.monotonic()
    replies = list(transport.exchange(messages))
    elapsed = time.monotonic() - started
    transport.finish(linger_s=0)

    assert [cid for cid, _ in replies] == ["1", "0", "2"]  # in order of arrival
    for _, reply in replies[:2]:
        assert isinstance(reply, Message)
        assert reply.payload == payload[::-1] and reply.round == 1 and reply.sender == "0"
    assert replies[2] == ("2", Failure("2", "no update within 3 s"))
    assert elapsed >= 3.0  # client 2 never came: the deadline ended the round


def _connect(address: str, cid: str, after: float = 0.0) -> None:
    """One long poll, ``after`` seconds from now: the server then counts ``cid`` as connected."""
    time.sleep(after)
    channel = GrpcClientChannel(GrpcClientSettings(address, cid, TOKENS[cid], poll_s=0.2))
    channel.pull()
    channel.close()


def _waiting_transport() -> GrpcServerTransport:
    return GrpcServerTransport(
        GrpcServerSettings(
            "127.0.0.1:0",
            TOKENS,
            poll_s=0.2,
            min_clients=2,
            wait_for_clients=3,
            resume_wait_s=0.2,
            startup_timeout_s=30.0,
        )
    )


def _connect_in_background(transport: GrpcServerTransport, delays: dict[str, float]) -> None:
    address = f"127.0.0.1:{transport.start()}"
    for cid, after in delays.items():
        threading.Thread(target=_connect, args=(address, cid, after), daemon=True).start()


def test_a_fresh_run_waits_for_wait_for_clients():
    transport = _waiting_transport()
    _connect_in_background(transport, {"0": 0.0, "1": 0.0, "2": 1.0})
    assert transport.await_clients(resumed=False) == 3  # well past resume_wait_s
    transport.finish(linger_s=0)


def test_a_resumed_server_waits_for_absent_clients_only_a_bounded_time(caplog):
    transport = _waiting_transport()
    caplog.set_level(logging.WARNING, logger="fedloom.transport.grpc_server")
    # client 2 died while the server was down; client 1 is back only after resume_wait_s,
    # so going on needs the min_clients floor to wait for it
    _connect_in_background(transport, {"0": 0.0, "1": 1.0})
    started = time.monotonic()
    assert transport.await_clients(resumed=True) == 2
    assert time.monotonic() - started < transport.settings.startup_timeout_s
    transport.finish(linger_s=0)
    assert "resuming with 2 of 3 clients connected" in caplog.text


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
