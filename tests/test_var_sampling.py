"""VAR's sampler: the guidance ramp, top-k with ties and VAR's top-p worked by hand; the KV-cached loop against a
naive recompute of the whole prefix per scale; per-sample randomness independent of the batch.

Token equality across batch shapes or between the cached and the naive loop holds as long as float32 rounding
of the logits (~1e-6 here) does not move a draw across a decision boundary: for greedy decoding the labels come
from the fixture whose every top-1/top-2 gap is >= 2e-4; for random draws, a uniform landing within ~1e-6 of a
cumulative-probability boundary has odds of ~1e-3 over all 680 x 3 draws of a test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.generator import per_sample_seeds
from generators.var import generate_scales
from generators.var.generate import cfg_ramp, filter_top_k_top_p, generate_scales_naive, guide, sample_tokens
from generators.var.model import VAR, var_config
from generators.var.vqvae import VQVAE, VQVAEConfig
from var_common import DATA, SMALL_VAE, SMALL_VAR, seeded_state

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def var() -> VAR:
    vae = VQVAE(VQVAEConfig(**SMALL_VAE))
    vae.load_state_dict(seeded_state(vae.state_dict()))
    model = VAR(var_config(**SMALL_VAR), vae=vae.eval())
    model.load_state_dict(seeded_state(model.state_dict()))
    return model.eval()


@pytest.fixture(scope="module")
def greedy_labels() -> np.ndarray:
    with np.load(DATA / "expected.npz") as f:
        return f["greedy_labels"]  # [cfg 0, 1.5, 4] x 2 labels whose greedy decisions have margins


def test_cfg_ramp_by_hand():
    """t = cfg * si / 9: the README's cfg 1.5 is t = 0, 1/6, ..., 1.5, i.e. cond weights 1.0 ... 2.5."""
    assert cfg_ramp(1.5, 10) == pytest.approx([0, 1 / 6, 1 / 3, 0.5, 2 / 3, 5 / 6, 1, 7 / 6, 4 / 3, 1.5], abs=1e-15)
    assert cfg_ramp(1.5, 10)[0] == 0.0 and cfg_ramp(1.5, 10)[-1] == 1.5
    assert cfg_ramp(0.0, 10) == [0.0] * 10
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # [cond; uncond]
    assert guide(logits, 0.5).tolist() == [[2.5, -0.5]]  # 1.5 * (2, 0) - 0.5 * (1, 1)
    assert guide(logits, 0.0).tolist() == [[2.0, 0.0]]


def test_top_k_keeps_ties_at_the_threshold():
    logits = torch.tensor([[5.0, 2.0, 2.0, 2.0, 1.0]])
    kept = filter_top_k_top_p(logits, top_k=2).isfinite()
    assert kept.tolist() == [[True, True, True, True, False]]  # k = 2, but the three 2.0 tie for second place
    assert filter_top_k_top_p(logits, top_k=1).isfinite().tolist() == [[True, False, False, False, False]]
    assert filter_top_k_top_p(logits, top_k=0).isfinite().all()
    assert filter_top_k_top_p(logits, top_k=900).isfinite().all()  # k beyond the vocabulary keeps every token
    ties = torch.tensor([[3.0, 1.0, 3.0, 2.0]])
    assert filter_top_k_top_p(ties, top_k=1).isfinite().tolist() == [[True, False, True, False]]


def test_top_p_on_a_tiny_distribution():
    """p = (0.5, 0.3, 0.15, 0.05), top_p 0.75: ascending cumulative sums 0.05, 0.2, 0.5, 1.0; those <= 0.25 go,
    leaving (0.5, 0.3) -> renormalised (0.625, 0.375)."""
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    probs = filter_top_k_top_p(logits, top_p=0.75).softmax(-1)
    torch.testing.assert_close(probs, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    # a tiny top_p keeps only the most likely token (the last in ascending order is never removed)
    assert filter_top_k_top_p(logits, top_p=1e-9).isfinite().tolist() == [[True, False, False, False]]
    assert filter_top_k_top_p(logits, top_p=0.0).isfinite().all()  # 0 = off
    # top-k first, then top-p on what is left: k = 3 leaves (0.5, 0.3, 0.15) -> (10/19, 6/19, 3/19); p 0.6 keeps 2
    both = filter_top_k_top_p(logits, top_k=3, top_p=0.6).softmax(-1)
    torch.testing.assert_close(both, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))


