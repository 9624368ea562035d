"""Seeded fuzzing of the real server's Push handler during open rounds.

Four attackers with valid tokens push 10,000 frames: random bytes, and mutations of a
valid update frame (bit flips, byte edits, truncations, extensions, header-length edits,
header field edits, tokens spliced into the header, bad magic), cut into random chunks,
sometimes announcing a wrong size. The bulk is built from a frame for a round that is never
open, so every frame is decoded and then refused; the last pushes of each attacker's round
mutate a frame for the open round whose payload has the wrong dtype, so what the transport
lets through reaches the round loop's validation and is rejected there. Client 0 is honest.

No handler may raise (an exception in a gRPC handler reaches the caller as UNKNOWN and is
logged by gRPC at ERROR level), no thread may die, every round must aggregate client 0's
update alone, and the run must end with exactly the honest-only run's model.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections import Counter
from typing import Any

import pytest

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
from .frames import Hostile, assert_same_model, header, honest_only_model, raw_frame

SEED = 20261130
FRAMES = 10_000
ATTACKERS = ("1", "2", "3", "4")
ROUNDS = 3
CURRENT_ROUND_TRIES = 25
"""Per attacker and round, mutations of an open-round frame (the first one the transport
accepts is that attacker's answer; the round loop must reject it)."""
PER_ROUND = -(-FRAMES // (len(ATTACKERS) * ROUNDS)) - CURRENT_ROUND_TRIES
NEVER_OPEN = 1_000_000
"""Bulk frames are for round NEVER_OPEN + r: no bit flip turns it into a round 1..3."""

HOSTILE_VALUES: list[Any] = [
    None, True, -1, 0, 2**31, 2**63 - 1, 1.5, -0.0, 1e308, "", "0", "x" * 300, "\u0000",
    "\ud800", [], {}, [[[]]], {"num_examples": "10"}, {"a": [1, {"b": None}]},
]  # fmt: skip
TOKENS = [b"NaN", b"-Infinity", b"1e999", b"9" * 30, b"[", b"]", b"{", b"}", b'"', b"\\",
          b"\\u0000", b",", b":", b"null", b"-", b"\x00", b"\xff", b"[" * 40]  # fmt: skip


def _mutate(rng: random.Random, base: dict[str, Any], payload: bytes) -> bytes:
    frame = raw_frame(base, payload)
    head_len = len(frame) - len(payload) - 8
    op = rng.randrange(9)
    if op == 0:  # bit flips
        data = bytearray(frame)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if op == 1:  # bytes overwritten, mostly in the header
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(8 + head_len) if rng.random() < 0.8 else rng.randrange(len(data))
            data[at] = rng.choice(b'\x00\xff"[]{}\\,:-.0123456789eE ')
        return bytes(data)
    if op == 2:  # truncated
        return frame[: rng.randrange(len(frame))]
    if op == 3:  # extended
        return frame + rng.randbytes(rng.randint(1, 2000))
    if op == 4:  # the header-length field edited
        length = rng.choice([0, 1, head_len - 1, head_len + 1, len(frame), 2**32 - 1,
                             rng.randrange(2**32)])  # fmt: skip
        return frame[:4] + length.to_bytes(4, "little") + frame[8:]
    if op == 5:  # a header field set to a hostile value, removed, or added
        edited = dict(base)
        key = rng.choice([*base, "meta", "extra"])
        if rng.random() < 0.2:
            edited.pop(key, None)
        elif key == "meta" and rng.random() < 0.5:
            inner = dict(base["meta"])
            inner[rng.choice(["num_examples", "train_loss", "x"])] = rng.choice(HOSTILE_VALUES)
            edited["meta"] = inner
        else:
            edited[key] = rng.choice(HOSTILE_VALUES)
        try:
            return raw_frame(edited, payload)
        except UnicodeEncodeError:  # a lone surrogate: send its UTF-8 bytes anyway
            text = json.dumps(edited, ensure_ascii=False).encode(errors="surrogatepass")
            return raw_frame(text, payload)
    if op == 6:  # a token spliced into the header text
        text = frame[8 : 8 + head_len]
        at = rng.randrange(len(text) + 1)
        text = text[:at] + rng.choice(TOKENS) + text[at:]
        return raw_frame(text, payload)
    if op == 7:  # another magic
        return rng.choice([b"FLM2", b"FLZ1", b"\x00\x00\x00\x00", b"flm1"]) + frame[4:]
    size = rng.choice([0, 1, 7, 8, 9, 100, 4096, 20_000])  # random bytes
    noise = rng.randbytes(size)
    return b"FLM1" + noise if rng.random() < 0.5 else noise


def _chunks(rng: random.Random, frame: bytes) -> list[bytes]:
    if rng.random() < 0.7:
        return [frame] if frame else []
    cuts = sorted(rng.randrange(len(frame) + 1) for _ in range(rng.randint(1, 6)))
    edges = [0, *cuts, len(frame)]
    return [frame[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def _announced(rng: random.Random, frame: bytes) -> int | None:
    """Usually no size; sometimes the true one, sometimes a wrong one."""
    r = rng.random()
    if r < 0.8:
        return None
    if r < 0.9:
        return len(frame)
    return rng.choice([0, max(0, len(frame) - 1), len(frame) + 1, 2**40])


def _kind(reason: str) -> str:
    """A refusal's reason without its numbers and quoted values, to count them by kind."""
    return re.sub(r"\s+", " ", re.sub(r"[-0-9'\"\[(].*", "", reason)).strip()[:48]


class Rounds:
    """Opens client 0's round once every attacker has finished its round."""

    def __init__(self, gate: Gate, attackers: int) -> None:
        self._gate, self._attackers = gate, attackers
        self._finished: Counter[int] = Counter()
        self._lock = threading.Lock()

    def finished(self, rnd: int) -> None:
        with self._lock:
            self._finished[rnd] += 1
            if self._finished[rnd] == self._attackers:
                self._gate.open(rnd)


def fuzz(hostile: Hostile, seed: int, rounds: Rounds, outcomes: Counter[str],
         errors: list[BaseException]) -> None:  # fmt: skip
    rng = random.Random(seed)
    try:
        for rnd in range(1, ROUNDS + 1):
            work = hostile.wait_for_work(rnd)  # the round is open; client 0 is held
            state: Tensors = RawCodec().decode(work.payload)
            meta = {"num_examples": 10, "train_loss": 0.25}
            never = header(NEVER_OPEN + rnd, hostile.cid, meta)
            valid = RawCodec().encode({n: t * 0.5 for n, t in state.items()})
            for _ in range(PER_ROUND):
                frame = _mutate(rng, never, valid)
                accepted, why = hostile.push(_chunks(rng, frame), _announced(rng, frame))
                assert not accepted, f"accepted a frame for round {NEVER_OPEN + rnd}"
                outcomes[_kind(why)] += 1
            # open-round frames with float64 tensors: never a valid update, however mutated
            open_round = header(rnd, hostile.cid, meta)
            wrong = RawCodec().encode({n: t.double() for n, t in state.items()})
            answered = False
            for _ in range(CURRENT_ROUND_TRIES):
                frame = _mutate(rng, open_round, wrong)
                accepted, why = hostile.push(_chunks(rng, frame), _announced(rng, frame))
                answered |= accepted
                outcomes["handed to the round loop" if accepted else _kind(why)] += 1
            if not answered:  # answer anyway, so the round ends without waiting its deadline
                accepted, _ = hostile.push([raw_frame(open_round, wrong)])
                assert accepted
            rounds.finished(rnd)
    except BaseException as error:  # surfaced by the test, not lost in this thread
        errors.append(error)
        for rnd in range(1, ROUNDS + 1):
            rounds.finished(rnd)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.slow
def test_ten_thousand_hostile_frames_break_nothing(tmp_path, monkeypatch, capsys):
    n = 1 + len(ATTACKERS)
    overrides = [*SMALL, f"clients.num={n}", f"clients.per_round={n}", f"rounds={ROUNDS}"]
    overrides += [*network_overrides(tmp_path, n, deadline_s=120.0)]
    overrides += [f"output_dir={tmp_path / 'run'}"]
    thread_deaths: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda a: thread_deaths.append(repr(a)))
    errors_logged = _Errors()
    logging.getLogger().addHandler(errors_logged)
    logging.getLogger("fedloom").setLevel(logging.ERROR)  # 10,000 refusals: keep the log small
    try:
        server = ThreadedServer(overrides)
        tokens = tokens_for(n)
        gate = Gate()
        rounds = Rounds(gate, len(ATTACKERS))
        attackers = [Hostile(overrides, server.address, c, tokens[c]) for c in ATTACKERS]
        outcomes: list[Counter[str]] = [Counter() for _ in attackers]  # one per thread
        errors: list[BaseException] = []
        started = time.monotonic()
        threads = [
            threading.Thread(target=fuzz, args=(h, SEED + k, rounds, outcomes[k], errors))
            for k, h in enumerate(attackers)
        ]
        for thread in threads:
            thread.start()
        (honest,) = start_clients(overrides, server.address, [0], lambda k: tokens[str(k)],
                                  gates={0: gate})  # fmt: skip
        result = server.join(timeout=600)
        for thread in threads:
            thread.join(timeout=60)
        elapsed = time.monotonic() - started
        honest.join(timeout=30)
        for hostile in attackers:
            hostile.close()
    finally:
        logging.getLogger().removeHandler(errors_logged)
        logging.getLogger("fedloom").setLevel(logging.NOTSET)
    if errors:
        raise errors[0]

    outcome = sum(outcomes, Counter())
    pushed = sum(outcome.values())
    with capsys.disabled():
        print(f"\n{pushed} frames in {elapsed:.1f} s; refusals by kind:")
        for kind, count in outcome.most_common():
            print(f"{count:6d}  {kind}")
    assert pushed >= FRAMES
    assert not [h.rpc_errors for h in attackers if h.rpc_errors]
    assert not thread_deaths
    assert not [r.getMessage() for r in errors_logged.records]
    # every frame the transport let through was the attacker's answer, rejected downstream
    handed = outcome["handed to the round loop"]
    assert 0 < handed <= len(ATTACKERS) * ROUNDS
    assert [m["num_clients"] for m in result.metrics] == [1] * ROUNDS
    assert [m["num_rejected"] for m in result.metrics] == [len(ATTACKERS)] * ROUNDS
    assert_same_model(server.experiment.server.global_state,
                      honest_only_model(overrides, tmp_path / "honest"))  # fmt: skip
