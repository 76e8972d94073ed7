"""Every metric in one table: what it reads, how it is computed, which way is better, and when it misleads.

`bench eval`, `bench run`, `bench report`, the sample-size warnings, the noise estimate and the table in
docs/metrics.md all derive from `METRICS`. A metric names the feature arrays it needs ("pool", "spatial",
"logits", "dinov2", "clip"); the pipeline extracts exactly those (`bench.features`) and calls
`compute(ref, sample, options)` with two `FeatureSet`s.

Feature-space metrics are defined once and instantiated for every registered feature network that declares an
`embedding` (bench/features/): FD, KID, Precision/Recall, density/coverage and Vendi exist for Inception's pool_3
under ADM's names and conventions (`fid`, `kid`, `precision`, ...), and for every other network under
`<name>_<network>` names with dgm-eval's conventions (`fd_dinov2`, `kid_clip`, `precision_dinov2`, ...). A new
network gets all of them from its `NETWORK` declaration alone. Metrics particular to one network (IS, sFID, CMMD)
and to the reconstruct task are single entries.

    --metrics +kid,+fd_dinov2      ADM's five plus KID and FD_DINOv2
    --metrics fid,precision        exactly these
    --metrics -sfid                the defaults without sFID
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from bench.errors import BenchError
from bench.features import EXTRACTORS, FeatureNetwork
from bench.features.featureset import FeatureSet
from bench.metrics.cmmd import cmmd
from bench.metrics.density_coverage import NEIGHBOURS as DC_NEIGHBOURS
from bench.metrics.density_coverage import density_coverage
from bench.metrics.frechet import frechet_distance, frechet_distance_from_rows
from bench.metrics.inception_score import inception_score
from bench.metrics.kid import kid
from bench.metrics.precision_recall import precision_recall
from bench.metrics.vendi import vendi_per_class, vendi_score

#: what the ADM metrics need to be meaningful
IS_SPLIT_SIZE = 5000
PR_NEIGHBOURS = 3
PAPER_NUM_SAMPLES = 50_000
KID_SUBSETS = 100
#: the network whose feature-space metrics keep ADM's names (`fid`, `precision`) and conventions
ADM_NETWORK = "inception"
#: who each convention follows, as the docs' table says it
ADM = "ADM evaluator: paper-comparable"
DGM_EVAL = "dgm-eval (Stein et al. 2023)"


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
    #: each output's own title ("Precision", "Recall"); empty: the metric's title for its one output
    output_titles: tuple[str, ...] = field(default=())
    #: whose convention it follows and so which numbers it compares with ("ADM evaluator: paper-comparable", ...)
    follows: str = ""
    #: published ImageNet 256 values, where there are any
    typical: str = ""
    #: how many samples (and references) the published numbers use
    samples: str = ""
    #: part of `bench run`'s bootstrap noise estimate; False where a resample costs as much as the metric itself
    bootstrap: bool = True
    #: reads the samples' class labels (when there are any)
    uses_labels: bool = False

    def __post_init__(self):
        if len(self.outputs) > 1 and len(self.output_titles) != len(self.outputs):
            raise ValueError(f"metric {self.name!r} writes {len(self.outputs)} outputs: give each a title")

    def output_title(self, output: str) -> str:
        titles = self.output_titles or (self.title,) * len(self.outputs)
        return dict(zip(self.outputs, titles))[output]


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


def kid_subset_size(n_ref: int, n_sample: int, requested: int | None = None) -> int:
    """torch-fidelity's 1000, but at most half the smaller side: subsets as large as the set are all the whole set,
    and their spread (the reported +-) would be zero whatever the data."""
    if requested is not None:
        if requested < 2 or requested > min(n_ref, n_sample):
            raise BenchError(f"--kid-subset-size {requested}: must lie in [2, {min(n_ref, n_sample)}] "
                             f"(the smaller side has {min(n_ref, n_sample)} images)")
        return requested
    return max(2, min(1000, min(n_ref, n_sample) // 2))


def _rank(array: str, name: str) -> Callable[[dict[str, int]], tuple[int, str]]:
    def minimum(widths: dict[str, int]) -> tuple[int, str]:
        d = widths.get(array, 0)
        return d + 1, f"{name} is unreliable: {{n}} samples give a rank-deficient {d}-d covariance " \
                      f"(needs more than {d} samples)"

    return minimum


def _fewest(count: int, why: str) -> Callable[[dict[str, int]], tuple[int, str]]:
    return lambda widths: (count, why)


# -- the feature-space metrics, once for every network --------------------------------------------------------
@dataclass(frozen=True)
class Space:
    """The embedding of one feature network: the rows feature-space metrics compare, and how their results are
    named (Inception's pool_3 keeps ADM's bare names; any other network suffixes its name)."""

    network: FeatureNetwork

    @property
    def array(self) -> str:
        return self.network.embedding

    @property
    def adm(self) -> bool:
        return self.network.name == ADM_NETWORK

    @property
    def width(self) -> int:
        return self.network.arrays[self.array]

    def key(self, base: str) -> str:
        """A result key: "precision" for Inception, "precision_dinov2" for DINOv2."""
        return base if self.adm else f"{base}_{self.network.name}"

    def title(self, base: str) -> str:
        return base if self.adm else f"{base}_{self.network.title}"

    @property
    def features(self) -> str:
        return f"{self.network.title}{' pool_3' if self.adm else ''} ({self.width}-d)"


def _fd(space: Space) -> Metric:
    name = "fid" if space.adm else space.key("fd")
    return Metric(
        name, "FID" if space.adm else space.title("FD"), (name,), (space.array,), "statistics", lower_is_better=True,
        units="squared feature units, >= 0",
        description=f"Fréchet distance of {space.features} features to the reference statistics"
                    + ("" if space.adm else (", as EDM2 computes it" if space.network.name == "dinov2" else "")),
        compute=_frechet(space.array, name), default=space.adm, aliases=() if space.adm else (name.replace("_", "-"),),
        minimum=_rank(space.array, "FID" if space.adm else space.title("FD")),
        follows=ADM if space.adm else ("EDM2 / " + DGM_EVAL if space.network.name == "dinov2" else DGM_EVAL),
        samples=f"> {space.width} (a full-rank covariance); papers: 50k samples vs the 10k-image reference",
        typical={"inception": "BigGAN-deep ~7, ADM-G 4.59, DiT-XL/2 (cfg 1.5) 2.27, LlamaGen-3B (cfg 1.65) 2.18",
                 "dinov2": "published for ImageNet 512 (EDM2) and by dgm-eval; not collected here for 256"}.get(
            space.network.name, "none published with this network"))


def _kid(space: Space) -> Metric:
    name = space.key("kid")

    def compute(ref: FeatureSet, sample: FeatureSet, options: ScoreOptions) -> dict[str, Any]:
        ref_rows, sample_rows = _reference_rows(ref, sample, space.array, 4)
        subset = kid_subset_size(len(ref_rows), len(sample_rows), options.kid_subset_size)
        mean, std = kid(ref_rows, sample_rows, subset_size=subset, subsets=KID_SUBSETS, progress=False)
        whole = subset >= min(len(ref_rows), len(sample_rows))
        return {name: mean, space.key("kid_std"): None if whole else std, space.key("kid_subset_size"): subset,
                space.key("kid_subsets"): KID_SUBSETS,
                **({space.key("kid_std_unavailable"): "every subset is the whole smaller set: the spread means "
                                                      "nothing"} if whole else {})}

    return Metric(
        name, space.title("KID"), (name,), (space.array,), "features", lower_is_better=True, units="x1 (not x1000)",
        description=f"kernel distance: unbiased cubic-kernel MMD^2 of {space.features} features, mean over "
                    f"{KID_SUBSETS} random subsets (torch-fidelity's estimator{'' if space.adm else ', dgm-eval KD'})",
        compute=compute, minimum=_fewest(4, "KID's spread needs at least 4 samples (two subsets of 2)"),
        follows="torch-fidelity (KID is not in ADM's evaluator)" if space.adm else DGM_EVAL,
        samples="subsets of 1000 need >= 1000 per side; papers: 50k vs the 10k reference",
        typical="rarely published for ImageNet 256")


def _precision_recall(space: Space) -> Metric:
    k = PR_NEIGHBOURS if space.adm else DC_NEIGHBOURS
    outputs = (space.key("precision"), space.key("recall"))

    def compute(ref: FeatureSet, sample: FeatureSet, options: ScoreOptions) -> dict[str, Any]:
        ref_rows, sample_rows = _reference_rows(ref, sample, space.array, k + 1, f"k={k} nearest neighbours need "
                                                                                   f"more than {k} images")
        if space.adm:  # ADM: float16 distances (float64 with --exact), distance <= radius
            values = precision_recall(ref_rows, sample_rows, k=k, exact=options.exact, progress=False)
        else:  # prdc / dgm-eval: exact distances, distance < radius
            values = precision_recall(ref_rows, sample_rows, k=k, exact=True, strict=True, progress=False)
        return dict(zip(outputs, values))

    return Metric(
        space.key("precision_recall"), space.title("Precision / Recall"), outputs, (space.array,), "features",
        lower_is_better=False, units="fraction, 0 .. 1",
        description=(f"improved precision and recall (k={k} manifolds of {space.features} features, "
                     + ("ADM's float16 distances, distance <= radius)" if space.adm else
                        "float64 distances, distance < radius, as prdc computes them)")),
        compute=compute, default=space.adm,
        aliases=("precision", "recall", "pr") if space.adm else (*outputs, space.key("pr")),
        output_titles=(space.title("Precision"), space.title("Recall")),
        minimum=_fewest(k + 1, f"Precision/Recall are undefined: k={k} nearest neighbours need more than {k} samples"),
        follows=ADM if space.adm else DGM_EVAL + ", prdc's definition", bootstrap=False,
        samples="papers: 50k samples vs the 10k-image reference (the values depend on both counts)",
        typical="Precision ~0.8, Recall ~0.5-0.6 for modern models (BigGAN-deep 0.87 / 0.28)" if space.adm else
                "not collected here")


def _density_coverage(space: Space) -> Metric:
    outputs = (space.key("density"), space.key("coverage"))
    k = DC_NEIGHBOURS

    def compute(ref: FeatureSet, sample: FeatureSet, options: ScoreOptions) -> dict[str, Any]:
        ref_rows, sample_rows = _reference_rows(ref, sample, space.array, k + 1, f"k={k} nearest neighbours need "
                                                                                   f"more than {k} images")
        return dict(zip(outputs, density_coverage(ref_rows, sample_rows, k=k, progress=False)))

    return Metric(
        space.key("density_coverage"), space.title("Density / Coverage"), outputs, (space.array,), "features",
        lower_is_better=False, units="density >= 0 (1 when the distributions match); coverage 0 .. 1",
        description=f"density and coverage (Naeem et al. 2020; k={k} nearest-neighbour balls of the reference's "
                    f"{space.features} features, distance < radius, as prdc computes them)",
        compute=compute, aliases=(*outputs, space.key("dc")),
        output_titles=(space.title("Density"), space.title("Coverage")),
        minimum=_fewest(k + 1, f"density/coverage are undefined: k={k} nearest neighbours need more than {k} "
                               "references"),
        follows="prdc 0.2 (Naeem et al.)" if space.adm else DGM_EVAL + ", prdc's definition", bootstrap=False,
        samples="prdc / dgm-eval: 10k-50k per side; coverage is read against a fixed reference count",
        typical="not collected here")


def _vendi(space: Space) -> Metric:
    outputs = (space.key("vendi"), space.key("vendi_per_class"))

    def compute(ref: FeatureSet, sample: FeatureSet, options: ScoreOptions) -> dict[str, Any]:
        if not sample.has(space.array):
            raise MetricUnavailable(sample.unavailable.get(space.array) or f"the samples have no {space.array} "
                                                                           "features")
        rows = sample.arrays[space.array]
        out: dict[str, Any] = {outputs[0]: vendi_score(rows)}
        if sample.labels is None:
            out[outputs[1]] = None
            out["unavailable"] = {outputs[1]: "the samples carry no class labels (an npz's arr_1, a class-conditional "
                                              "run's labels)"}
        else:
            out[outputs[1]], out[space.key("vendi_classes")] = vendi_per_class(rows, sample.labels)
        return out

    return Metric(
        space.key("vendi"), space.title("Vendi"), outputs, (space.array,), "sample", lower_is_better=False,
        units="effective number of distinct images, 1 .. width",
        description=f"Vendi score: exp of the entropy of the eigenvalues of the cosine-similarity kernel of the "
                    f"samples' {space.features} features (vendi-score's formula, q=1), over all samples and as "
                    "the mean over classes of each class's score",
        compute=compute, aliases=(space.key("vendi_per_class"),), uses_labels=True,
        output_titles=(space.title("Vendi"), space.title("Vendi") + " per class"),
        minimum=_fewest(2, "the Vendi score of fewer than 2 samples is 1 whatever they are"),
        follows="vendi-score 0.0.3; per class as " + DGM_EVAL, samples="grows with N up to the width: compare at "
                                                                        "equal N", typical="not collected here")


def _cmmd(ref: FeatureSet, sample: FeatureSet, options: ScoreOptions) -> dict[str, Any]:
    ref_rows, sample_rows = _reference_rows(ref, sample, "clip", 2)
    return {"cmmd": cmmd(ref_rows, sample_rows, progress=False)}


_FAMILIES = (_fd, _kid, _precision_recall, _density_coverage, _vendi)
_INCEPTION, *_OTHERS = [Space(n) for n in EXTRACTORS.values() if n.embedding]
assert _INCEPTION.adm, "Inception is registered first: its metrics keep ADM's names"

METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("inception_score", "IS", ("inception_score",), ("logits",), "sample", lower_is_better=False,
           units="1 .. 1008", follows=ADM,
           description="Inception Score: mean over splits of 5,000 samples of exp(E KL(p(y|x) || p(y)))",
           compute=_inception_score, default=True, aliases=("is",),
           minimum=lambda w: (IS_SPLIT_SIZE, f"Inception Score is unreliable: ADM averages splits of {IS_SPLIT_SIZE} "
                                             "samples; {n} samples make one partial split"),
           samples="50k (10 splits of 5,000)", typical="BigGAN-deep 171.4, DiT-XL/2 (cfg 1.5) 278.2, LlamaGen-3B ~263"),
    _fd(_INCEPTION),
    Metric("sfid", "sFID", ("sfid",), ("spatial",), "statistics", lower_is_better=True, units="as FID", follows=ADM,
           description="Fréchet distance of mixed_6/conv[..., :7] features (2023-d, NHWC-flattened)",
           compute=_frechet("spatial", "sfid"), default=True, minimum=_rank("spatial", "sFID"),
           samples="> 2023; papers: 50k samples", typical="DiT-XL/2 4.60; typically 4-6"),
    *(family(_INCEPTION) for family in _FAMILIES[1:]),
    *(family(space) for space in _OTHERS for family in _FAMILIES),
    Metric("cmmd", "CMMD", ("cmmd",), ("clip",), "features", lower_is_better=True, units="x1000 MMD^2, >= 0",
           description="MMD^2 of CLIP ViT-L/14@336px embeddings, Gaussian kernel sigma 10, biased (minimum-variance) "
                       "estimator, times 1000, in float64",
           compute=_cmmd, follows="google-research/cmmd (Jayasumana et al. 2024)", bootstrap=False,
           minimum=_fewest(2, "CMMD of a single sample is its kernel distance to the reference, not a set's"),
           samples="the paper compares sets of 30k COCO images; no Gaussian fit, so no N > width requirement",
           typical="no ImageNet 256 values published by the authors"),
    # Image-pair metrics of `bench run --task reconstruct` (the task computes them; listed for the board)
    Metric("rfid", "rFID", ("rfid",), ("pool",), "statistics", lower_is_better=True, units="as FID", follows=ADM,
           description="FID of a tokenizer's reconstructions against the reference statistics",
           samples="the 50k ImageNet val images", typical="LlamaGen VQ-16: 2.19"),
    Metric("rfid_vs_originals", "rFID vs originals", ("rfid_vs_originals", "sfid_vs_originals"), ("pool", "spatial"),
           "statistics", lower_is_better=True, units="as FID", follows="LlamaGen-derived code",
           description="FID and sFID of reconstructions against their own originals (LlamaGen-derived code's rFID)",
           output_titles=("rFID vs originals", "sFID vs originals"), samples="the 50k ImageNet val images"),
    Metric("psnr", "PSNR", ("psnr",), (), "pairs", lower_is_better=False, units="dB", follows="scikit-image",
           description="peak signal-to-noise ratio of reconstructions, data_range 1 on [0, 1] images"),
    Metric("ssim", "SSIM", ("ssim", "ssim_llamagen"), (), "pairs", lower_is_better=False, units="-1 .. 1",
           description="structural similarity (scikit-image's 7x7 uniform window; data_range 1, and 2 as "
                       "LlamaGen's script uses)", output_titles=("SSIM", "SSIM (LlamaGen)"),
           follows="scikit-image; ssim_llamagen: LlamaGen's data_range=2 (inflated)"),
    Metric("codebook_usage", "Codebook usage", ("codebook_usage",), (), "pairs", lower_is_better=False,
           units="fraction of entries, 0 .. 1", follows="LlamaGen Table 2 (printed in percent)",
           description="fraction of the tokenizer's codebook entries that encode at least one token of the data "
                       "(discrete tokenizers only)", typical="LlamaGen VQ-16: 97%"),
]}

#: every result key -> the metric that writes it
OUTPUTS: dict[str, Metric] = {out: m for m in METRICS.values() for out in m.outputs}
#: every result key -> how people read it ("precision_dinov2" -> "Precision_DINOv2")
OUTPUT_TITLES: dict[str, str] = {out: m.output_title(out) for m in METRICS.values() for out in m.outputs}
assert len(OUTPUTS) == sum(len(m.outputs) for m in METRICS.values()), "two metrics write one result key"


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

    Values a metric returns beyond its outputs (KID's spread and subset size) go to `details`; a metric that can
    give only some of its outputs returns the others as None with their reasons under "unavailable".
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
        unavailable.update(computed.pop("unavailable", {}))
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
    rows = ["| metric | `--metrics` name | result keys | reads | better | units | follows | samples | typical "
            "ImageNet 256 | default |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for m in METRICS.values():
        selectable = f"`{m.name}`" if m.compute else "(reconstruct task)"
        reads = f"{m.reads} of {', '.join(m.needs)}" if m.needs else m.reads
        cells = [f"{m.title}: {m.description}", selectable, ", ".join(m.outputs), reads,
                 "lower" if m.lower_is_better else "higher", m.units, m.follows, m.samples, m.typical,
                 "yes" if m.default else ""]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)
