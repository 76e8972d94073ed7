"""What a run samples: per-sample labels and seeds, and how sample indices are cut into shards.

Everything is a pure function of (run seed, sample index) -- hashed with splitmix64, not drawn from a
stateful generator -- so any process can compute the label and seed of any sample without coordination:
labels and seeds cannot depend on the number of processes, the batch size or resumption (images can only
through float rounding when the batch shape changes; see bench/generator.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.errors import BenchError

LABEL_MODES = ("random", "balanced")

# Distinct streams so that a sample's label, its seed and the balanced shuffle are independent hashes.
_STREAM_SEED, _STREAM_LABEL, _STREAM_SHUFFLE = 0x5EED, 0x1ABE1, 0x5AFF1E
_MASK = (1 << 64) - 1


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele, Lea & Flood 2014), vectorised over uint64 with wrap-around."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_indices(seed: int, stream: int, indices: np.ndarray) -> np.ndarray:
    """uint64 hash of (seed, stream, i) for each index i: a counter-based random stream."""
    base = splitmix64(np.uint64((int(seed) & _MASK)))
    base = splitmix64(base ^ np.uint64(stream))
    with np.errstate(over="ignore"):
        return splitmix64(base + np.asarray(indices, dtype=np.uint64))


def sample_seeds(seed: int, indices) -> np.ndarray:
    """int64 seeds in [0, 2**63) of samples `indices` of a run seeded `seed`: what `Generator.sample` seeds
    image i's randomness with. Every generator plugin derives per-sample seeds through here."""
    return (hash_indices(seed, _STREAM_SEED, np.asarray(indices)) >> np.uint64(1)).astype(np.int64)


@dataclass(frozen=True)
class SamplingPlan:
    """Labels and seeds of samples 0..num_samples-1, and their partition into shards."""

    num_samples: int
    num_classes: int
    seed: int
    labels_mode: str = "random"
    shard_size: int = 1000

    def __post_init__(self):
        if self.labels_mode not in LABEL_MODES:
            raise BenchError(f"--labels must be one of {', '.join(LABEL_MODES)}, found {self.labels_mode!r}")
        if self.num_samples < 1:
            raise BenchError(f"--num-samples must be at least 1, found {self.num_samples}")
        if self.shard_size < 1:
            raise BenchError(f"--shard-size must be at least 1, found {self.shard_size}")
        if not 0 <= self.seed < 2**63:
            raise BenchError(f"--seed must be in [0, 2**63), found {self.seed}")

    def seeds(self, indices: np.ndarray) -> np.ndarray:
        """int64 per-sample seeds in [0, 2**63): what `Generator.sample` seeds image i's randomness with."""
        return sample_seeds(self.seed, indices)

    def labels(self, indices: np.ndarray) -> np.ndarray:
        """int64 class labels.

        random: hash(seed, i) mod num_classes (a modulo bias below 1e-15, irrelevant here).
        balanced: label (j mod num_classes) assigned to position j of a seeded shuffle of 0..N-1, so each
        class gets N // C or N // C + 1 samples (exactly 50 each for 50k on ImageNet), in shuffled order.
        """
        indices = np.asarray(indices, dtype=np.int64)
        if self.labels_mode == "random":
            return (hash_indices(self.seed, _STREAM_LABEL, indices) % np.uint64(self.num_classes)).astype(np.int64)
        return self._balanced_labels()[indices]

    def _balanced_labels(self) -> np.ndarray:
        cached = self.__dict__.get("_balanced")
        if cached is None:
            keys = hash_indices(self.seed, _STREAM_SHUFFLE, np.arange(self.num_samples))
            order = np.argsort(keys, kind="stable")  # position j of the shuffle holds sample order[j]
            cached = np.empty(self.num_samples, dtype=np.int64)
            cached[order] = np.arange(self.num_samples) % self.num_classes
            object.__setattr__(self, "_balanced", cached)
        return cached

    def shards(self) -> list[tuple[int, int]]:
        """Contiguous [start, end) index blocks of `shard_size`; the last one may be shorter."""
        return [(s, min(s + self.shard_size, self.num_samples)) for s in range(0, self.num_samples, self.shard_size)]

    def shards_of_rank(self, rank: int, world_size: int) -> list[tuple[int, int]]:
        """Round-robin assignment: rank r takes shards r, r + K, r + 2K, ... (balanced for any K)."""
        return self.shards()[rank::world_size]
