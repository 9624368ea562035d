"""Secure aggregation in real runs: bytes, CPU, dropouts and accuracy against plain FedAvg.

    .venv/bin/python bench/secure.py                          # n = 16, 64; cnn on digits
    .venv/bin/python bench/secure.py --clients 16 --rounds 5 --dropout 0 0.1

For each number of clients per round ``n`` (every client takes part in every round) it
runs the same federation (cnn on scikit-learn's digits, ``rounds`` rounds, seed 0) as:
plain FedAvg (float32 updates), FedAvg with int8 updates (``compression.up=int8``),
and ``secure.mode=secagg`` with 0%, 10% and 30% of the clients going silent after their
masked input in every round (the costly case: their self-masks are recovered from
their neighbours' shares), and, when TenSEAL is installed, ``secure.mode=ckks`` (its
row has the upload and accuracy; the public context, sent once per client, is not in
the per-round columns). It prints one markdown row per run:

- up B/client: every byte a client uploads in a round (for secagg: its keys, sealed
  shares, masked vector and unmask answers), and that in bits per model coordinate;
- stage down B/client: what secagg sends a client besides the fit message (directory,
  forwarded shares, unmask request); the fit message (the float32 global model) is the
  same in every run and is not counted;
- client CPU s: protocol and encoding CPU per client and round (not training);
  server CPU s: the server's protocol CPU per round (``time.process_time``);
- aborted: rounds in which recovery was impossible (the model stayed unchanged);
- accuracy: final test accuracy.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fedloom.config import load_config
from fedloom.core.message import Message
from fedloom.core.seeding import numpy_rng
from fedloom.experiment import Experiment
from fedloom.secure.round import SecureClientHandler, SecureRound
from fedloom.transport.base import Failure, Reply, Transport


class SilentAfterMasking:
    """Drops a seeded ``fraction`` of each round's clients at the unmask stage."""

    def __init__(self, inner: Transport, fraction: float, seed: int) -> None:
        self.inner, self.fraction, self.seed = inner, fraction, seed

    def exchange(self, messages: Mapping[str, Message]) -> Iterator[Reply]:
        first = next(iter(messages.values()), None)
        if first is None or first.meta.get("stage") != "unmask" or self.fraction == 0:
            yield from self.inner.exchange(messages)
            return
        rng = numpy_rng(self.seed, "bench-dropout", first.round)
        everyone = sorted(messages, key=int)
        count = round(self.fraction * len(everyone))  # all n sent their masked input
        silent = set(rng.choice(everyone, size=count, replace=False).tolist())
        for cid in silent:
            yield cid, Failure(cid, "went silent after its masked input (bench)")
        yield from self.inner.exchange({c: m for c, m in messages.items() if c not in silent})


def _handlers(transport: Any) -> Mapping[str, SecureClientHandler]:
    while not hasattr(transport, "handlers"):
        transport = transport.inner
    return transport.handlers  # type: ignore[no-any-return]


def run(
    n: int, rounds: int, extra: list[str], dropout: float, out: Path, model: str
) -> dict[str, Any]:
    overrides = [
        f"clients.num={n}",
        f"clients.per_round={n}",
        f"rounds={rounds}",
        f"eval_every={rounds}",
        f"model.name={model}",
        f"output_dir={out}",
        *extra,
    ]
    exp = Experiment(load_config(None, overrides))
    secure = isinstance(exp.server.phase, SecureRound)  # CKKS rows: bytes and accuracy
    if secure:
        exp.server.transport = SilentAfterMasking(exp.server.transport, dropout, 0)
    start = time.perf_counter()
    result = exp.run(overwrite=True)
    wall = time.perf_counter() - start
    metrics = result.metrics
    dim = result.summary["num_parameters"]
    per_client_up = statistics.mean(m["bytes_up"] / n for m in metrics)
    row: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "up_per_client": per_client_up,
        "up_bits": per_client_up * 8 / dim,
        "accuracy": result.summary["final_test_accuracy"],
        "wall_s": wall,
    }
    if secure:
        stage_down = statistics.mean(m["secure_stage_bytes_down"] / n for m in metrics)
        handlers = _handlers(exp.server.transport)
        row.update(
            stage_down=stage_down,
            total_bits=(per_client_up + stage_down) * 8 / dim,
            bits=result.summary["secure"]["bits"],
            neighbors=result.summary["secure"]["neighbors"],
            threshold=result.summary["secure"]["threshold"],
            client_cpu=sum(h.protocol_cpu_s for h in handlers.values()) / (n * rounds),
            server_cpu=statistics.mean(m["secure_server_cpu_s"] for m in metrics),
            aborted=sum(m["secure_aborted"] is not None for m in metrics),
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--cost-rounds",
        type=int,
        default=None,
        help="rounds of the dropout runs (their sum, hence their model, is the 0%% run's: "
        "exact recovery); default --rounds",
    )
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--clip", type=float, default=0.2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(
        "| n | run | k | t | bits | up B/client | up bits/coord | stage down B/client "
        "| up+down bits/coord | client CPU s | server CPU s | aborted | accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.clients:
            runs: list[tuple[str, list[str], float]] = [
                ("FedAvg float32", [], 0.0),
                ("FedAvg int8", ["compression.up=int8"], 0.0),
            ]
            for p in args.dropout:
                secure = ["secure.mode=secagg", f"secure.clip={args.clip}"]
                runs.append((f"secagg, {p:.0%} dropouts", secure, p))
            if importlib.util.find_spec("tenseal") is not None:
                runs.append(
                    ("ckks (N=4096)", ["secure.mode=ckks", "secure.max_weight=100000"], 0.0)
                )
            for name, extra, p in runs:
                rounds = args.rounds if p == 0 else args.cost_rounds or args.rounds
                r = run(n, rounds, extra, p, Path(tmp) / f"{n}-{name}", args.model)
                accuracy = f"{r['accuracy']:.4f}" if rounds == args.rounds else "(same sum)"
                secure_cols = (
                    f"{r['neighbors']} | {r['threshold']} | {r['bits']} "
                    if "bits" in r
                    else "– | – | – "
                )
                print(
                    f"| {n} | {name} | {secure_cols}| {r['up_per_client']:,.0f} | "
                    f"{r['up_bits']:.2f} | {r.get('stage_down', 0):,.0f} | "
                    f"{r.get('total_bits', r['up_bits']):.2f} | "
                    f"{r.get('client_cpu', 0):.3f} | {r.get('server_cpu', 0):.3f} | "
                    f"{r.get('aborted', 0)} | {accuracy} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
