"""Simulated clients for big federations: built when sampled, their state in one store.

``build_clients`` makes every client up front, each holding its data and its state in
memory: O(clients × data) and O(clients × model). A ``ClientPool`` makes client k only when
a round samples it: its data (``parts.client_data`` / the dataset's ``client``, which an
on-demand dataset generates now), its state read from the ``ClientStateStore``; after the
fit the new state goes back to the store's journal and the client is dropped. Memory is
one client's data and one model's state at a time, whatever the federation's size.

``clients.lazy`` chooses: ``on``, ``off``, or ``auto`` (a pool when the dataset builds its
clients on demand or there are more than ``EAGER_LIMIT`` = 1000 clients).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping

from fedloom.client.client import Client
from fedloom.client.store import ClientStateStore
from fedloom.config import FedConfig
from fedloom.core.message import Message
from fedloom.data.base import FederatedDataset
from fedloom.data.ondemand import OnDemandFederatedDataset
from fedloom.simulation.pool_checks import pooled
from fedloom.transport.inprocess import Handler

ClientMaker = Callable[[str], Client]
"""Client ``cid`` with its data (and the run's hooks, codecs and shared model), no state."""


def use_pool(config: FedConfig, data: FederatedDataset) -> bool:
    """Whether ``clients.lazy`` (on, off, auto) builds clients only when sampled (``auto``
    also for a user's on-demand dataset)."""
    on_demand = isinstance(data, OnDemandFederatedDataset) and config.clients.lazy == "auto"
    return pooled(config) or on_demand


class ClientPool(Mapping[str, Client]):
    """``pool[cid]``: a new ``Client`` for ``cid`` with its stored state (a reader's copy:
    only a fit through ``handlers()`` writes its state back). Iterating yields every id."""

    def __init__(self, make: ClientMaker, num_clients: int, store: ClientStateStore) -> None:
        self.make = make
        self.num_clients = num_clients
        self.store = store
        self.built = 0
        """Clients built so far."""
        self.alive: weakref.WeakSet[Client] = weakref.WeakSet()
        """The clients built by this pool that are still referenced somewhere."""

    def __getitem__(self, cid: str) -> Client:
        if cid not in self:
            raise KeyError(cid)
        client = self.make(cid)
        client.state = self.store.get(cid)
        self.built += 1
        self.alive.add(client)
        return client

    def __contains__(self, cid: object) -> bool:
        if not (isinstance(cid, str) and cid.isascii() and cid.isdigit()):
            return False
        return int(cid) < self.num_clients

    def __len__(self) -> int:
        return self.num_clients

    def __iter__(self) -> Iterator[str]:
        return (str(k) for k in range(self.num_clients))

    def fit(self, cid: str, message: Message) -> Message:
        """Build client ``cid``, run its fit, keep its new state, drop it."""
        client = self[cid]
        had_state = bool(client.state)
        reply = client.handle(message)
        if client.state or had_state:
            self.store.put(message.round, cid, client.state)
        return reply

    def handlers(self) -> Mapping[str, Handler]:
        return _PoolHandlers(self)


class _PoolHandlers(Mapping[str, Handler]):
    """The transport's view of a pool: ``handlers[cid](message)`` is ``pool.fit``."""

    def __init__(self, pool: ClientPool) -> None:
        self.pool = pool

    def __getitem__(self, cid: str) -> Handler:
        if cid not in self.pool:
            raise KeyError(cid)
        return lambda message: self.pool.fit(cid, message)

    def __len__(self) -> int:
        return len(self.pool)

    def __iter__(self) -> Iterator[str]:
        return iter(self.pool)


Clients = dict[str, Client] | ClientPool
"""A simulation's clients: built up front, or a pool."""


def handlers_of(clients: Clients) -> Mapping[str, Handler]:
    """What the transport calls for each client id."""
    if isinstance(clients, ClientPool):
        return clients.handlers()
    return {cid: c.handle for cid, c in clients.items()}


def stage_states(clients: Clients, store: ClientStateStore, rnd: int) -> None:
    """Put the state of clients built up front in round ``rnd``'s journal (a pool's
    clients wrote theirs as they finished)."""
    if isinstance(clients, ClientPool):
        return
    for cid, client in clients.items():
        if client.state:
            store.put(rnd, cid, client.state)


def load_states(clients: Clients, store: ClientStateStore) -> None:
    """Give clients built up front their stored state (a pool reads it per fit)."""
    if isinstance(clients, ClientPool):
        return
    for cid, state in store.items():
        clients[cid].state = state
