"""fedloom at scale against a bare PyTorch loop: one table from one invocation.

W1  100 clients of a CNN (``cnn`` without its dropout) on the real MNIST test set
    (../shared/data/mnist), 10 per round, E=1, B=10, lr 0.05, 10 rounds. Time: the whole
    process, launch and imports included. The bare loop is bench/overhead.py's.
W2  1000 clients of logistic regression on 60-dim features (a seeded synthetic
    linear-softmax problem, 10 classes), 50 samples each, 100 per round, E=1, B=10, SGD
    lr 0.1 (no momentum), 1 thread, 100 rounds. Time: in-process from after the imports to
    the end of the run (data generation, fedloom's run directory, checkpoints and plots
    included). The bare loop: per client a fresh model loaded with the global state,
    batches indexed from in-memory tensors, SGD, a running weighted sum of state dicts.
W3  100,000 clients, 10,000 per round (``bench/w3.py``'s ``measure_w3``, where present).

Columns: the bare loop, fedloom one client at a time (``simulation.vectorize=off``),
vectorized (``on``), two ranks (``fedloom.simulation.distributed``, where present) and
Flower (when ``flwr`` is installed). Every cell runs in its own fresh process, one after
another, so no cell warms another's caches.

    python bench/scale.py [--data ../shared/data/mnist] [--only w2] [--repeat 1]
                          [--columns bare,sequential,vectorized,"2 ranks",flower]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent / "../shared/data/mnist"
W2_CLIENTS, W2_PER_ROUND, W2_SIZE, W2_DIM, W2_CLASSES = 1000, 100, 50, 60, 10
W2_ROUNDS, W2_BATCH, W2_LR, W2_TEST = 100, 10, 0.1, 10_000
CELLS = ("bare", "sequential", "vectorized", "2 ranks", "flower")


# -- W2: the synthetic logistic-regression federation ---------------------------------------


def w2_data(seed: int = 0) -> tuple[object, object, object, object]:
    """``(x, y, x_test, y_test)``: a seeded linear-softmax problem; client k owns rows
    ``[50k, 50k + 50)`` of ``x``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    truth = torch.randn(W2_DIM, W2_CLASSES, generator=gen)
    total = W2_CLIENTS * W2_SIZE + W2_TEST
    x = torch.randn(total, W2_DIM, generator=gen)
    logits = x @ truth + 0.5 * torch.randn(total, W2_CLASSES, generator=gen)
    y = logits.argmax(1)
    n = W2_CLIENTS * W2_SIZE
    return x[:n], y[:n], x[n:], y[n:]


