"""SecAgg+ protocol cost: bytes per client and CPU seconds, no training.

    .venv/bin/python bench/secure_protocol.py                 # n = 16, 64; cnn-sized vector
    .venv/bin/python bench/secure_protocol.py --clients 16 64 256 --dropout 0 0.1

Each row runs one full round (every message through its wire encoding) on random
integers: the cnn's 206,922 parameters plus the weight coordinate, modulus sized by
``modulus_bits(quant_bits, n, max_weight)``. Dropouts go silent after sharing keys and
before the masked input, the costlier case for the server: it recovers each one's mask
key and regenerates its pairwise masks with every surviving neighbour. Bytes are per
surviving client, averaged; CPU seconds are ``time.process_time`` per surviving client
(mean) and for the server (total).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Mapping

import numpy as np

from fedloom.secure import graph
from fedloom.secure.encoding import modulus_bits, packed_size
from fedloom.secure.server import SecAggServer
from fedloom.secure.simulate import Dropouts, run_round

CNN_PARAMETERS = 206_922


class LazyInputs(Mapping[int, np.ndarray]):
    """Each client's random vector, made when asked (256 x 1.6 MB need not sit in memory)."""

    def __init__(self, n: int, length: int, bits: int) -> None:
        self.n, self.length, self.bits = n, length, bits

    def __getitem__(self, u: int) -> np.ndarray:
        rng = np.random.default_rng(u)
        return rng.integers(0, 2**self.bits, self.length, dtype=np.uint64)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


def row(n: int, dropout: float, quant_bits: int, max_weight: int) -> dict[str, float]:
    length = CNN_PARAMETERS + 1
    bits = modulus_bits(quant_bits, n, max_weight)
    server = SecAggServer(0, list(range(n)), length, bits)
    order = graph.ring_order(bytes(32), list(range(n)))
    lost = frozenset(order[:: max(1, round(1 / dropout))][: int(dropout * n)]) if dropout else None
    drops = Dropouts(before_masked=lost or frozenset())
    start = time.perf_counter()
    result, traffic = run_round(server, LazyInputs(n, length, bits), drops)
    wall = time.perf_counter() - start
    alive = [u for u in range(n) if u not in drops.before_masked]
    up = float(np.mean([traffic.up[u] for u in alive]))
    down = float(np.mean([traffic.down[u] for u in alive]))
    return {
        "n": n,
        "k": server.neighbors,
        "t": server.threshold,
        "bits": bits,
        "dropped": len(drops.before_masked),
        "up": up,
        "down": down,
        "vector": packed_size(length, bits),
        "bits_per_coord": 8 * (up + down) / CNN_PARAMETERS,
        "client_cpu": float(np.mean([traffic.client_cpu_s[u] for u in alive])),
        "server_cpu": traffic.server_cpu_s,
        "wall": wall,
        "survivors": len(result.survivors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.0])
    parser.add_argument("--quant-bits", type=int, default=8)
    parser.add_argument("--max-weight", type=int, default=1)
    args = parser.parse_args()
    print(
        "| n | k | t | bits | dropped | up B/client | down B/client | masked vector B"
        " | bits/coord (up+down) | client CPU s | server CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.clients:
        for dropout in args.dropout:
            r = row(n, dropout, args.quant_bits, args.max_weight)
            print(
                f"| {r['n']} | {r['k']} | {r['t']} | {r['bits']} | {r['dropped']}"
                f" | {r['up']:,.0f} | {r['down']:,.0f} | {r['vector']:,}"
                f" | {r['bits_per_coord']:.2f} | {r['client_cpu']:.3f} | {r['server_cpu']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
