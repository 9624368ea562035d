"""Shamir secret sharing over a prime field.

The default field is GF(p) with p = 2**256 + 297, the smallest prime above 2**256, so a
32-byte secret (a PRG seed or an X25519 private key) is one field element and one share
is 33 bytes. The field is a parameter, so small hand-checkable fields work as well.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from fedloom.core.errors import UpdateRejected
from fedloom.secure.errors import SecAggAborted

PRIME_256 = 2**256 + 297
SHARE_BYTES = (PRIME_256.bit_length() + 7) // 8  # 33


def split(
    secret: int,
    threshold: int,
    xs: Sequence[int],
    random_below: Callable[[int], int],
    prime: int = PRIME_256,
) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of ``secret`` for a random polynomial of degree ``threshold-1``.

    Any ``threshold`` shares recover ``secret``; fewer say nothing about it. ``xs`` are
    distinct non-zero evaluation points; ``random_below(p)`` draws uniformly in [0, p).
    """
    if not 0 <= secret < prime:
        raise ValueError("secret must lie in [0, prime)")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be in 1..{len(xs)} (the number of shares)")
    if len(set(xs)) != len(xs) or any(not 0 < x < prime for x in xs):
        raise ValueError("share points must be distinct and in [1, prime)")
    coefficients = [secret] + [random_below(prime) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x, prime) for x in xs}


def _evaluate(coefficients: Sequence[int], x: int, prime: int) -> int:
    value = 0
    for c in reversed(coefficients):  # Horner
        value = (value * x + c) % prime
    return value


def interpolate_at(points: Mapping[int, int], at: int, prime: int = PRIME_256) -> int:
    """The value at ``at`` of the polynomial through ``points`` (Lagrange)."""
    xs = list(points)
    total = 0
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * (at - xj) % prime
                denominator = denominator * (xi - xj) % prime
        total = (total + points[xi] * numerator * pow(denominator, -1, prime)) % prime
    return total


def reconstruct(shares: Mapping[int, int], threshold: int, prime: int = PRIME_256) -> int:
    """The secret from at least ``threshold`` shares.

    The first ``threshold`` shares (by point) determine the polynomial; every further
    share must lie on it, so one inconsistent share aborts rather than yields a wrong
    secret. Fewer than ``threshold`` shares abort: the secret is information-theoretically
    hidden from them.
    """
    if len(shares) < threshold:
        raise SecAggAborted(f"{len(shares)} shares cannot recover a secret needing {threshold}")
    ordered = sorted(shares)
    basis = {x: shares[x] for x in ordered[:threshold]}
    for x in ordered[threshold:]:
        if interpolate_at(basis, x, prime) != shares[x] % prime:
            raise SecAggAborted(f"share at point {x} is inconsistent with the others")
    return interpolate_at(basis, 0, prime)


def to_bytes(value: int) -> bytes:
    return value.to_bytes(SHARE_BYTES, "big")


def from_bytes(raw: bytes) -> int:
    """A share value; one of the wrong size or outside the field is rejected."""
    if len(raw) != SHARE_BYTES:
        raise UpdateRejected(f"share is {len(raw)} bytes, expected {SHARE_BYTES}")
    value = int.from_bytes(raw, "big")
    if value >= PRIME_256:
        raise UpdateRejected("share value lies outside the field")
    return value
