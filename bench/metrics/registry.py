"""Every metric in one table: what it reads, how it is computed, which way is better, and when it misleads.

`bench eval`, `bench run`, `bench report`, the sample-size warnings and the table in docs/metrics.md all derive
from `METRICS`. A metric names the feature arrays it needs ("pool", "spatial", "logits", "dinov2"); the
pipeline extracts exactly those (`bench.features`) and calls `compute(ref, sample, options)` with two
`FeatureSet`s. Adding a metric is one `Metric(...)` entry here (and its function, if new, in its own file).

    --metrics +kid,+fd_dinov2      ADM's five plus KID and FD_DINOv2
    --metrics fid,precision        exactly these
    --metrics -sfid                the defaults without sFID
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from bench.errors import BenchError
from bench.features.featureset import FeatureSet
from bench.metrics.frechet import frechet_distance, frechet_distance_from_rows
from bench.metrics.inception_score import inception_score
from bench.metrics.kid import kid
from bench.metrics.precision_recall import precision_recall

#: what the ADM metrics need to be meaningful
IS_SPLIT_SIZE = 5000
PR_NEIGHBOURS = 3
PAPER_NUM_SAMPLES = 50_000
KID_SUBSETS = 100


class MetricUnavailable(Exception):
    """A metric that cannot be computed for these inputs (no reference images, no softmax weights, too few
    samples): the others still are, and the result records the reason under `unavailable`."""


@dataclass(frozen=True)
class ScoreOptions:
    """Options some metrics take: `exact` float64 Precision/Recall distances, KID's subset size."""

    exact: bool = False
    kid_subset_size: int | None = None


@dataclass(frozen=True)
class Metric:
    """One registered metric. `outputs` are the result keys it writes (Precision/Recall write two)."""

    name: str
    title: str
    outputs: tuple[str, ...]
    #: feature arrays it reads; empty for image-pair metrics the reconstruct task computes itself
    needs: tuple[str, ...]
    #: "statistics": (mu, sigma) of both sides, precomputed ones accepted; "features": the rows of both sides;
    #: "sample": the sample side's rows only; "pairs": per-image comparisons of reconstructions
    reads: str
    lower_is_better: bool
    units: str
    description: str
    compute: Callable[[FeatureSet, FeatureSet, ScoreOptions], dict[str, Any]] | None = None
    #: fewest samples for a meaningful value, given the widths of the arrays: (count, why)
    minimum: Callable[[dict[str, int]], tuple[int, str]] | None = None
    default: bool = False
    aliases: tuple[str, ...] = field(default=())
    #: the title of each output, where a metric writes several (Precision / Recall: "Precision", "Recall")
    output_titles: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if len(self.outputs) > 1 and len(self.output_titles) != len(self.outputs):
            raise ValueError(f"metric {self.name!r} writes {len(self.outputs)} outputs: give each a title")

    def title_of(self, output: str) -> str:
        """How a board heads one of this metric's result keys."""
        return self.output_titles[self.outputs.index(output)] if self.output_titles else self.title


# -- the computations -----------------------------------------------------------------------------------------
def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (max-shifted), the probabilities ADM's Inception Score is computed from."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _frechet(array: str, output: str) -> Callable[[FeatureSet, FeatureSet, ScoreOptions], dict[str, Any]]:
    def compute(ref: FeatureSet, sample: FeatureSet, options: ScoreOptions) -> dict[str, Any]:
        for side in (ref, sample):
            if not side.has_statistics(array):
                raise MetricUnavailable(side.unavailable.get(array) or f"{side.label} has no {array} features or "
                                                                       f"statistics")
        mu_r, sigma_r = ref.statistics(array)
        rows = sample.arrays.get(array) if array not in sample.given_statistics else None
        if rows is not None and len(rows) <= rows.shape[1] and mu_r.shape == rows.shape[1:]:
            # fewer samples than dimensions: the same value from the rows, without a d x d eigenproblem (frechet.py)
            return {output: frechet_distance_from_rows(rows, mu_r, sigma_r)}
        mu_s, sigma_s = sample.statistics(array)
        if mu_r.shape != mu_s.shape:
            raise BenchError(f"feature dimensions differ: the reference's {array} statistics have shape {mu_r.shape}, "
                             f"the samples' {mu_s.shape}. Were the batches made with different feature extractors?")
        return {output: frechet_distance(mu_s, sigma_s, mu_r, sigma_r)}

    return compute


