"""Evaluation metrics, matching the ADM evaluator (openai/guided-diffusion `evaluations/evaluator.py`).

FID/sFID (`frechet_distance` of `feature_statistics` / `RunningStatistics`), Inception Score, improved
precision/recall with ADM's float16 distances, KID as torch-fidelity defines it, and PSNR/SSIM as
scikit-image defines them. Every function takes numpy arrays or torch tensors and raises `BenchError` on bad
input (NaN features, mismatched dimensions, too few samples, probabilities that are not distributions).
"""

from bench.metrics.frechet import SingularCovarianceWarning, frechet_distance, frechet_distance_from_rows
from bench.metrics.image_similarity import psnr, ssim
from bench.metrics.inception_score import inception_score
from bench.metrics.kid import kid
from bench.metrics.precision_recall import precision_recall
from bench.metrics.statistics import RunningStatistics, feature_statistics

__all__ = [
    "RunningStatistics",
    "SingularCovarianceWarning",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_rows",
    "inception_score",
    "kid",
    "precision_recall",
    "psnr",
    "ssim",
]
