"""The stage messages of SecAgg+ and their stable wire encoding.

Every message is a frozen dataclass of ints and bytes. On the wire it is a 4-byte
big-endian header length, a JSON header (sorted keys; bytes as base64, int-keyed maps
with decimal string keys) and, for the masked input only, the vector as raw bytes after
the header, so the one large field is not inflated by base64.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, get_type_hints

from fedloom.core.errors import UpdateRejected

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
KINDS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        RoundSetup,
        AdvertiseKeys,
        KeyDirectory,
        ShareKeys,
        ForwardedShares,
        MaskedInput,
        UnmaskRequest,
        UnmaskResponse,
    )
}
_HEADER_LEN = 4


def encode(message: Message) -> bytes:
    """The wire bytes of ``message``."""
    payload_field = getattr(message, "PAYLOAD", None)
    header: dict[str, Any] = {"kind": type(message).__name__}
    payload = b""
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        if field.name == payload_field:
            payload = value
        else:
            header[field.name] = _to_json(value)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return len(text).to_bytes(_HEADER_LEN, "big") + text + payload


def decode(data: bytes) -> Message:
    """The message in ``data``; anything malformed is rejected with the reason."""
    if len(data) < _HEADER_LEN:
        raise UpdateRejected("secure-aggregation message is truncated")
    size = int.from_bytes(data[:_HEADER_LEN], "big")
    try:
        header = json.loads(data[_HEADER_LEN : _HEADER_LEN + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UpdateRejected("secure-aggregation message header is not JSON") from None
    if not isinstance(header, dict) or header.get("kind") not in KINDS:
        raise UpdateRejected("secure-aggregation message has an unknown kind")
    cls = KINDS[header.pop("kind")]
    payload_field = getattr(cls, "PAYLOAD", None)
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    expected = set(names) - {payload_field}
    if set(header) != expected:
        raise UpdateRejected(f"{cls.__name__} fields {sorted(header)} != {sorted(expected)}")
    values = {name: _from_json(header[name], hints[name], name) for name in expected}
    if payload_field is not None:
        values[payload_field] = data[_HEADER_LEN + size :]
    elif len(data) != _HEADER_LEN + size:
        raise UpdateRejected(f"{cls.__name__} has trailing bytes")
    return cls(**values)  # type: ignore[no-any-return]


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): base64.b64encode(v).decode() for k, v in sorted(value.items())}
    if isinstance(value, tuple):
        return list(value)
    return value


def _from_json(value: Any, kind: Any, name: str) -> Any:
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise UpdateRejected(f"field {name!r} must be an integer")
        return value
    if kind is bytes:
        return _b64(value, name)
    if kind == tuple[int, ...]:
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise UpdateRejected(f"field {name!r} must be a list of integers")
        return tuple(value)
    if not isinstance(value, dict):
        raise UpdateRejected(f"field {name!r} must be a map")
    try:
        return {int(k): _b64(v, name) for k, v in value.items()}
    except ValueError:
        raise UpdateRejected(f"field {name!r} has a non-integer key") from None


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise UpdateRejected(f"field {name!r} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise UpdateRejected(f"field {name!r} is not valid base64") from None