def w2_bare(seed: int = 0) -> float:
    """The tight bare loop; returns the final test accuracy."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.set_num_threads(1)
    x, y, xt, yt = w2_data()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    global_model = nn.Linear(W2_DIM, W2_CLASSES)
    for _ in range(W2_ROUNDS):
        chosen = torch.randperm(W2_CLIENTS, generator=gen)[:W2_PER_ROUND].tolist()
        state = global_model.state_dict()
        total = {name: torch.zeros_like(t) for name, t in state.items()}
        weight = 0
        for k in chosen:
            model = nn.Linear(W2_DIM, W2_CLASSES)
            model.load_state_dict(state)
            opt = torch.optim.SGD(model.parameters(), lr=W2_LR)
            xk, yk = x[k * W2_SIZE : (k + 1) * W2_SIZE], y[k * W2_SIZE : (k + 1) * W2_SIZE]
            order = torch.randperm(W2_SIZE, generator=gen)
            for start in range(0, W2_SIZE, W2_BATCH):
                idx = order[start : start + W2_BATCH]
                opt.zero_grad()
                F.cross_entropy(model(xk[idx]), yk[idx]).backward()
                opt.step()
            for name, t in model.state_dict().items():
                total[name].add_(t, alpha=W2_SIZE)
            weight += W2_SIZE
        global_model.load_state_dict({name: t / weight for name, t in total.items()})
    with torch.no_grad():
        return float((global_model(xt).argmax(1) == yt).float().mean())


def w2_config(out: Path, vectorize: str, extra: list[str] | None = None) -> object:
    from fedloom.config import load_config

    return load_config(
        None,
        [
            f"rounds={W2_ROUNDS}",
            f"clients.num={W2_CLIENTS}",
            f"clients.per_round={W2_PER_ROUND}",
            "train.local_epochs=1",
            f"train.batch_size={W2_BATCH}",
            f"train.lr={W2_LR}",
            "train.momentum=0",
            "model.name=logreg",
            "compute.threads=1",
            f"eval_every={W2_ROUNDS}",
            f"simulation.vectorize={vectorize}",
            f"output_dir={out}",
            "seed=0",
            *(extra or []),
        ],
    )


def w2_federation() -> object:
    import torch

    from fedloom.data.base import FederatedDataset, TensorData

    x, y, xt, yt = w2_data()
    chunks = list(torch.arange(W2_CLIENTS * W2_SIZE).split(W2_SIZE))
    return FederatedDataset(TensorData(x, y), TensorData(xt, yt), chunks, W2_CLASSES, (W2_DIM,))


def w2_fedloom(out: Path, vectorize: str) -> float:
    import torch

    from fedloom.experiment import Experiment

    torch.set_num_threads(1)  # before the data is built, as the bare loop does
    experiment = Experiment(w2_config(out, vectorize), data=w2_federation())
    return float(experiment.run().summary["final_test_accuracy"])


# -- W1: the CNN on MNIST ---------------------------------------------------------------------


def w1_model(input_shape: tuple[int, ...], num_classes: int) -> object:
    """The built-in ``cnn`` with its two dropout layers removed (W1 has no dropout)."""
    from torch import nn

    from fedloom.models.registry import build_model

    model = build_model("cnn", input_shape, num_classes)
    model.dropout1 = nn.Identity()
    model.dropout2 = nn.Identity()
    return model


def w1_split(data: Path) -> tuple[object, object]:
    from fedloom.data.idx import read_idx_split

    split = read_idx_split(data, "t10k", "mnist")
    return split.x, split.y


def w1_bare(data: Path) -> float:
    from overhead import bare_loop

    x, y = w1_split(data)
    return bare_loop(x, y, 0, model=w1_model)


def w1_fedloom(data: Path, out: Path, vectorize: str) -> float:
    import torch

    from fedloom.config import load_config
    from fedloom.data.base import TensorData
    from fedloom.data.federated import federate_tensors
    from fedloom.experiment import Experiment
    from overhead import CLIENTS, OVERRIDES

    x, y = w1_split(data)
    cfg = load_config(
        None, [*OVERRIDES, "seed=0", f"output_dir={out}", f"simulation.vectorize={vectorize}"]
    )
    split = TensorData(x, y)
    fed = federate_tensors(split, split, CLIENTS, cfg.data, 0)
    torch.manual_seed(0)
    model = w1_model(tuple(x.shape[1:]), 10)
    result = Experiment(cfg, model=model, data=fed).run()  # type: ignore[arg-type]
    return float(result.summary["final_test_accuracy"])


# -- the columns others provide ----------------------------------------------------------------


# -- 2 ranks (torch.distributed engine): every rank builds the same Experiment -------------


def w2_experiment(out: Path) -> object:
    from fedloom.experiment import Experiment

    return Experiment(w2_config(out, "off"), data=w2_federation())  # type: ignore[arg-type]


def w1_experiment(data: Path, out: Path) -> object:
    import torch

    from fedloom.config import load_config
    from fedloom.data.base import TensorData
    from fedloom.data.federated import federate_tensors
    from fedloom.experiment import Experiment
    from overhead import CLIENTS, OVERRIDES

    x, y = w1_split(data)
    cfg = load_config(None, [*OVERRIDES, "seed=0", f"output_dir={out}", "compute.threads=1"])
    split = TensorData(x, y)
    fed = federate_tensors(split, split, CLIENTS, cfg.data, 0)
    torch.manual_seed(0)
    return Experiment(cfg, model=w1_model(tuple(x.shape[1:]), 10), data=fed)  # type: ignore[arg-type]


def two_ranks(workload: str, data: Path, out: Path) -> float | None:
    """The 2-rank column: ``fedloom.simulation.distributed.spawn`` runs the workload's
    Experiment as two ranks (one torch thread each) -> final accuracy."""
    from functools import partial

    from fedloom.simulation.distributed import spawn

    build = partial(w2_experiment, out) if workload == "w2" else partial(w1_experiment, data, out)
    return float(spawn(build, 2, threads=1)["final_test_accuracy"])  # type: ignore[arg-type]


def flower(workload: str, data: Path, out: Path) -> float | None:
    """Flower's simulation of the same workload, when ``flwr`` is installed (it is an
    optional comparison, not a dependency; not measured where it is absent)."""
    if importlib.util.find_spec("flwr") is None:
        return None
    raise NotImplementedError("the Flower column needs flwr's simulation engine (not installed)")


def w3() -> dict[str, float] | None:
    """W3 from ``bench/w3.py``'s ``measure_w3()`` (a dict with wall_s and peak memory)."""
    if not (HERE / "w3.py").is_file():
        return None
    from w3 import measure_w3

    return dict(measure_w3())


# -- one cell per process ------------------------------------------------------------------------


