"""The binary wire format of the stage messages: exact bytes, round trips, and one-line
rejections of every malformed input."""

from __future__ import annotations

import pytest

from fedloom.core.errors import UpdateRejected
from fedloom.secure import binary, messages
from fedloom.secure.messages import (
    AdvertiseKeys,
    ForwardedShares,
    KeyDirectory,
    MaskedInput,
    RoundSetup,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)

EXAMPLES: list[messages.Message] = [
    RoundSetup(3, (0, 1, 2, 300), 53_004, 14, 3, 2, b"\x07" * 32),
    AdvertiseKeys(3, 1, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32),
    KeyDirectory(3, bytes(32), (1, 2, 5), {2: b"\x01" * 32}, {2: b"\x02" * 32}),
    ShareKeys(3, 1, {2: b"\x04" * 110, 5: b"\x05" * 110}),
    ForwardedShares(3, {2: b"\x04" * 110}),
    MaskedInput(3, 1, bytes(range(256)) * 4),
    UnmaskRequest(3, (1, 2), ()),
    UnmaskResponse(3, 1, {2: b"\x06" * 33}, {5: b"\x07" * 33}),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_messages_round_trip(message: messages.Message) -> None:
    assert messages.decode(messages.encode(message)) == message


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varints_are_protobufs_unsigned_leb128(value: int, wire: bytes) -> None:
    assert binary.uint(value) == wire
    assert binary.Reader(wire, "test").uint("x") == value


def test_unmask_request_bytes_by_hand() -> None:
    # version 2, kind 7, round 3, alive = [1, 200], dropped = [4]
    assert messages.encode(UnmaskRequest(3, (1, 200), (4,))) == bytes(
        [2, 7, 3, 2, 1, 0xC8, 0x01, 1, 4]
    )


def test_share_keys_costs_two_framing_bytes_per_neighbour() -> None:
    # version, kind, round, sender, count; then per neighbour: id, length, ciphertext
    sealed = {v: bytes([v]) * 110 for v in range(36)}
    wire = messages.encode(ShareKeys(9, 40, sealed))
    assert len(wire) == 5 + 36 * (1 + 1 + 110)
    assert wire[5:8] == bytes([0, 110, 0])


def test_the_masked_vector_travels_raw_after_a_four_byte_header() -> None:
    wire = messages.encode(EXAMPLES[5])
    assert len(wire) == 4 + 1024 and wire[4:] == bytes(range(256)) * 4


def test_encoding_refuses_values_it_cannot_represent() -> None:
    with pytest.raises(ValueError, match=r"\[0, 2\*\*64\)"):
        messages.encode(UnmaskRequest(-1, (), ()))


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "truncated at 'version'"),
        (b"\x02", "truncated at 'kind'"),
        (b"\x00\x00\x00\x02{}", "version 0, not 2"),
        (b"\x02\x09", "unknown kind 9"),
        (b"\x02\x00", "unknown kind 0"),
        (bytes([2, 7, 3, 2, 1, 0x80]), "UnmaskRequest is truncated at 'alive'"),
        (bytes([2, 7, 3, 0, 0, 0]), "UnmaskRequest has 1 trailing bytes"),
        (bytes([2, 7, 0x83, 0x00, 0, 0]), "'round' is not a minimal varint"),
        (bytes([2, 7]) + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (bytes([2, 7]) + b"\xff" * 9 + b"\x7f", "exceeds 2\\*\\*64 - 1"),
        (bytes([2, 7, 3, 100, 1, 1]), "'alive' claims 100 items in 2 bytes"),
        (bytes([2, 5, 3, 2, 4, 1, 0xAA, 4, 1, 0xBB]), "'ciphertexts' keys are not strictly"),
        (bytes([2, 5, 3, 2, 4, 1, 0xAA, 2, 1, 0xBB]), "'ciphertexts' keys are not strictly"),
        (bytes([2, 5, 3, 1, 4, 50, 0xAA]), "ForwardedShares is truncated in 'ciphertexts'"),
        (bytes([2, 2, 3, 1, 32]) + bytes(31), "AdvertiseKeys is truncated in 'cipher_key'"),
    ],
)
def test_malformed_wire_messages_are_rejected(wire: bytes, reason: str) -> None:
    with pytest.raises(UpdateRejected, match=reason):
        messages.decode(wire)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_truncation_and_extension_is_rejected(message: messages.Message) -> None:
    wire = messages.encode(message)
    if isinstance(message, MaskedInput):  # its vector is the rest: the server checks its size
        wire = wire[:4]
    for cut in range(len(wire)):
        with pytest.raises(UpdateRejected):
            messages.decode(wire[:cut])
    if not isinstance(message, MaskedInput):
        with pytest.raises(UpdateRejected, match="trailing"):
            messages.decode(wire + b"\x00")
