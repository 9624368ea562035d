"""The cryptographic primitives of SecAgg+, all from the ``cryptography`` package.

X25519 for key agreement, HKDF-SHA256 to turn a shared secret into a key for one
purpose, AES-256-GCM for the encrypted secret shares, AES-256-CTR as the mask PRG.
"""

from __future__ import annotations

import hashlib
import secrets

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedloom.core.errors import UpdateRejected

PROTOCOL_LABEL = b"fedloom-secagg/v1"
KEY_BYTES = 32
_NONCE_BYTES = 12


def random_bytes(n: int = KEY_BYTES) -> bytes:
    """``n`` bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(n)


def new_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def load_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def load_public(raw: bytes) -> X25519PublicKey:
    """A peer's public key; a malformed one is a rejected message."""
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError as error:
        raise UpdateRejected(f"malformed X25519 public key: {error}") from None


def derive_key(private: X25519PrivateKey, peer_public: bytes, purpose: bytes) -> bytes:
    """A 32-byte key for ``purpose`` from the X25519 secret shared with ``peer_public``.

    ``purpose`` names the use (mask or share encryption), the round and both ids, so
    one agreement never yields the same key for two uses.
    """
    try:
        shared = private.exchange(load_public(peer_public))
    except ValueError as error:  # the all-zero shared secret of a low-order point
        raise UpdateRejected(f"X25519 key agreement failed: {error}") from None
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose)
    return hkdf.derive(shared)


def mask_purpose(round_id: int, a: int, b: int) -> bytes:
    low, high = min(a, b), max(a, b)
    return PROTOCOL_LABEL + f"|mask|round={round_id}|{low}|{high}".encode()


def share_purpose(round_id: int, a: int, b: int) -> bytes:
    low, high = min(a, b), max(a, b)
    return PROTOCOL_LABEL + f"|share-key|round={round_id}|{low}|{high}".encode()


def share_associated_data(round_id: int, sender: int, receiver: int) -> bytes:
    """What a share ciphertext is bound to: protocol, round, stage, sender, receiver."""
    return PROTOCOL_LABEL + f"|round={round_id}|stage=share-keys|{sender}->{receiver}".encode()


def seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM with a fresh random nonce, returned as ``nonce || ciphertext || tag``."""
    nonce = random_bytes(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """Decrypt ``seal``'s output; a tampered or misdirected ciphertext is rejected."""
    if len(sealed) < _NONCE_BYTES + 16:
        raise UpdateRejected("share ciphertext is too short")
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated_data)
    except InvalidTag:
        raise UpdateRejected("share ciphertext failed authentication") from None


def seed_commitment(round_id: int, client: int, seed: bytes) -> bytes:
    """SHA-256 of a self-mask seed, bound to the round and the client."""
    label = PROTOCOL_LABEL + f"|self-mask|round={round_id}|{client}|".encode()
    return hashlib.sha256(label + seed).digest()


def prg_mask(seed: bytes, length: int, bits: int) -> np.ndarray:
    """``length`` uniform integers mod ``2**bits`` (uint64) expanded from a 32-byte seed.

    AES-256-CTR over zeros is the keystream; each coordinate takes the low ``bits`` of
    one 64-bit word, which is uniform because the modulus is a power of two. Every seed
    is used once per round, so the fixed counter start is safe.
    """
    if len(seed) != KEY_BYTES:
        raise ValueError(f"PRG seed must be {KEY_BYTES} bytes, got {len(seed)}")
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, got {bits}")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(8 * length)) + encryptor.finalize()
    words = np.frombuffer(stream, dtype="<u8")
    if bits == 64:
        return words.astype(np.uint64)  # a writable, native-order copy
    return (words & np.uint64((1 << bits) - 1)).astype(np.uint64, copy=False)
