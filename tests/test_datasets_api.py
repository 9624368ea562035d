"""Data stays a Dataset: lazily read clients, per-access transforms, dict batches,
variable-length sequences, Hugging Face ``datasets`` partitions, DP-SGD on lazy data."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset, TensorDataset

import fedloom
from fedloom.core.errors import ConfigError, DataError
from fedloom.data.base import as_split
from fedloom.data.views import LazyData, pad_collate

SMALL = {"rounds": 3, "clients.num": 4, "clients.per_round": 4, "train.lr": 0.05}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared machine: threads only contend
    yield
    torch.set_num_threads(before)


def _digits() -> tuple[Tensor, Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8), torch.tensor(y)


class Counting(Dataset[tuple[Tensor, Tensor]]):
    """(x, y) items that count every read and refuse any batch-wise access."""

    def __init__(self, x: Tensor, y: Tensor, noise: float = 0.0) -> None:
        self.x, self.y, self.noise = x, y, noise
        self.reads: collections.Counter[int] = collections.Counter()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not isinstance(i, int):
            raise TypeError(f"one item at a time, got {type(i).__name__}")
        self.reads[i] += 1
        x = self.x[i]
        if self.noise:  # augmentation in the dataset: a fresh draw on every access
            gen = torch.Generator().manual_seed(i * 1000 + self.reads[i])
            x = x + self.noise * torch.randn(x.shape, generator=gen)
        return x, self.y[i]


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def test_clients_read_only_their_items_once_per_epoch_and_match_the_tensor_path(
    tmp_path: Path,
) -> None:
    x, y = _digits()
    train, test = Counting(x[:1400], y[:1400]), Counting(x[1400:], y[1400:])
    config = {**SMALL, "output_dir": str(tmp_path / "lazy")}
    lazy = fedloom.federate(_linear(), train, test, config, verbose=False)
    # every training item once per round (one local epoch), item 0 once more for the
    # model check; the test items once per round's evaluation
    assert train.reads == collections.Counter({i: 3 + (i == 0) for i in range(1400)})
    assert test.reads == collections.Counter({i: 3 for i in range(len(test))})
    fast = fedloom.federate(
        _linear(),
        TensorDataset(x[:1400], y[:1400]),
        TensorDataset(x[1400:], y[1400:]),
        {**config, "output_dir": str(tmp_path / "fast")},
        verbose=False,
    )
    for a, b in zip(lazy.metrics, fast.metrics, strict=True):  # the same batches, bit for bit
        assert a["test_loss"] == b["test_loss"] and a["train_loss"] == b["train_loss"]
    assert lazy.summary["final_test_accuracy"] > 0.85
    # a dataset with .targets has labels: partition.csv counts them, dirichlet splits them
    assert (tmp_path / "fast" / "partition.csv").exists()
    assert not (tmp_path / "lazy" / "partition.csv").exists()  # labels unknown, unread
    with pytest.raises(DataError, match="labels of a lazily read dataset are unknown"):
        fedloom.federate(_linear(), train, test, {**config, "data.partition": "dirichlet"})


def test_a_transform_in_getitem_runs_on_every_access(tmp_path: Path) -> None:
    x, y = _digits()
    train = Counting(x[:1400], y[:1400], noise=0.1)
    train.targets = y[:1400].tolist()  # type: ignore[attr-defined]  # published labels
    test = TensorDataset(x[1400:], y[1400:])
    config = {**SMALL, "data.partition": "dirichlet", "output_dir": str(tmp_path)}
    result = fedloom.federate(_linear(), train, test, config, verbose=False)
    assert sum(train.reads.values()) == 3 * 1400 + 1  # each access drew fresh noise
    assert result.summary["final_test_accuracy"] > 0.8
    counts = (tmp_path / "partition.csv").read_text().splitlines()
    assert len(counts) == 1 + 4  # the published labels, split by dirichlet


def test_workers_read_the_same_batches_as_the_training_process(tmp_path: Path) -> None:
    x, y = _digits()
    runs = []
    for workers in (0, 1):
        config = {
            **SMALL,
            "rounds": 1,
            "clients.num": 2,
            "clients.per_round": 2,
            "data.workers": workers,
            "output_dir": str(tmp_path / str(workers)),
        }
        train, test = Counting(x[:300], y[:300]), Counting(x[1400:1500], y[1400:1500])
        runs.append(fedloom.federate(_linear(), train, test, config, verbose=False))
    assert runs[0].metrics[0]["test_loss"] == runs[1].metrics[0]["test_loss"]


@dataclass
class Output:
    logits: Tensor


class BagOfTokens(nn.Module):
    """A Hugging Face style classifier: keyword inputs, an output with ``.logits``."""

    def __init__(self, vocab: int = 10) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Output:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        return Output(self.head(pooled))


class Sequences(Dataset[dict[str, Tensor]]):
    """Token sequences of 2..8 ids: from 0..4 (label 0) or 5..9 (label 1)."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=gen)
        lengths = torch.randint(2, 9, (n,), generator=gen)
        self.ids = [
            torch.randint(0, 5, (int(k),), generator=gen) + 5 * int(c)
            for k, c in zip(lengths, self.labels, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def test_dict_batches_of_variable_length_sequences_train_evaluate_and_evaluate_per_client(
    tmp_path: Path,
) -> None:
    config = {
        **SMALL,
        "train.lr": 0.5,
        "eval.client_fraction": 1.0,
        "output_dir": str(tmp_path / "ok"),
    }
    train, test = Sequences(400, 0), Sequences(100, 1)
    with pytest.raises(DataError, match="pad_collate"):  # ragged items cannot be stacked
        ragged = {**config, "output_dir": str(tmp_path / "ragged")}
        fedloom.federate(BagOfTokens(), train, test, ragged, verbose=False)
    result = fedloom.federate(
        BagOfTokens(), train, test, config, collate=pad_collate(), verbose=False
    )
    last = result.metrics[-1]
    assert last["test_accuracy"] > 0.95 and last["client_accuracy_mean"] > 0.95
    rows = (tmp_path / "ok" / "clients_eval.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 4  # every client, every round
    with pytest.raises(DataError, match=r"none named 'target'"):
        fedloom.federate(
            BagOfTokens(),
            train,
            test,
            {**config, "data.target_key": "target", "output_dir": str(tmp_path / "k")},
            collate=pad_collate(),
        )


def test_pad_collate_pads_inputs_targets_and_adds_a_mask() -> None:
    items = [
        {"input_ids": torch.tensor([3, 4, 5]), "labels": torch.tensor([4, 5, 6])},
        {"input_ids": torch.tensor([7]), "labels": torch.tensor([8])},
    ]
    batch = pad_collate(pad=0)(items)
    assert batch["input_ids"].tolist() == [[3, 4, 5], [7, 0, 0]]
    assert batch["labels"].tolist() == [[4, 5, 6], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    x, y = pad_collate(pad=-1)([(torch.tensor([1, 2]), 0), (torch.tensor([3]), 1)])
    assert x.tolist() == [[1, 2], [3, -1]] and y.tolist() == [0, 1]


class TinyLM(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, vocab)

    def forward(self, tokens: Tensor) -> Output:
        return Output(self.head(self.embed(tokens)))


class Ragged(Dataset[tuple[Tensor, Tensor]]):
    """Sequences of 3..10 tokens where the next token is the token plus one (mod V)."""

    def __init__(self, n: int, vocab: int) -> None:
        gen = torch.Generator().manual_seed(3)
        starts = torch.randint(0, vocab, (n,), generator=gen)
        lengths = torch.randint(4, 12, (n,), generator=gen)
        self.seqs = [
            (int(s) + torch.arange(int(k))) % vocab for s, k in zip(starts, lengths, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.seqs[i][:-1], self.seqs[i][1:]


def test_a_language_model_on_variable_length_token_ids_and_dpsgd_on_lazy_data(
    tmp_path: Path,
) -> None:
    vocab = 8
    data = Ragged(300, vocab)
    config = {
        **SMALL,
        "task.name": "language_model",
        "train.lr": 0.5,
        "output_dir": str(tmp_path / "lm"),
    }
    result = fedloom.federate(
        TinyLM(vocab), data, data, config, collate=pad_collate(), verbose=False
    )
    assert result.metrics[-1]["test_perplexity"] < 1.5  # padding is ignored by the loss
    calls: list[int] = []

    def loss(output: Tensor, target: Tensor) -> Tensor:
        calls.append(1)
        return F.cross_entropy(output.reshape(-1, vocab), target.reshape(-1))

    dp = {
        **config,
        "rounds": 2,
        "privacy.mode": "dpsgd",
        "privacy.noise_multiplier": 0.5,
        "privacy.clip": 1.0,
        "output_dir": str(tmp_path / "dp"),
    }
    private = fedloom.federate(
        TinyLM(vocab), data, data, dp, loss=loss, collate=pad_collate(), verbose=False
    )
    assert calls and private.metrics[-1]["epsilon"] > 0
    assert private.metrics[-1]["test_perplexity"] < 0.5 * vocab  # learned under DP


def test_dpsgd_on_a_lazily_read_image_dataset(tmp_path: Path) -> None:
    x, y = _digits()
    train, test = Counting(x[:1400], y[:1400]), TensorDataset(x[1400:], y[1400:])
    config = {
        **SMALL,
        "rounds": 2,
        "privacy.mode": "dpsgd",
        "privacy.noise_multiplier": 1.0,
        "output_dir": str(tmp_path),
    }
    result = fedloom.federate(_linear(), train, test, config, verbose=False)
    assert result.metrics[-1]["epsilon"] > 0
    assert result.summary["final_test_accuracy"] > 0.5
    # Poisson batches: each item joins each step with probability B/n_k, so the reads
    # are about two epochs' worth (2 rounds), not a fixed count
    assert 0.8 * 2 * 1400 < sum(train.reads.values()) < 1.2 * 2 * 1400


def test_lazy_views_subset_without_reading_and_name_what_needs_tensors() -> None:
    x, y = _digits()
    ds = Counting(x[:10], y[:10])
    split = as_split(ds)
    assert isinstance(split, LazyData) and not split.targets_known
    part = split.subset(torch.tensor([7, 2]))
    assert part.indices.tolist() == [7, 2] and not ds.reads
    inputs, target = part.batch(torch.tensor([1]))
    assert torch.equal(inputs, x[2:3]) and target.tolist() == [int(y[2])]
    assert dict(ds.reads) == {2: 1}
    with pytest.raises(DataError, match="read lazily; pass a TensorDataset"):
        _ = part.x
    with pytest.raises(DataError, match=r"give the dataset a \.targets"):
        _ = part.y
    with pytest.raises(DataError, match=r"targets holds 3 values for 10 items"):
        ds.targets = [0, 1, 2]  # type: ignore[attr-defined]
        as_split(ds)


def _hf_table(n: int = 1797) -> Any:
    datasets = pytest.importorskip("datasets")
    x, y = _digits()
    hospital = [("north", "south", "east")[i % 3] if i < 1400 else "test" for i in range(n)]
    return datasets.Dataset.from_dict(
        {"pixels": x[:n].reshape(n, 64).tolist(), "label": y[:n].tolist(), "hospital": hospital}
    )


def test_hugging_face_natural_partitions_by_a_column(tmp_path: Path) -> None:
    from fedloom.data.hf import HFItems, client_data_from_hf

    table = _hf_table()
    sites = client_data_from_hf(table.filter(lambda r: r["hospital"] != "test"), "hospital")
    assert sorted(sites) == ["east", "north", "south"]
    assert [len(sites[k]) for k in ("north", "south", "east")] == [467, 467, 466]
    assert sites["east"].targets is not None and len(sites["east"].targets) == 466
    test = HFItems(table.select(range(1400, 1797)), target="label", inputs="pixels")
    model = nn.Sequential(nn.Linear(64, 10))
    result = fedloom.federate(
        model,
        test=test,
        client_data=sites,
        config={"rounds": 4, "output_dir": str(tmp_path)},
        verbose=False,
    )
    assert result.metrics[-1]["num_clients"] == 3
    assert result.summary["final_test_accuracy"] > 0.85
    assert (tmp_path / "partition.csv").read_text().splitlines()[1:] != []


class Partitioner:
    """flwr-datasets' partitioner interface: ``num_partitions``, ``load_partition(k)``."""

    def __init__(self, table: Any, num_partitions: int) -> None:
        self.table, self.num_partitions = table, num_partitions

    def load_partition(self, partition_id: int) -> Any:
        return self.table.shard(self.num_partitions, partition_id, contiguous=True)


def test_a_hugging_face_dataset_as_train_and_a_partitioner(tmp_path: Path) -> None:
    from fedloom.data.hf import client_data_from_partitioner

    table = _hf_table().remove_columns("hospital")
    train, test = table.select(range(1400)), table.select(range(1400, 1797))
    config = {**SMALL, "data.target_key": "label", "data.partition": "dirichlet"}
    direct = fedloom.federate(
        nn.Linear(64, 10),
        train,
        test,
        {**config, "output_dir": str(tmp_path / "d")},
        verbose=False,
    )
    assert direct.summary["final_test_accuracy"] > 0.8
    shards = client_data_from_partitioner(Partitioner(train, 4), inputs="pixels")
    assert [len(s) for s in shards.values()] == [350, 350, 350, 350]
    parted = fedloom.federate(
        nn.Linear(64, 10),
        test=test,
        client_data=shards,
        config={"rounds": 3, "data.target_key": "label", "output_dir": str(tmp_path / "p")},
        verbose=False,
    )
    assert parted.summary["final_test_accuracy"] > 0.8
    with pytest.raises(DataError, match="not a partitioner"):
        client_data_from_partitioner(object())
    with pytest.raises(ConfigError, match="data.workers"):
        fedloom.federate(nn.Linear(64, 10), train, test, {"data.workers": -1})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"attack.kind": "label_flip", "attack.fraction": 0.5}, "attack.kind=label_flip"),
        ({"finetune.mode": "importance"}, "finetune.importance_source=clients"),
    ],
)
def test_features_that_need_inputs_in_memory_are_refused_for_lazy_data(
    config: dict[str, Any], message: str
) -> None:
    x, y = _digits()
    train, test = Counting(x[:100], y[:100]), TensorDataset(x[100:150], y[100:150])
    with pytest.raises(ConfigError, match=f"{message} needs the clients' inputs in memory"):
        fedloom.federate(_linear(), train, test, {**SMALL, **config}, verbose=False)
    assert not train.reads  # refused before anything was read
