import pytest

from fedloom.server.sampler import UniformSampler


def test_sampler_is_seeded_distinct_and_covers_clients():
    sampler = UniformSampler(100, 10, seed=3)
    picks = [sampler.sample(r) for r in range(1, 201)]
    assert picks[0] == UniformSampler(100, 10, seed=3).sample(1)
    assert picks[0] != UniformSampler(100, 10, seed=4).sample(1)
    assert all(len(set(p)) == 10 and all(0 <= k < 100 for k in p) for p in picks)
    counts = [0] * 100
    for p in picks:
        for k in p:
            counts[k] += 1
    # 2000 draws over 100 clients: each expected 20 times; binomial sd ~4.2
    assert min(counts) >= 5 and max(counts) <= 40


def test_sampler_rejects_impossible_sizes():
    with pytest.raises(ValueError):
        UniformSampler(5, 6, seed=0)
