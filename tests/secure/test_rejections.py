"""Replayed, misdirected and forged stage messages are rejected with one-line reasons."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedloom.core.errors import FedloomError, UpdateRejected
from fedloom.secure import crypto, shares
from fedloom.secure.encoding import pack
from fedloom.secure.messages import AdvertiseKeys, MaskedInput, UnmaskRequest, UnmaskResponse

from .conftest import Round, make_round


def _round(n: int = 6, bits: int = 13) -> Round:
    return make_round(range(n), 17, bits, np.random.default_rng(0))  # 221 bits: 3 spare


# ---- the server refuses ------------------------------------------------------------


def test_server_rejects_replays_impostors_and_stale_rounds() -> None:
    r = _round()
    first = r.clients[0].advertise()
    r.server.receive(0, first)
    with pytest.raises(UpdateRejected, match="replayed in stage advertise-keys"):
        r.server.receive(0, first)
    with pytest.raises(UpdateRejected, match="claims sender 1 on 2's channel"):
        r.server.receive(2, r.clients[1].advertise())
    stale = dataclasses.replace(r.clients[2].advertise(), round=6)
    with pytest.raises(UpdateRejected, match="is for round 6, not 7"):
        r.server.receive(2, stale)
    outsider = dataclasses.replace(first, sender=99)
    with pytest.raises(UpdateRejected, match="client 99 is not expected"):
        r.server.receive(99, outsider)


def test_server_rejects_a_message_of_an_earlier_stage() -> None:
    r = _round()
    keys = {u: c.advertise() for u, c in r.clients.items()}
    for u, m in keys.items():
        r.server.receive(u, m)
    r.server.close_advertise()
    with pytest.raises(UpdateRejected, match="AdvertiseKeys from 0 during stage share-keys"):
        r.server.receive(0, keys[0])


def test_server_rejects_repeated_or_malformed_keys() -> None:
    r = _round()
    first = r.clients[0].advertise()
    r.server.receive(0, first)
    second = r.clients[1].advertise()
    copycat = dataclasses.replace(second, cipher_key=first.cipher_key)
    with pytest.raises(UpdateRejected, match="repeated public key"):
        r.server.receive(1, copycat)
    with pytest.raises(UpdateRejected, match="malformed X25519"):
        r.server.receive(2, AdvertiseKeys(7, 2, b"short", bytes(32), bytes(32)))
    with pytest.raises(UpdateRejected, match="malformed seed commitment"):
        r.server.receive(1, dataclasses.replace(second, seed_commitment=b"x"))
    r.server.receive(1, second)


def test_server_rejects_misaddressed_or_resized_share_ciphertexts() -> None:
    r = make_round(range(10), 16, 13, np.random.default_rng(0), neighbors=4, threshold=3)
    directories = r.advertise()
    message = r.clients[0].share_keys(directories[0])
    stranger = next(u for u in range(10) if u not in message.ciphertexts and u != 0)
    wrong_target = dict(message.ciphertexts)
    wrong_target[stranger] = wrong_target.pop(next(iter(wrong_target)))
    with pytest.raises(UpdateRejected, match="not addressed to its neighbours"):
        r.server.receive(0, dataclasses.replace(message, ciphertexts=wrong_target))
    resized = {v: c + b"x" for v, c in message.ciphertexts.items()}
    with pytest.raises(UpdateRejected, match="wrong size"):
        r.server.receive(0, dataclasses.replace(message, ciphertexts=resized))
    r.server.receive(0, message)


def test_server_rejects_a_masked_vector_of_wrong_length_or_range() -> None:
    r = _round(bits=13)
    forwarded = r.share(r.advertise())
    honest = r.clients[0].masked_input(forwarded[0], r.inputs[0])
    assert len(honest.vector) == 28
    with pytest.raises(UpdateRejected, match="has 26 bytes, expected 28 for 17 x 13 bits"):
        r.server.receive(0, dataclasses.replace(honest, vector=honest.vector[:-2]))
    too_big = pack(np.zeros(17, dtype=np.uint64), 13)[:-1] + b"\xe0"  # the 3 spare bits
    with pytest.raises(UpdateRejected, match=r"outside \[0, 2\*\*13\)"):
        r.server.receive(0, MaskedInput(7, 0, too_big))
    r.server.receive(0, honest)


def test_server_rejects_unmask_responses_that_do_not_match_the_request() -> None:
    r = _round()
    requests = r.mask(r.share(r.advertise()), silent=[5])
    honest = r.clients[0].unmask(requests[0])
    assert 5 in honest.key_shares  # 5 dropped: its key share is asked for
    both = dataclasses.replace(
        honest, self_mask_shares={**honest.self_mask_shares, 5: honest.key_shares[5]}
    )
    with pytest.raises(UpdateRejected, match="does not match its request"):
        r.server.receive(0, both)
    outside = {v: b"\xff" * 33 for v in honest.self_mask_shares}
    with pytest.raises(UpdateRejected, match="outside the field"):
        r.server.receive(0, dataclasses.replace(honest, self_mask_shares=outside))
    r.server.receive(0, honest)


# ---- a client refuses --------------------------------------------------------------


def test_client_rejects_tampered_and_misdirected_share_ciphertexts() -> None:
    r = _round()
    forwarded = r.share(r.advertise())
    to_zero = forwarded[0]
    sender, sealed = next(iter(to_zero.ciphertexts.items()))
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    tampered = dataclasses.replace(to_zero, ciphertexts={**to_zero.ciphertexts, sender: flipped})
    with pytest.raises(UpdateRejected, match="failed authentication"):
        r.clients[0].masked_input(tampered, r.inputs[0])
    # the server hands client 1 the ciphertext that `sender` sealed for client 0
    to_one = forwarded[1]
    other = next(v for v in to_one.ciphertexts if v != 0 and v in to_zero.ciphertexts)
    swapped = {**to_one.ciphertexts, other: to_zero.ciphertexts[other]}
    with pytest.raises(UpdateRejected, match="failed authentication"):
        r.clients[1].masked_input(dataclasses.replace(to_one, ciphertexts=swapped), r.inputs[1])


def test_client_rejects_a_share_sealed_with_the_wrong_associated_data_or_ids() -> None:
    r = _round()
    directories = r.advertise()
    r.share(directories)
    owner, holder = r.clients[1], r.clients[0]
    key = crypto.derive_key(
        owner._cipher_key, directories[1].cipher_keys[0], crypto.share_purpose(7, 1, 0)
    )
    bundle = shares.ShareBundle(1, 0, 5, 6)
    wrong_stage = crypto.seal(key, bundle.to_bytes(), crypto.share_associated_data(8, 1, 0))
    with pytest.raises(UpdateRejected, match="failed authentication"):
        shares.open_bundle(wrong_stage, 7, 1, 0, holder._cipher_key, directories[0].cipher_keys[1])
    # the ids are not in the plaintext: the associated data binds them, so shares sealed
    # for client 3 (or in the other direction, 0 -> 1, under the same pair key) fail
    for ad in (crypto.share_associated_data(7, 1, 3), crypto.share_associated_data(7, 0, 1)):
        sealed = crypto.seal(key, bundle.to_bytes(), ad)
        with pytest.raises(UpdateRejected, match="failed authentication"):
            shares.open_bundle(sealed, 7, 1, 0, holder._cipher_key, directories[0].cipher_keys[1])
    right = crypto.seal(key, bundle.to_bytes(), crypto.share_associated_data(7, 1, 0))
    opened = shares.open_bundle(right, 7, 1, 0, holder._cipher_key, directories[0].cipher_keys[1])
    assert opened == bundle and len(right) == shares.SEALED_BYTES == 12 + 66 + 16


def test_client_rejects_a_graph_seed_other_than_the_committed_one() -> None:
    r = _round()
    directories = r.advertise()
    lying = dataclasses.replace(directories[0], graph_seed=bytes(32))
    with pytest.raises(UpdateRejected, match="does not match the server's commitment"):
        r.clients[0].share_keys(lying)


def test_client_rejects_a_replayed_or_stale_server_message() -> None:
    r = _round()
    directories = r.advertise()
    r.clients[0].share_keys(directories[0])
    with pytest.raises(UpdateRejected, match="during stage masked-input"):
        r.clients[0].share_keys(directories[0])
    with pytest.raises(UpdateRejected, match="for round 6, this is 7"):
        r.clients[1].share_keys(dataclasses.replace(directories[1], round=6))


def test_client_never_reveals_both_shares_of_one_peer() -> None:
    r = _round()
    requests = r.mask(r.share(r.advertise()))
    request = requests[0]
    peer = request.alive[0]
    both = UnmaskRequest(7, request.alive, (*request.dropped, peer))
    with pytest.raises(UpdateRejected, match="both alive and dropped"):
        r.clients[0].unmask(both)
    partial = UnmaskRequest(7, request.alive[1:], request.dropped)
    with pytest.raises(UpdateRejected, match="does not partition"):
        r.clients[0].unmask(partial)
    answer = r.clients[0].unmask(request)
    assert isinstance(answer, UnmaskResponse) and answer.key_shares == {}
    # a second request (e.g. now claiming the peer dropped) is refused
    flipped = UnmaskRequest(7, request.alive[1:], (peer,))
    with pytest.raises(UpdateRejected, match="during stage done"):
        r.clients[0].unmask(flipped)


def test_client_checks_its_own_input() -> None:
    r = _round(bits=13)
    forwarded = r.share(r.advertise())
    with pytest.raises(FedloomError, match=r"outside \[0, 2\*\*13\)"):
        r.clients[0].masked_input(forwarded[0], np.full(17, 2**13, dtype=np.uint64))
    with pytest.raises(FedloomError, match="uint64 vector of length 17"):
        r.clients[0].masked_input(forwarded[0], np.zeros(15, dtype=np.uint64))
