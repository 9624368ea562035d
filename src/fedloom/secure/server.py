"""The server side of one SecAgg+ round, as a state machine over stage messages.

The server drives the stages: it sends :meth:`setup`, collects each stage's messages
with :meth:`receive` (the caller passes the sender its authenticated channel vouches
for), and closes the stage to get the next messages to send. Clients that do not answer
a stage are dropped from then on. :meth:`finish` recovers the masks of the survivors and
of the dropped and returns the exact sum of the survivors' inputs mod ``2**bits``, or
raises :class:`SecAggAborted`; it never returns a wrong sum.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedloom.core.errors import ConfigError, FedloomError, UpdateRejected
from fedloom.secure import crypto, graph, shamir
from fedloom.secure.encoding import MAX_BITS, unpack
from fedloom.secure.errors import SecAggAborted
from fedloom.secure.messages import (
    AdvertiseKeys,
    ClientMessage,
    ForwardedShares,
    KeyDirectory,
    MaskedInput,
    RoundSetup,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedloom.secure.shares import SEALED_BYTES


class ServerStage(enum.Enum):
    ADVERTISE = "advertise-keys"
    SHARE = "share-keys"
    MASK = "masked-input"
    UNMASK = "unmask"
    DONE = "done"


_EXPECTED: dict[ServerStage, type] = {
    ServerStage.ADVERTISE: AdvertiseKeys,
    ServerStage.SHARE: ShareKeys,
    ServerStage.MASK: MaskedInput,
    ServerStage.UNMASK: UnmaskResponse,
}


@dataclass(frozen=True)
class SecureSum:
    """The outcome of a round: the sum mod ``2**bits`` and whose inputs it holds."""

    total: np.ndarray
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


class SecAggServer:
    """One round of SecAgg+ seen from the server."""

    def __init__(
        self,
        round_id: int,
        clients: Sequence[int],
        length: int,
        bits: int,
        neighbors: int | None = None,
        threshold: int | None = None,
        graph_seed: bytes | None = None,
    ) -> None:
        n = len(clients)
        k = graph.neighbor_count(n) if neighbors is None else neighbors
        t = graph.default_threshold(k) if threshold is None else threshold
        _check_params(clients, length, bits, k, t)
        self.round = round_id
        self.clients = tuple(sorted(clients))
        self.length, self.bits, self.neighbors, self.threshold = length, bits, k, t
        self._graph_seed = crypto.random_bytes() if graph_seed is None else graph_seed
        self.stage = ServerStage.ADVERTISE
        self._expected: set[int] = set(self.clients)
        self._got: dict[int, ClientMessage] = {}
        self._keys: dict[int, AdvertiseKeys] = {}
        self._graph: dict[int, frozenset[int]] = {}
        self._shared: dict[int, ShareKeys] = {}
        self._masked: set[int] = set()
        self._total = np.zeros(length, dtype=np.uint64)
        self._requests: dict[int, UnmaskRequest] = {}

    def setup(self) -> RoundSetup:
        return RoundSetup(
            round=self.round,
            clients=self.clients,
            length=self.length,
            bits=self.bits,
            neighbors=self.neighbors,
            threshold=self.threshold,
            commitment=graph.commitment(self._graph_seed),
        )

    def receive(self, sender: int, message: ClientMessage) -> None:
        """Accept one stage message from ``sender`` or reject it with the reason."""
        expected = _EXPECTED.get(self.stage)
        kind = type(message).__name__
        if expected is None or type(message) is not expected:
            raise UpdateRejected(f"{kind} from {sender} during stage {self.stage.value}")
        if message.round != self.round:
            raise UpdateRejected(
                f"{kind} from {sender} is for round {message.round}, not {self.round}"
            )
        if message.sender != sender:
            raise UpdateRejected(f"{kind} claims sender {message.sender} on {sender}'s channel")
        if sender not in self._expected:
            raise UpdateRejected(f"client {sender} is not expected at stage {self.stage.value}")
        if sender in self._got:
            raise UpdateRejected(f"{kind} from {sender} replayed in stage {self.stage.value}")
        self._got[sender] = self._validate(sender, message)

    def _validate(self, sender: int, message: ClientMessage) -> ClientMessage:
        """Check ``message``; return what to keep of it (a masked vector is summed away)."""
        if isinstance(message, AdvertiseKeys):
            self._check_keys(message)
        elif isinstance(message, ShareKeys):
            if set(message.ciphertexts) != self._graph[sender]:
                raise UpdateRejected(f"shares from {sender} are not addressed to its neighbours")
            if any(len(c) != SEALED_BYTES for c in message.ciphertexts.values()):
                raise UpdateRejected(f"a share ciphertext from {sender} has the wrong size")
        elif isinstance(message, MaskedInput):
            self._total += unpack(message.vector, self.length, self.bits)
            self._masked.add(sender)
            return dataclasses.replace(message, vector=b"")  # O(model) memory, not O(n·model)
        elif isinstance(message, UnmaskResponse):
            request = self._requests[sender]
            if set(message.self_mask_shares) != set(request.alive) or set(
                message.key_shares
            ) != set(request.dropped):
                raise UpdateRejected(f"unmask response from {sender} does not match its request")
            for raw in [*message.self_mask_shares.values(), *message.key_shares.values()]:
                shamir.from_bytes(raw)
        return message

    def _check_keys(self, message: AdvertiseKeys) -> None:
        crypto.load_public(message.cipher_key)
        crypto.load_public(message.mask_key)
        if len(message.seed_commitment) != 32:
            raise UpdateRejected(f"client {message.sender} sent a malformed seed commitment")
        seen = {k for m in self._got.values() if isinstance(m, AdvertiseKeys) for k in _pair(m)}
        if message.cipher_key == message.mask_key or seen & set(_pair(message)):
            raise UpdateRejected(f"client {message.sender} advertised a repeated public key")

    def _close(self, stage: ServerStage, following: ServerStage) -> dict[int, ClientMessage]:
        if self.stage is not stage:
            raise FedloomError(f"cannot close stage {stage.value} during {self.stage.value}")
        got, self._got = self._got, {}
        self.stage = following
        self._expected = set(got)
        return got

    def close_advertise(self) -> dict[int, KeyDirectory]:
        """End stage 1: reveal the graph seed, send each client its neighbours' keys."""
        got = self._close(ServerStage.ADVERTISE, ServerStage.SHARE)
        self._keys = {u: m for u, m in got.items() if isinstance(m, AdvertiseKeys)}
        if len(self._keys) - 1 < self.threshold:
            self._abort(f"{len(self._keys)} clients advertised keys; threshold {self.threshold}")
        members = tuple(sorted(self._keys))
        self._graph = graph.neighbors(self._graph_seed, members, self.neighbors)
        return {
            u: KeyDirectory(
                round=self.round,
                graph_seed=self._graph_seed,
                clients=members,
                cipher_keys={v: self._keys[v].cipher_key for v in sorted(self._graph[u])},
                mask_keys={v: self._keys[v].mask_key for v in sorted(self._graph[u])},
            )
            for u in members
        }

    def close_shares(self) -> dict[int, ForwardedShares]:
        """End stage 2: forward each client the ciphertexts its neighbours sealed for it."""
        got = self._close(ServerStage.SHARE, ServerStage.MASK)
        self._shared = {u: m for u, m in got.items() if isinstance(m, ShareKeys)}
        for u in sorted(self._shared):
            present = len(self._graph[u] & set(self._shared))
            if present < self.threshold:
                self._abort(
                    f"client {u} has {present} neighbours with shares, needs {self.threshold}"
                )
        return {
            u: ForwardedShares(
                round=self.round,
                ciphertexts={
                    v: self._shared[v].ciphertexts[u]
                    for v in sorted(self._graph[u] & set(self._shared))
                },
            )
            for u in sorted(self._shared)
        }

    def close_masked(self) -> dict[int, UnmaskRequest]:
        """End stage 3: tell each survivor which of its share partners survived."""
        self._close(ServerStage.MASK, ServerStage.UNMASK)
        if len(self._masked) < self.threshold:
            self._abort(f"{len(self._masked)} masked inputs; threshold {self.threshold}")
        self._requests = {
            u: UnmaskRequest(
                round=self.round,
                alive=tuple(sorted(self._partners(u) & self._masked)),
                dropped=tuple(sorted(self._partners(u) - self._masked)),
            )
            for u in sorted(self._masked)
        }
        return dict(self._requests)

    def _partners(self, u: int) -> set[int]:
        return set(self._graph[u]) & set(self._shared)

    def finish(self) -> SecureSum:
        """End stage 4: remove every mask and return the survivors' exact sum."""
        got = self._close(ServerStage.UNMASK, ServerStage.DONE)
        responses = {u: m for u, m in got.items() if isinstance(m, UnmaskResponse)}
        total = self._total.copy()
        for u in sorted(self._masked):
            shares = {
                v + 1: r.self_mask_shares[u]
                for v, r in responses.items()
                if u in r.self_mask_shares
            }
            seed = self._recover(shares, f"self-mask seed of client {u}")
            if crypto.seed_commitment(self.round, u, seed) != self._keys[u].seed_commitment:
                self._abort(f"the recovered self-mask seed of client {u} does not match its hash")
            total -= crypto.prg_mask(seed, self.length, self.bits)
        dropped = tuple(sorted(set(self._shared) - self._masked))
        for v in dropped:
            shares = {w + 1: r.key_shares[v] for w, r in responses.items() if v in r.key_shares}
            total -= self._pairwise_sum(v, self._recover(shares, f"mask key of client {v}"))
        if self.bits < MAX_BITS:
            total &= np.uint64((1 << self.bits) - 1)
        return SecureSum(total=total, survivors=tuple(sorted(self._masked)), dropped=dropped)

    def _recover(self, shares: Mapping[int, bytes], what: str) -> bytes:
        if len(shares) < self.threshold:
            self._abort(f"{len(shares)} shares of the {what}; threshold {self.threshold}")
        points = {x: shamir.from_bytes(raw) for x, raw in shares.items()}
        secret = shamir.reconstruct(points, self.threshold)
        if secret >> (8 * crypto.KEY_BYTES):
            self._abort(f"the recovered {what} is not a 32-byte value")
        return secret.to_bytes(crypto.KEY_BYTES, "big")

    def _pairwise_sum(self, v: int, mask_secret: bytes) -> np.ndarray:
        """Σ over v's surviving partners u of the ±PRG(s_uv) that u added for v."""
        key = crypto.load_private(mask_secret)
        if crypto.public_bytes(key) != self._keys[v].mask_key:
            self._abort(f"the recovered mask key of client {v} does not match its public key")
        total = np.zeros(self.length, dtype=np.uint64)
        for u in sorted(self._partners(v) & self._masked):
            seed = crypto.derive_key(
                key, self._keys[u].mask_key, crypto.mask_purpose(self.round, u, v)
            )
            pairwise = crypto.prg_mask(seed, self.length, self.bits)
            total = total + pairwise if u < v else total - pairwise
        return total

    def _abort(self, reason: str) -> None:
        self.stage = ServerStage.DONE
        raise SecAggAborted(f"secure aggregation round {self.round} aborted: {reason}")


def _pair(message: AdvertiseKeys) -> tuple[bytes, bytes]:
    return message.cipher_key, message.mask_key


def _check_params(clients: Sequence[int], length: int, bits: int, k: int, t: int) -> None:
    problems = []
    if len(set(clients)) != len(clients) or any(c < 0 or c >= 2**32 for c in clients):
        problems.append("secure aggregation client ids must be distinct and in [0, 2**32)")
    if length < 1:
        problems.append(f"secure aggregation vector length must be positive, got {length}")
    if not 1 <= bits <= MAX_BITS:
        problems.append(f"secure.bits={bits} is outside 1..{MAX_BITS}")
    if not 1 <= k < max(2, len(clients)):
        problems.append(f"secure.neighbors={k} must be in 1..{len(clients) - 1}")
    if not 1 <= t <= k:
        problems.append(f"secure.threshold={t} must be in 1..neighbors ({k})")
    if problems:
        raise ConfigError(problems)
