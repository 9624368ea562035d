"""Simulated devices: deadlines, partial work, dropouts, and the simulated clock."""

import pytest
import torch

import fedloom.features  # noqa: F401  (registers strategies and aggregators)
from fedloom.compression.codec import RawCodec
from fedloom.config import load_config
from fedloom.core.message import Message
from fedloom.experiment import Experiment
from fedloom.server.checkpoint import load_checkpoint
from fedloom.server.sampler import UniformSampler
from fedloom.server.server import Server
from fedloom.server.strategy import StrategyConfig, build_strategy
from fedloom.simulation.config import DevicesConfig
from fedloom.simulation.devices import DeviceProfile, SimulatedDevices, draw_profiles
from fedloom.transport.inprocess import InProcessTransport

CODEC = RawCodec()
FAST, SLOW = DeviceProfile(1.0, 1e12, 1.0), DeviceProfile(0.1, 1e12, 1.0)


def handler(k: int):
    """Client k trains ``step_budget`` (default 10) steps and sends the update k + 1."""

    def handle(message: Message) -> Message:
        steps = message.meta.get("step_budget", 10)
        update = CODEC.encode({"w": torch.tensor([float(k + 1)])})
        meta = {"num_examples": 5, "steps": steps}
        return Message("fit_result", message.round, str(k), update, meta)

    return handle


def server_with(config: DevicesConfig, profiles=None) -> tuple[Server, SimulatedDevices]:
    profiles = profiles or {"0": FAST, "1": FAST, "2": SLOW}
    # 10 steps of 0.1 s: a fast device needs 1 s, the slow one 10 s
    devices = SimulatedDevices(profiles, {k: 10 for k in profiles}, config, seed=0)
    transport = devices.bind(InProcessTransport({str(k): handler(k) for k in range(3)}))
    server = Server(
        global_state={"w": torch.zeros(1)},
        client_ids=["0", "1", "2"],
        strategy=build_strategy(StrategyConfig()),
        sampler=UniformSampler(3, 3, seed=0),
        transport=transport,
        down=CODEC,
        up=CODEC,
    )
    server.metric_sources.append(devices.metrics)
    return server, devices


def test_client_missing_the_deadline_is_left_out_and_the_round_completes():
    server, devices = server_with(DevicesConfig(enabled=True, step_s=0.1, deadline_s=5.0))
    metrics = server.run_round(1)
    # only clients 0 and 1 (updates 1 and 2) are averaged
    assert server.global_state["w"].item() == pytest.approx(1.5)
    assert metrics["num_clients"] == 2 and metrics["num_failed"] == 1
    assert metrics["participants"] == ["0", "1"] and metrics["missed_deadline"] == ["2"]
    assert metrics["sim_round_s"] == pytest.approx(5.0)  # the server waited out the deadline


def test_without_naming_clients_the_metrics_carry_counts_only():
    server, devices = server_with(DevicesConfig(enabled=True, step_s=0.1, deadline_s=5.0))
    devices.name_clients = False  # a DP run: ids are outside epsilon
    metrics = server.run_round(1)
    assert metrics["num_missed_deadline"] == 1 and metrics["num_offline"] == 0
    assert metrics["num_dropped"] == 0 and metrics["num_partial"] == 0
    assert not {"participants", "offline", "dropped", "missed_deadline", "partial_steps"} & set(
        metrics
    )
    assert metrics["sim_round_s"] == pytest.approx(5.0)


def test_partial_policy_gives_slow_devices_a_step_budget():
    config = DevicesConfig(enabled=True, step_s=0.1, deadline_s=5.5, policy="partial")
    server, devices = server_with(config)
    metrics = server.run_round(1)
    assert server.global_state["w"].item() == pytest.approx(2.0)  # all three averaged
    assert metrics["partial_steps"] == {"2": 5}  # floor(5.5 s / 1 s per slow step)
    assert metrics["sim_round_s"] == pytest.approx(5.0, rel=1e-6)
    server.run_round(2)
    assert devices.clock_s == pytest.approx(10.0, rel=1e-6)


def test_without_deadline_the_round_lasts_as_long_as_the_slowest():
    server, _ = server_with(DevicesConfig(enabled=True, step_s=0.1))
    assert server.run_round(1)["sim_round_s"] == pytest.approx(10.0, rel=1e-6)


def test_dropouts_and_availability_are_seeded_per_round():
    config = DevicesConfig(enabled=True, dropout=0.5)
    server, devices = server_with(config, {k: FAST for k in "012"})
    dropped = [server.run_round(r)["dropped"] for r in range(1, 41)]
    rate = sum(len(d) for d in dropped) / (3 * 40)
    assert 0.35 < rate < 0.65
    again, _ = server_with(config, {k: FAST for k in "012"})
    assert [again.run_round(r)["dropped"] for r in range(1, 41)] == dropped


def test_profiles_are_seeded():
    config = DevicesConfig(enabled=True, availability_min=0.5)
    a, b = draw_profiles(["0", "1"], config, 3), draw_profiles(["0", "1"], config, 3)
    assert a == b and a != draw_profiles(["0", "1"], config, 4)
    assert all(0.5 <= p.availability <= 1 for p in a.values())


@pytest.mark.slow
def test_deadline_run_on_digits(tmp_path):
    overrides = [
        "rounds=3",
        "model.name=logreg",
        "clients.num=6",
        "clients.per_round=6",
        "train.batch_size=16",
        "devices.enabled=true",
        "devices.speed_sigma=1.0",
        "devices.deadline_s=0.5",
        f"output_dir={tmp_path}",
    ]
    result = Experiment(load_config(None, overrides)).run()
    for line in result.metrics:
        assert line["num_clients"] == len(line["participants"])
        assert line["num_clients"] + len(line["missed_deadline"]) == 6
        assert line["sim_round_s"] == pytest.approx(0.5)
    assert result.metrics[0]["missed_deadline"]  # speed spread 1.0: someone is too slow
    assert result.summary["final_test_accuracy"] > 0.7
    # the simulated clock is checkpointed, so a resumed run keeps counting from 1.5 s
    assert load_checkpoint(tmp_path / "checkpoint").extra["devices"]["clock_s"] == pytest.approx(
        1.5
    )


def test_trainer_obeys_the_step_budget():
    from fedloom.client.context import FitContext
    from fedloom.client.trainer import LocalTrainer, TrainConfig
    from fedloom.data.base import TensorData

    data = TensorData(torch.randn(40, 3), torch.randint(0, 2, (40,)))
    trainer = LocalTrainer(TrainConfig(local_epochs=2, batch_size=4))
    gen = torch.Generator().manual_seed(0)

    def steps(meta: dict) -> int:
        ctx = FitContext("0", 1, meta, {}, {}, 0)
        return trainer.train(torch.nn.Linear(3, 2), data, gen, ctx).steps

    assert steps({}) == 20
    assert steps({"step_budget": 3}) == 3
    assert steps({"step_budget": 50}) == 20
    with pytest.raises(ValueError, match="step_budget"):
        steps({"step_budget": 0})
