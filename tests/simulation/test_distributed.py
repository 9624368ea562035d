"""The torch.distributed engine: assignment, the one-buffer reduction, refusals, and real
ranks on loopback (torchrun and ``simulation.workers``), including a rank that dies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import fedloom.features  # noqa: F401  (registers strategies and aggregators)
from fedloom.algorithms.fednova import NORMALIZER_KEY, NormalizedAverage
from fedloom.config import load_config
from fedloom.core.errors import ConfigError, FedloomError
from fedloom.experiment import Experiment
from fedloom.server.server import RoundTally
from fedloom.server.strategy import SampleWeightedMean
from fedloom.server.weights import FixedWeights, _CappedRound
from fedloom.simulation.distributed import config_differences
from fedloom.simulation.launch import launch, rank_env
from fedloom.simulation.ranks import pack_files, unpack_files
from fedloom.simulation.reduce import ELSEWHERE, pack, slots_of, tally_slot, unpack
from fedloom.simulation.shard import balanced_assignment

HERE = Path(__file__).parent
SMALL = [
    "model.name=logreg",
    "rounds=3",
    "clients.num=8",
    "clients.per_round=5",
    "compute.threads=1",
    "eval_every=3",
]


# -- who runs which client -------------------------------------------------------------------


def test_balanced_assignment_is_greedy_by_work() -> None:
    work = {"a": 5, "b": 4, "c": 3, "d": 3}
    # 5 -> r0; 4 -> r1; 3 (c) -> r1 (load 4 < 5); 3 (d) -> r0 (5 < 7)
    assert balanced_assignment(["a", "b", "c", "d"], work, 2) == [["a", "d"], ["b", "c"]]
    # ties go to the earlier id (d before c); each share keeps the order of the ids
    assert balanced_assignment(["d", "c", "b", "a"], work, 2) == [["c", "a"], ["d", "b"]]
    assert balanced_assignment(["a", "b"], work, 3) == [["a"], ["b"], []]
    assert balanced_assignment(["a", "b", "c"], {}, 1) == [["a", "b", "c"]]


def test_every_client_is_run_once() -> None:
    ids = [str(k) for k in range(37)]
    work = {cid: 1 + (7 * int(cid)) % 11 for cid in ids}
    shares = balanced_assignment(ids, work, 4)
    assert sorted(c for share in shares for c in share) == sorted(ids)
    loads = [sum(work[c] for c in share) for share in shares]
    assert max(loads) - min(loads) <= max(work.values())


# -- the one float64 buffer ------------------------------------------------------------------

UPDATES = [
    ({"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])}, 2, 0.5),
    ({"w": torch.tensor([-1.0, 0.0]), "b": torch.tensor([1.0])}, 3, 1.0),
    ({"w": torch.tensor([4.0, 4.0]), "b": torch.tensor([0.0])}, 5, 2.0),
]
TEMPLATE = {"w": torch.zeros(2), "b": torch.zeros(1)}


def _reduced(make, shares):
    """Each 'rank' feeds its share; the packed buffers are summed as all_reduce would."""
    aggs = [make() for _ in shares]
    for agg, share in zip(aggs, shares, strict=True):
        for k in share:
            update, n, a = UPDATES[k]
            agg.add(str(k), update, {"num_examples": n, NORMALIZER_KEY: a})
    slots = [slots_of(agg, TEMPLATE) for agg in aggs]
    total = sum(pack(s) for s in slots)
    for s in slots:
        unpack(s, total.clone())
    return aggs


def test_weighted_mean_reduced_over_ranks_is_the_mean() -> None:
    aggs = _reduced(SampleWeightedMean, [[0, 2], [1], []])
    # hand-computed: (2·[1,2] + 3·[-1,0] + 5·[4,4]) / 10 = [1.9, 2.4]; b: (6 + 3 + 0)/10
    for agg in aggs:
        assert agg.count == 3
        result = agg.result()
        assert torch.allclose(result["w"], torch.tensor([1.9, 2.4]))
        assert torch.allclose(result["b"], torch.tensor([0.9]))
        assert result["w"].dtype == torch.float32


def test_fednova_reduced_over_ranks_equals_one_process() -> None:
    one = _reduced(NormalizedAverage, [[0, 1, 2]])[0].result()
    for agg in _reduced(NormalizedAverage, [[2], [0, 1]]):
        result = agg.result()
        assert all(torch.allclose(result[n], one[n], atol=1e-7) for n in one)
    # τ_eff = Σ n·a / Σ n = (1 + 3 + 10)/10 = 1.4
    # w = τ_eff/10 · (2/0.5·[1,2] + 3/1·[-1,0] + 5/2·[4,4]) = 0.14 · [11, 18]
    assert torch.allclose(one["w"], torch.tensor([1.4 * 11 / 10, 1.4 * 18 / 10]))


def test_a_rank_without_updates_contributes_zeros() -> None:
    aggs = _reduced(lambda: FixedWeights(None).wrap(SampleWeightedMean()), [[], []])
    assert all(agg.count == 0 for agg in aggs)
    with pytest.raises(ValueError, match="no update"):
        aggs[0].result()


def test_tally_is_summed_with_each_clients_outcome() -> None:
    sampled = ["3", "5", "7", "9"]
    mine = RoundTally(bytes_up=100, loss_sum=1.5, examples=3, failed=["3"])
    theirs = RoundTally(bytes_up=50, loss_sum=0.5, examples=2, rejected={"9": "NaN"}, non_finite=1)
    slots = [tally_slot(mine, sampled), tally_slot(theirs, sampled)]
    total = slots[0].pack() + slots[1].pack()
    for slot in slots:
        slot.unpack(total.clone())
    for tally in (mine, theirs):
        assert (tally.bytes_up, tally.examples, tally.non_finite) == (150, 5, 1)
        assert tally.loss_sum == pytest.approx(2.0)
        assert tally.failed == ["3"]
    assert mine.rejected == {"9": ELSEWHERE} and theirs.rejected == {"9": "NaN"}


def test_an_aggregator_that_is_not_a_sum_is_refused() -> None:
    with pytest.raises(FedloomError, match="_CappedRound is not a sum"):
        slots_of(_CappedRound(SampleWeightedMean(), 2.0), TEMPLATE)


def test_start_files_round_trip_and_refuse_paths() -> None:
    files = {"config.yaml": b"rounds: 3\n", "checkpoint.state.json": b"{}"}
    assert unpack_files(pack_files(files)) == files
    with pytest.raises(FedloomError, match="unexpected file name"):
        unpack_files(pack_files({"../evil": b""}))


def test_rank_environment_is_torchruns() -> None:
    env = rank_env({"PATH": "/bin"}, 1, 2, 29500, 3)
    assert env["RANK"] == "1" and env["WORLD_SIZE"] == "2" and env["MASTER_PORT"] == "29500"
    assert env["MASTER_ADDR"] == "127.0.0.1" and env["OMP_NUM_THREADS"] == "3"
    assert rank_env({"OMP_NUM_THREADS": "1"}, 0, 2, 1, 3)["OMP_NUM_THREADS"] == "1"


def test_configs_of_ranks_are_compared_by_section() -> None:
    a = load_config(None, ["rounds=3", "output_dir=/tmp/a"])
    b = load_config(None, ["rounds=4", "train.lr=0.5", "output_dir=/tmp/b"])
    assert config_differences(a, a.model_copy(update={"output_dir": "x"})) == []
    assert config_differences(a, b) == ["rounds", "train"]


# -- refused at config time, naming both keys ----------------------------------------------


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("strategy.aggregator=median", "strategy.aggregator=median"),
        ("strategy.name=scaffold", "strategy.name=scaffold"),
        ("privacy.mode=local privacy.noise_multiplier=1", "privacy.mode=local"),
        ("devices.enabled=true", "devices.enabled"),
        ("compression.up=topk:0.1", "compression.up=topk:0.1"),
        ("eval.client_fraction=0.2", "eval.client_fraction=0.2"),
        ("compute.device=cuda:1", "compute.device=cuda:1"),
        ("compute.device=cuda", "compute.device=cuda"),
    ],
)
def test_workers_refuse_what_they_cannot_share(
    override: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if override == "compute.device=cuda" and torch.cuda.device_count() >= 2:
        pytest.skip("this machine has two GPUs")
    with pytest.raises(ConfigError) as error:
        load_config(None, ["simulation.workers=2", *override.split()])
    assert "simulation.workers=2" in str(error.value) and named in str(error.value)


def test_torchrun_world_is_checked_like_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="torchrun's 2 ranks .* strategy.aggregator=krum"):
        load_config(None, ["strategy.aggregator=krum", "clients.per_round=10"])
    assert load_config(None, ["simulation.workers=1", "strategy.name=fedprox"]).simulation


# -- real ranks on loopback ------------------------------------------------------------------


def _single(tmp_path: Path, rounds: int) -> dict[str, torch.Tensor]:
    threads = torch.get_num_threads()
    try:
        config = load_config(None, [*SMALL, f"rounds={rounds}", f"output_dir={tmp_path / 'one'}"])
        return {
            n: t.detach().clone() for n, t in Experiment(config).run().model.state_dict().items()
        }
    finally:
        torch.set_num_threads(threads)


def _max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def test_a_dead_rank_stops_the_run_and_torchrun_resumes_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Launched with simulation.workers=2, rank 1 dies as round 3 begins: the launcher
    fails with a clear message, rank 0's checkpoint of round 2 stays. torchrun's two ranks
    resume it (rank 1 gets config and checkpoint from rank 0) and end where one process
    running all four rounds ends."""
    out = tmp_path / "run"
    plugin = str(HERE / "dying_rank.py")
    args = [*SMALL, "rounds=4", "strategy.name=fedavg_rank_dies", "simulation.timeout_s=120"]
    dying = {"FEDLOOM_TEST_KILL_RANK": "1", "FEDLOOM_TEST_KILL_ROUND": "3"}
    for name, value in dying.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # what the killed rank leaves
    # what `fedloom run simulation.workers=2` does: two ranks of the same command line
    code = launch(["--import", plugin, "run", *args, f"output_dir={out}"], 2, threads=1)
    for name in dying:
        monkeypatch.delenv(name)
    said = " ".join(capfd.readouterr().err.split())  # the console may wrap long lines
    assert code == 1, said[-3000:]
    assert "rank 1 of 2 was killed by SIGKILL" in said
    assert "another rank was lost during round 3 (" in said, said[-3000:]
    assert f"fedloom resume {out}` continues" in said
    assert json.loads((out / "checkpoint" / "state.json").read_text())["round"] == 2

    resumed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "fedloom", "resume", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {out} after round 2" in " ".join(resumed.stderr.split())
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2, 3, 4]
    assert [m["num_clients"] for m in lines] == [5, 5, 5, 5]  # every sampled client, once
    assert lines[-1]["test_accuracy"] > 0.8
    assert lines[0]["test_accuracy"] is None  # eval_every=3: rank 0 evaluates rounds 3, 4
    assert _max_gap(load_file(out / "model.safetensors"), _single(tmp_path, 4)) <= 1e-5
    # the other ranks wrote nothing here; rank 0 its usual files
    assert not any(p.name.startswith("fedloom-rank") for p in out.iterdir())