def run_cell(workload: str, column: str, data: Path, out: Path) -> dict[str, object]:
    """Run one cell in this process; ``in_process_s`` starts after the imports."""
    import torch  # noqa: F401  (imports are outside the in-process time)
    import torch._dynamo  # noqa: F401  (torch.optim imports it on first use: both sides)

    import fedloom.experiment  # noqa: F401

    start, cpu_start = time.perf_counter(), time.process_time()
    runs: dict[str, Callable[[], float | None]] = {
        "w1/bare": lambda: w1_bare(data),
        "w1/sequential": lambda: w1_fedloom(data, out, "off"),
        "w1/vectorized": lambda: w1_fedloom(data, out, "on"),
        "w1/2 ranks": lambda: two_ranks("w1", data, out),
        "w1/flower": lambda: flower("w1", data, out),
        "w2/bare": lambda: w2_bare(),
        "w2/sequential": lambda: w2_fedloom(out, "off"),
        "w2/vectorized": lambda: w2_fedloom(out, "on"),
        "w2/2 ranks": lambda: two_ranks("w2", data, out),
        "w2/flower": lambda: flower("w2", data, out),
    }
    accuracy = runs[f"{workload}/{column}"]()
    return {
        "in_process_s": time.perf_counter() - start,
        "in_process_cpu_s": time.process_time() - cpu_start,  # this process's threads
        "accuracy": accuracy,
    }


def _spawn(workload: str, column: str, data: Path) -> dict[str, object] | None:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--cell",
            f"{workload}/{column}",
            "--data",
            str(data),
            "--out",
            str(Path(tmp) / "run"),
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        before, start = _children_cpu(), time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        process_s, cpu_s = time.perf_counter() - start, _children_cpu() - before
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        print(f"{workload} {column}: failed: {tail[0]}", file=sys.stderr)
        return None
    cell = json.loads(done.stdout.strip().splitlines()[-1])
    if cell["accuracy"] is None:
        return None
    cell["process_s"], cell["cpu_s"] = process_s, cpu_s
    return dict(cell)


def _children_cpu() -> float:
    """CPU seconds of every finished child process (and theirs: ranks included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _table(results: dict[str, dict[str, list[dict[str, object]]]]) -> None:
    """Wall and CPU time as each workload's goal defines them (W1: the whole process,
    launch and imports included; W2: in-process, from after the imports), then the whole
    process tree's wall and CPU time (imports included)."""
    print(
        f"{'':<4}{'column':<12}{'wall s':>9}{'× bare':>8}{'CPU s':>9}{'× bare':>8}"
        f"{'proc wall':>11}{'proc CPU':>10}{'× bare':>8}{'accuracy':>10}"
    )
    for workload, columns in results.items():
        keys = ("process_s", "cpu_s") if workload == "w1" else ("in_process_s", "in_process_cpu_s")
        base: tuple[float, float, float] | None = None
        for column in CELLS:
            cells = columns.get(column) or []
            if not cells:
                print(f"{workload:<4}{column:<12}{'—':>9}   not available")
                continue

            def median(key: str, cells: list[dict[str, object]] = cells) -> float:
                return statistics.median(float(c[key]) for c in cells)  # type: ignore[arg-type]

            wall, cpu, proc_wall, proc_cpu = (
                median(keys[0]),
                median(keys[1]),
                median("process_s"),
                median("cpu_s"),
            )
            base = (wall, cpu, proc_cpu) if column == "bare" else base
            ratios = (
                [f"{v / b:.2f}" for v, b in zip((wall, cpu, proc_cpu), base, strict=True)]
                if base
                else ["—"] * 3
            )
            acc = float(cells[-1]["accuracy"])  # type: ignore[arg-type]
            print(
                f"{workload:<4}{column:<12}{wall:>9.2f}{ratios[0]:>8}{cpu:>9.2f}{ratios[1]:>8}"
                f"{proc_wall:>11.2f}{proc_cpu:>10.2f}{ratios[2]:>8}{acc:>10.4f}"
            )
    print(
        "wall, CPU: W1 the whole process (launch included); W2 in-process from after the "
        "imports (CPU: process_time)\nproc wall, proc CPU: the whole process tree, launch and "
        "imports included (CPU: getrusage of the finished children)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--only", choices=("w1", "w2", "w3"), action="append")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--columns", default=",".join(CELLS), help=f"comma-separated subset of: {', '.join(CELLS)}"
    )
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        workload, column = args.cell.split("/", 1)
        print(json.dumps(run_cell(workload, column, args.data, args.out)))
        return
    workloads = args.only or ["w1", "w2", "w3"]
    results: dict[str, dict[str, list[dict[str, object]]]] = {}
    for workload in (w for w in ("w1", "w2") if w in workloads):
        results[workload] = {}
        for _ in range(args.repeat):  # interleaved, so drift hits every column alike
            for column in (c for c in CELLS if c in args.columns.split(",")):
                cell = _spawn(workload, column, args.data)
                if cell is not None:
                    results[workload].setdefault(column, []).append(cell)
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, median of {args.repeat}")
    _table(results)
    if "w3" in workloads:
        found = w3()
        print("w3  " + ("not available (bench/w3.py)" if found is None else json.dumps(found)))


if __name__ == "__main__":
    main()
