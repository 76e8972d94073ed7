"""The ADM evaluator's pipeline: two batches in, Inception Score, FID, sFID, Precision and Recall out.

Mirrors openai/guided-diffusion `evaluations/evaluator.py`: reference activations are always computed from
the reference images (Precision/Recall need them), while FID/sFID statistics come from a batch's precomputed
`mu`/`sigma`/`mu_s`/`sigma_s` when it carries them, exactly as ADM does. Activations are cached per input
(keyed by its content hash and the Inception weights), so scoring many sample batches against one reference
computes the reference features once.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np
import torch
from tqdm.auto import tqdm

from bench import atomic
from bench.batches import FolderImages, ImageSource, NpzImages, has_images, open_images, read_statistics
from bench.download import cache_dir, sha256_file
from bench.errors import BenchError
from bench.metrics import feature_statistics, frechet_distance, inception_score, kid, precision_recall


#: what the ADM metrics need to be meaningful
IS_SPLIT_SIZE = 5000
PR_NEIGHBOURS = 3
PAPER_NUM_SAMPLES = 50_000


def sample_size_warnings(num_samples: int, dims: dict[str, int]) -> list[str]:
    """Which metrics `num_samples` is too few for, and why. `dims`: the feature widths there are ("pool",
    "spatial", and "logits" only when an Inception Score is computed)."""
    out = []
    for key, metric in (("pool", "FID"), ("spatial", "sFID")):
        if key in dims and num_samples <= dims[key]:
            out.append(f"{metric} is unreliable: {num_samples} samples give a rank-deficient {dims[key]}-d covariance "
                       f"(needs more than {dims[key]} samples)")
    if "logits" in dims and num_samples < IS_SPLIT_SIZE:
        out.append(f"Inception Score is unreliable: ADM averages splits of {IS_SPLIT_SIZE} samples; "
                   f"{num_samples} samples make one partial split")
    if num_samples <= PR_NEIGHBOURS:
        out.append(f"Precision/Recall are undefined: k={PR_NEIGHBOURS} nearest neighbours need more than "
                   f"{PR_NEIGHBOURS} samples")
    if num_samples < PAPER_NUM_SAMPLES:
        out.append(f"{num_samples} samples: papers report {PAPER_NUM_SAMPLES}; FID is biased upward with fewer")
    return out


@dataclass
class Activations:
    """Inception features of one batch: pool_3 [N, 2048], spatial mixed_6/conv [N, 2023], logits [N, 1008]."""

    pool: np.ndarray
    spatial: np.ndarray
    logits: np.ndarray | None

    def __len__(self) -> int:
        return len(self.pool)


def _extractor_key(extractor) -> str:
    prov = extractor.provenance
    return f"{prov.get('sha256', 'unknown')[:16]}-{prov.get('backend', 'torch')}"


def compute_activations(source: ImageSource, extractor, batch_size: int = 64, cache: bool = True,
                        on_block: Callable[[np.ndarray], None] | None = None) -> Activations:
    """Run the extractor over every image of `source`, block by block; memory holds only the features.

    `on_block` sees every image block as it streams past (e.g. to write the images out in the same pass);
    with it the cache is not read, since a cache hit would skip the images.
    """
    cache_file = None
    if cache:
        cache_file = cache_dir() / "activations" / f"{source.content_hash()}-{_extractor_key(extractor)}.npz"
        if cache_file.exists() and on_block is None:
            try:
                with np.load(cache_file, allow_pickle=False) as npz:
                    logits = npz["logits"] if "logits" in npz.files else None
                    return Activations(npz["pool"], npz["spatial"], logits)
            except Exception as err:  # a damaged cache entry is a miss: recomputed and rewritten below
                click.echo(f"Warning: {cache_file} is damaged ({type(err).__name__}); recomputing it", err=True)
    parts: dict[str, list[np.ndarray]] = {"pool": [], "spatial": [], "logits": []}
    with tqdm(total=source.num_images, unit="img", desc=f"Inception {source.path.name}") as bar:
        for block in source.batches(batch_size):
            if on_block is not None:
                on_block(block)
            features = extractor.extract(block)
            for key, value in features.items():
                parts[key].append(value)
            bar.update(len(block))
    acts = Activations(
        np.concatenate(parts["pool"]),
        np.concatenate(parts["spatial"]),
        np.concatenate(parts["logits"]) if parts["logits"] else None,
    )
    if cache_file is not None:
        arrays = {"pool": acts.pool, "spatial": acts.spatial}
        if acts.logits is not None:
            arrays["logits"] = acts.logits
        try:
            with atomic.atomic_path(cache_file) as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)
        except OSError as err:  # an unwritable $BENCH_CACHE costs the next run time, not this run's result
            click.echo(f"Warning: activations not cached ({err}); set $BENCH_CACHE to a writable folder", err=True)
    return acts


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (max-shifted), the probabilities ADM's Inception Score is computed from."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


@dataclass
class Scored:
    """One side of a comparison: its activations (when it has images) and its FID/sFID statistics."""

    path: Path
    acts: Activations | None
    stats: dict[str, np.ndarray]

    @property
    def num_images(self) -> int | None:
        return None if self.acts is None else len(self.acts)


def _check_finite(acts: Activations, where: str) -> None:
    for name, features in (("pool", acts.pool), ("spatial", acts.spatial)):
        bad = ~np.isfinite(features).all(axis=1)
        if bad.any():
            raise BenchError(f"{where}: {int(bad.sum())} of {len(features)} {name} feature rows are NaN/inf "
                             "(corrupt images or a broken extractor)")


def _statistics(acts: Activations) -> dict[str, np.ndarray]:
    mu, sigma = feature_statistics(acts.pool)
    mu_s, sigma_s = feature_statistics(acts.spatial)
    return {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s}


def load_batch(path: str | Path, extractor, role: str = "reference", batch_size: int = 64,
               cache: bool = True) -> Scored:
    """Activations of a batch's images (if any) and its statistics (precomputed ones first, as ADM)."""
    path = Path(path)
    stats = read_statistics(path)
    acts = None
    if has_images(path):
        source = open_images(path)
        if source.num_images < 2:
            raise BenchError(f"{path}: the {role} batch has {source.num_images} image(s); at least 2 are needed "
                             "for a covariance (and ~50k samples / 10k references for paper-comparable numbers)")
        acts = compute_activations(source, extractor, batch_size, cache)
        _check_finite(acts, str(path))
    elif stats is None:
        raise BenchError(f"{path}: the {role} batch has neither images ('arr_0') nor statistics (mu, sigma, ...)")
    return Scored(path, acts, stats if stats is not None else _statistics(acts))


