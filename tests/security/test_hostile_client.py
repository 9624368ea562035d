"""A hostile client holding a valid token, speaking hand-built frames to the real server.

Client 0 is honest; clients 1, 2 and 3 attack. Each round stays open (client 0's answer is
held at a gate) while the attackers send everything below. Every frame is refused with a
logged reason, by the transport (malformed frames) or by the round loop (well-formed frames
with bad content: each attacker gets one of those through per round); the run goes on and
ends with exactly the global model of the same run where only client 0 answered.
"""

from __future__ import annotations

import logging
import threading

import torch

from fedloom.compression.codec import RawCodec
from fedloom.core.tensors import Tensors

from ..network.conftest import (
    SMALL,
    Gate,
    ThreadedServer,
    network_overrides,
    start_clients,
    tokens_for,
)
from .frames import Hostile, assert_same_model, header, honest_only_model, meta_text, raw_frame

ATTACKERS = ("1", "2", "3")
GOOD_META = {"num_examples": 10, "train_loss": 0.5}


def _encode(tensors: Tensors) -> bytes:
    return RawCodec().encode(tensors)


def malformed_frames(rnd: int, cid: str, update: bytes) -> list[tuple[str, list[bytes], str]]:
    """(case, chunks, expected reason) for frames the transport must refuse unread or
    undecoded; none of them may count as the attacker's answer."""
    good = raw_frame(header(rnd, cid, GOOD_META), update)
    deep = 200_000
    cases = [
        ("train_loss NaN", meta_text(rnd, cid, '{"num_examples":10,"train_loss":NaN}'), "NaN"),
        ("train_loss Infinity", meta_text(rnd, cid, '{"train_loss":-Infinity}'), "Infinity"),
        ("train_loss 1e999", meta_text(rnd, cid, '{"num_examples":1,"train_loss":1e999}'),
         "overflows"),
        ("num_examples 10**400", meta_text(rnd, cid, f'{{"num_examples":{10**400}}}'),
         "401 digits"),
        ("num_examples 10**5000", meta_text(rnd, cid, '{"num_examples":1' + "0" * 5000 + "}"),
         "5001 digits"),
        ("num_examples 2**64", meta_text(rnd, cid, f'{{"num_examples":{2**64}}}'),
         "64 bits"),
        ("200,000-deep meta", meta_text(rnd, cid, "[" * deep + "]" * deep), "exceeds the limit"),
        ("20,000-deep meta", meta_text(rnd, cid, "[" * 20_000 + "]" * 20_000), "nested deeper"),
        ("deep inside a string is fine, deep outside is not",
         meta_text(rnd, cid, '{"a":"' + "[" * 99 + '","b":' + "{" * 40 + "}" * 40 + "}"),
         "nested deeper"),
        # (under the server's upload limit for this model, so the header check sees it)
        ("header over 64 KiB", raw_frame(header(rnd, cid, {"x": "a" * 66_000})),
         "header length 66"),
        ("header not UTF-8", b"\xff\xfe" + b"{}" * 4, "not UTF-8"),
        ("header not JSON", b'{"kind": "fit_result", ', "not JSON"),
        ("header a list", raw_frame([rnd, cid]), "JSON object"),
        ("missing field", raw_frame({"kind": "fit_result", "round": rnd, "sender": cid}),
         "must have the fields"),
        ("extra field", raw_frame({**header(rnd, cid, GOOD_META), "admin": True}),
         "must have the fields"),
        ("unknown kind", raw_frame(header(rnd, cid, GOOD_META, kind="shell")), "kind"),
        ("round a bool", raw_frame(header(True, cid, GOOD_META)), "round"),  # type: ignore[arg-type]
        ("round a string", raw_frame({**header(rnd, cid, GOOD_META), "round": "1"}), "round"),
        ("round negative", raw_frame(header(-1, cid, GOOD_META)), "round"),
        ("sender not a string", raw_frame({**header(rnd, cid, GOOD_META), "sender": 0}),
         "sender"),
        ("sender empty", raw_frame(header(rnd, "", GOOD_META)), "sender"),
        ("meta a list", raw_frame(header(rnd, cid, [1, 2])), "meta"),
        ("stale round", raw_frame(header(rnd - 1, cid, GOOD_META), update), f"round {rnd - 1}"),
        ("future round", raw_frame(header(rnd + 1, cid, GOOD_META), update), f"round {rnd + 1}"),
        ("wrong magic", b"EVIL" + good[4:], "magic"),
        ("truncated prefix", good[:5], "shorter than its prefix"),
        ("truncated header", good[:20], "does not fit"),
        ("length field past the end", good[:4] + (2**32 - 1).to_bytes(4, "little") + good[8:],
         "does not fit"),
        ("empty stream", b"", "shorter than its prefix"),
    ]  # fmt: skip
    out = []
    for name, frame, reason in cases:
        if not frame.startswith((b"FLM1", b"EVIL")) and frame:
            frame = raw_frame(frame, update)  # a raw header: frame it
        # chunks of 4 KiB, as a client would stream them (an empty stream has none)
        chunks = [frame[i : i + 4096] for i in range(0, len(frame), 4096)]
        out.append((name, chunks, reason))
    return out


