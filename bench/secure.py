"""Secure aggregation in real runs: bytes, CPU, dropouts and accuracy against plain FedAvg.

    .venv/bin/python bench/secure.py                          # n = 16, 64; cnn on digits
    .venv/bin/python bench/secure.py --clients 16 --rounds 5 --dropout 0 0.1
    .venv/bin/python bench/secure.py --clients 256 --rounds 1  # one round at n = 256

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
- secure down B/client: what secagg sends a client besides the plain fit message: the
  round setup riding in the fit message's meta, then the directory, forwarded shares
  and unmask request; the rest of the fit message (the float32 global model) is the
  same in every run and is not counted;
- up+down bits/coord: all of that, up and down, keys and shares included, times 8 over
  the model's parameters;
- client CPU s: protocol and encoding CPU per client and round (not training);
  server CPU s: the server's protocol CPU per round (``time.process_time``);
- aborted: rounds in which recovery was impossible (the model stayed unchanged);
- accuracy: final test accuracy;
- run wall s / CPU s: the whole run (training included), wall clock and this process's
  CPU time (``time.process_time``; the machine may be shared).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fedloom.config import load_config
from fedloom.core.message import Message
from fedloom.core.seeding import numpy_rng
from fedloom.experiment import Experiment
from fedloom.secure.round import SETUP_KEY, SecureClientHandler, SecureRound
from fedloom.transport.base import Failure, Reply, Transport
from fedloom.transport.wire import frame_size


class SilentAfterMasking:
    """Drops a seeded ``fraction`` of each round's clients at the unmask stage, and
    counts the bytes the round setup adds to the fit messages."""

    def __init__(self, inner: Transport, fraction: float, seed: int) -> None:
        self.inner, self.fraction, self.seed = inner, fraction, seed
        self.setup_bytes = 0

    def exchange(self, messages: Mapping[str, Message]) -> Iterator[Reply]:
        for m in messages.values():
            if SETUP_KEY in m.meta:
                plain = {k: v for k, v in m.meta.items() if k != SETUP_KEY}
                self.setup_bytes += frame_size(m) - frame_size(dataclasses.replace(m, meta=plain))
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


class Timed:
    """Adds the CPU seconds of every call of ``inner`` to ``spent[0]``."""

    def __init__(self, inner: Callable[..., Any], spent: list[float]) -> None:
        self.inner, self.spent = inner, spent

    def __call__(self, *args: Any) -> Any:
        start = time.process_time()
        try:
            return self.inner(*args)
        finally:
            self.spent[0] += time.process_time() - start


class CkksCost:
    """CPU of a CKKS run, split like the secagg columns: a client's encryption (its
    handler's time less its training), the server's collection (less the in-process
    clients' time) and the key holder's decryption (wall time of the call: it runs in
    its own process while the server waits)."""

    def __init__(self, exp: Experiment) -> None:
        self.training, self.handlers, self.collect, self.decrypt = [0.0], [0.0], [0.0], [0.0]
        wrapped: Any = _handlers(exp.server.transport)
        make = wrapped.make
        wrapped.make = lambda inner, cid: Timed(
            make(Timed(inner, self.training), cid), self.handlers
        )
        phase: Any = exp.server.phase
        phase.collect = Timed(phase.collect, self.collect)
        decrypt = phase.authority.decrypt_sum

        def timed_decrypt(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return decrypt(*args)
            finally:
                self.decrypt[0] += time.perf_counter() - start

        phase.authority.decrypt_sum = timed_decrypt

    def columns(self, n: int, rounds: int) -> dict[str, float]:
        client = (self.handlers[0] - self.training[0]) / (n * rounds)
        server = (self.collect[0] - self.handlers[0]) / rounds
        return {
            "client_cpu": client,
            "server_cpu": server,
            "key_holder_s": self.decrypt[0] / rounds,
        }


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
    bench_transport = SilentAfterMasking(exp.server.transport, dropout, 0)
    if secure:
        exp.server.transport = bench_transport
    ckks = CkksCost(exp) if type(exp.server.phase).__name__ == "CkksRound" else None
    start, cpu_start = time.perf_counter(), time.process_time()
    result = exp.run(overwrite=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
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
        "cpu_s": cpu,
    }
    if secure:
        stage_down = statistics.mean(m["secure_stage_bytes_down"] / n for m in metrics)
        stage_down += bench_transport.setup_bytes / (n * len(metrics))
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
    if ckks is not None:
        row.update(ckks.columns(n, rounds))
        row["aborted"] = sum(m["secure_aborted"] is not None for m in metrics)
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
    parser.add_argument("--dropout", type=float, nargs="*", default=[0.0, 0.1, 0.3])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--clip", type=float, default=0.2)
    parser.add_argument(
        "--ddg-bits",
        type=int,
        nargs="*",
        default=[],
        help="also run secagg with distributed DP (privacy.mode=distributed) at these moduli",
    )
    parser.add_argument("--ddg-noise", type=float, default=0.5, help="its noise multiplier")
    parser.add_argument("--ddg-clip", type=float, default=1.0, help="its L2 clip")
    parser.add_argument("--no-plain", action="store_true", help="skip the FedAvg rows")
    parser.add_argument("--no-ckks", action="store_true", help="skip the CKKS row")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(
        "| n | run | k | t | bits | up B/client | up bits/coord | secure down B/client "
        "| up+down bits/coord | client CPU s | server CPU s | aborted | accuracy "
        "| run wall s / CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.clients:
            runs: list[tuple[str, list[str], float]] = []
            if not args.no_plain:
                runs.append(("FedAvg float32", [], 0.0))
                runs.append(("FedAvg int8", ["compression.up=int8"], 0.0))
            for p in args.dropout:
                secure = ["secure.mode=secagg", f"secure.clip={args.clip}"]
                runs.append((f"secagg, {p:.0%} dropouts", secure, p))
            for b in args.ddg_bits:
                ddg = [
                    "secure.mode=secagg",
                    f"secure.bits={b}",
                    "privacy.mode=distributed",
                    f"privacy.noise_multiplier={args.ddg_noise}",
                    f"privacy.clip={args.ddg_clip}",
                ]
                runs.append((f"secagg + DDG z={args.ddg_noise}", ddg, 0.0))
            if not args.no_ckks and importlib.util.find_spec("tenseal") is not None:
                runs.append(
                    ("ckks (N=4096)", ["secure.mode=ckks", "secure.max_weight=100000"], 0.0)
                )
            for name, extra, p in runs:
                rounds = args.rounds if p == 0 else args.cost_rounds or args.rounds
                r = run(n, rounds, extra, p, Path(tmp) / f"{n}-{name}", args.model)
                accuracy = f"{r['accuracy']:.4f}" if rounds == args.rounds else "(same sum)"
                holder = f" + {r['key_holder_s']:.3f} key holder" if "key_holder_s" in r else ""
                secure_cols = (
                    f"{r['neighbors']} | {r['threshold']} | {r['bits']} "
                    if "bits" in r
                    else "– | – | – "
                )
                print(
                    f"| {n} | {name} | {secure_cols}| {r['up_per_client']:,.0f} | "
                    f"{r['up_bits']:.2f} | {r.get('stage_down', 0):,.0f} | "
                    f"{r.get('total_bits', r['up_bits']):.2f} | "
                    f"{r.get('client_cpu', 0):.3f} | {r.get('server_cpu', 0):.3f}{holder} | "
                    f"{r.get('aborted', 0)} | {accuracy} | {r['wall_s']:.1f} / {r['cpu_s']:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