def score(ref: Scored, sample: Scored, extractor, exact: bool = False, with_kid: bool = False) -> dict[str, Any]:
    """ADM's five numbers for `sample` against `ref`, plus the sample counts (no provenance).

    `with_kid` adds KID (torch-fidelity's estimator on pool_3: 100 subsets of min(1000, N_ref, N_sample)).
    """
    for key in ("mu", "mu_s"):
        if ref.stats[key].shape != sample.stats[key].shape:
            raise BenchError(
                f"feature dimensions differ: reference {key} has shape {ref.stats[key].shape}, samples "
                f"{sample.stats[key].shape}. Were the batches made with different feature extractors?"
            )
    if sample.acts is None:
        raise _statistics_only_samples(sample.path)
    result: dict[str, Any] = {"inception_score": None}
    if sample.acts.logits is not None:
        result["inception_score"] = inception_score(softmax(sample.acts.logits))
    else:
        result["inception_score_unavailable"] = extractor.logits_unavailable_reason
    result["fid"] = frechet_distance(sample.stats["mu"], sample.stats["sigma"], ref.stats["mu"], ref.stats["sigma"])
    result["sfid"] = frechet_distance(sample.stats["mu_s"], sample.stats["sigma_s"],
                                      ref.stats["mu_s"], ref.stats["sigma_s"])
    too_few = [f"{name} has {n}" for name, n in (("the reference", ref.num_images), ("the sample batch", len(sample.acts)))
               if n is not None and n <= PR_NEIGHBOURS]
    if ref.acts is not None and not too_few:
        result["precision"], result["recall"] = precision_recall(ref.acts.pool, sample.acts.pool, exact=exact)
    else:
        result["precision"] = result["recall"] = None
        result["precision_recall_unavailable"] = (
            f"{ref.path} holds statistics only, no reference images" if ref.acts is None else
            f"k={PR_NEIGHBOURS} nearest neighbours need more than {PR_NEIGHBOURS} images; {' and '.join(too_few)}")
    if with_kid and ref.acts is not None:
        subset = min(1000, len(ref.acts), len(sample.acts))
        result["kid"], result["kid_std"] = kid(ref.acts.pool, sample.acts.pool, subset_size=subset, progress=False)
        result["kid_subset_size"] = subset
    elif with_kid:
        result["kid"] = None
        result["kid_unavailable"] = f"{ref.path} holds statistics only, no reference images"
    result["num_ref"] = ref.num_images
    result["num_samples"] = sample.num_images
    return result


