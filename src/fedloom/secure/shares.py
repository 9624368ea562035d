"""The plaintext of one encrypted share bundle, and its sealing between two clients."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedloom.core.errors import UpdateRejected
from fedloom.secure import crypto, shamir

PLAINTEXT_BYTES = 2 * shamir.SHARE_BYTES
SEALED_BYTES = PLAINTEXT_BYTES + 12 + 16  # nonce and GCM tag


@dataclass(frozen=True)
class ShareBundle:
    """What ``owner`` gives ``holder``: its shares of the self-mask seed and mask key.

    Only the two shares are encrypted: owner, holder and round are bound by the sealing
    key (HKDF info) and by the AES-GCM associated data, so a bundle opened as coming from
    anyone else, for anyone else or in another round fails authentication.
    """

    owner: int
    holder: int
    self_mask_share: int
    key_share: int

    def to_bytes(self) -> bytes:
        return shamir.to_bytes(self.self_mask_share) + shamir.to_bytes(self.key_share)

    @classmethod
    def from_bytes(cls, raw: bytes, owner: int, holder: int) -> ShareBundle:
        if len(raw) != PLAINTEXT_BYTES:
            raise UpdateRejected(f"share bundle is {len(raw)} bytes, expected {PLAINTEXT_BYTES}")
        return cls(
            owner=owner,
            holder=holder,
            self_mask_share=shamir.from_bytes(raw[: shamir.SHARE_BYTES]),
            key_share=shamir.from_bytes(raw[shamir.SHARE_BYTES :]),
        )


def seal_bundle(
    bundle: ShareBundle, round_id: int, own_key: X25519PrivateKey, holder_public: bytes
) -> bytes:
    """Encrypt ``bundle`` for its holder under the key both derive by X25519 + HKDF."""
    key = crypto.derive_key(
        own_key, holder_public, crypto.share_purpose(round_id, bundle.owner, bundle.holder)
    )
    ad = crypto.share_associated_data(round_id, bundle.owner, bundle.holder)
    return crypto.seal(key, bundle.to_bytes(), ad)


def open_bundle(
    sealed: bytes,
    round_id: int,
    owner: int,
    holder: int,
    own_key: X25519PrivateKey,
    owner_public: bytes,
) -> ShareBundle:
    """Decrypt and check a bundle that ``owner`` sealed for ``holder`` in this round."""
    key = crypto.derive_key(own_key, owner_public, crypto.share_purpose(round_id, owner, holder))
    ad = crypto.share_associated_data(round_id, owner, holder)
    return ShareBundle.from_bytes(crypto.open_sealed(key, sealed, ad), owner, holder)