def _reference_rows(ref: FeatureSet, sample: FeatureSet, array: str, fewest: int,
                    why: str = "") -> tuple[np.ndarray, np.ndarray]:
    if not ref.has(array):
        raise MetricUnavailable(ref.unavailable.get(array) or f"{ref.label} holds statistics only, no reference images")
    if not sample.has(array):
        raise MetricUnavailable(sample.unavailable.get(array) or f"the samples have no {array} features")
    too_few = [f"{name} has {len(s.arrays[array])}" for name, s in (("the reference", ref), ("the sample batch", sample))
               if len(s.arrays[array]) < fewest]
    if too_few:
        raise MetricUnavailable(f"{why or f'needs at least {fewest} images per side'}; {' and '.join(too_few)}")
    return ref.arrays[array], sample.arrays[array]


def _inception_score(ref: FeatureSet, sample: FeatureSet, options: ScoreOptions) -> dict[str, Any]:
    if not sample.has("logits"):
        raise MetricUnavailable(sample.unavailable.get("logits") or "the extractor gave no logits")
    return {"inception_score": inception_score(softmax(sample.arrays["logits"]), IS_SPLIT_SIZE)}


def _precision_recall(ref: FeatureSet, sample: FeatureSet, options: ScoreOptions) -> dict[str, Any]:
    ref_pool, sample_pool = _reference_rows(ref, sample, "pool", PR_NEIGHBOURS + 1, f"k={PR_NEIGHBOURS} nearest "
                                            f"neighbours need more than {PR_NEIGHBOURS} images")
    precision, recall = precision_recall(ref_pool, sample_pool, k=PR_NEIGHBOURS, exact=options.exact)
    return {"precision": precision, "recall": recall}


