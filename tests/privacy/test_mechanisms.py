import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.core.errors import ConfigError
from fedloom.core.tensors import global_norm
from fedloom.privacy.accountant import Accountant
from fedloom.privacy.adaptive import AdaptiveClip, update_noise_multiplier
from fedloom.privacy.central import CentralMechanism, DPSumAggregator
from fedloom.privacy.clipping import clip_update
from fedloom.privacy.noise import SecureNoise, SeededNoise
from fedloom.privacy.sampler import PoissonSampler

floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(
    a=st.lists(floats, min_size=1, max_size=20),
    b=st.lists(floats, min_size=1, max_size=7),
    clip=st.floats(1e-4, 1e4),
)
def test_every_clipped_update_has_norm_at_most_clip(
    a: list[float], b: list[float], clip: float
) -> None:
    update = {"w": torch.tensor(a), "b": torch.tensor(b)}
    clipped, norm = clip_update(update, clip)
    assert global_norm(clipped) <= clip
    assert norm == pytest.approx(global_norm(update))
    if norm <= clip:  # inside the ball: untouched
        assert all(torch.equal(clipped[n], update[n]) for n in update)
    else:  # outside: same direction, on the sphere
        assert global_norm(clipped) == pytest.approx(clip, rel=1e-4)


def test_clip_scales_all_tensors_together() -> None:
    clipped, norm = clip_update({"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}, 1.0)
    assert norm == 5.0
    assert clipped["a"].item() == pytest.approx(0.6, rel=1e-5)
    assert clipped["b"].item() == pytest.approx(0.8, rel=1e-5)


def _mechanism(
    noise_multiplier: float, clip: float, expected: float, **kw: object
) -> CentralMechanism:
    return CentralMechanism(
        clip=clip,
        noise_multiplier=noise_multiplier,
        sample_rate=0.1,
        expected_clients=expected,
        accountant=Accountant(),
        noise=SeededNoise(0, "t"),
        **kw,
    )


def test_aggregate_noise_std_is_multiplier_times_sensitivity_over_denominator() -> None:
    mech = _mechanism(1.5, 0.4, expected=8.0)
    template = {"w": torch.zeros(200_000)}
    agg = DPSumAggregator(mech, 1, template)
    # default grid: the largest power of two with γ√d/2 ≤ clip/100
    assert agg.step == 2.0**-16
    inflated = 0.4 + 2.0**-16 * math.sqrt(200_000) / 2  # 0.40341: the rounding's inflation
    assert agg.sensitivity == pytest.approx(inflated)
    result = agg.result()["w"]  # no update at all: pure noise
    expected_std = 1.5 * inflated / 8.0  # 0.07564
    assert result.std().item() == pytest.approx(expected_std, rel=0.005)
    assert abs(result.mean().item()) < 5 * expected_std / math.sqrt(200_000)
    assert mech.accountant.history == [(1.5, 0.1, 1)]


def test_aggregate_is_clipped_sum_over_expected_clients() -> None:
    mech = _mechanism(0.0, 1.0, expected=4.0, granularity=2.0**-20)
    agg = DPSumAggregator(mech, 1, {"w": torch.zeros(2)})
    agg.add("0", {"w": torch.tensor([3.0, 4.0])}, {"num_examples": 100})  # norm 5 -> clipped to 1
    agg.add("1", {"w": torch.tensor([0.5, 0.0])}, {"num_examples": 1})  # inside, weight 1 too
    out = agg.result()["w"]
    assert out.tolist() == pytest.approx([(0.6 + 0.5) / 4, 0.8 / 4], rel=1e-5)
    assert agg.count == 2 and agg.unclipped == 1


def test_seeded_noise_is_reproducible_and_keyed() -> None:
    n = SeededNoise(7, "x")
    a = n.normal(torch.Size([5]), 1.0, torch.float32, 3, "w")
    assert torch.equal(a, n.normal(torch.Size([5]), 1.0, torch.float32, 3, "w"))
    assert not torch.equal(a, n.normal(torch.Size([5]), 1.0, torch.float32, 4, "w"))


def test_secure_noise_is_gaussian_and_not_repeatable() -> None:
    s = SecureNoise()
    x = s.normal(torch.Size([400, 501]), 2.0, torch.float64, 1)
    assert x.shape == (400, 501)
    assert x.std().item() == pytest.approx(2.0, rel=0.01)
    assert abs(x.mean().item()) < 0.02
    # fourth moment of a normal is 3σ⁴: catches a uniform or a wrongly scaled transform
    assert (x**4).mean().item() / 16 == pytest.approx(3.0, rel=0.03)
    assert not torch.equal(x, s.normal(torch.Size([400, 501]), 2.0, torch.float64, 1))


def test_poisson_sampler_rate_and_reproducibility() -> None:
    s = PoissonSampler(1000, 0.05, seed=3)
    sizes = [len(s.sample(r)) for r in range(1, 201)]
    assert sum(sizes) / len(sizes) == pytest.approx(50, rel=0.03)
    assert len(set(sizes)) > 5  # the size varies, as Poisson sampling must
    assert s.sample(17) == PoissonSampler(1000, 0.05, seed=3).sample(17)
    assert PoissonSampler(5, 1e-9, seed=0).sample(1) == []


def test_adaptive_noise_split_formula() -> None:
    # z = 1, σ_b = 1: z_Δ = (1 - 1/4)^(-1/2) = 2/sqrt(3)
    assert update_noise_multiplier(1.0, 1.0) == pytest.approx(2 / math.sqrt(3))
    z_delta = update_noise_multiplier(0.8, 2.5)
    assert (z_delta**-2 + (2 * 2.5) ** -2) ** -0.5 == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="too small"):
        update_noise_multiplier(2.0, 1.0)


def test_adaptive_clip_moves_toward_target_quantile() -> None:
    # norms uniform on [0, 10]: the median is 5; start far below and far above
    norms = torch.linspace(0, 10, 101)
    for start in (0.1, 50.0):
        clip = AdaptiveClip(start, quantile=0.5, lr=0.2, count_std=0.0)
        for _ in range(200):
            below = float((norms <= clip.clip).sum())
            clip.step(below - len(norms) / 2, expected=len(norms))  # the sum of b - 1/2
        assert clip.clip == pytest.approx(5.0, abs=0.3)
    clip = AdaptiveClip(1.0, quantile=0.5, lr=0.2, count_std=0.0)
    assert clip.step(5.0, 10.0) == pytest.approx(math.exp(-0.1))  # all below: shrink by e^-0.1
    clip = AdaptiveClip(1.0, quantile=0.5, lr=0.2, count_std=1.0)
    assert clip.step(-9.0, 10.0) == pytest.approx(math.exp(0.1))  # noise past 0: clamped


def test_adaptive_aggregator_uses_split_noise_and_updates_clip() -> None:
    adaptive = AdaptiveClip(1.0, quantile=0.5, lr=0.2, count_std=1.0)
    mech = _mechanism(1.0, 1.0, expected=10.0, adaptive=adaptive)
    agg = DPSumAggregator(mech, 2, {"w": torch.zeros(100_000)})
    out = agg.result()["w"]
    assert out.std().item() == pytest.approx(2 / math.sqrt(3) * agg.sensitivity / 10.0, rel=0.02)
    assert adaptive.clip != 1.0  # moved by the noised count
    assert mech.accountant.history == [(1.0, 0.1, 1)]  # accounted at the combined z


def test_client_clips_before_compression_and_reports_its_bit() -> None:
    from fedloom.client.context import FitContext
    from fedloom.privacy.central import CLIP_KEY, WITHIN_CLIP, client_clip_hook

    hook = client_clip_hook()
    ctx = FitContext("3", 1, {CLIP_KEY: 2.0}, {}, {}, 0)
    out = hook({"a": torch.tensor([6.0]), "b": torch.tensor([8.0])}, ctx)  # norm 10
    assert [out["a"].item(), out["b"].item()] == pytest.approx([1.2, 1.6], rel=1e-5)
    assert ctx.meta[WITHIN_CLIP] is False
    inside = FitContext("3", 1, {CLIP_KEY: 2.0}, {}, {}, 0)
    assert hook({"a": torch.tensor([1.0])}, inside)["a"].item() == 1.0
    assert inside.meta[WITHIN_CLIP] is True
    # the server counts the client's bit (measured before compression), not the norm it
    # sees after decoding, and still clips what arrives
    mech = _mechanism(0.0, 1.0, expected=2.0, granularity=2.0**-20)
    agg = DPSumAggregator(mech, 1, {"w": torch.zeros(1)})
    agg.add("0", {"w": torch.tensor([0.5])}, {WITHIN_CLIP: False})
    agg.add("1", {"w": torch.tensor([3.0])}, {WITHIN_CLIP: True})
    agg.add("2", {"w": torch.tensor([0.5])}, {})  # no bit: the server measures
    assert agg.unclipped == 2
    assert agg.result()["w"].item() == pytest.approx((0.5 + 1.0 + 0.5) / 2)


def test_central_strategy_announces_the_current_clip() -> None:
    from fedloom.privacy.central import CLIP_KEY, CentralDPStrategy
    from fedloom.server.strategy import StrategyConfig, build_strategy

    adaptive = AdaptiveClip(0.7, quantile=0.5, lr=0.2, count_std=1.0)
    strategy = CentralDPStrategy(
        build_strategy(StrategyConfig()), _mechanism(1.0, 1.0, 5.0, adaptive=adaptive)
    )
    assert strategy.fit_config(3)[CLIP_KEY] == 0.7


class _NoNoise:
    def normal(
        self, shape: torch.Size, std: float, dtype: torch.dtype, *keys: object
    ) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype)

    def discrete_gaussian(self, shape: torch.Size, scale: float, *keys: object) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.int64)


