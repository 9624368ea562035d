"""Homomorphic aggregation with CKKS (TenSEAL): the server adds ciphertexts it cannot read.

A client flattens its pre-weighted update ``w · u`` with its weight ``w`` appended, and
encrypts it under the key holder's public key, packed ``slots`` values per ciphertext
(``poly_modulus_degree / 2``). The server adds the ciphertexts coordinate by coordinate
and hands the encrypted sum to the key holder, the only party with the secret key, who
decrypts ``Σ w·u`` and ``Σ w``. TenSEAL has no threshold decryption, so the key holder
must not be the server (see ``fedloom.secure.authority``).

Parameters: aggregation needs additions only, so one data prime suffices, and the
smallest ring that holds it at 128-bit security gives the smallest messages. The default
is ``N = 4096`` with moduli (54, 55), 109 bits in all: the 128-bit ceiling for N = 4096
in the Homomorphic Encryption Standard (Albrecht et al. 2018, table 1; SEAL's
``CoeffModulus::MaxBitCount``). A ciphertext of 2048 values is about 62 KB, so the upload
grows about 7.5x over float32. The scale ``2**36`` leaves 18 bits above the point for
the sum's magnitude, with an error near 1e-7 per coordinate.

Every ciphertext is hostile until checked: its size, its slot count and its scale are
verified on arrival, and anything TenSEAL cannot parse is a rejection, never a crash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedloom.core.errors import ConfigError, UpdateRejected

MAX_MODULUS_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
"""The largest total coefficient modulus, in bits, with 128-bit security for each ring
degree (Homomorphic Encryption Standard, classical security, ternary secrets)."""


@dataclass(frozen=True)
class CkksParams:
    poly_modulus_degree: int = 4096
    coeff_mod_bit_sizes: tuple[int, ...] = (54, 55)
    scale_bits: int = 36

    def __post_init__(self) -> None:
        ceiling = MAX_MODULUS_BITS_128.get(self.poly_modulus_degree)
        if ceiling is None:
            raise ConfigError(
                [f"ckks: poly_modulus_degree must be one of {sorted(MAX_MODULUS_BITS_128)}"]
            )
        if sum(self.coeff_mod_bit_sizes) > ceiling:
            raise ConfigError(
                [
                    f"ckks: moduli of {sum(self.coeff_mod_bit_sizes)} bits exceed {ceiling}, "
                    f"the 128-bit-security limit for N={self.poly_modulus_degree}"
                ]
            )
        if len(self.coeff_mod_bit_sizes) < 2:
            raise ConfigError(["ckks: needs a data prime and a special prime"])
        if self.scale_bits >= self.coeff_mod_bit_sizes[0]:
            raise ConfigError(["ckks: scale_bits must be below the first prime's bits"])

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    def chunks(self, length: int) -> int:
        """Ciphertexts needed for a vector of ``length`` values."""
        return math.ceil(length / self.slots)

    def max_ciphertext_bytes(self) -> int:
        """An upper bound on one serialized ciphertext: two polynomials of N 64-bit
        coefficients per data prime, plus framing."""
        data_primes = len(self.coeff_mod_bit_sizes) - 1
        return 2 * self.poly_modulus_degree * data_primes * 8 + 4096


def _tenseal() -> Any:
    try:
        import tenseal
    except ImportError:
        raise ConfigError(["secure.mode=ckks needs TenSEAL: pip install 'fedloom[he]'"]) from None
    return tenseal


class KeyHolder:
    """Holds the CKKS secret key; decrypts sums only. Never run it inside the server."""

    def __init__(self, params: CkksParams | None = None) -> None:
        params = params or CkksParams()
        ts = _tenseal()
        self.params = params
        self._context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        )
        self._context.global_scale = 2.0**params.scale_bits

    def public_context(self) -> bytes:
        """The context clients encrypt under and the server adds under: public key only."""
        public = self._context.copy()
        public.make_context_public()
        return bytes(
            public.serialize(save_public_key=True, save_galois_keys=False, save_relin_keys=False)
        )

    def decrypt(self, chunks: Sequence[bytes], length: int) -> np.ndarray:
        """The float64 vector of ``length`` values the ciphertexts hold."""
        vectors = parse(self._context, chunks, length, self.params)
        flat = np.concatenate([np.asarray(v.decrypt(), dtype=np.float64) for v in vectors])
        return flat[:length]


def load_public(data: bytes) -> Any:
    """A public context from the key holder's bytes; refuses one that holds a secret key."""
    context = _tenseal().context_from(data)
    if not context.is_public():
        raise ConfigError(["ckks: the context handed out must not contain the secret key"])
    return context


def encrypt(context: Any, flat: np.ndarray, params: CkksParams) -> list[bytes]:
    """``flat`` in ``params.slots``-sized ciphertexts, each serialized."""
    ts = _tenseal()
    values = np.asarray(flat, dtype=np.float64)
    return [
        bytes(ts.ckks_vector(context, values[i : i + params.slots].tolist()).serialize())
        for i in range(0, len(values), params.slots)
    ]


def parse(context: Any, chunks: Sequence[bytes], length: int, params: CkksParams) -> list[Any]:
    """Ciphertexts for a vector of ``length`` values, each checked: count, size, slots
    and scale. Anything else is an ``UpdateRejected``."""
    ts = _tenseal()
    expected = params.chunks(length)
    if len(chunks) != expected:
        raise UpdateRejected(f"ckks: {len(chunks)} ciphertexts, expected {expected}")
    limit = params.max_ciphertext_bytes()
    vectors = []
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, bytes | bytearray) or not 0 < len(chunk) <= limit:
            raise UpdateRejected(f"ckks: ciphertext {i} is not 1..{limit} bytes")
        try:
            vector = ts.ckks_vector_from(context, bytes(chunk))
            size = vector.size()
            (ciphertext,) = vector.ciphertext()
            shape = (ciphertext.size(), ciphertext.poly_modulus_degree(), ciphertext.scale)
        except Exception as error:  # TenSEAL raises several types for malformed bytes
            raise UpdateRejected(
                f"ckks: ciphertext {i} unreadable ({type(error).__name__})"
            ) from None
        want = min(params.slots, length - i * params.slots)
        if size != want:
            raise UpdateRejected(f"ckks: ciphertext {i} holds {size} values, expected {want}")
        if shape != (2, params.poly_modulus_degree, 2.0**params.scale_bits):
            raise UpdateRejected(
                f"ckks: ciphertext {i} has (size, degree, scale) {shape}, expected "
                f"(2, {params.poly_modulus_degree}, 2**{params.scale_bits})"
            )
        vectors.append(vector)
    return vectors


class EncryptedSum:
    """A running sum of checked ciphertext vectors, at the server (public context only)."""

    def __init__(self, context: Any, length: int, params: CkksParams) -> None:
        self.context, self.length, self.params = context, length, params
        self.total: list[Any] | None = None
        self.count = 0

    def add(self, chunks: Sequence[bytes]) -> None:
        vectors = parse(self.context, chunks, self.length, self.params)
        try:
            self.total = (
                vectors
                if self.total is None
                else [a + b for a, b in zip(self.total, vectors, strict=True)]
            )
        except Exception as error:  # e.g. ciphertexts under another key's parameters
            raise UpdateRejected(
                f"ckks: cannot add this ciphertext ({type(error).__name__})"
            ) from None
        self.count += 1

    def serialized(self) -> list[bytes]:
        if self.total is None:
            raise UpdateRejected("ckks: no ciphertext to decrypt")
        return [bytes(v.serialize()) for v in self.total]
