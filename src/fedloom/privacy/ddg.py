"""The distributed discrete Gaussian encoding (Kairouz, Liu, Steinke 2021, Algorithm 1).

A client clips its update to L2 norm ``clip``, pads it to ``d'`` coordinates (a power of
two up to ``BLOCK``, beyond that a multiple of ``BLOCK``), rotates it (random signs, then
the orthonormal Walsh–Hadamard transform on each power-of-two block of ``d'``; with more
than one block a random permutation and a second such layer mix the blocks: the mass of
any vector spreads evenly over the coordinates), scales it by ``1/γ``, rounds it
stochastically to integers until the result is within the rounded L2 bound
(conditional randomized rounding), adds N_Z(0, s²) per coordinate with
``s = σ / (γ √t)`` and reduces it mod ``2**bits``. Any ``t`` survivors together carry
noise of variance ≥ σ²/γ², the central noise of std ``σ = noise_multiplier · clip``.

The server maps the modular sum back to signed integers, multiplies by ``γ``, undoes the
rotation and divides by the number of survivors. A sum outside ``[−2**(bits−1),
2**(bits−1))`` wraps (modular clipping); ``γ`` is chosen so that ``WRAP_SIGMAS`` standard
deviations of the sum fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from fedloom.core.errors import ConfigError, FedloomError
from fedloom.core.seeding import numpy_rng
from fedloom.parts import Parts
from fedloom.privacy.budget import budget_guard
from fedloom.privacy.discrete import (
    require_opendp,
    secure_discrete_gaussian,
    seeded_discrete_gaussian,
)
from fedloom.privacy.distributed import ACCOUNTANT, DDGAccountant, rounded_l2_bound
from fedloom.secure.encoding import from_modular, modulus_bits, to_modular
from fedloom.secure.vector import Decoded

WRAP_SIGMAS = 4.0
"""Standard deviations of the sum (signal and noise, per coordinate) the modulus holds."""
BETA = math.exp(-0.5)
"""Conditional rounding's failure probability per try (KLS21's choice)."""
MAX_TRIES = 1000

Noise = Callable[[int, float, int, str], np.ndarray]
"""(length, scale, round, client) -> integer noise N_Z(0, scale²) per coordinate."""


BLOCK = 1024
"""Vectors longer than this are padded to a multiple of it, not to a power of two: the
53,002 parameters of the digits cnn take 53,248 coordinates instead of 65,536."""


def padded(dim: int) -> int:
    """``d'``: the next power of two ≥ ``dim`` up to ``BLOCK``, else the next multiple of it."""
    if dim <= BLOCK:
        return 1 << max(0, (dim - 1).bit_length())
    return -(-dim // BLOCK) * BLOCK


def blocks(length: int) -> list[int]:
    """The powers of two that sum to ``length``, largest first (its binary expansion)."""
    return [1 << b for b in reversed(range(length.bit_length())) if length >> b & 1]


def block_hadamard(vector: np.ndarray) -> np.ndarray:
    """:func:`hadamard` on each block of :func:`blocks` (orthonormal, its own inverse)."""
    out, at = np.empty(vector.shape[0]), 0
    for size in blocks(vector.shape[0]):
        out[at : at + size] = hadamard(vector[at : at + size])
        at += size
    return out


def hadamard(vector: np.ndarray) -> np.ndarray:
    """The orthonormal Walsh–Hadamard transform H/√n (its own inverse); n a power of two."""
    n = vector.shape[0]
    if n & (n - 1):
        raise ValueError(f"the Hadamard transform needs a power-of-two length, got {n}")
    out = np.array(vector, dtype=np.float64)
    h = 1
    while h < n:
        view = out.reshape(-1, 2, h)
        top, bottom = view[:, 0, :].copy(), view[:, 1, :]
        view[:, 0, :] += bottom
        view[:, 1, :] = top - bottom
        h *= 2
    return out / math.sqrt(n)


def granularity(clip: float, sigma: float, n: int, t: int, dim: int, bits: int) -> float:
    """γ: ``WRAP_SIGMAS`` standard deviations of one coordinate of the sum fit in half the
    modulus. Per coordinate, after the rotation, ``n`` aligned updates of norm ``clip``
    contribute at most about ``n·clip/√d'`` and the noise of ``n`` clients has variance
    ``n σ²/t``."""
    spread = math.sqrt((n * clip) ** 2 / dim + n * sigma**2 / t)
    return 2 * WRAP_SIGMAS * spread / 2**bits


class DDGSum:
    """The DDG encoding of one run: fixed clip, noise, modulus and rotation seed."""

    def __init__(
        self,
        dim: int,
        clip: float,
        noise_multiplier: float,
        n: int,
        threshold: int,
        bits: int,
        seed: int,
        noise: Noise,
    ) -> None:
        self.dim, self.padded = dim, padded(dim)
        self.length, self.bits = self.padded, bits
        self.clip, self.sigma = clip, noise_multiplier * clip
        self.seed, self.draw_noise = seed, noise
        self.gamma = granularity(clip, self.sigma, n, threshold, self.padded, bits)
        self.local_scale = self.sigma / (self.gamma * math.sqrt(threshold))
        self.l2_bound = rounded_l2_bound(clip / self.gamma, self.padded, BETA)
        self.noise: str | None = f"discrete Gaussian, scale {self.local_scale:.4g} per client"
        l1 = min(self.l2_bound**2, math.sqrt(self.padded) * self.l2_bound)  # integers
        self.accountant = DDGAccountant(self.l2_bound, l1, self.local_scale, threshold, self.padded)

    def _rotation(self, rnd: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The round's random signs (and, with several blocks, a permutation and second
        signs): public randomness, the same on every client."""
        rng = numpy_rng(self.seed, "ddg-rotation", rnd)
        signs = rng.choice(np.array([-1.0, 1.0]), self.padded)
        if len(blocks(self.padded)) == 1:
            return signs, None, None
        return signs, rng.permutation(self.padded), rng.choice(np.array([-1.0, 1.0]), self.padded)

    def rotate(self, flat: np.ndarray, rnd: int) -> np.ndarray:
        x = np.zeros(self.padded)
        x[: self.dim] = flat
        signs, order, second = self._rotation(rnd)
        y = block_hadamard(x * signs)
        return y if order is None or second is None else block_hadamard(y[order] * second)

    def unrotate(self, rotated: np.ndarray, rnd: int) -> np.ndarray:
        signs, order, second = self._rotation(rnd)
        y = rotated
        if order is not None and second is not None:
            y = np.empty(self.padded)
            y[order] = block_hadamard(rotated) * second
        return (block_hadamard(y) * signs)[: self.dim]

    def encode(
        self, flat: np.ndarray, num_examples: int, loss: float, rnd: int, cid: str
    ) -> np.ndarray:
        x = np.asarray(flat, dtype=np.float64)
        norm = float(np.linalg.norm(x))
        if not math.isfinite(norm):
            raise FedloomError("cannot encode an update with NaN or infinite values")
        if norm > self.clip:
            x = x * (self.clip / norm)
        scaled = self.rotate(x, rnd) / self.gamma
        rng = numpy_rng(self.seed, "ddg-rounding", rnd, cid)
        for _ in range(MAX_TRIES):  # conditional randomized rounding
            floor = np.floor(scaled)
            ints = (floor + (rng.random(scaled.shape) < scaled - floor)).astype(np.int64)
            if float(np.linalg.norm(ints)) <= self.l2_bound:
                break
        else:
            raise FedloomError("conditional rounding did not meet its L2 bound")
        noisy = ints + self.draw_noise(self.padded, self.local_scale, rnd, cid)
        return to_modular(noisy, self.bits)

    def released(self, rnd: int) -> None:
        """Count the round: masked, noised inputs reached the server. Counted even when
        the round aborts afterwards (the server may have recovered part of the masks)."""
        self.accountant.step()

    def decode(self, total: np.ndarray, survivors: int, rnd: int) -> Decoded:
        if survivors < 1:
            raise FedloomError("the secure sum has no survivors")
        signed = from_modular(total, self.bits).astype(np.float64) * self.gamma
        return Decoded(self.unrotate(signed, rnd) / survivors, survivors, None)


def noise_source(seed: int, secure: bool) -> Noise:
    """OpenDP's exact sampler (OS randomness) when ``secure``, else a seeded one."""
    if secure:
        return lambda n, scale, rnd, cid: secure_discrete_gaussian(n, scale)
    return lambda n, scale, rnd, cid: seeded_discrete_gaussian(
        numpy_rng(seed, "ddg-noise", rnd, cid), n, scale
    )


def dp_bits(secure_bits: int | None, quant_bits: int, n: int) -> int:
    """The modulus of a distributed-DP round: ``secure.bits``, else the plain rule's."""
    return secure_bits if secure_bits is not None else modulus_bits(quant_bits, n, 1)


def calibrate_multiplier(
    target: float, delta: float, rounds: int, make: Callable[[float], DDGSum]
) -> float:
    """The smallest noise multiplier (to 0.1%) whose ε after ``rounds`` is ≤ ``target``."""
    low, high = 1e-3, 1.0
    while make(high).accountant.epsilon(delta, rounds) > target:
        low, high = high, high * 2
        if high > 1e5:
            raise ConfigError([f"privacy.target_epsilon={target:g} is out of reach"])
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        if make(mid).accountant.epsilon(delta, rounds) > target:
            low = mid
        else:
            high = mid
    return high


def build_distributed(parts: Parts, dim: int, n: int, threshold: int) -> DDGSum:
    """The DDG encoding of the run, its accountant reported every round and its budget."""
    cfg, fed = parts.config.privacy, parts.config
    bits = dp_bits(fed.secure.bits, fed.secure.quant_bits, n)
    if cfg.secure_rng:
        require_opendp("privacy.secure_rng")
    noise = noise_source(fed.seed, cfg.secure_rng)

    def make(z: float) -> DDGSum:
        return DDGSum(dim, cfg.clip, z, n, threshold, bits, fed.seed, noise)

    z = cfg.noise_multiplier
    if z is None:
        if cfg.target_epsilon is None:
            raise ConfigError(["privacy.mode=distributed: set noise_multiplier or target_epsilon"])
        z = calibrate_multiplier(cfg.target_epsilon, cfg.delta, fed.rounds, make)
    codec = make(z)
    accountant = codec.accountant
    parts.stateful["ddg_accountant"] = accountant
    facts = {
        "mode": "distributed",
        "delta": cfg.delta,
        "accountant": ACCOUNTANT,
        "noise_multiplier": z,
        "granularity": codec.gamma,
        "local_noise_scale": codec.local_scale,
        "l2_sensitivity": codec.l2_bound,
        "bits": bits,
        "threshold": threshold,
    }
    parts.notes["privacy"] = facts

    def source(rnd: int) -> dict[str, Any]:
        eps = accountant.epsilon(cfg.delta)
        facts["epsilon"] = eps
        return {"epsilon": eps, "delta": cfg.delta, "accountant": ACCOUNTANT}

    parts.metric_sources.append(source)
    budget_guard(parts, cfg, lambda rnd: accountant.epsilon(cfg.delta, accountant.rounds + 1))
    return codec
