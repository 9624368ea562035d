"""Hostile input from an authenticated client: the server rejects it and keeps serving."""

from __future__ import annotations

import logging
import os
import threading

import torch

from fedloom.compression.codec import RawCodec
from fedloom.config import load_config
from fedloom.core.message import Message
from fedloom.network.client import client_settings
from fedloom.transport.grpc_client import GrpcClientChannel
from fedloom.transport.grpc_common import frame_chunks
from fedloom.transport.wire import encode_message

from .conftest import Gate, ThreadedServer, network_overrides, start_clients, tokens_for

LIMIT = 200_000


def _wait_for_work(channel: GrpcClientChannel, rnd: int) -> Message:
    for _ in range(60):
        status, work = channel.pull()
        if status == "fit" and work is not None and work.round == rnd:
            return work
    raise AssertionError(f"no work for round {rnd}")


def _junk_that_never_counts(channel: GrpcClientChannel, work: Message) -> list[str]:
    """Frames the transport refuses before the round loop sees them; returns the reasons."""
    update = RawCodec().encode(RawCodec().decode(work.payload))
    good = Message("fit_result", work.round, "1", update, {"num_examples": 10})
    frame = encode_message(good)
    attempts = [
        [os.urandom(1000)],  # random bytes
        [frame[:9]],  # truncated inside the header
        [],  # nothing at all
        [os.urandom(50_000) for _ in range(6)],  # larger than max_message_bytes
        list(frame_chunks(Message("fit_result", work.round - 1, "1", update, good.meta), 512)),
        list(frame_chunks(Message("fit_result", work.round + 5, "1", update, good.meta), 512)),
    ]
    reasons = []
    for chunks in attempts:
        accepted, reason = channel.push_chunks(chunks)
        assert not accepted
        reasons.append(reason)
    return reasons


def _bad_update(work: Message) -> Message:
    """Well-formed frames whose content the server's validation must refuse."""
    global_state = RawCodec().decode(work.payload)
    meta = {"num_examples": 10}
    if work.round == 1:  # wrong shapes
        tensors = {n: torch.zeros(1) for n in global_state}
    elif work.round == 2:  # NaN
        tensors = {n: torch.full_like(t, float("nan")) for n, t in global_state.items()}
    else:  # claims to be client 0
        return Message("fit_result", 3, "0", RawCodec().encode(global_state), meta)
    return Message("fit_result", work.round, "1", RawCodec().encode(tensors), meta)


def attacker(
    channel: GrpcClientChannel, log: list[str], honest: Gate, errors: list[BaseException]
) -> None:
    """Attacks every round while the honest client's answer is held, so the round is
    open for each attempt; then lets the honest client answer and close it."""
    try:
        for rnd in (1, 2, 3):
            work = _wait_for_work(channel, rnd)
            log.extend(_junk_that_never_counts(channel, work))
            accepted, _ = channel.push(_bad_update(work))
            assert accepted  # the transport hands it on; the round loop's validation rejects it
            accepted, reason = channel.push(_bad_update(work))  # replay within the round
            assert not accepted
            log.append(reason)
            honest.open(rnd)
    except BaseException as error:  # reported by the test, not lost in this thread
        errors.append(error)
        honest.open(3)


def test_hostile_client_is_rejected_and_the_run_goes_on(tmp_path, small, caplog):
    overrides = [*small, "clients.num=2", "clients.per_round=2", *network_overrides(tmp_path, 2)]
    overrides += [f"network.max_message_bytes={LIMIT}", "network.chunk_bytes=65536"]
    overrides += [f"output_dir={tmp_path / 'run'}"]
    caplog.set_level(logging.WARNING)
    server = ThreadedServer(overrides)
    tokens = tokens_for(2)
    config = load_config(None, overrides)
    bad = GrpcClientChannel(client_settings(config, server.address, "1", tokens["1"]))
    reasons: list[str] = []
    gate, errors = Gate(), []
    thread = threading.Thread(target=attacker, args=(bad, reasons, gate, errors), daemon=True)
    thread.start()
    honest = start_clients(overrides, server.address, [0], lambda k: tokens[str(k)],
                           gates={0: gate})  # fmt: skip
    result = server.join(timeout=90)
    thread.join(timeout=10)
    honest[0].join(timeout=10)
    if errors:
        raise errors[0]

    assert len(reasons) == 3 * 7, reasons
    for expected in ("bad frame magic", "shorter than its prefix", "exceeds the limit", "round 0"):
        assert any(expected in r for r in reasons), expected
    assert sum("already answered" in r for r in reasons) == 3
    assert [m["num_clients"] for m in result.metrics] == [1, 1, 1]
    assert [m["num_rejected"] for m in result.metrics] == [1, 1, 1]
    rejected = [
        r.getMessage() for r in caplog.records if "rejected update from client 1" in r.getMessage()
    ]
    assert "shape" in rejected[0] and "NaN" in rejected[1] and "signed by '0'" in rejected[2]
    assert result.summary["final_test_accuracy"] > 0.8
