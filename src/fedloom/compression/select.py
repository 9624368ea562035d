"""Which registered codec a ``compression.up`` / ``compression.down`` text names.

The text's head (before the first ``:``) is a codec name in the registry (kind
``codec``). A codec with the ``spec`` capability takes the whole text through the spec
grammar of ``fedloom.compression.spec`` (``topk:0.01+int8``); any other codec, a user's
plugin included, is called as ``factory(arg, ctx)`` with the text after the first ``:``
(or None). Choosing a codec imports no torch, so the config validates with it; the codec
itself is built (and its module imported) by ``build_codec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedloom.compression.spec import Spec, parse_spec
from fedloom.core.codec import CodecContext, Direction, Warmup
from fedloom.core.errors import ConfigError
from fedloom.core.registry import REGISTRY, Component, unknown_name

if TYPE_CHECKING:
    from fedloom.compression.config import CompressionConfig
    from fedloom.core.codec import Codec

SPEC = "spec"
"""Capability: the codec is part of the ``sparsifier+quantizer`` spec grammar."""
LOSSY = "lossy"
"""Capability: the codec drops information, so error feedback applies to it."""


@dataclass(frozen=True)
class CodecChoice:
    text: str
    component: Component
    spec: Spec | None
    """The parsed spec of a ``spec`` codec; None for any other codec."""
    arg: str | None
    """What a non-spec codec's factory gets: the text after the first ``:``, or None."""

    @property
    def lossless(self) -> bool:
        if self.spec is not None:
            return self.spec.lossless
        return LOSSY not in self.component.capabilities

    @property
    def factory_arg(self) -> str | None:
        return self.text if self.spec is not None else self.arg


def choose_codec(text: str) -> CodecChoice:
    """The registered codec ``text`` names; ``ValueError`` naming the problem (and the
    registered codecs, for a name that is not one)."""
    head, colon, arg = text.split("+", 1)[0].partition(":")
    head = head.strip()
    names = REGISTRY.names("codec")
    if head not in names:
        raise ValueError(unknown_name("codec", head, names))
    component = REGISTRY.component("codec", head)
    if SPEC in component.capabilities:
        return CodecChoice(text, component, parse_spec(text), None)
    if "+" in text:
        spec_names = [c.name for c in REGISTRY.components("codec") if SPEC in c.capabilities]
        raise ValueError(
            f"{text!r}: only spec codecs ({', '.join(spec_names)}) combine with '+'; "
            f"{head!r} is a codec of its own"
        )
    return CodecChoice(text, component, None, arg if colon else None)


def check_codec(text: str, direction: Direction) -> str:
    """``text`` if it names a codec usable in ``direction``, else ``ValueError``."""
    choice = choose_codec(text)
    if direction == "down" and choice.spec is not None and choice.spec.sparsifier is not None:
        raise ValueError(
            f"{text!r}: a sparsifier would drop most of the model's weights; "
            "use compression.prune to sparsify the global model"
        )
    return text


def is_lossless(text: str) -> bool:
    """A spec's own ``lossless``; for any other codec, whether it lacks ``lossy``."""
    return choose_codec(text).lossless


def is_sparse(text: str) -> bool:
    """Whether ``text`` is a spec with a sparsifier (``topk``, ``randk``)."""
    spec = choose_codec(text).spec
    return spec is not None and spec.sparsifier is not None


def warmup_of(cfg: CompressionConfig, direction: Direction) -> Warmup | None:
    """The uplink's density warm-up (``compression.warmup_rounds``), None without one."""
    if direction == "down" or cfg.warmup_rounds == 0:
        return None
    return Warmup(cfg.warmup_rounds, cfg.warmup_density)


def build_codec(text: str, cfg: CompressionConfig, seed: int, direction: Direction) -> Codec:
    """The codec ``text`` names, built by its registered factory; a factory's
    ``ValueError`` (a bad argument) becomes a ``ConfigError`` naming the key."""
    key = f"compression.{direction}"
    try:
        choice = choose_codec(text)
        codec = choice.component.load()(
            choice.factory_arg,
            CodecContext(seed, cfg.chunk, direction, warmup_of(cfg, direction)),
        )
    except ValueError as error:
        raise ConfigError([f"{key}: {error}"]) from None
    if not (callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))):
        raise TypeError(f"{key}: codec {text!r} built a {type(codec).__name__}, not a Codec")
    return codec  # type: ignore[no-any-return]
