"""Codec specs such as ``int8`` or ``topk:0.01+int8``: an optional sparsifier, then a quantizer.

Parsing only checks the text; a spec that does not parse raises ``ValueError`` naming the
choices (the config layer turns that into a ``ConfigError`` with the key).
"""

from __future__ import annotations

from dataclasses import dataclass

SPARSIFIERS = ("topk", "randk")
QUANTIZERS = ("f32", "fp16", "bf16", "int8", "int4")


@dataclass(frozen=True)
class Spec:
    sparsifier: str | None
    """``topk`` or ``randk``, or None for dense."""
    fraction: float
    """Share of each tensor's entries a sparsifier keeps (1.0 when dense)."""
    quantizer: str
    """How the kept values are written: ``f32`` (lossless for float32) up to ``int4``."""

    @property
    def lossless(self) -> bool:
        return self.sparsifier is None and self.quantizer == "f32"


def _parse_sparsifier(token: str) -> tuple[str, float]:
    name, _, raw = token.partition(":")
    try:
        fraction = float(raw)
    except ValueError:
        raise ValueError(f"{token!r}: {name} needs a fraction, e.g. {name}:0.01") from None
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"{token!r}: the fraction must be in (0, 1]")
    return name, fraction


def parse_spec(text: str) -> Spec:
    """``"topk:0.01+int8"`` -> Spec("topk", 0.01, "int8"); ``"none"`` -> lossless float32."""
    tokens = [t.strip() for t in text.split("+")] if text.strip() else []
    sparsifier, fraction, quantizer = None, 1.0, None
    for token in tokens:
        head = token.partition(":")[0]
        if head in SPARSIFIERS and sparsifier is None and quantizer is None:
            sparsifier, fraction = _parse_sparsifier(token)
        elif token in QUANTIZERS and quantizer is None:
            quantizer = token
        elif token == "none" and len(tokens) == 1:
            quantizer = "f32"
        else:
            raise ValueError(
                f"{text!r}: cannot use {token!r} here; a spec is 'none', one of "
                f"{', '.join(QUANTIZERS)}, or {'/'.join(SPARSIFIERS)}:FRACTION optionally "
                "followed by '+' and a quantizer"
            )
    if quantizer is None and sparsifier is None:
        raise ValueError(f"{text!r}: empty codec spec")
    return Spec(sparsifier, fraction, quantizer or "f32")
