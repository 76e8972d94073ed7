"""Fréchet distance between two Gaussians, as ADM's `FIDStatistics.frechet_distance` defines it.

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2))

ADM takes `scipy.linalg.sqrtm` of the non-symmetric product S1 S2 (a complex Schur decomposition, ~10 s at
2048-d) and only then its trace. Only the trace is needed, and it is a spectral quantity: with S1 = L L^T
(Cholesky), S1 S2 is similar to the symmetric PSD matrix M = L^T S2 L, so

    tr(sqrtm(S1 S2)) = sum_i sqrt(lambda_i(M)),

with `eigvalsh` in float64. That is ~10x faster and at least as accurate (a symmetric eigenproblem is
perfectly conditioned; the Schur route is not). When S1 is only semi-definite (fewer samples than dimensions)
Cholesky fails and S1^(1/2) from `eigh` (negative roundoff eigenvalues clipped) plays the role of L; the value is
the same one scipy's sqrtm returns there, since the principal square root of a PSD-similar matrix keeps the
non-negative eigenvalues.

ADM's fallbacks are kept: if the computation is not finite, warn and add eps*I to both covariances; a
negative eigenvalue beyond roundoff (ADM: imaginary diagonal above 1e-3) is an error. Singular products (N < d)
only warn here: scipy's sqrtm returns a finite value for them too, so ADM does not add eps either (with old
scipy versions whose sqrtm failed on them, ADM's value carries the eps*I perturbation and this one does not).

Fewer samples than dimensions (a quick look, a bootstrap resample, the offline demo's 400 images) need no d x d
eigenproblem at all. With the N feature rows centred as X, S1 = X^T X / (N-1), and the non-zero eigenvalues of
S1 S2 are those of the N x N symmetric PSD matrix X S2 X^T / (N-1) (AB and BA share them). So
`frechet_distance_from_rows` gives the same value from an N x N `eigvalsh` and one N x d x d product: at N=400,
d=2048 about 0.1 s instead of ~5 s, and since a d x d factorisation of a rank-deficient S1 is skipped, no
less accurate.
"""

import warnings

import numpy as np

from bench.errors import BenchError
from bench.metrics._checks import as_numpy

# ADM raises when sqrtm's diagonal has an imaginary part above 1e-3; a negative eigenvalue -l of S1 S2
# contributes i*sqrt(l), so the equivalent bound is l > 1e-6 -- relative to the largest eigenvalue when that
# exceeds 1, since rounding (float32 statistics above all) leaves negative eigenvalues in proportion to it; a
# fixed bound made FID(a, b) succeed and FID(b, a) fail.
_MAX_NEGATIVE_EIGENVALUE = 1e-6


def _negative_beyond_rounding(eigenvalues: np.ndarray) -> bool:
    return eigenvalues.min() < -_MAX_NEGATIVE_EIGENVALUE * max(1.0, float(np.abs(eigenvalues).max()))
# M's eigenvalues below this fraction of the largest are treated as zero when deciding to warn.
_SINGULAR_RTOL = 1e-10


class SingularCovarianceWarning(RuntimeWarning):
    """The covariances are (numerically) singular: usually fewer samples than feature dimensions."""


def _largest(values: np.ndarray, block: int = 256) -> float:
    """max |values| over row blocks: a 2048-d covariance is 32 MB, and every whole-matrix temporary of that size is
    fresh pages from the OS (page faults cost more than the arithmetic); blocks reuse a few MB."""
    return max((float(np.abs(values[i:i + block]).max()) for i in range(0, len(values), block)), default=0.0)


def _asymmetry(sigma: np.ndarray, block: int = 256) -> float:
    """max |sigma - sigma^T|, blockwise for the same reason as `_largest`."""
    return max((float(np.abs(sigma[i:i + block] - sigma[:, i:i + block].T).max())
                for i in range(0, len(sigma), block)), default=0.0)


