"""Error feedback keeps what the codec dropped; pruning reaches its sparsity."""

import torch

from fedloom.compression.blob import SpecCodec
from fedloom.compression.feedback import FeedbackCodec, residual_of
from fedloom.compression.prune import MagnitudePruner, prune_tensor, sparsity_of
from fedloom.core.codec import encode_update, max_encoded_bytes, uplink_key


def test_residual_invariant_holds_over_rounds():
    codec = SpecCodec("topk:0.1+int4", seed=5)
    feedback = FeedbackCodec(codec)
    state: dict = {}
    gen = torch.Generator().manual_seed(0)
    old = {"w": torch.zeros(40), "b": torch.zeros(7)}
    total_update = {n: torch.zeros_like(t) for n, t in old.items()}
    total_sent = {n: torch.zeros_like(t) for n, t in old.items()}
    for rnd in range(1, 9):
        update = {"w": torch.randn(40, generator=gen), "b": torch.randn(7, generator=gen)}
        payload = encode_update(feedback, update, uplink_key(rnd, "3"), state)
        sent = feedback.decode(payload)  # what the server reads
        new = residual_of(state)
        for n in update:
            # sent + new residual == update + old residual
            assert torch.allclose(sent[n] + new[n], update[n] + old[n], atol=1e-6)
            total_update[n] += update[n]
            total_sent[n] += sent[n]
        old = {n: t.clone() for n, t in new.items()}
    # nothing is lost: everything not yet sent is exactly the residual
    for n in old:
        assert torch.allclose(total_sent[n] + old[n], total_update[n], atol=1e-5)


def test_topk_with_feedback_eventually_sends_every_coordinate():
    feedback, state = FeedbackCodec(SpecCodec("topk:0.1", seed=0)), {}
    update = {"w": torch.linspace(1.0, 2.0, 20)}  # topk alone would only ever send the top 2
    sent_any = torch.zeros(20, dtype=torch.bool)
    for rnd in range(1, 21):
        payload = encode_update(feedback, update, uplink_key(rnd, "3"), state)
        sent_any |= feedback.decode(payload)["w"] != 0
    assert bool(sent_any.all())


def test_feedback_codec_decodes_and_bounds_as_its_inner():
    inner = SpecCodec("int8", seed=1)
    feedback = FeedbackCodec(inner)
    shapes, dtypes = {"w": (6, 5)}, {"w": torch.float32}
    assert feedback.max_encoded_bytes(shapes, dtypes) == inner.max_encoded_bytes(shapes, dtypes)
    # magic and length (8) + header [["w","float32",[6,5]]] (23) + 30 int8 values + 1 scale
    assert max_encoded_bytes(feedback, shapes, dtypes) == 8 + 23 + 30 + 4
    x = {"w": torch.linspace(-1.0, 1.0, 30).view(6, 5)}
    payload = feedback.encode(x, ("up", 1, "0"))  # no client state: the inner's plain encode
    assert payload == inner.encode(x, ("up", 1, "0"))
    assert torch.equal(feedback.decode(payload)["w"], inner.decode(payload)["w"])


class _Unbounded:
    name = "unbounded"

    def encode(self, tensors, key=()):
        return b""

    def decode(self, data):
        return {}


def test_feedback_around_an_unbounded_codec_has_no_bound():
    bound = max_encoded_bytes(FeedbackCodec(_Unbounded()), {"w": (3,)}, {"w": torch.float32})
    assert bound is None


def test_a_plain_codec_encodes_without_touching_the_state():
    codec, state = SpecCodec("topk:0.5", seed=2), {}
    x = {"w": torch.tensor([3.0, -1.0, 0.5, 2.0])}
    assert encode_update(codec, x, ("up", 1, "0"), state) == codec.encode(x, ("up", 1, "0"))
    assert state == {}


def test_prune_tensor_zeroes_the_smallest():
    t = torch.tensor([[0.1, -3.0, 0.2], [2.0, -0.05, 1.0]])
    out = prune_tensor(t, 0.5)
    assert torch.equal(out, torch.tensor([[0.0, -3.0, 0.0], [2.0, 0.0, 1.0]]))
    assert torch.equal(t[0], torch.tensor([0.1, -3.0, 0.2]))  # input untouched
    assert sparsity_of({"w": out, "bias": torch.zeros(5)}) == 0.5  # biases do not count


def test_pruner_ramps_and_restores():
    pruner = MagnitudePruner(0.8, ramp=4)

    def apply(g, a):
        return pruner.step({n: g[n] - a[n] for n in g})

    state = {"w": torch.arange(1.0, 101.0).view(10, 10), "b": torch.ones(10)}
    levels = []
    for _ in range(5):
        state = apply(state, {"w": torch.zeros(10, 10), "b": torch.zeros(10)})
        levels.append(pruner.sparsity)
    assert levels == [0.2, 0.4, 0.6, 0.8, 0.8]
    assert torch.equal(state["b"], torch.ones(10))
    assert int((state["w"] != 0).sum()) == 20 and float(state["w"].min()) == 0.0
    restored = MagnitudePruner(0.8, ramp=4)
    restored.load_state_dict(pruner.state_dict())
    assert restored.steps == 5 and restored.metrics(6) == {"sparsity": 0.8}


def test_error_feedback_encodes_each_update_once(monkeypatch) -> None:
    from fedloom.compression.blob import SpecCodec
    from fedloom.config import load_config
    from fedloom.experiment import Experiment

    calls = []
    encode = SpecCodec.encode

    def counting(self, tensors, key=()):
        calls.append(key)
        return encode(self, tensors, key)

    monkeypatch.setattr(SpecCodec, "encode", counting)
    overrides = ["model.name=logreg", "clients.num=3", "clients.per_round=3", "rounds=1"]
    exp = Experiment(load_config(None, [*overrides, "compression.up=topk:0.1+int8"]))
    exp.server.run(1)
    assert len(calls) == 3  # one uplink encode per client, shared with error feedback
    residuals = [c.state for c in exp.clients.values()]
    assert all(any(k.startswith("compression.residual.") for k in s) for s in residuals)
