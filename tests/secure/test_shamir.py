from __future__ import annotations

import itertools
import secrets

import pytest

from fedloom.core.errors import UpdateRejected
from fedloom.secure import shamir
from fedloom.secure.errors import SecAggAborted

# The worked example of Shamir's scheme (Wikipedia, "Shamir's secret sharing"):
# f(x) = 1234 + 166 x + 94 x^2 over GF(1613).
WIKI_PRIME = 1613
WIKI_SHARES = {1: 1494, 2: 329, 3: 965, 4: 176, 5: 1188, 6: 775}


def test_split_reproduces_the_textbook_example() -> None:
    coefficients = iter([166, 94])
    shares = shamir.split(1234, 3, range(1, 7), lambda _p: next(coefficients), WIKI_PRIME)
    assert shares == WIKI_SHARES


def test_any_three_textbook_shares_recover_the_secret() -> None:
    for subset in itertools.combinations(WIKI_SHARES, 3):
        points = {x: WIKI_SHARES[x] for x in subset}
        assert shamir.reconstruct(points, 3, WIKI_PRIME) == 1234


def test_hand_computed_line_over_gf17() -> None:
    # f(x) = 5 + 3x mod 17: f(1) = 8, f(2) = 11, f(3) = 14, f(6) = 23 mod 17 = 6
    shares = shamir.split(5, 2, [1, 2, 3, 6], lambda _p: 3, 17)
    assert shares == {1: 8, 2: 11, 3: 14, 6: 6}
    assert shamir.reconstruct({3: 14, 6: 6}, 2, 17) == 5
    assert shamir.interpolate_at({1: 8, 2: 11}, 4, 17) == 0  # f(4) = 17 = 0 mod 17


def test_fewer_than_threshold_shares_abort() -> None:
    with pytest.raises(SecAggAborted, match="2 shares cannot recover a secret needing 3"):
        shamir.reconstruct({1: 1494, 2: 329}, 3, WIKI_PRIME)


def test_an_inconsistent_extra_share_aborts_instead_of_lying() -> None:
    forged = dict(WIKI_SHARES) | {5: 1189}
    with pytest.raises(SecAggAborted, match="point 5 is inconsistent"):
        shamir.reconstruct(forged, 3, WIKI_PRIME)


def test_default_field_is_the_smallest_prime_above_2_256() -> None:
    sympy = pytest.importorskip("sympy")
    assert sympy.isprime(shamir.PRIME_256)
    assert sympy.nextprime(2**256) == shamir.PRIME_256
    assert shamir.SHARE_BYTES == 33


def test_32_byte_secrets_round_trip_from_any_threshold_subset() -> None:
    secret = int.from_bytes(b"\xff" * 32, "big")  # the largest 32-byte value
    shares = shamir.split(secret, 4, range(1, 8), secrets.randbelow)
    for subset in [(1, 2, 3, 4), (4, 5, 6, 7), (1, 3, 5, 7)]:
        assert shamir.reconstruct({x: shares[x] for x in subset}, 4) == secret
    assert shamir.reconstruct(shares, 4) == secret  # all seven, checked for consistency


def test_share_bytes_are_checked() -> None:
    assert shamir.from_bytes(shamir.to_bytes(12345)) == 12345
    with pytest.raises(UpdateRejected, match="32 bytes, expected 33"):
        shamir.from_bytes(bytes(32))
    with pytest.raises(UpdateRejected, match="outside the field"):
        shamir.from_bytes(b"\xff" * 33)


def test_bad_split_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold 4 must be in 1..3"):
        shamir.split(1, 4, [1, 2, 3], secrets.randbelow, 17)
    with pytest.raises(ValueError, match="distinct and in"):
        shamir.split(1, 2, [0, 1], secrets.randbelow, 17)
