"""Frame headers from a hostile sender: every way to break them is an ``UpdateRejected``."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedloom.compression.blob import SpecCodec
from fedloom.core.errors import UpdateRejected
from fedloom.core.framing import MAX_DEPTH, nesting_depth, parse_json
from fedloom.core.message import Message
from fedloom.transport.wire import decode_message, encode_message


def _frame(header: bytes, magic: bytes = b"FLM1") -> bytes:
    return magic + struct.pack("<I", len(header)) + header


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('{"a": [1, {"b": 2}]}', 3),
        ('["[[[[", "{{{{"]', 1),  # brackets inside strings nest nothing
        ('["\\"[[[[", 1]', 1),  # nor after an escaped quote
        ('["\\\\", [[]]]', 3),  # an escaped backslash ends before the quote
        ('[[ "unterminated [[[[[[', 2),  # json.loads stops at the string
        ("[" * 40 + "]" * 40, 33),  # counting stops just past the limit
        ("[]" * 1000, 1),
    ],
)
def test_nesting_depth_skips_strings(text, depth):
    assert nesting_depth(text) == depth


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"NaN", "non-finite number NaN"),
        (b'{"loss": -Infinity}', "non-finite number -Infinity"),
        (b"[1e999]", "1e999 overflows a float"),
        (b"1" * 400, "integer of 400 digits"),
        (b"1" * 5000, "integer of 5000 digits"),  # beyond Python's own int() limit
        (str(2**63).encode(), "does not fit in 64 bits"),
        (b"[" * 200_000 + b"]" * 200_000, f"nested deeper than {MAX_DEPTH}"),
        (b'{"a": ' * 1000 + b"1" + b"}" * 1000, "nested deeper"),
        (b'"\xff"', "not UTF-8"),
        ('["丢"]'.encode("utf-16"), "not UTF-8"),  # json.loads alone would guess UTF-16
        (b"{", "not JSON"),
    ],
)
def test_parse_json_refuses_with_one_clear_reason(text, reason):
    with pytest.raises(UpdateRejected, match=reason):
        parse_json(text, "frame")


def test_limits_still_accept_what_honest_peers_send():
    doc = {"num_examples": 2**62, "train_loss": -1.5e300, "deep": [[[[[[1]]]]]], "s": "[[[" * 99}
    assert parse_json(json.dumps(doc).encode(), "frame") == doc
    message = Message("fit_result", 3, "client-7", b"\x00" * 10, doc)
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"[1, 2]", "must be a JSON object"),
        (b'{"kind": "fit", "round": 1, "sender": "s"}', "must have the fields"),
        (b'{"kind": "root", "round": 1, "sender": "s", "meta": {}}', "kind must be one of"),
        (b'{"kind": "fit", "round": true, "sender": "s", "meta": {}}', "round must be"),
        (b'{"kind": "fit", "round": 1.0, "sender": "s", "meta": {}}', "round must be"),
        (b'{"kind": "fit", "round": -2, "sender": "s", "meta": {}}', "round must be"),
        (b'{"kind": "fit", "round": 1, "sender": 5, "meta": {}}', "sender must be"),
        (b'{"kind": "fit", "round": 1, "sender": "", "meta": {}}', "sender must be"),
        (b'{"kind": "fit", "round": 1, "sender": "s", "meta": []}', "meta must be"),
        (b'{"kind": "fit", "round": 1, "sender": "s", "meta": {"x": ' + b"a" * 70_000 + b"}}",
         "does not fit the 65536-byte limit"),
    ],
)  # fmt: skip
def test_every_header_field_is_type_checked(header, reason):
    with pytest.raises(UpdateRejected, match=reason):
        decode_message(_frame(header))


def test_a_codec_header_keeps_its_own_size_limit_and_the_depth_check():
    codec = SpecCodec("int8", seed=0)
    deep = b"[" * 200_000 + b"]" * 200_000  # 400 KB: under the codec's 1 MiB limit
    with pytest.raises(UpdateRejected, match="nested deeper"):
        codec.decode(_frame(deep, magic=b"FLZ1"))


@given(st.binary(max_size=300))
def test_random_bytes_after_a_valid_prefix_raise_only_update_rejected(noise):
    for data in (noise, b"FLM1" + noise, _frame(noise), _frame(noise[:40]) + noise):
        with contextlib.suppress(UpdateRejected):
            decode_message(data)
