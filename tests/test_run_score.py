"""The run's ADM scorer: reference statistics precedence, IS, Precision/Recall wiring, missing logits."""

from __future__ import annotations

import numpy as np
import pytest

from bench.run.score import adm_scorer
from test_run_helpers import ProjectionExtractor, frechet


def ref_batch(path, stats: dict | None = None, images: bool = True):
    rng = np.random.default_rng(3)
    arrays = {"arr_0": rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)} if images else {}
    np.savez(path, **arrays, **(stats or {}))
    return path


def sample_features(n=40):
    images = np.random.default_rng(4).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return ProjectionExtractor().extract(images)


def closed_form_is(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(p.mean(0)))).sum(1).mean()))


def nearest_radius_pr(ref: np.ndarray, sample: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision/recall (Kynkaanniemi et al.) in float64, written out directly."""
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # index 0 is the point itself

    def covered(points, manifold):
        d = np.linalg.norm(points[:, None] - manifold[None], axis=-1)
        return (d <= radii(manifold)[None]).any(axis=1).mean()

    return float(covered(sample, ref)), float(covered(ref, sample))


def test_scores_against_reference_images(tmp_path):
    ex = ProjectionExtractor()
    ref = ref_batch(tmp_path / "ref.npz")
    feats = sample_features()
    scorer = adm_scorer(ref, ex, exact=True)
    result = scorer(feats)["metrics"]
    ref_feats = ex.extract(np.load(ref)["arr_0"])
    assert result["fid"] == pytest.approx(frechet(feats["pool"], ref_feats["pool"]), rel=1e-6)
    assert result["sfid"] == pytest.approx(frechet(feats["spatial"], ref_feats["spatial"]), rel=1e-6)
    assert result["inception_score"] == pytest.approx(closed_form_is(feats["logits"]), rel=1e-9)
    assert (result["precision"], result["recall"]) == pytest.approx(nearest_radius_pr(ref_feats["pool"], feats["pool"]))
    assert scorer.num_ref == 30


def test_precomputed_reference_statistics_take_precedence_as_in_adm(tmp_path):
    ex = ProjectionExtractor()
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((6, 6)), rng.standard_normal((5, 5))
    stats = {"mu": rng.standard_normal(6), "sigma": a @ a.T + np.eye(6), "mu_s": np.zeros(5), "sigma_s": b @ b.T}
    feats = sample_features()
    result = adm_scorer(ref_batch(tmp_path / "ref.npz", stats), ex)(feats)["metrics"]
    # against N(mu, sigma): a sample of exactly those moments is the closed-form check
    mu, sigma = feats["pool"].mean(0), np.cov(feats["pool"], rowvar=False)
    from scipy.linalg import sqrtm

    covmean = sqrtm(sigma @ stats["sigma"]).real
    expected = ((mu - stats["mu"]) ** 2).sum() + np.trace(sigma + stats["sigma"] - 2 * covmean)
    assert result["fid"] == pytest.approx(expected, rel=1e-6)
    assert result["precision"] is not None  # still from the reference images


def test_statistics_only_reference_has_no_precision_recall(tmp_path):
    feats = sample_features()
    stats = {"mu": feats["pool"].mean(0), "sigma": np.cov(feats["pool"], rowvar=False),
             "mu_s": feats["spatial"].mean(0), "sigma_s": np.cov(feats["spatial"], rowvar=False)}
    result = adm_scorer(ref_batch(tmp_path / "ref.npz", stats, images=False), ProjectionExtractor())(feats)
    assert result["metrics"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert result["metrics"]["precision"] is None and "statistics only" in result["unavailable"]["precision"]


def test_missing_logits_give_no_inception_score_with_the_reason(tmp_path):
    class NoLogits(ProjectionExtractor):
        arrays = {"pool": 6, "spatial": 5}
        has_logits = False
        logits_unavailable_reason = "weights carry no softmax layer"

        def extract(self, images):
            out = super().extract(images)
            del out["logits"]
            return out

    feats = sample_features()
    del feats["logits"]
    result = adm_scorer(ref_batch(tmp_path / "ref.npz"), NoLogits())(feats)
    assert result["metrics"]["inception_score"] is None
    assert result["unavailable"]["inception_score"] == "weights carry no softmax layer"