def _check_moments(mu, sigma, name: str, symmetrize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(as_numpy(mu, f"mu{name}")).astype(np.float64)
    sigma = np.atleast_2d(as_numpy(sigma, f"sigma{name}")).astype(np.float64, copy=False)
    if mu.ndim != 1:
        raise BenchError(f"mu{name}: expected a 1-D mean vector, found shape {mu.shape}")
    if sigma.shape != (len(mu), len(mu)):
        raise BenchError(
            f"sigma{name}: expected a {len(mu)}x{len(mu)} covariance to match mu{name}, found shape {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise BenchError(f"mu{name}/sigma{name} contain NaN or inf")
    scale = max(_largest(sigma), np.finfo(np.float64).tiny)
    if _asymmetry(sigma) > 1e-6 * scale:
        raise BenchError(f"sigma{name} is not symmetric: it is not a covariance matrix")
    return mu, ((sigma + sigma.T) / 2 if symmetrize else sigma)


def _sqrt_factor(sigma: np.ndarray) -> tuple[np.ndarray, bool]:
    """A matrix F with F F^T = sigma: Cholesky when sigma is positive definite, else the symmetric PSD root."""
    try:
        return np.linalg.cholesky(sigma), False
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(sigma)
        if _negative_beyond_rounding(w):
            raise BenchError(
                f"sigma1 has a negative eigenvalue {w.min():.3g}: it is not a covariance matrix "
                "(ADM would fail with 'Imaginary component')"
            )
        return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T, True


def _psd_eigenvalues(m: np.ndarray) -> np.ndarray | None:
    """Eigenvalues of a matrix that is symmetric PSD up to rounding; None when the eigensolver fails."""
    try:
        ev = np.linalg.eigvalsh((m + m.T) / 2)
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(ev).all():
        return None
    if _negative_beyond_rounding(ev):
        raise BenchError(
            f"sigma1 @ sigma2 has a negative eigenvalue {ev.min():.3g}: the covariances are not positive "
            "semi-definite (ADM would fail with 'Imaginary component')"
        )
    return ev


def _warn_singular() -> None:
    warnings.warn(
        "sigma1 @ sigma2 is singular (fewer samples than feature dimensions?): the Fréchet distance uses its "
        "non-negative eigenvalues, as ADM's sqrtm does, but with so few samples it is not a reliable FID",
        SingularCovarianceWarning,
        stacklevel=3,
    )


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> tuple[float, bool]:
    """(tr sqrtm(sigma1 sigma2), whether the product is singular); NaN when the eigensolver fails."""
    f, singular = _sqrt_factor(sigma1)
    ev = _psd_eigenvalues(f.T @ sigma2 @ f)
    if ev is None:
        return float("nan"), True
    singular = singular or ev.min() <= _SINGULAR_RTOL * max(ev.max(), 0.0)
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum()), singular


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """FID/sFID between N(mu1, sigma1) and N(mu2, sigma2); ADM's formula and fallbacks, float64."""
    mu1, sigma1 = _check_moments(mu1, sigma1, "1")
    mu2, sigma2 = _check_moments(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise BenchError(f"mean vectors have different lengths: {mu1.shape[0]} and {mu2.shape[0]}")
    diff = mu1 - mu2

    tr_covmean, singular = _trace_sqrt_product(sigma1, sigma2)
    if not np.isfinite(tr_covmean):
        warnings.warn(
            f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates",
            SingularCovarianceWarning,
            stacklevel=2,
        )
        offset = np.eye(len(mu1)) * eps
        tr_covmean, _ = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    elif singular:
        _warn_singular()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_from_rows(rows1, mu2, sigma2, eps: float = 1e-6) -> float:
    """`frechet_distance` with side 1 given by its [N, d] feature rows (mu1, sigma1 = their mean and np.cov).

    The value is the same; when N <= d it is computed in the N-dimensional row space (module docstring), which is
    what makes FID of small batches and of their bootstrap resamples cheap. When N > d it is the dense path.
    """
    x = as_numpy(rows1, "rows1")
    if x.ndim != 2 or len(x) < 2:
        raise BenchError(f"rows1: expected [N, d] feature rows with N >= 2, found shape {tuple(x.shape)}")
    x = x.astype(np.float64)
    n, d = x.shape
    mu1 = x.mean(axis=0)
    centred = x - mu1
    if n <= d:
        mu2, sigma2 = _check_moments(mu2, sigma2, "2", symmetrize=False)  # the N x N product is symmetrized below
        if mu2.shape != mu1.shape:
            raise BenchError(f"mean vectors have different lengths: {d} and {mu2.shape[0]}")
        if not np.isfinite(centred).all():
            raise BenchError("rows1 contain NaN or inf")
        ev = _psd_eigenvalues(centred @ sigma2 @ centred.T / (n - 1))
        if ev is not None:
            _warn_singular()  # rank(S1) <= N - 1 < d: the product is singular by construction
            diff = mu1 - mu2
            trace1 = float((centred * centred).sum()) / (n - 1)
            return float(diff @ diff + trace1 + np.trace(sigma2) - 2.0 * np.sqrt(np.clip(ev, 0.0, None)).sum())
    # N > d, or the row-space eigenproblem failed: the dense path (with ADM's eps fallback)
    return frechet_distance(mu1, np.cov(x, rowvar=False), mu2, sigma2, eps)
