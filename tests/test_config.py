import pytest

from fedloom.config import load_config, nest, to_yaml
from fedloom.core.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("rounds: 7\ntrain:\n  lr: 0.2\n")
    cfg = load_config(path, ["train.lr=0.3", "data.partition=dirichlet", "data.alpha=0.1"])
    assert (cfg.rounds, cfg.train.lr, cfg.data.partition, cfg.data.alpha) == (
        7,
        0.3,
        "dirichlet",
        0.1,
    )
    assert cfg.model.name == "cnn" and cfg.clients.num == 10
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(to_yaml(cfg))
    assert load_config(resolved) == cfg


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["train.lrr=0.1", "rounds=-1", "data.partition=random", "clients.num=x"])
    problems = error.value.problems
    assert len(problems) == 4
    text = str(error.value)
    assert "train.lrr: unknown key (did you mean 'train.lr'?)" in text
    assert "allowed here:" in text and "local_epochs" in text
    assert "rounds:" in text and "greater than or equal to 1" in text
    assert "data.partition: 'random' is not registered; registered: dirichlet, iid" in text
    assert "clients.num" in text


def test_cross_field_and_syntax_errors():
    with pytest.raises(ConfigError, match="per_round"):
        load_config(None, ["clients.num=5", "clients.per_round=6"])
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(None, ["rounds"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/no/such/file.yaml")


def test_nest_accepts_dotted_and_nested_keys():
    assert nest({"clients.num": 3, "train": {"lr": 0.1}, "train.batch_size": 4}) == {
        "clients": {"num": 3},
        "train": {"lr": 0.1, "batch_size": 4},
    }
