from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedloom.core.errors import UpdateRejected
from fedloom.secure import crypto

KEY = bytes(range(32))


def test_prg_is_the_aes_ctr_keystream() -> None:
    # independent check: CTR block i is AES_k(i) for a zero initial counter
    ecb = Cipher(algorithms.AES(KEY), modes.ECB()).encryptor()
    blocks = ecb.update(b"".join(i.to_bytes(16, "big") for i in range(2))) + ecb.finalize()
    expected = np.frombuffer(blocks, dtype="<u8")
    assert crypto.prg_mask(KEY, 4, 64).tolist() == expected.tolist()


def test_prg_takes_the_low_bits_and_is_deterministic() -> None:
    full = crypto.prg_mask(KEY, 1000, 64)
    low = crypto.prg_mask(KEY, 1000, 13)
    assert low.tolist() == (full & np.uint64(2**13 - 1)).tolist()
    assert int(low.max()) < 2**13
    assert crypto.prg_mask(KEY, 1000, 13).tolist() == low.tolist()
    assert crypto.prg_mask(bytes(32), 1000, 13).tolist() != low.tolist()


def test_prg_refuses_a_short_seed() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.prg_mask(bytes(16), 10, 16)


def test_both_sides_derive_the_same_key_and_purposes_separate_keys() -> None:
    a, b = crypto.new_private_key(), crypto.new_private_key()
    purpose = crypto.mask_purpose(3, 1, 2)
    k_ab = crypto.derive_key(a, crypto.public_bytes(b), purpose)
    assert k_ab == crypto.derive_key(b, crypto.public_bytes(a), crypto.mask_purpose(3, 2, 1))
    assert k_ab != crypto.derive_key(a, crypto.public_bytes(b), crypto.share_purpose(3, 1, 2))
    assert k_ab != crypto.derive_key(a, crypto.public_bytes(b), crypto.mask_purpose(4, 1, 2))


def test_sealed_shares_open_only_with_their_key_and_associated_data() -> None:
    ad = crypto.share_associated_data(1, 2, 3)
    sealed = crypto.seal(KEY, b"secret shares", ad)
    assert crypto.open_sealed(KEY, sealed, ad) == b"secret shares"
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(UpdateRejected, match="failed authentication"):
        crypto.open_sealed(KEY, tampered, ad)
    with pytest.raises(UpdateRejected, match="failed authentication"):
        crypto.open_sealed(KEY, sealed, crypto.share_associated_data(1, 2, 4))
    with pytest.raises(UpdateRejected, match="too short"):
        crypto.open_sealed(KEY, sealed[:20], ad)


def test_malformed_and_low_order_public_keys_are_rejected() -> None:
    with pytest.raises(UpdateRejected, match="malformed X25519"):
        crypto.load_public(bytes(31))
    with pytest.raises(UpdateRejected, match="key agreement failed"):
        crypto.derive_key(crypto.new_private_key(), bytes(32), b"x")  # the zero point
