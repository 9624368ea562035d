"""The ``secure`` feature: every round becomes a SecAgg+ round (``secure.mode=secagg``).

It sets the server's round phase (:class:`SecureRound`), gives each fit message the
round's setup, and wraps every client's handler so it answers the stages. With
``privacy.mode=distributed`` the clients' integer encoding adds distributed discrete
Gaussian noise and the accountant reports ε every round.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedloom.core.seeding import numpy_rng
from fedloom.core.tensors import state_of
from fedloom.parts import Parts
from fedloom.secure.checks import round_shape
from fedloom.secure.encoding import EncodingConfig, resolve_bits
from fedloom.secure.round import SecureHandlers, SecureRound
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
    n = cfg.clients.per_round
    k, t = round_shape(s, n)
    layout = update_layout(parts)
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
    inner_factory, up = parts.transport, parts.up

    def build(handlers: Mapping[str, Handler]) -> Transport:
        return inner_factory(SecureHandlers(handlers, up, layout, codec))

    parts.transport = build
