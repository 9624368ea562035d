"""The client side of one SecAgg+ round, as a state machine over stage messages.

A client is created from the server's :class:`RoundSetup` and answers each of the
server's messages in order: ``advertise`` → ``share_keys`` → ``masked_input`` →
``unmask``. A message out of order, for another round or inconsistent with what the
client already knows is refused with :class:`UpdateRejected`; the client never reveals
both secrets of one peer.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping

import numpy as np

from fedloom.core.errors import FedloomError, UpdateRejected
from fedloom.secure import crypto, graph, shamir
from fedloom.secure.encoding import MAX_BITS, pack
from fedloom.secure.messages import (
    AdvertiseKeys,
    ForwardedShares,
    KeyDirectory,
    MaskedInput,
    RoundSetup,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedloom.secure.shares import ShareBundle, open_bundle, seal_bundle


class ClientStage(enum.Enum):
    ADVERTISE = "advertise-keys"
    SHARE = "share-keys"
    MASK = "masked-input"
    UNMASK = "unmask"
    DONE = "done"


def check_setup(setup: RoundSetup) -> None:
    """Reject round parameters no honest server sends."""
    problems = []
    if len(set(setup.clients)) != len(setup.clients) or any(c < 0 for c in setup.clients):
        problems.append("client ids must be distinct and non-negative")
    if not 1 <= setup.bits <= MAX_BITS:
        problems.append(f"bits={setup.bits} is outside 1..{MAX_BITS}")
    if setup.length < 1:
        problems.append(f"length={setup.length} must be positive")
    if not 1 <= setup.threshold <= setup.neighbors < max(2, len(setup.clients)):
        problems.append(
            f"need 1 <= threshold ({setup.threshold}) <= neighbors ({setup.neighbors})"
            f" < clients ({len(setup.clients)})"
        )
    if len(setup.commitment) != 32:
        problems.append("graph commitment must be 32 bytes")
    if problems:
        raise UpdateRejected("round setup refused: " + "; ".join(problems))


class SecAggClient:
    """One client's secrets and progress in one round."""

    def __init__(self, client_id: int, setup: RoundSetup) -> None:
        check_setup(setup)
        if client_id not in setup.clients:
            raise UpdateRejected(f"client {client_id} is not part of round {setup.round}")
        self.id = client_id
        self.setup = setup
        self.stage = ClientStage.ADVERTISE
        self._cipher_key = crypto.new_private_key()
        self._mask_key = crypto.new_private_key()
        self._self_seed = crypto.random_bytes()
        self._neighbors: frozenset[int] = frozenset()
        self._mask_keys: dict[int, bytes] = {}
        self._cipher_keys: dict[int, bytes] = {}
        self._held: dict[int, ShareBundle] = {}

    def _enter(self, expected: ClientStage, message_round: int, kind: str) -> None:
        if self.stage is not expected:
            raise UpdateRejected(
                f"client {self.id}: {kind} during stage {self.stage.value}"
                " (replayed or out of order)"
            )
        if message_round != self.setup.round:
            raise UpdateRejected(
                f"client {self.id}: {kind} for round {message_round}, this is {self.setup.round}"
            )

    def advertise(self) -> AdvertiseKeys:
        """Stage 1: two fresh public keys."""
        self._enter(ClientStage.ADVERTISE, self.setup.round, "advertise")
        self.stage = ClientStage.SHARE
        return AdvertiseKeys(
            round=self.setup.round,
            sender=self.id,
            cipher_key=crypto.public_bytes(self._cipher_key),
            mask_key=crypto.public_bytes(self._mask_key),
            seed_commitment=crypto.seed_commitment(self.setup.round, self.id, self._self_seed),
        )

    def share_keys(self, directory: KeyDirectory) -> ShareKeys:
        """Stage 2: check the directory, then seal shares of both secrets to each neighbour."""
        self._enter(ClientStage.SHARE, directory.round, "key directory")
        self._check_directory(directory)
        xs = [v + 1 for v in sorted(self._neighbors)]
        t, rand = self.setup.threshold, secrets.randbelow
        self_mask = shamir.split(int.from_bytes(self._self_seed, "big"), t, xs, rand)
        own_key = int.from_bytes(crypto.private_bytes(self._mask_key), "big")
        key = shamir.split(own_key, t, xs, rand)
        sealed = {
            v: seal_bundle(
                ShareBundle(self.id, v, self_mask[v + 1], key[v + 1]),
                self.setup.round,
                self._cipher_key,
                self._cipher_keys[v],
            )
            for v in sorted(self._neighbors)
        }
        self.stage = ClientStage.MASK
        return ShareKeys(round=self.setup.round, sender=self.id, ciphertexts=sealed)

    def _check_directory(self, directory: KeyDirectory) -> None:
        if graph.commitment(directory.graph_seed) != self.setup.commitment:
            raise UpdateRejected("graph seed does not match the server's commitment")
        members = set(directory.clients)
        if len(members) != len(directory.clients) or not members <= set(self.setup.clients):
            raise UpdateRejected("key directory lists clients outside the round or twice")
        if self.id not in members:
            raise UpdateRejected(f"key directory omits client {self.id}")
        mine = graph.neighbors(directory.graph_seed, directory.clients, self.setup.neighbors)
        self._neighbors = mine[self.id]
        if len(self._neighbors) < self.setup.threshold:
            raise UpdateRejected(
                f"{len(self._neighbors)} neighbours cannot meet threshold {self.setup.threshold}"
            )
        for name, keys in (("cipher", directory.cipher_keys), ("mask", directory.mask_keys)):
            if set(keys) != self._neighbors:
                raise UpdateRejected(f"key directory {name} keys do not match the neighbour set")
        own = {crypto.public_bytes(self._cipher_key), crypto.public_bytes(self._mask_key)}
        every = [*directory.cipher_keys.values(), *directory.mask_keys.values(), *own]
        if len(set(every)) != len(every):
            raise UpdateRejected("key directory repeats a public key")
        for raw in every:
            crypto.load_public(raw)
        self._cipher_keys = dict(directory.cipher_keys)
        self._mask_keys = dict(directory.mask_keys)

    def masked_input(self, forwarded: ForwardedShares, vector: np.ndarray) -> MaskedInput:
        """Stage 3: keep the neighbours' shares, send ``x + PRG(b) + Σ ±PRG(s_uv)``."""
        self._enter(ClientStage.MASK, forwarded.round, "forwarded shares")
        x = self._checked_input(vector)
        senders = set(forwarded.ciphertexts)
        if not senders <= self._neighbors:
            raise UpdateRejected("forwarded shares come from clients that are not neighbours")
        if len(senders) < self.setup.threshold:
            raise UpdateRejected(
                f"only {len(senders)} neighbours shared keys; threshold is {self.setup.threshold}"
            )
        self._held = {
            v: open_bundle(
                sealed, self.setup.round, v, self.id, self._cipher_key, self._cipher_keys[v]
            )
            for v, sealed in forwarded.ciphertexts.items()
        }
        masked = self._mask(x, sorted(senders))
        self.stage = ClientStage.UNMASK
        return MaskedInput(
            round=self.setup.round, sender=self.id, vector=pack(masked, self.setup.bits)
        )

    def _checked_input(self, vector: np.ndarray) -> np.ndarray:
        x = np.asarray(vector)
        if x.shape != (self.setup.length,) or x.dtype != np.uint64:
            raise FedloomError(
                f"input must be a uint64 vector of length {self.setup.length},"
                f" got {x.dtype} {x.shape}"
            )
        if self.setup.bits < MAX_BITS and int(x.max()) >> self.setup.bits:
            raise FedloomError(f"input has values outside [0, 2**{self.setup.bits})")
        return x

    def _mask(self, x: np.ndarray, partners: list[int]) -> np.ndarray:
        length, bits, round_id = self.setup.length, self.setup.bits, self.setup.round
        y = x + crypto.prg_mask(self._self_seed, length, bits)
        for v in partners:
            seed = crypto.derive_key(
                self._mask_key, self._mask_keys[v], crypto.mask_purpose(round_id, self.id, v)
            )
            pairwise = crypto.prg_mask(seed, length, bits)
            y = y + pairwise if self.id < v else y - pairwise
        return y if bits == MAX_BITS else y & np.uint64((1 << bits) - 1)

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Stage 4: self-mask shares of survivors, key shares of the dropped, never both."""
        self._enter(ClientStage.UNMASK, request.round, "unmask request")
        alive, dropped = set(request.alive), set(request.dropped)
        if len(alive) != len(request.alive) or len(dropped) != len(request.dropped):
            raise UpdateRejected("unmask request repeats a client")
        if alive & dropped:
            raise UpdateRejected("unmask request lists a client as both alive and dropped")
        if alive | dropped != set(self._held):
            raise UpdateRejected("unmask request does not partition the clients that shared keys")
        if len(alive) + 1 < self.setup.threshold:
            raise UpdateRejected(
                f"only {len(alive) + 1} survivors in the neighbourhood;"
                f" threshold is {self.setup.threshold}"
            )
        self.stage = ClientStage.DONE
        return UnmaskResponse(
            round=self.setup.round,
            sender=self.id,
            self_mask_shares=_share_bytes(self._held, alive, "self_mask_share"),
            key_shares=_share_bytes(self._held, dropped, "key_share"),
        )


def _share_bytes(held: Mapping[int, ShareBundle], owners: set[int], field: str) -> dict[int, bytes]:
    return {v: shamir.to_bytes(getattr(held[v], field)) for v in sorted(owners)}
