"""The stage messages of SecAgg+ and their compact binary wire encoding.

Every message is a frozen dataclass of ints and bytes. On the wire (docs/secure.md,
"Wire format") it is a version byte, a kind byte and the fields in declaration order:
integers as minimal unsigned LEB128 varints, byte strings and lists with a varint
length, maps as a count and strictly increasing keys, each with its value; the masked
vector is the raw rest of the message. Keys and sealed shares travel as their raw
bytes, so the per-neighbour overhead is one or two bytes of framing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, get_type_hints

from fedloom.core.errors import UpdateRejected
from fedloom.secure import binary

ADVERTISE = "advertise-keys"
SHARE = "share-keys"
MASK = "masked-input"
UNMASK = "unmask"


@dataclass(frozen=True)
class RoundSetup:
    """Server → client: the round's parameters and the commitment to the graph seed."""

    STAGE: ClassVar[str] = "setup"
    round: int
    clients: tuple[int, ...]
    length: int
    bits: int
    neighbors: int
    threshold: int
    commitment: bytes


@dataclass(frozen=True)
class AdvertiseKeys:
    """Client → server: two fresh X25519 public keys and a hash of the self-mask seed.

    The hash lets the server check the seed it recovers from shares, so a client that
    hands out a bad share aborts the round instead of corrupting the sum.
    """

    STAGE: ClassVar[str] = ADVERTISE
    round: int
    sender: int
    cipher_key: bytes
    mask_key: bytes
    seed_commitment: bytes


@dataclass(frozen=True)
class KeyDirectory:
    """Server → client: the revealed graph seed, who advertised, the neighbours' keys."""

    STAGE: ClassVar[str] = ADVERTISE
    round: int
    graph_seed: bytes
    clients: tuple[int, ...]
    cipher_keys: dict[int, bytes]
    mask_keys: dict[int, bytes]


@dataclass(frozen=True)
class ShareKeys:
    """Client → server: one AES-GCM ciphertext of shares per neighbour."""

    STAGE: ClassVar[str] = SHARE
    round: int
    sender: int
    ciphertexts: dict[int, bytes]


@dataclass(frozen=True)
class ForwardedShares:
    """Server → client: the ciphertexts addressed to it, keyed by their sender."""

    STAGE: ClassVar[str] = SHARE
    round: int
    ciphertexts: dict[int, bytes]


@dataclass(frozen=True)
class MaskedInput:
    """Client → server: the masked vector, ``bits`` bits a coordinate, bit-packed."""

    STAGE: ClassVar[str] = MASK
    PAYLOAD: ClassVar[str] = "vector"
    round: int
    sender: int
    vector: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    """Server → client: which of its neighbours survived and which dropped."""

    STAGE: ClassVar[str] = UNMASK
    round: int
    alive: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskResponse:
    """Client → server: self-mask shares of survivors, key shares of dropped clients."""

    STAGE: ClassVar[str] = UNMASK
    round: int
    sender: int
    self_mask_shares: dict[int, bytes]
    key_shares: dict[int, bytes]


ClientMessage = AdvertiseKeys | ShareKeys | MaskedInput | UnmaskResponse
Message = (
    RoundSetup
    | AdvertiseKeys
    | KeyDirectory
    | ShareKeys
    | ForwardedShares
    | MaskedInput
    | UnmaskRequest
    | UnmaskResponse
)
KINDS: tuple[type[Any], ...] = (
    RoundSetup,
    AdvertiseKeys,
    KeyDirectory,
    ShareKeys,
    ForwardedShares,
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
)
"""Every message type; its kind byte on the wire is its position here plus one."""
VERSION = 2
"""First byte of every message (version 1 was a JSON header with base64 fields)."""


def _schema(cls: type[Any]) -> tuple[tuple[str, str], ...]:
    """Each field's name and wire shape: int, bytes, ids, map or payload."""
    hints = get_type_hints(cls)
    shapes = {int: "int", bytes: "bytes", tuple[int, ...]: "ids", dict[int, bytes]: "map"}
    return tuple(
        (f.name, "payload" if f.name == getattr(cls, "PAYLOAD", None) else shapes[hints[f.name]])
        for f in dataclasses.fields(cls)
    )


_SCHEMAS: dict[type[Any], tuple[tuple[str, str], ...]] = {cls: _schema(cls) for cls in KINDS}


def encode(message: Message) -> bytes:
    """The wire bytes of ``message``."""
    out = bytearray((VERSION, KINDS.index(type(message)) + 1))
    for name, shape in _SCHEMAS[type(message)]:
        value = getattr(message, name)
        if shape == "payload":
            out += value  # the last field, raw: the rest of the message
        elif shape == "int":
            out += binary.uint(value)
        elif shape == "bytes":
            out += binary.blob(value)
        elif shape == "ids":
            out += binary.uint(len(value)) + b"".join(binary.uint(v) for v in value)
        else:  # a map: increasing keys
            out += binary.uint(len(value))
            for key in sorted(value):
                out += binary.uint(key) + binary.blob(value[key])
    return bytes(out)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """The message in ``data``; anything malformed is rejected with the reason."""
    reader = binary.Reader(data, "secure-aggregation message")
    version = reader.byte("version")
    if version != VERSION:
        raise UpdateRejected(f"secure-aggregation message has version {version}, not {VERSION}")
    code = reader.byte("kind")
    if not 1 <= code <= len(KINDS):
        raise UpdateRejected(f"secure-aggregation message has an unknown kind {code}")
    cls = KINDS[code - 1]
    reader.what = cls.__name__
    values: dict[str, Any] = {}
    for name, shape in _SCHEMAS[cls]:
        if shape == "payload":
            values[name] = reader.rest()
        elif shape == "int":
            values[name] = reader.uint(name)
        elif shape == "bytes":
            values[name] = reader.blob(name)
        elif shape == "ids":
            values[name] = tuple(reader.uint(name) for _ in range(reader.count(name)))
        else:
            values[name] = _read_map(reader, name)
    reader.end()
    return cls(**values)  # type: ignore[no-any-return]


def _read_map(reader: binary.Reader, name: str) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    previous = -1
    for _ in range(reader.count(name)):
        key = reader.uint(name)
        if key <= previous:
            raise UpdateRejected(f"{reader.what}: {name!r} keys are not strictly increasing")
        out[key] = reader.blob(name)
        previous = key
    return out