def test_draws_follow_the_filtered_distribution():
    """Empirical frequencies of sample_tokens over many positions match (0.625, 0.375, 0, 0)."""
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().expand(1, 20000, 4)
    tokens = sample_tokens(logits, [torch.Generator().manual_seed(0)], top_p=0.75)
    freq = torch.bincount(tokens[0], minlength=4).double() / 20000
    assert freq[2:].sum() == 0 and abs(freq[0] - 0.625) < 0.015


@pytest.mark.parametrize("g", [0, 1, 2])
def test_cached_sampler_equals_naive_recompute_greedy(var, greedy_labels, g):
    labels, cfg = torch.from_numpy(greedy_labels[g]), [0.0, 1.5, 4.0][g]
    cached = generate_scales(var, labels, cfg_scale=cfg, top_k=1)
    naive = generate_scales_naive(var, labels, cfg_scale=cfg, top_k=1)
    assert all(torch.equal(a, b) for a, b in zip(cached, naive))


def test_cached_sampler_equals_naive_recompute_sampled(var):
    labels, seeds = torch.tensor([1, 4]), torch.tensor([11, 12])
    cached = generate_scales(var, labels, cfg_scale=1.5, top_k=20, top_p=0.9, seed=seeds)
    naive = generate_scales_naive(var, labels, cfg_scale=1.5, top_k=20, top_p=0.9, seed=seeds)
    assert all(torch.equal(a, b) for a, b in zip(cached, naive))


def test_a_sample_does_not_depend_on_its_batch(var):
    labels, seeds = torch.tensor([3, 0, 8]), torch.tensor([101, 202, 303])
    batch = torch.cat(generate_scales(var, labels, cfg_scale=1.5, top_k=30, top_p=0.95, seed=seeds), 1)
    for i in range(3):
        alone = generate_scales(var, labels[i:i + 1], cfg_scale=1.5, top_k=30, top_p=0.95, seed=seeds[i:i + 1])
        assert torch.equal(torch.cat(alone, 1)[0], batch[i])
    reordered = torch.cat(generate_scales(var, labels.flip(0), cfg_scale=1.5, top_k=30, top_p=0.95,
                                          seed=seeds.flip(0)), 1)
    assert torch.equal(reordered.flip(0), batch)
    # an int seed is a run seed: sample i of the call is the sample with per-sample seed per_sample_seeds(7, 3)[i]
    run = torch.cat(generate_scales(var, labels, cfg_scale=1.5, top_k=30, seed=7), 1)
    single = generate_scales(var, labels[2:], cfg_scale=1.5, top_k=30, seed=per_sample_seeds(7, 3)[2:])
    assert torch.equal(torch.cat(single, 1)[0], run[2])
    # and different seeds give different samples
    assert not torch.equal(batch, torch.cat(generate_scales(var, labels, cfg_scale=1.5, top_k=30, top_p=0.95,
                                                            seed=seeds + 1), 1))


def test_output_shapes_and_range(var):
    scales = generate_scales(var, [0, 9], seed=0)  # a list of ints is taken as the labels tensor
    assert [tuple(s.shape) for s in scales] == [(2, pn * pn) for pn in var.config.patch_nums]
    assert all(s.dtype == torch.int64 and int(s.min()) >= 0 and int(s.max()) < 64 for s in scales)


@pytest.mark.parametrize("kwargs, match", [
    (dict(cfg_scale=-0.5), "cfg_scale must be a finite number >= 0"),
    (dict(cfg_scale=math.nan), "cfg_scale"),
    (dict(top_k=-1), "top_k must be an integer >= 0"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_p=1.5), r"top_p must be in \[0, 1\]"),
    (dict(labels=torch.tensor([10])), r"labels must lie in \[0, 10\)"),
    (dict(labels=torch.tensor([[1]])), "labels must be an integer tensor"),
    (dict(labels=torch.tensor([1.0])), "labels must be an integer tensor"),
    (dict(seed=torch.tensor([1, 2])), "2 per-sample seeds for 1 samples"),
])
def test_bad_sampling_inputs_are_one_line_errors(var, kwargs, match):
    kwargs = {"labels": torch.tensor([1]), **kwargs}
    with pytest.raises(BenchError, match=match) as err:
        generate_scales(var, **kwargs)
    assert "\n" not in str(err.value)