def _statistics_only_samples(path: Path) -> BenchError:
    return BenchError(f"{path}: the sample batch has no images ('arr_0'); statistics alone cannot give Inception "
                      "Score or Precision/Recall")


def image_sizes(path: str | Path) -> set[tuple[int, int]]:
    """The distinct (height, width) of a batch's images, read from headers; empty for statistics only."""
    path = Path(path)
    if path.is_dir():
        return {(h, w) for w, h in FolderImages(path).sizes()}
    return {tuple(NpzImages(path).shape[1:3])} if has_images(path) else set()


def size_warnings(ref_path: str | Path, sample_path: str | Path) -> list[str]:
    """Image folders of mixed sizes, and batches at different resolutions: both score, both mislead."""
    sizes = {"reference": image_sizes(ref_path), "sample": image_sizes(sample_path)}
    shown = {name: ", ".join(f"{h}x{w}" for h, w in sorted(s)) for name, s in sizes.items()}
    out = [f"the {name} images come in {len(s)} sizes ({shown[name]}): each is scored as it is, uncropped; "
           "`bench ref build` makes a batch with ADM's center crop" for name, s in sizes.items() if len(s) > 1]
    if len(sizes["reference"]) == len(sizes["sample"]) == 1 and sizes["reference"] != sizes["sample"]:
        out.append(f"reference images are {shown['reference']} but samples are {shown['sample']}: ADM scores "
                   "samples against the reference batch of their own resolution")
    return out


def score_features(ref: Scored, features: dict[str, np.ndarray], extractor, exact: bool = False) -> dict[str, Any]:
    """`score` for features already in memory (what `bench run` accumulates while sampling)."""
    acts = Activations(features["pool"], features["spatial"], features.get("logits"))
    _check_finite(acts, "sample features")
    return score(ref, Scored(Path("<samples>"), acts, _statistics(acts)), extractor, exact)


def package_versions() -> dict[str, str]:
    """Versions of everything that can move a number, for the provenance record."""
    versions = {"python": platform.python_version(), "cuda": torch.version.cuda or "none"}
    for name in ("bench", "torch", "numpy", "scipy", "pillow", "diffusers", "tensorflow-cpu", "tensorflow"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


def _content_hash(path: Path) -> str:
    """sha256 of a batch file (memoised), or the content digest of an image folder."""
    return open_images(path).content_hash() if path.is_dir() else sha256_file(path)


def distances_label(exact: bool) -> str:
    return "exact (float64)" if exact else "ADM (float16, as TensorFlow)"


def evaluate(ref_path: str | Path, sample_path: str | Path, extractor, *, exact: bool = False,
             batch_size: int = 64, cache: bool = True, with_kid: bool = False) -> dict[str, Any]:
    """Score a sample batch against a reference batch exactly as ADM's evaluator does.

    Returns the JSON-ready result: the five ADM numbers (`inception_score` is None with a reason when the
    weights carry no softmax layer; `precision`/`recall` None when the reference has statistics only),
    `num_ref`, `num_samples` and provenance.
    """
    if not has_images(sample_path):  # found now, not after the reference's activations
        raise _statistics_only_samples(Path(sample_path))
    warnings = size_warnings(ref_path, sample_path)
    ref = load_batch(ref_path, extractor, "reference", batch_size, cache)
    sample = load_batch(sample_path, extractor, "sample", batch_size, cache)
    result = score(ref, sample, extractor, exact, with_kid)
    dims = {"pool": sample.stats["mu"].shape[0], "spatial": sample.stats["mu_s"].shape[0]}
    if sample.acts.logits is not None:
        dims["logits"] = sample.acts.logits.shape[1]
    result["warnings"] = warnings + sample_size_warnings(sample.num_images, dims)
    result["reference"] = {"path": str(ref_path), "sha256": _content_hash(Path(ref_path))}
    result["provenance"] = {
        "ref": str(ref_path),
        "sample": str(sample_path),
        "distances": distances_label(exact),
        "inception": extractor.provenance,
        "versions": package_versions(),
    }
    return result


def adm_lines(result: dict[str, Any]) -> str:
    """The five lines ADM's evaluator prints, in its order and wording."""
    def show(value, reason_key):
        return repr(float(value)) if value is not None else f"unavailable ({result.get(reason_key)})"

    return "\n".join([
        f"Inception Score: {show(result['inception_score'], 'inception_score_unavailable')}",
        f"FID: {show(result['fid'], '')}",
        f"sFID: {show(result['sfid'], '')}",
        f"Precision: {show(result['precision'], 'precision_recall_unavailable')}",
        f"Recall: {show(result['recall'], 'precision_recall_unavailable')}",
    ])
