"""CKKS aggregation: exact-to-1e-6 sums, checked ciphertexts, a key holder apart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tenseal")

from fedloom.config import load_config  # noqa: E402
from fedloom.core.errors import ConfigError, UpdateRejected  # noqa: E402
from fedloom.core.message import Message  # noqa: E402
from fedloom.secure.authority import KeyAuthority, KeyAuthorityError  # noqa: E402
from fedloom.secure.ckks import (  # noqa: E402
    CkksParams,
    EncryptedSum,
    KeyHolder,
    encrypt,
    load_public,
)
from tests.secure.test_secure_run import BASE, Tampering, _experiment, _weights  # noqa: E402

PARAMS = CkksParams()


@pytest.fixture(scope="module")
def holder() -> KeyHolder:
    return KeyHolder(PARAMS)


def test_parameters_stay_within_128_bit_security() -> None:
    assert sum(PARAMS.coeff_mod_bit_sizes) <= 109  # HE standard, N = 4096
    with pytest.raises(ConfigError, match="128-bit"):
        CkksParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 60))
    with pytest.raises(ConfigError, match="poly_modulus_degree"):
        CkksParams(poly_modulus_degree=3000)


def test_encrypted_sum_equals_plain_sum(holder: KeyHolder) -> None:
    rng = np.random.default_rng(0)
    length = 5000  # three ciphertexts, the last one partly filled
    public = load_public(holder.public_context())
    updates = [rng.normal(0, 0.1, length) * w for w in (3.0, 1.0, 7.0)]
    total = EncryptedSum(public, length, PARAMS)
    for update in updates:
        chunks = encrypt(public, update, PARAMS)
        assert len(chunks) == 3
        total.add(chunks)
    decrypted = holder.decrypt(total.serialized(), length)
    np.testing.assert_allclose(decrypted, np.sum(updates, axis=0), atol=1e-5)


def test_upload_grows_less_than_fifteen_fold(holder: KeyHolder) -> None:
    public = load_public(holder.public_context())
    length = 4 * PARAMS.slots
    chunks = encrypt(public, np.zeros(length), PARAMS)
    growth = sum(len(c) for c in chunks) / (4 * length)
    assert growth < 8.0  # measured 7.5x; NVFlare's N = 8192 setting is about 15x


def test_public_context_cannot_decrypt(holder: KeyHolder) -> None:
    public = load_public(holder.public_context())
    vector = encrypt(public, np.ones(10), PARAMS)
    import tenseal as ts

    with pytest.raises(ValueError):
        ts.ckks_vector_from(public, vector[0]).decrypt()
    with pytest.raises(ConfigError, match="secret key"):
        secret = holder._context.serialize(save_secret_key=True)
        load_public(secret)


def test_hostile_ciphertexts_are_rejected(holder: KeyHolder) -> None:
    public = load_public(holder.public_context())
    length = 100
    total = EncryptedSum(public, length, PARAMS)
    good = encrypt(public, np.ones(length), PARAMS)
    with pytest.raises(UpdateRejected, match="unreadable"):
        total.add([b"\x00" * 1000])
    with pytest.raises(UpdateRejected, match="expected 1"):
        total.add(good + good)
    with pytest.raises(UpdateRejected, match="holds 50 values"):
        total.add(encrypt(public, np.ones(50), PARAMS))
    with pytest.raises(UpdateRejected, match="bytes"):
        total.add([b"x" * (PARAMS.max_ciphertext_bytes() + 1)])
    other = KeyHolder(PARAMS)  # same parameters, another key: the sum would be garbage
    stranger = encrypt(load_public(other.public_context()), np.ones(length), PARAMS)
    total.add(good)
    total.add(stranger)  # indistinguishable at the server: documented limit
    assert total.count == 2


def test_key_authority_decrypts_one_sum_per_round() -> None:
    with KeyAuthority(PARAMS) as authority:
        public = load_public(authority.public_context())
        total = EncryptedSum(public, 3, PARAMS)
        total.add(encrypt(public, np.array([1.0, 2.0, 3.0]), PARAMS))
        total.add(encrypt(public, np.array([0.5, 0.5, 0.5]), PARAMS))
        np.testing.assert_allclose(
            authority.decrypt_sum(1, total.serialized(), 3), [1.5, 2.5, 3.5], atol=1e-6
        )
        with pytest.raises(KeyAuthorityError, match="already decrypted"):
            authority.decrypt_sum(1, total.serialized(), 3)
        with pytest.raises(KeyAuthorityError, match="refused"):
            authority.decrypt_sum(2, [b"junk"], 3)
        np.testing.assert_allclose(
            authority.decrypt_sum(2, total.serialized(), 3), [1.5, 2.5, 3.5], atol=1e-6
        )


CKKS_RUN = [*BASE, "secure.mode=ckks", "secure.max_weight=1000"]


def test_a_ckks_run_equals_plain_fedavg_and_hides_counts(tmp_path: Path) -> None:
    # weights up to 1000 >= every client's example count: FedAvg's weights exactly
    exp = _experiment(tmp_path / "c", "rounds=3", *CKKS_RUN[len(BASE) :])
    secure = exp.run()
    plain = _experiment(tmp_path / "p", "rounds=3").run()
    gap = (_weights(secure) - _weights(plain)).abs().max().item()
    assert gap < 1e-4  # CKKS's error is about 1e-7 per coordinate and round
    line, base = secure.metrics[-1], plain.metrics[-1]
    assert line["test_accuracy"] == pytest.approx(base["test_accuracy"], abs=0.003)
    assert line["train_loss"] == pytest.approx(base["train_loss"], rel=1e-4)
    assert line["num_clients"] == 8 and line["secure_aborted"] is None
    # ciphertexts up: about 7.5x float32; the public context down once per client
    assert line["bytes_up"] > 6 * base["bytes_up"]
    public = len(exp.server.phase.public)  # type: ignore[union-attr]
    assert secure.metrics[0]["bytes_down"] == line["bytes_down"] + 8 * public


def test_forged_and_garbage_ckks_replies_are_rejected_and_the_round_goes_on(
    tmp_path: Path,
) -> None:
    exp = _experiment(tmp_path / "c", "rounds=2", "secure.mode=ckks")

    def tamper(cid: str, sent: Message, reply: Message) -> Message | None:
        if cid == "1":
            return dataclasses.replace(reply, payload=b"\x00" * 64)
        if cid == "2":
            return dataclasses.replace(reply, sender="3")
        if cid == "4":
            return dataclasses.replace(reply, kind="fit_result")
        return None

    exp.server.transport = Tampering(exp.server.transport, tamper)
    result = exp.run()
    for line in result.metrics:
        assert line["num_rejected"] == 3 and line["num_clients"] == 5
    assert np.isfinite(_weights(result).numpy()).all()
    assert result.metrics[-1]["test_accuracy"] > 0.5


def test_ckks_refuses_what_needs_each_update(tmp_path: Path) -> None:
    for extra, named in [
        ("strategy.aggregator=median", "strategy.aggregator=median"),
        ("compression.up=int8", "compression.up=int8"),
        ("privacy.mode=local privacy.noise_multiplier=1", "privacy.mode=local"),
    ]:
        with pytest.raises(ConfigError, match="secure.mode=ckks") as error:
            load_config(None, ["secure.mode=ckks", *extra.split()])
        assert named in str(error.value)