def bad_content(case: int, rnd: int, cid: str, global_state: Tensors) -> tuple[bytes, str]:
    """Well-formed frame number ``case``, which the round loop must reject, and the reason."""
    zeros = {n: torch.zeros_like(t) for n, t in global_state.items()}
    first = next(iter(zeros))
    payload = _encode(zeros)
    cases: list[tuple[str, dict, bytes, str]] = [
        ("train_loss a string", {**GOOD_META, "train_loss": "abc"}, payload, "train_loss"),
        ("num_examples negative", {"num_examples": -5}, payload, "num_examples"),
        ("num_examples a bool", {"num_examples": True}, payload, "num_examples"),
        ("num_examples a float", {"num_examples": 2.5}, payload, "num_examples"),
        ("num_examples a string", {"num_examples": "10"}, payload, "num_examples"),
        ("num_examples huge", {"num_examples": 10**15}, payload, "num_examples"),
        ("num_examples zero", {"num_examples": 0}, payload, "num_examples"),
        ("num_examples missing", {"train_loss": 0.5}, payload, "num_examples"),
        ("train_loss a list", {**GOOD_META, "train_loss": [1]}, payload, "train_loss"),
        ("tensor missing", GOOD_META,
         _encode({n: t for n, t in zeros.items() if n != first}), "missing"),
        ("tensor extra", GOOD_META, _encode({**zeros, "backdoor": torch.zeros(3)}), "unexpected"),
        ("wrong shape", GOOD_META, _encode({**zeros, first: torch.zeros(7)}), "shape"),
        ("wrong dtype", GOOD_META, _encode({**zeros, first: zeros[first].double()}), "dtype"),
        ("NaN payload", GOOD_META,
         _encode({**zeros, first: torch.full_like(zeros[first], float("nan"))}), "NaN"),
        ("infinite payload", GOOD_META,
         _encode({**zeros, first: torch.full_like(zeros[first], float("inf"))}), "infinite"),
        ("payload not safetensors", GOOD_META, b"\x00" * 64, "safetensors"),
        ("wrong sender", GOOD_META, payload, "signed by '0'"),
        ("wrong kind", GOOD_META, payload, "expected a fit_result"),
    ]  # fmt: skip
    name, meta, body, reason = cases[case]
    sender = "0" if name == "wrong sender" else cid
    kind = "error" if name == "wrong kind" else "fit_result"
    return raw_frame(header(rnd, sender, meta, kind), body), f"{name}|{reason}"


CONTENT_CASES = 18
ROUNDS = CONTENT_CASES // len(ATTACKERS)  # 6 rounds, each attacker plants one per round


def attack(
    attackers: list[Hostile], gate: Gate, refused: list[str], planted: list[str],
    errors: list[BaseException],
) -> None:  # fmt: skip
    try:
        for rnd in range(1, ROUNDS + 1):
            work = attackers[0].wait_for_work(rnd)  # the round is open; client 0 is held
            global_state = RawCodec().decode(work.payload)
            update = _encode(global_state)
            for k, hostile in enumerate(attackers):
                if rnd == 1:  # the transport's refusals need no round of their own
                    for name, chunks, reason in malformed_frames(rnd, hostile.cid, update):
                        accepted, why = hostile.push(chunks)
                        assert not accepted and reason in why, (name, why)
                        refused.append(why)
                case = (rnd - 1) * len(attackers) + k
                frame, expected = bad_content(case, rnd, hostile.cid, global_state)
                accepted, why = hostile.push([frame])
                assert accepted, (expected, why)  # the round loop will reject it
                planted.append(expected)
                accepted, why = hostile.push([frame])  # a replay within the round
                assert not accepted and "already answered" in why, why
            gate.open(rnd)
    except BaseException as error:  # surfaced by the test, not lost in this thread
        errors.append(error)
        gate.open(ROUNDS)


def test_hostile_clients_are_rejected_and_the_honest_run_is_unchanged(tmp_path, caplog):
    overrides = [*SMALL, "clients.num=4", "clients.per_round=4", f"rounds={ROUNDS}"]
    overrides += [*network_overrides(tmp_path, 4), f"output_dir={tmp_path / 'run'}"]
    caplog.set_level(logging.DEBUG, logger="fedloom")
    server = ThreadedServer(overrides)
    tokens = tokens_for(4)
    attackers = [Hostile(overrides, server.address, cid, tokens[cid]) for cid in ATTACKERS]
    gate, refused, planted, errors = Gate(), [], [], []
    thread = threading.Thread(
        target=attack, args=(attackers, gate, refused, planted, errors), daemon=True
    )
    thread.start()
    (honest,) = start_clients(overrides, server.address, [0], lambda k: tokens[str(k)],
                              gates={0: gate})  # fmt: skip
    result = server.join(timeout=300)
    thread.join(timeout=30)
    honest.join(timeout=30)
    for hostile in attackers:
        hostile.close()
    if errors:
        raise errors[0]

    assert not any(h.rpc_errors for h in attackers), [h.rpc_errors for h in attackers]
    assert len(refused) == 3 * 29 and len(planted) == CONTENT_CASES
    # every refusal by the transport is logged with its reason
    logged = [r.getMessage() for r in caplog.records]
    for why in set(refused):
        assert any(why in line and "rejected message from client" in line for line in logged)
    # every planted update reached the round loop and was rejected there, with its reason
    rejections = [line for line in logged if "rejected update from" in line]
    assert len(rejections) == CONTENT_CASES
    for expected in planted:
        name, reason = expected.split("|")
        assert any(reason in line for line in rejections), (name, rejections)
    assert [m["num_clients"] for m in result.metrics] == [1] * ROUNDS
    assert [m["num_rejected"] for m in result.metrics] == [3] * ROUNDS
    assert [m["num_failed"] for m in result.metrics] == [0] * ROUNDS
    # the attacked run ends exactly where the run with client 0 alone ends
    expected = honest_only_model(overrides, tmp_path / "honest")
    assert_same_model(server.experiment.server.global_state, expected)