def test_adaptive_count_moves_by_half_when_one_user_joins() -> None:
    # Poisson sampling: neighbouring rounds differ by one participant. The released sum of
    # b - 1/2 must move by exactly 1/2 either way, the sensitivity the accountant assumes.
    def released(bits: list[bool]) -> float:
        adaptive = AdaptiveClip(1.0, quantile=0.5, lr=1.0, count_std=1.0)
        mech = CentralMechanism(1.0, 1.0, 0.1, 10.0, Accountant(), _NoNoise(), adaptive)  # type: ignore[arg-type]
        agg = DPSumAggregator(mech, 1, {"w": torch.zeros(1)})
        for k, within in enumerate(bits):
            agg.add(str(k), {"w": torch.tensor([0.5 if within else 5.0])}, {})
        agg.result()
        fraction = 0.5 - math.log(adaptive.clip)  # lr 1: clip = exp(-(fraction - 1/2))
        return (fraction - 0.5) * 10.0  # the noised sum, back from b-bar

    base = [True, False, True]
    assert released(base) == pytest.approx(0.5)  # 2 * (+1/2) + 1 * (-1/2)
    assert released([*base, True]) - released(base) == pytest.approx(0.5)
    assert released([*base, False]) - released(base) == pytest.approx(-0.5)


def test_secure_uniform_reaches_below_two_to_the_minus_53(monkeypatch: pytest.MonkeyPatch) -> None:
    # the radius uniform of Box–Muller: a 53-bit uniform stops at 2^-53 (normals cut at
    # 8.57σ); this one reads on through zero words, so 2^-159 (a 14.8σ radius) can occur
    from fedloom.privacy import noise

    words = iter([0, 0, 0, 1 << 11])  # mantissa 0, two zero words, then one set bit

    def scripted(n: int) -> bytes:
        return b"".join(next(words).to_bytes(8, "little") for _ in range(n // 8))

    monkeypatch.setattr(noise.os, "urandom", scripted)
    u = noise._uniform_full_range(1)
    assert u.tolist() == [2.0**-159]  # 53 + 53 + 52 leading zeros, then the binade's floor
    assert math.sqrt(-2 * math.log(u[0])) == pytest.approx(14.84, abs=0.01)
