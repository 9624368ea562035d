"""The gRPC transport alone (no model): chunked frames, deadlines, identity, min_clients."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
import torch

from fedloom.compression.codec import RawCodec
from fedloom.core.message import Message
from fedloom.network.feature import upload_limit
from fedloom.server.sampler import UniformSampler
from fedloom.server.server import Server
from fedloom.server.strategy import StrategyConfig, build_strategy
from fedloom.transport.base import Failure
from fedloom.transport.grpc_client import GrpcClientChannel, GrpcClientSettings
from fedloom.transport.grpc_common import frame_chunks
from fedloom.transport.grpc_server import GrpcServerSettings, GrpcServerTransport
from fedloom.transport.inprocess import InProcessTransport
from fedloom.transport.wire import frame_size

from ..processes import wait_until

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


def _blocking_chunks(
    chunks: list[bytes], release: threading.Event, ended: list[bool]
) -> Iterator[bytes]:
    """``chunks``, then a stall until ``release``: the stream is never ended before it."""
    yield from chunks
    release.wait()
    ended.append(True)


def _in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``target`` in a thread; the list receives its result or the exception it raised."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(target())
        except Exception as error:  # surfaced by the test's asserts
            out.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _client(address: str, cid: str) -> GrpcClientChannel:
    return GrpcClientChannel(
        GrpcClientSettings(address, cid, TOKENS[cid], poll_s=0.5, chunk_bytes=CHUNK)
    )


def test_a_stalled_upload_is_cut_and_its_slot_goes_to_the_next_client(caplog):
    caplog.set_level(logging.WARNING, logger="fedloom.transport.grpc_server")
    settings = GrpcServerSettings(
        "127.0.0.1:0",
        TOKENS,
        deadline_s=120.0,
        poll_s=0.5,
        chunk_bytes=CHUNK,
        max_inflight=1,  # one upload slot, which the stalled client takes first
        min_upload_rate=65536,
        upload_grace_s=2.0,
    )
    transport = GrpcServerTransport(settings)
    address = f"127.0.0.1:{transport.start()}"
    payload = os.urandom(100_000)
    messages = {cid: Message("fit", 1, "server", payload) for cid in "01"}
    exchange, replies = _in_thread(lambda: list(transport.exchange(messages)))
    channels = {cid: _client(address, cid) for cid in "01"}
    answers = {cid: Message("fit_result", 1, cid, payload[::-1]) for cid in "01"}
    release, ended = threading.Event(), []
    try:
        for channel in channels.values():
            assert channel.pull()[0] == "fit"
        # client 0 sends its header and one chunk, then nothing: it holds the only slot
        first = list(frame_chunks(answers["0"], CHUNK))[:2]
        stalled, stalled_out = _in_thread(
            lambda: channels["0"].push_chunks(
                _blocking_chunks(first, release, ended), frame_size(answers["0"])
            )
        )
        wait_until(lambda: transport.uploads_reading == 1, 60, "client 0 reading")
        # client 1 waits for the slot until the watchdog cuts client 0
        assert channels["1"].push(answers["1"]) == (True, "")
        stalled.join(60)
        assert isinstance(stalled_out[0], grpc.RpcError)
        assert stalled_out[0].code() == grpc.StatusCode.CANCELLED
        assert channels["0"].push(answers["0"]) == (True, "")  # it may answer again, in full
        exchange.join(60)
        assert not ended  # client 0's stalled stream was never read to its end
    finally:
        release.set()
        for channel in channels.values():
            channel.close()
        transport.finish(linger_s=0)
    assert [cid for cid, _ in replies[0]] == ["1", "0"]  # type: ignore[attr-defined]
    assert "upload stalled" in caplog.text and "below the minimum of 65536 B/s" in caplog.text


def test_an_upload_one_byte_over_the_model_bound_is_refused_unread():
    spec = {"w": (300, 100), "b": (100,)}
    limit = upload_limit(spec, dict.fromkeys(spec, torch.float32), RawCodec(), 4 << 30)
    encoded = len(RawCodec().encode({n: torch.zeros(s) for n, s in spec.items()}))
    assert encoded < limit <= 1.02 * encoded + 65536 + 1024  # the bound follows the model
    transport = GrpcServerTransport(
        GrpcServerSettings("127.0.0.1:0", TOKENS, deadline_s=60.0, poll_s=0.5, chunk_bytes=CHUNK)
    )
    transport.limit_uploads(limit)
    address = f"127.0.0.1:{transport.start()}"
    exchange, replies = _in_thread(
        lambda: list(transport.exchange({"0": Message("fit", 1, "server", b"x")}))
    )
    channel = _client(address, "0")
    release, ended = threading.Event(), []

    def frame_of(size: int) -> list[bytes]:
        empty = Message("fit_result", 1, "0", b"", {"num_examples": 1})
        payload = bytes(size - frame_size(empty))
        return list(frame_chunks(Message("fit_result", 1, "0", payload, empty.meta), CHUNK))

    try:
        assert channel.pull()[0] == "fit"
        over = frame_of(limit + 1)
        assert sum(map(len, over)) == limit + 1
        # announced: refused before a byte of it is read; not announced (an older client):
        # refused as it grows past the bound, though the stream never ended
        for announced in (limit + 1, None):
            accepted, reason = channel.push_chunks(
                _blocking_chunks(over, release, ended), announced
            )
            assert not accepted and f"exceeds the limit of {limit} bytes" in reason
        assert channel.push_chunks(frame_of(limit), limit) == (True, "")  # the bound itself
        exchange.join(60)
        assert not ended  # neither oversized stream was ever ended by its sender
    finally:
        release.set()
        channel.close()
        transport.finish(linger_s=0)
    assert [cid for cid, _ in replies[0]] == ["0"]  # type: ignore[attr-defined]


def test_calls_are_capped_per_client_and_per_host_and_unknown_methods_refused():
    transport = GrpcServerTransport(
        GrpcServerSettings(
            "127.0.0.1:0", TOKENS, poll_s=60.0, max_calls_per_client=2, max_calls_per_host=3
        )
    )
    address = f"127.0.0.1:{transport.start()}"
    channels = {cid: _client(address, cid) for cid in "012"}
    held = [_in_thread(channels[cid].pull) for cid in "001"]  # long polls: held open
    try:
        wait_until(lambda: transport.open_calls("0") == 2, 60, "client 0's two polls held")
        wait_until(lambda: transport.open_calls("1") == 1, 60, "client 1's poll held")
        for cid, reason in (("0", "client 0 has 2 calls open"), ("2", "has 3 calls open")):
            with pytest.raises(grpc.RpcError) as capped:
                channels[cid].pull()
            assert capped.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert reason in str(capped.value.details())
        # an unknown method: refused unread, UNAUTHENTICATED without a token, and
        # FAILED_PRECONDITION from a client of another protocol version
        me = (("fedloom-client", "2"), ("fedloom-token", TOKENS["2"]))
        for metadata, code in (
            ((*me, ("fedloom-protocol", "2")), "UNIMPLEMENTED"),
            (me, "FAILED_PRECONDITION"),
            ((), "UNAUTHENTICATED"),
        ):
            call = channels["2"]._channel.unary_unary("/fedloom.Federation/Nope")
            with pytest.raises(grpc.RpcError) as refused:
                call(b"", metadata=metadata, timeout=30)
            assert refused.value.code().name == code
    finally:
        transport.finish(linger_s=0)  # the held polls hear "done"
        for thread, out in held:
            thread.join(30)
            assert out == [("done", None)]
        for channel in channels.values():
            channel.close()
    assert transport.refused == 2  # the bad token and the other protocol version
