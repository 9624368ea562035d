"""fedloom's overhead against a bare PyTorch FedAvg loop doing the same SGD steps.

Workload: the MNIST test set (10,000 images, ../shared/data/mnist) split IID over 100
clients; 10 clients per round, E=1, B=10, lr=0.05, model ``cnn``, 10 rounds; one test
evaluation at the end. Both sides run in this process, one after the other, under the
same thread settings, and the table prints each wall time, CPU time (which a virtual
machine's stolen time does not inflate) and their ratios to the bare loop.

    python bench/overhead.py [--data ../shared/data/mnist] [--repeat 3]
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset

from fedloom.config import load_config
from fedloom.data.base import TensorData
from fedloom.data.federated import federate_tensors
from fedloom.data.idx import read_idx_split
from fedloom.experiment import Experiment
from fedloom.models.registry import build_model

ROUNDS, CLIENTS, PER_ROUND, BATCH, LR = 10, 100, 10, 10, 0.05
OVERRIDES = [
    f"rounds={ROUNDS}",
    f"clients.num={CLIENTS}",
    f"clients.per_round={PER_ROUND}",
    "train.local_epochs=1",
    f"train.batch_size={BATCH}",
    f"train.lr={LR}",
    f"eval_every={ROUNDS}",
    "model.name=cnn",
]


def bare_loop(
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    model: Callable[[tuple[int, ...], int], nn.Module] | None = None,
) -> float:
    """The FedAvg loop as commonly hand-written: Subset + DataLoader, a model copy per client.
    ``model(input_shape, classes)`` builds the network (default: the built-in ``cnn``)."""
    torch.manual_seed(seed)
    build = model or functools.partial(build_model, "cnn")
    global_model = build(tuple(x.shape[1:]), 10)
    dataset = TensorDataset(x, y)
    shards = torch.randperm(len(x)).chunk(CLIENTS)
    for _ in range(ROUNDS):
        chosen = torch.randperm(CLIENTS)[:PER_ROUND].tolist()
        states, sizes = [], []
        for k in chosen:
            model = copy.deepcopy(global_model)
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            loader = DataLoader(Subset(dataset, shards[k].tolist()), batch_size=BATCH, shuffle=True)
            model.train()
            for xb, yb in loader:
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
            states.append(model.state_dict())
            sizes.append(len(shards[k]))
        total = sum(sizes)
        averaged = {
            name: sum(s[name] * (n / total) for s, n in zip(states, sizes, strict=True))
            for name in states[0]
        }
        global_model.load_state_dict(averaged)
    global_model.eval()
    with torch.no_grad():
        return float((global_model(x).argmax(1) == y).float().mean())


def fedloom_run(x: torch.Tensor, y: torch.Tensor, seed: int, out: Path) -> float:
    cfg = load_config(None, [*OVERRIDES, f"seed={seed}", f"output_dir={out}"])
    data = TensorData(x, y)
    fed = federate_tensors(data, data, CLIENTS, cfg.data, seed)
    result = Experiment(cfg, model=_model(x, seed), data=fed).run()
    return float(result.summary["final_test_accuracy"])


def _model(x: torch.Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", tuple(x.shape[1:]), 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).parents[1] / "../shared/data/mnist"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    split = read_idx_split(args.data, "t10k", "mnist")
    x, y = split.x, split.y
    sides = ("bare PyTorch loop", "fedloom")
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    accuracy: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):  # interleaved, so drift hits both sides alike
            runs = {
                sides[0]: functools.partial(bare_loop, x, y, rep),
                sides[1]: functools.partial(fedloom_run, x, y, rep, Path(tmp) / f"run{rep}"),
            }
            for name, run in runs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                accuracy[name] = run()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeat}")
    print(f"{'':<20}{'wall s':>9}{'ratio':>7}{'CPU s':>9}{'ratio':>7}{'accuracy':>10}")
    base_wall, base_cpu = statistics.median(wall[sides[0]]), statistics.median(cpu[sides[0]])
    for name in sides:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"{name:<20}{w:>9.2f}{w / base_wall:>7.2f}{c:>9.2f}{c / base_cpu:>7.2f}"
            f"{accuracy[name]:>10.3f}"
        )
    paired = [f / b for f, b in zip(wall[sides[1]], wall[sides[0]], strict=True)]
    print("wall ratio of each repeat: " + ", ".join(f"{r:.2f}" for r in paired))


if __name__ == "__main__":
    main()