def kid_subset_size(n_ref: int, n_sample: int, requested: int | None = None) -> int:
    """torch-fidelity's 1000, but at most half the smaller side: subsets as large as the set are all the whole set,
    and their spread (the reported +-) would be zero whatever the data."""
    if requested is not None:
        if requested < 2 or requested > min(n_ref, n_sample):
            raise BenchError(f"--kid-subset-size {requested}: must lie in [2, {min(n_ref, n_sample)}] "
                             f"(the smaller side has {min(n_ref, n_sample)} images)")
        return requested
    return max(2, min(1000, min(n_ref, n_sample) // 2))


def _kid(ref: FeatureSet, sample: FeatureSet, options: ScoreOptions) -> dict[str, Any]:
    ref_pool, sample_pool = _reference_rows(ref, sample, "pool", 4)
    subset = kid_subset_size(len(ref_pool), len(sample_pool), options.kid_subset_size)
    mean, std = kid(ref_pool, sample_pool, subset_size=subset, subsets=KID_SUBSETS, progress=False)
    whole = subset >= min(len(ref_pool), len(sample_pool))
    return {"kid": mean, "kid_std": None if whole else std, "kid_subset_size": subset, "kid_subsets": KID_SUBSETS,
            **({"kid_std_unavailable": "every subset is the whole smaller set: the spread means nothing"}
               if whole else {})}


def _rank(array: str, name: str) -> Callable[[dict[str, int]], tuple[int, str]]:
    def minimum(widths: dict[str, int]) -> tuple[int, str]:
        d = widths.get(array, 0)
        return d + 1, f"{name} is unreliable: {{n}} samples give a rank-deficient {d}-d covariance " \
                      f"(needs more than {d} samples)"

    return minimum


METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("inception_score", "IS", ("inception_score",), ("logits",), "sample", lower_is_better=False, units="",
           description="Inception Score: mean over splits of 5,000 samples of exp(E KL(p(y|x) || p(y)))",
           compute=_inception_score, default=True, aliases=("is",),
           minimum=lambda w: (IS_SPLIT_SIZE, f"Inception Score is unreliable: ADM averages splits of {IS_SPLIT_SIZE} "
                                             "samples; {n} samples make one partial split")),
    Metric("fid", "FID", ("fid",), ("pool",), "statistics", lower_is_better=True, units="",
           description="Fréchet distance of Inception pool_3 features (2048-d) to the reference statistics",
           compute=_frechet("pool", "fid"), default=True, minimum=_rank("pool", "FID")),
    Metric("sfid", "sFID", ("sfid",), ("spatial",), "statistics", lower_is_better=True, units="",
           description="Fréchet distance of mixed_6/conv[..., :7] features (2023-d, NHWC-flattened)",
           compute=_frechet("spatial", "sfid"), default=True, minimum=_rank("spatial", "sFID")),
    Metric("precision_recall", "Precision / Recall", ("precision", "recall"), ("pool",), "features",
           lower_is_better=False, units="fraction",
           description="improved precision and recall (k=3 manifolds of pool_3 features, ADM's float16 distances)",
           compute=_precision_recall, default=True, aliases=("precision", "recall", "pr"),
           output_titles=("Precision", "Recall"),
           minimum=lambda w: (PR_NEIGHBOURS + 1, f"Precision/Recall are undefined: k={PR_NEIGHBOURS} nearest "
                                                 f"neighbours need more than {PR_NEIGHBOURS} samples")),
    Metric("kid", "KID", ("kid",), ("pool",), "features", lower_is_better=True, units="x1 (not x1000)",
           description=f"kernel inception distance: unbiased cubic-kernel MMD^2 of pool_3 features, mean over "
                       f"{KID_SUBSETS} random subsets (torch-fidelity's estimator)",
           compute=_kid,
           minimum=lambda w: (4, "KID's spread needs at least 4 samples (two subsets of 2)")),
    Metric("fd_dinov2", "FD_DINOv2", ("fd_dinov2",), ("dinov2",), "statistics", lower_is_better=True, units="",
           description="Fréchet distance of DINOv2 ViT-L/14 CLS features (1024-d), as EDM2 computes it",
           compute=_frechet("dinov2", "fd_dinov2"), aliases=("fd-dinov2",), minimum=_rank("dinov2", "FD_DINOv2")),
    # Image-pair metrics of `bench run --task reconstruct` (the task computes them; listed for the board)
    Metric("rfid", "rFID", ("rfid",), ("pool",), "statistics", lower_is_better=True, units="",
           description="FID of a tokenizer's reconstructions against the reference statistics"),
    Metric("rfid_vs_originals", "rFID vs originals", ("rfid_vs_originals", "sfid_vs_originals"), ("pool", "spatial"),
           "statistics", lower_is_better=True, units="",
           description="FID and sFID of reconstructions against their own originals (LlamaGen-derived code's rFID)",
           output_titles=("rFID vs originals", "sFID vs originals")),
    Metric("psnr", "PSNR", ("psnr",), (), "pairs", lower_is_better=False, units="dB",
           description="peak signal-to-noise ratio of reconstructions, data_range 1 on [0, 1] images"),
    Metric("ssim", "SSIM", ("ssim", "ssim_llamagen"), (), "pairs", lower_is_better=False, units="",
           description="structural similarity (scikit-image's 7x7 uniform window; data_range 1, and 2 as "
                       "LlamaGen's script uses)", output_titles=("SSIM", "SSIM (LlamaGen)")),
]}

#: every result key -> the metric that writes it
OUTPUTS: dict[str, Metric] = {out: m for m in METRICS.values() for out in m.outputs}


def lower_is_better(output: str) -> bool:
    """Direction of a result key ("fid", "recall", "fd_dinov2", "kid", ...); unknown keys rank lower-first."""
    metric = OUTPUTS.get(output.removesuffix(" delta"))
    return True if metric is None else metric.lower_is_better


def _lookup(name: str) -> Metric:
    for metric in METRICS.values():
        if name == metric.name or name in metric.aliases:
            return metric
    scoreable = ", ".join(m.name for m in METRICS.values() if m.compute)
    raise BenchError(f"unknown metric {name!r}; known: {scoreable}")


