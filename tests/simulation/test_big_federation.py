"""Big federations: clients built only when sampled, data generated from (seed, k), and
every client's state in one memory-mapped store that survives a kill."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch

from fedloom.client.store import ClientStateStore, load_client_states
from fedloom.config import load_config
from fedloom.core.errors import ConfigError, DataError, FedloomError
from fedloom.data.config import DataConfig
from fedloom.data.federated import load_federated
from fedloom.data.ondemand import OnDemandFederatedDataset
from fedloom.data.synthetic import load_synthetic_lazy
from fedloom.experiment import Experiment, resume
from fedloom.simulation.pool import ClientPool

FAST = ["model.name=logreg", "compute.threads=1", "train.batch_size=20", "seed=5"]
SCAFFOLD = ["strategy.name=scaffold", "train.momentum=0", "train.lr=0.05"]


def _experiment(tmp_path: Path, name: str, *overrides: str) -> Experiment:
    return Experiment(load_config(None, [*FAST, *overrides, f"output_dir={tmp_path / name}"]))


def _weights(experiment: Experiment) -> dict[str, torch.Tensor]:
    return {n: t.clone() for n, t in experiment.server.global_state.items()}


# -- lazy data -----------------------------------------------------------------------------


def test_a_lazy_client_is_a_pure_function_of_seed_and_index_and_equals_the_eager_one():
    cfg = DataConfig(name="synthetic_lazy")
    lazy = load_synthetic_lazy(cfg, 12, seed=3)
    again = load_synthetic_lazy(cfg, 40, seed=3)  # more clients: client k unchanged
    eager = load_federated(DataConfig(name="synthetic"), 12, 3)
    for k in (0, 7, 11):
        mine = lazy.client(k)
        assert torch.equal(mine.x, again.client(k).x) and torch.equal(mine.y, again.client(k).y)
        assert torch.equal(mine.x, eager.client(k).x) and torch.equal(mine.y, eager.client(k).y)
        assert len(mine) == int(lazy.sizes[k]) == len(eager.client_indices[k])
    assert not torch.equal(lazy.client(1).x[:5], lazy.client(2).x[:5])
    other_seed = load_synthetic_lazy(cfg, 12, seed=4)
    assert not torch.equal(lazy.client(0).x[:5], other_seed.client(0).x[:5])
    assert lazy.generated == 3 * 1 + 1 + 1 + 1  # only what was asked for
    assert torch.equal(lazy.test.x, eager.test.x) and torch.equal(lazy.test.y, eager.test.y)
    assert len(lazy.train) == 0  # nothing held up front


def test_a_fixed_sample_count_gives_every_device_that_size():
    sized = load_synthetic_lazy(DataConfig(name="synthetic_lazy", synthetic_samples=50), 30, 1)
    assert set(sized.sizes.tolist()) == {40}  # 50 samples, 20% held out
    assert len(sized.client(29)) == 40 and len(sized.test) == 30 * 10


def test_a_lazy_dataset_refuses_what_would_build_every_client():
    lazy = load_synthetic_lazy(DataConfig(name="synthetic_lazy"), 5, 0)
    with pytest.raises(DataError, match="label histogram"):
        lazy.label_histogram()
    with pytest.raises(DataError, match="client 5 does not exist"):
        lazy.client(5)
    with pytest.raises(DataError, match="data.classes"):
        load_federated(DataConfig(name="synthetic_lazy", classes=[1, 2]), 5, 0)
    with pytest.raises(ConfigError, match="partition"):
        load_config(None, ["data.name=synthetic_lazy", "data.partition=dirichlet"])
    with pytest.raises(ConfigError, match="clients.lazy"):
        load_config(None, ["clients.lazy=sometimes"])


# -- the memory-mapped store --------------------------------------------------------------


def _state(k: int) -> dict[str, torch.Tensor]:
    return {
        "scaffold_ci/weight": torch.full((3, 4), float(k)),
        "compression.residual.bias": torch.arange(3, dtype=torch.float64) + k,
    }


def _committed(store: ClientStateStore, rnd: int, states: dict[str, dict]) -> None:
    for cid, state in states.items():
        store.put(rnd, cid, state)
    store.seal(rnd)
    store.commit(rnd)


def test_the_store_round_trips_rows_and_stays_sparse(tmp_path: Path):
    store = ClientStateStore(tmp_path, 100_000)
    _committed(store, 1, {"3": _state(3), "99999": _state(7)})
    reopened = ClientStateStore(tmp_path, 100_000)
    assert reopened.clients() == ["3", "99999"]
    got = reopened.get("99999")
    assert torch.equal(got["scaffold_ci/weight"], torch.full((3, 4), 7.0))
    assert got["compression.residual.bias"].dtype == torch.float64
    assert torch.equal(
        got["compression.residual.bias"], torch.tensor([7.0, 8.0, 9.0], dtype=torch.float64)
    )
    assert reopened.get("4") == {}
    row = reopened.layout.row_bytes  # type: ignore[union-attr]
    assert row == 48 + 24  # 12 float32 and 3 float64, each padded to 8 bytes
    assert (tmp_path / "rows.bin").stat().st_size == 100_000 * row
    assert reopened.disk_bytes() < 100_000 * row / 50  # a sparse file: two rows written
    assert load_client_states(tmp_path, 1).keys() == {"3", "99999"}
    with pytest.raises(FedloomError, match="same state tensors"):
        reopened.put(2, "5", {"other": torch.zeros(2)})
    with pytest.raises(FedloomError, match="store holds"):
        reopened.put(2, "5", {**_state(5), "scaffold_ci/weight": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match="is not one of"):
        reopened.get("100000")
    with pytest.raises(FedloomError, match="holds 100000 clients"):
        ClientStateStore(tmp_path, 10).get("1")


def test_a_kill_at_any_step_leaves_the_state_of_the_checkpointed_round(tmp_path: Path):
    def fresh(name: str) -> ClientStateStore:
        store = ClientStateStore(tmp_path / name, 50)
        _committed(store, 1, {"1": _state(1), "2": _state(2)})
        store.put(2, "2", _state(20))  # round 2's rows written ...
        store.put(2, "3", _state(30))
        assert store.get("2")["scaffold_ci/weight"][0, 0] == 20  # read back within the round
        return store

    fresh("unsealed")  # killed before the seal: the checkpoint names round 1
    fresh("sealed").seal(2)  # killed after the seal, before the checkpoint committed
    for name in ("unsealed", "sealed"):
        store = ClientStateStore(tmp_path / name, 50)
        store.recover(1)
        assert store.clients() == ["1", "2"]
        assert store.get("2")["scaffold_ci/weight"][0, 0] == 2
        assert not list((tmp_path / name).glob("journal-*"))

    fresh("committed").seal(2)  # the checkpoint of round 2 committed, then a kill
    store = ClientStateStore(tmp_path / "committed", 50)
    store.recover(2)  # replays round 2's journal
    assert store.clients() == ["1", "2", "3"]
    assert store.get("2")["scaffold_ci/weight"][0, 0] == 20
    assert json.loads((tmp_path / "committed" / "base.json").read_text()) == {"round": 2}
    again = ClientStateStore(tmp_path / "committed", 50)
    again.recover(2)  # recovering twice changes nothing
    assert again.get("3")["scaffold_ci/weight"][0, 0] == 30
    with pytest.raises(FedloomError, match="past the checkpoint"):
        ClientStateStore(tmp_path / "committed", 50).recover(1)
    with pytest.raises(FedloomError, match="does not match the checkpoint"):
        ClientStateStore(tmp_path / "committed", 50).recover(4)


def test_a_kill_in_the_middle_of_a_commit_is_replayed(tmp_path: Path, monkeypatch):
    import fedloom.client.store as module

    store = ClientStateStore(tmp_path, 20)
    _committed(store, 1, {"1": _state(1)})
    store.put(2, "1", _state(10))
    store.seal(2)
    real = module.write_atomic

    def killed(path: Path, data: bytes) -> None:
        if path.name == "base.json":
            raise KeyboardInterrupt  # the rows are copied, base.json still names round 1
        real(path, data)

    monkeypatch.setattr(module, "write_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        store.commit(2)
    monkeypatch.setattr(module, "write_atomic", real)
    recovered = ClientStateStore(tmp_path, 20)
    recovered.recover(2)
    assert recovered.get("1")["scaffold_ci/weight"][0, 0] == 10
    assert recovered.base_round() == 2


# -- runs ------------------------------------------------------------------------------------


def test_a_pooled_run_killed_and_resumed_equals_clients_built_up_front(tmp_path: Path):
    common = [
        "clients.num=30",
        "clients.per_round=10",
        *SCAFFOLD,
        "compression.up=topk:0.3",
        "compression.error_feedback=true",
    ]
    eager = _experiment(
        tmp_path, "eager", "data.name=synthetic", "clients.lazy=off", *common, "rounds=4"
    )
    assert isinstance(eager.clients, dict)
    eager.run()
    split = _experiment(tmp_path, "split", "data.name=synthetic_lazy", *common, "rounds=2")
    assert isinstance(split.clients, ClientPool)
    split.run()
    folder = tmp_path / "split" / "clients"
    assert sorted(p.name for p in folder.iterdir()) == [
        "base.json",
        "has.bin",
        "layout.json",
        "rows.bin",
    ]
    # round 3 was under way when the run was killed: its journal is on disk, sealed, but
    # the checkpoint still names round 2
    killed = ClientStateStore(folder, 30)
    for cid in killed.clients():
        killed.put(3, cid, {n: torch.full_like(t, 1e3) for n, t in killed.get(cid).items()})
    killed.seal(3)
    lazy = resume(tmp_path / "split", ["rounds=4"])
    lazy.run()
    for name, value in _weights(eager).items():
        assert torch.allclose(value, lazy.server.global_state[name], atol=1e-6, rtol=0), name
    # the same client states: SCAFFOLD's c_i and the error-feedback residuals
    held = {cid: c.state for cid, c in eager.clients.items() if c.state}
    assert sorted(held, key=int) == lazy.store.clients()
    for cid, state in held.items():
        stored = lazy.store.get(cid)
        assert stored.keys() == state.keys()
        assert any(k.startswith("compression.residual.") for k in stored)
        assert all(torch.allclose(stored[k], state[k], atol=1e-6, rtol=0) for k in state)


def test_pooled_scaffold_learns_digits_and_a_corrupt_store_is_one_clear_error(tmp_path: Path):
    common = ["clients.lazy=on", "clients.num=6", "clients.per_round=6", "train.lr=0.2"]
    pooled = _experiment(tmp_path, "run", *common, "strategy.name=scaffold", "rounds=4")
    assert isinstance(pooled.clients, ClientPool)
    assert pooled.run().summary["final_test_accuracy"] > 0.85
    (tmp_path / "run" / "clients" / "layout.json").write_text("{not json")
    with pytest.raises(FedloomError, match="corrupt client store file"):
        resume(tmp_path / "run", ["rounds=2"])
    (tmp_path / "run" / "clients" / "layout.json").unlink()
    (tmp_path / "run" / "clients" / "base.json").write_text('{"round": "x"}')
    with pytest.raises(FedloomError, match="does not match this run|corrupt client store"):
        resume(tmp_path / "run", ["rounds=2"])


def test_twenty_thousand_clients_keep_memory_bounded(tmp_path: Path):
    experiment = _experiment(
        tmp_path,
        "big",
        "data.name=synthetic_lazy",
        "data.synthetic_samples=10",
        "clients.num=20000",
        "clients.per_round=200",
        "rounds=2",
        *SCAFFOLD,
    )
    pool, data = experiment.clients, experiment.data
    assert isinstance(pool, ClientPool) and len(pool) == 20_000
    assert isinstance(data, OnDemandFederatedDataset)
    made: list[int] = []
    inner = data.make_client
    object.__setattr__(data, "make_client", lambda k: made.append(k) or inner(k))
    result = experiment.run()
    gc.collect()
    assert [m["num_clients"] for m in result.metrics] == [200, 200]
    sampled = [k for r in (1, 2) for k in experiment.server.sampler.sample(r)]
    assert sorted(made) == sorted(sampled)  # generated: the sampled clients, once a round
    assert pool.built == data.generated == 400
    assert len(pool.alive) == 0  # no client outlives its fit
    store = experiment.store
    assert store.clients() == [str(k) for k in sorted(set(sampled))]
    row = store.layout.row_bytes  # type: ignore[union-attr]
    assert row == (60 * 10 + 10) * 4  # c_i of the logistic regression
    # one row per client that ever trained, in a sparse file of 20,000 rows
    assert store.disk_bytes() < 20_000 * row / 10
    assert len(data.train) == 0
