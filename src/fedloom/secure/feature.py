"""The ``secure`` feature: every round becomes a SecAgg+ round (``secure.mode=secagg``).

It sets the server's round phase (:class:`SecureRound`), gives each fit message the
round's setup, and wraps every client's handler so it answers the stages. With
``privacy.mode=distributed`` the clients' integer encoding adds distributed discrete
Gaussian noise and the accountant reports ε every round.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping

import numpy as np

from fedloom.core.seeding import numpy_rng
from fedloom.core.tensors import state_of
from fedloom.parts import Parts
from fedloom.secure.checks import round_shape
from fedloom.secure.encoding import EncodingConfig, resolve_bits
from fedloom.secure.round import SecureClientHandler, SecureRound, WrappedHandlers
from fedloom.secure.vector import Layout, QuantizedSum, VectorCodec
from fedloom.transport.base import Transport
from fedloom.transport.inprocess import Handler


def update_layout(parts: Parts) -> Layout:
    """How the trainable tensors (and the strategy's extras) are flattened."""
    state = {n: t for n, t in state_of(parts.model).items() if parts.trainable(n)}
    expected = {**state, **parts.strategy.update_extras(state)}
    return Layout.of(
        {n: tuple(t.shape) for n, t in expected.items()}, {n: t.dtype for n, t in expected.items()}
    )


def secure_feature(parts: Parts) -> None:
    cfg = parts.config
    s = cfg.secure
    if s.mode == "none":
        return
    layout = update_layout(parts)
    if s.mode == "ckks":
        _ckks(parts, layout)
        return
    n = cfg.clients.per_round
    k, t = round_shape(s, n)
    codec: VectorCodec
    if cfg.privacy.mode == "distributed":
        from fedloom.privacy.ddg import build_distributed

        codec = build_distributed(parts, layout.size, n, t)
    else:
        encoding = EncodingConfig(clip=s.clip, quant_bits=s.quant_bits, max_weight=s.max_weight)
        bits = resolve_bits(s.quant_bits, n, s.max_weight, s.bits)

        def rng_for(rnd: int, cid: str) -> np.random.Generator:
            return numpy_rng(cfg.seed, "secagg-rounding", rnd, cid)

        codec = QuantizedSum(layout.size, encoding, bits, s.loss_clip, rng_for)
    phase = SecureRound(codec, layout, k, t)
    parts.phase = phase
    parts.stage_reply_bytes = phase.reply_limit(min(k, n - 1))
    parts.instructions.append(phase.instruct)
    parts.metric_sources.append(phase.metrics)
    parts.notes["secure"] = {
        "mode": s.mode,
        "neighbors": min(k, n - 1),
        "threshold": t,
        "bits": codec.bits,
        "length": codec.length,
        "noise": codec.noise,
    }
    up = parts.up

    def make(inner: Handler, cid: str) -> SecureClientHandler:
        return SecureClientHandler(inner, cid, up, layout, codec)

    _wrap_clients(parts, make)


def _wrap_clients(parts: Parts, make: Callable[[Handler, str], Handler]) -> None:
    """Every client answers the secure round's messages through ``make(its handler, id)``:
    simulated clients through the run's transport, a networked one in its own process."""
    parts.client_handler = make
    inner_factory = parts.transport

    def build(handlers: Mapping[str, Handler]) -> Transport:
        return inner_factory(WrappedHandlers(handlers, make))

    parts.transport = build


def _ckks(parts: Parts, layout: Layout) -> None:
    """Start the key holder (its own process, stopped with the round phase), hand the
    clients its public context, and make every round an encrypted sum."""
    from fedloom.secure.authority import KeyAuthority
    from fedloom.secure.ckks import CkksParams
    from fedloom.secure.ckks_round import CkksClientHandler, CkksRound

    params = CkksParams()
    authority = KeyAuthority(params)
    phase = CkksRound(authority, authority.public_context(), layout, params)
    weakref.finalize(phase, authority.close)
    parts.phase = phase
    parts.instructions.append(phase.instruct)
    parts.metric_sources.append(phase.metrics)
    parts.notes["secure"] = {
        "mode": "ckks",
        "poly_modulus_degree": params.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(params.coeff_mod_bit_sizes),
        "scale_bits": params.scale_bits,
        "length": phase.length,
    }
    up, max_weight = parts.up, parts.config.secure.max_weight

    def make(handler: Handler, cid: str) -> CkksClientHandler:
        return CkksClientHandler(handler, cid, up, layout, phase.public, params, max_weight)

    _wrap_clients(parts, make)