DEFAULT = tuple(m.name for m in METRICS.values() if m.default)


def select(spec: str | None) -> list[Metric]:
    """Parse `--metrics`: None = ADM's five; "+kid,+fd_dinov2" adds to them; "-sfid" removes; "fid,kid" is exact."""
    if spec is None or not spec.strip():
        return [METRICS[n] for n in DEFAULT]
    items = [s.strip() for s in spec.split(",") if s.strip()]
    relative = all(s[0] in "+-" for s in items)
    if not relative and any(s[0] in "+-" for s in items):
        raise BenchError(f"--metrics {spec!r}: either list metrics (fid,kid) or change the defaults (+kid,-sfid), "
                         "not both")
    chosen = list(DEFAULT) if relative else []
    for item in items:
        metric = _lookup(item.lstrip("+-"))
        if metric.compute is None:
            raise BenchError(f"--metrics: {metric.name} is computed by `bench run --task reconstruct`, not selectable")
        if item.startswith("-"):
            chosen = [n for n in chosen if n != metric.name]
        elif metric.name not in chosen:
            chosen.append(metric.name)
    if not chosen:
        raise BenchError(f"--metrics {spec!r} selects no metric")
    return [METRICS[n] for n in chosen]


def arrays_needed(metrics: list[Metric]) -> dict[str, str]:
    """Feature array -> what the reference side must provide for it: "features" (its rows) or "statistics"."""
    need: dict[str, str] = {}
    for metric in metrics:
        for array in metric.needs:
            if metric.reads == "features" or need.get(array) == "features":
                need[array] = "features"
            else:
                need.setdefault(array, "statistics")
    return need


def score(ref: FeatureSet, sample: FeatureSet, metrics: list[Metric],
          options: ScoreOptions = ScoreOptions()) -> dict[str, Any]:
    """Compute the selected metrics: {"metrics": {output: value}, "unavailable": {output: reason}, "details": {}}.

    Values a metric returns beyond its outputs (KID's spread and subset size) go to `details`.
    """
    if not sample.has_images:
        raise BenchError(f"{sample.label}: the sample batch has no images ('arr_0'); statistics alone cannot give "
                         "Inception Score or Precision/Recall")
    values: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    details: dict[str, Any] = {}
    for metric in metrics:
        try:
            computed = metric.compute(ref, sample, options)
        except MetricUnavailable as why:
            for output in metric.outputs:
                values[output] = None
                unavailable[output] = str(why)
            continue
        for key, value in computed.items():
            (values if key in metric.outputs else details)[key] = value
    return {"metrics": values, "unavailable": unavailable, "details": details}


def sample_size_warnings(num_samples: int, widths: dict[str, int], metrics: list[Metric]) -> list[str]:
    """Which selected metrics `num_samples` is too few for, and why; `widths`: the arrays there are, by width."""
    out = []
    for metric in metrics:
        if metric.minimum is None or not all(a in widths for a in metric.needs):
            continue
        fewest, why = metric.minimum(widths)
        if num_samples < fewest:
            out.append(why.format(n=num_samples))
    if num_samples < PAPER_NUM_SAMPLES:
        out.append(f"{num_samples} samples: papers report {PAPER_NUM_SAMPLES}; FID is biased upward with fewer")
    return out


def markdown_table() -> str:
    """The metric table of docs/metrics.md, generated from the registry (a test keeps the two equal)."""
    rows = ["| metric | `--metrics` name | result keys | reads | better | default |",
            "|---|---|---|---|---|---|"]
    for m in METRICS.values():
        selectable = f"`{m.name}`" if m.compute else "(reconstruct task)"
        reads = f"{m.reads} of {', '.join(m.needs)}" if m.needs else m.reads
        rows.append(f"| {m.title}: {m.description} | {selectable} | {', '.join(m.outputs)} | {reads} | "
                    f"{'lower' if m.lower_is_better else 'higher'} | {'yes' if m.default else ''} |")
    return "\n".join(rows)
