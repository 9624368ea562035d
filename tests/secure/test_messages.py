from __future__ import annotations

import json

import pytest

from fedloom.core.errors import UpdateRejected
from fedloom.secure import messages
from fedloom.secure.messages import KeyDirectory, MaskedInput, UnmaskRequest

EXAMPLES: list[messages.Message] = [
    KeyDirectory(3, bytes(32), (1, 2, 5), {2: b"\x01" * 32}, {2: b"\x02" * 32}),
    MaskedInput(3, 1, bytes(range(256)) * 4),
    UnmaskRequest(3, (1, 2), ()),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_messages_round_trip(message: messages.Message) -> None:
    assert messages.decode(messages.encode(message)) == message


def test_the_masked_vector_travels_raw_after_a_small_header() -> None:
    wire = messages.encode(EXAMPLES[1])
    header = len(wire) - 1024
    assert header < 80 and wire[header:] == bytes(range(256)) * 4


def _wire(header: dict[str, object]) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(4, "big") + text


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x00", "truncated"),
        (b"\x00\x00\x00\x02{]", "not JSON"),
        (_wire({"kind": "Pickle"}), "unknown kind"),
        (_wire({"kind": "UnmaskRequest", "round": 1, "alive": []}), "fields"),
        (
            _wire({"kind": "UnmaskRequest", "round": True, "alive": [], "dropped": []}),
            "'round' must be an integer",
        ),
        (
            _wire({"kind": "UnmaskRequest", "round": 1, "alive": ["1"], "dropped": []}),
            "list of integers",
        ),
        (_wire({"kind": "ForwardedShares", "round": 1, "ciphertexts": {"a": ""}}), "non-integer"),
        (_wire({"kind": "ForwardedShares", "round": 1, "ciphertexts": {"1": "*"}}), "base64"),
        (_wire({"kind": "UnmaskRequest", "round": 1, "alive": [], "dropped": []}) + b"x", "trail"),
    ],
)
def test_malformed_wire_messages_are_rejected(wire: bytes, reason: str) -> None:
    with pytest.raises(UpdateRejected, match=reason):
        messages.decode(wire)
