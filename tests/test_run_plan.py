"""Sampling plans: labels and seeds are pure functions of (seed, index); shards partition the indices."""

from __future__ import annotations

import numpy as np
import pytest

from bench.errors import BenchError
from bench.run.plan import SamplingPlan, hash_indices, splitmix64

M = (1 << 64) - 1


def splitmix64_py(x: int) -> int:
    """splitmix64's finaliser on Python ints, the published constants written out independently."""
    z = (x + 0x9E3779B97F4A7C15) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def test_splitmix64_matches_the_reference_sequence():
    # splitmix64 seeded with 0 yields, as its first output, finaliser(0 + golden gamma); known value:
    assert splitmix64_py(0) == 0xE220A8397B1DCDAF
    xs = np.array([0, 1, 2**63, M, 123456789], dtype=np.uint64)
    assert splitmix64(xs).tolist() == [splitmix64_py(int(x)) for x in xs]


def test_hash_indices_matches_pure_python():
    seed, stream, idx = 42, 0x5EED, np.array([0, 1, 49_999, 10**9])
    base = splitmix64_py(splitmix64_py(seed) ^ stream)
    assert hash_indices(seed, stream, idx).tolist() == [splitmix64_py((base + int(i)) & M) for i in idx]


def test_seeds_and_random_labels_depend_only_on_seed_and_index():
    small, big = SamplingPlan(10, 1000, 5), SamplingPlan(50_000, 1000, 5, shard_size=7)
    idx = np.arange(10)
    np.testing.assert_array_equal(small.labels(idx), big.labels(idx))
    np.testing.assert_array_equal(small.seeds(idx), big.seeds(idx))
    np.testing.assert_array_equal(big.labels(idx[::-1]), big.labels(idx)[::-1])
    assert (big.seeds(idx) >= 0).all() and len(set(big.seeds(np.arange(50_000)).tolist())) == 50_000
    assert not np.array_equal(SamplingPlan(10, 1000, 6).labels(idx), small.labels(idx))
    labels = big.labels(np.arange(50_000))
    assert labels.min() == 0 and labels.max() == 999
    counts = np.bincount(labels, minlength=1000)  # multinomial: mean 50, sd ~7
    assert 20 < counts.min() and counts.max() < 90


def test_seed_and_label_streams_are_distinct():
    plan = SamplingPlan(100, 1000, 0)
    idx = np.arange(100)
    assert not np.array_equal(plan.seeds(idx) % 1000, plan.labels(idx))


def test_balanced_labels_give_50_per_class_in_seeded_shuffled_order():
    plan = SamplingPlan(50_000, 1000, 0, "balanced")
    labels = plan.labels(np.arange(50_000))
    assert np.bincount(labels, minlength=1000).tolist() == [50] * 1000
    assert len(np.unique(labels[:5000])) > 900  # shuffled: an IS split of 5000 sees nearly every class
    np.testing.assert_array_equal(SamplingPlan(50_000, 1000, 0, "balanced").labels(np.arange(100)), labels[:100])
    assert not np.array_equal(SamplingPlan(50_000, 1000, 1, "balanced").labels(np.arange(100)), labels[:100])


def test_balanced_labels_with_a_remainder():
    labels = SamplingPlan(25, 10, 3, "balanced").labels(np.arange(25))
    assert sorted(np.bincount(labels, minlength=10).tolist()) == [2] * 5 + [3] * 5


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_shards_partition_the_indices_for_any_world_size(world_size):
    plan = SamplingPlan(103, 10, 0, shard_size=10)
    shards = plan.shards()
    assert shards[0] == (0, 10) and shards[-1] == (100, 103) and len(shards) == 11
    taken = [s for r in range(world_size) for s in plan.shards_of_rank(r, world_size)]
    assert sorted(taken) == shards
    covered = np.concatenate([np.arange(*s) for s in taken])
    assert sorted(covered.tolist()) == list(range(103))


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels_mode="sorted"), "--labels must be one of random, balanced"),
    (dict(num_samples=0), "--num-samples must be at least 1"),
    (dict(shard_size=0), "--shard-size must be at least 1"),
    (dict(seed=-1), r"--seed must be in \[0, 2\*\*63\)"),
])
def test_bad_plans_are_refused(kwargs, message):
    base = dict(num_samples=10, num_classes=10, seed=0)
    base.update(kwargs)
    with pytest.raises(BenchError, match=message):
        SamplingPlan(**base)
