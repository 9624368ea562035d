"""Load on the gRPC server: many concurrent lightweight clients on loopback.

A real ``fedloom server`` process (model ``cnn``, every client sampled every round) is
fed by N client threads in this process. Each thread pulls its work over gRPC and
streams back one precomputed update (same names and shapes as the model, encoded once),
so training time is excluded and a round's wall time is pure overhead: downloads,
uploads, validation, streaming aggregation. The server's resident memory is sampled
with psutil every 20 ms; "peak - idle" is what the rounds added on top of the idle
server, and must stay flat as N grows (O(model), not O(clients)).

    python bench/grpc_load.py [--clients 50 100 200] [--rounds 3] [--data ../shared/data/mnist]

With ``--data`` pointing to MNIST the model has 1.2 M parameters (4.8 MB); without the
files the embedded 8x8 digits are used (53 k parameters).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

from fedloom.compression.codec import RawCodec
from fedloom.core.message import Message
from fedloom.network.deploy import fedloom_command, wait_for_file, write_tokens
from fedloom.transport.grpc_client import GrpcClientChannel, GrpcClientSettings


class Update:
    """One update, built from the first fit message and shared by every client thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.payload: bytes | None = None

    def get(self, work: Message) -> bytes:
        with self.lock:
            if self.payload is None:
                gen = torch.Generator().manual_seed(0)
                state = RawCodec().decode(work.payload)
                delta = {n: 1e-3 * torch.randn(t.shape, generator=gen) for n, t in state.items()}
                self.payload = RawCodec().encode(delta)
            return self.payload


def client_loop(settings: GrpcClientSettings, update: Update, errors: list[str]) -> None:
    channel = GrpcClientChannel(settings)
    try:
        while True:
            status, work = channel.pull()
            if status == "done":
                return
            if work is None:
                continue
            meta = {"num_examples": 50, "train_loss": 0.1}
            reply = Message("fit_result", work.round, settings.client_id, update.get(work), meta)
            accepted, reason = channel.push(reply)
            if not accepted:
                errors.append(reason)
    except Exception as error:  # reported in the table's last column
        errors.append(repr(error))
    finally:
        channel.close()


class RssSampler(threading.Thread):
    """Peak RSS of the server over the rounds before the last: the last round ends with
    a test-set evaluation whose activations have nothing to do with the transport."""

    def __init__(self, pid: int, metrics: Path, rounds: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.metrics, self.rounds = metrics, rounds
        self.peak = 0
        self.stop = threading.Event()

    def _rounds_done(self) -> int:
        try:
            return len(self.metrics.read_text().splitlines())
        except OSError:
            return 0

    def run(self) -> None:
        while not self.stop.is_set() and self._rounds_done() < max(1, self.rounds - 1):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)


def data_overrides(data: Path) -> list[str]:
    if (data / "t10k-images-idx3-ubyte.gz").exists() or (data / "t10k-images-idx3-ubyte").exists():
        return ["data.name=mnist", f"data.dir={data}", "data.files=test"]
    return ["data.name=digits"]


def run_one(n: int, rounds: int, data: list[str], work: Path) -> dict[str, float | int | str]:
    run_dir, tokens_file, port_file = work / f"run-{n}", work / f"tokens-{n}.json", work / "addr"
    tokens = write_tokens(tokens_file, [str(k) for k in range(n)])
    port_file.unlink(missing_ok=True)
    overrides = [
        *data, "model.name=cnn", f"clients.num={n}", f"clients.per_round={n}",
        f"rounds={rounds}", "eval_every=1000", f"output_dir={run_dir}",
        f"network.tokens_file={tokens_file}", "network.address=127.0.0.1:0",
        f"network.port_file={port_file}", f"network.wait_for_clients={n}",
        "network.round_deadline_s=300", "network.poll_s=5", "network.linger_s=2",
    ]  # fmt: skip
    log = open(work / f"server-{n}.log", "wb")  # noqa: SIM115 - the child owns it
    server = subprocess.Popen(fedloom_command("server", *overrides), stdout=log, stderr=log)
    try:
        address = wait_for_file(port_file, server, timeout_s=300)
        idle = psutil.Process(server.pid).memory_info().rss
        sampler = RssSampler(server.pid, run_dir / "metrics.jsonl", rounds)
        sampler.start()
        update, errors = Update(), []
        threads = [
            threading.Thread(
                target=client_loop,
                args=(GrpcClientSettings(address, str(k), tokens[str(k)], poll_s=5.0), update,
                      errors),
                daemon=True,
            )
            for k in range(n)
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        code = server.wait(timeout=1800)
        sampler.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
        log.close()
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = metrics[:-1] or metrics  # the last round also evaluates the model
    wall = statistics.median(m["wall_s"] for m in timed)
    moved = statistics.median(m["bytes_up"] + m["bytes_down"] for m in timed)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "clients": n,
        "params": summary["num_parameters"],
        "round_s": wall,
        "updates_per_s": n / wall,
        "MB_per_s": moved / wall / 1e6,
        "idle_MB": idle / 1e6,
        "peak_MB": sampler.peak / 1e6,
        "added_MB": (sampler.peak - idle) / 1e6,
        "clients_ok": min(m["num_clients"] for m in metrics),
        "errors": f"exit {code}, {len(errors)} refused" if code or errors else "none",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mnist"))
    args = parser.parse_args()
    data = data_overrides(args.data)
    header = ("clients", "params", "round_s", "updates_per_s", "MB_per_s", "idle_MB", "peak_MB",
              "added_MB", "clients_ok", "errors")  # fmt: skip
    print(f"data: {' '.join(data)}; model cnn; rounds {args.rounds}; round_s is the median")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.clients:
            row = run_one(n, args.rounds, data, Path(tmp))
            cells = [f"{row[h]:.2f}" if isinstance(row[h], float) else str(row[h]) for h in header]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
