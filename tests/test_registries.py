"""The registries and the pipeline on them: metric selection, feature networks, FD_DINOv2 end to end, the schema.

FD_DINOv2 is checked through `bench eval` and `bench ref build` with a small random-weight DINOv2 (the ViT-L
network itself is checked against transformers' implementation in test_dinov2.py): the CLI's number must equal
a Fréchet distance computed here with scipy from the extractor's own features.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import bench.features.dinov2 as dinov2
import bench.inception
from bench.cli import cli
from bench.errors import BenchError
from bench.features import EXTRACTORS, FeatureSet, load_extractor, network_for
from bench.metrics import registry
from bench.result import Result, read
from test_evaluate import fid_scipy

SMALL = dinov2.ViTConfig(dim=64, depth=2, heads=4)


def small_dinov2(**options):
    """What `--dinov2-weights` would load, at test size: a random-weight ViT in the official layout."""
    return dinov2.DINOv2Extractor(dinov2.random_state_dict(0, SMALL), SMALL, resize=options.get("resize", "tensor"),
                                  provenance={"weights_sha256": "small" * 8})


class ToyInception:
    name = "inception"
    has_logits = False
    logits_unavailable_reason = "toy weights have no softmax"
    arrays = {"pool": 6, "spatial": 5}
    provenance = {"sha256": "toy" * 8, "backend": "toy"}

    def extract(self, images):
        x = images.reshape(len(images), -1).astype(np.float64) / 255
        rng = np.random.default_rng(5)
        return {k: (x @ rng.normal(size=(x.shape[1], d))).astype(np.float32) for k, d in self.arrays.items()}


def test_metric_selection_syntax():
    assert [m.name for m in registry.select(None)] == ["inception_score", "fid", "sfid", "precision_recall"]
    assert [m.name for m in registry.select("+kid,+fd_dinov2")][-2:] == ["kid", "fd_dinov2"]
    assert [m.name for m in registry.select("-sfid")] == ["inception_score", "fid", "precision_recall"]
    assert [m.name for m in registry.select("fid,precision")] == ["fid", "precision_recall"]  # an output's name works
    for bad, message in [("fid,+kid", "not both"), ("+nope", "unknown metric"), ("psnr", "reconstruct"),
                         ("-fid,-sfid,-is,-pr", "selects no metric")]:
        with pytest.raises(BenchError, match=message):
            registry.select(bad)


def test_arrays_needed_and_directions():
    need = registry.arrays_needed(registry.select("+kid,+fd_dinov2"))
    assert need == {"logits": "statistics", "pool": "features", "spatial": "statistics", "dinov2": "statistics"}
    assert registry.lower_is_better("fid") and registry.lower_is_better("fd_dinov2 delta")
    assert not registry.lower_is_better("recall") and not registry.lower_is_better("inception_score")


def test_every_array_a_metric_needs_has_a_network():
    for metric in registry.METRICS.values():
        for array in metric.needs:
            assert array in network_for(array).arrays
    assert set(EXTRACTORS) == {"inception", "dinov2", "clip"}
    with pytest.raises(BenchError, match="unknown feature network"):
        load_extractor("siglip")


def test_feature_space_metrics_are_defined_once_for_every_network():
    """Each network with an embedding gets every family: Inception under ADM's bare names, others suffixed; a new
    network gets them from its declaration alone."""
    from bench.features import FeatureNetwork

    families = {"fd": ("{fd}",), "kid": ("kid{s}",), "precision_recall": ("precision{s}", "recall{s}"),
                "density_coverage": ("density{s}", "coverage{s}"), "vendi": ("vendi{s}", "vendi_per_class{s}")}
    for network in ("inception", "dinov2", "clip"):
        s = "" if network == "inception" else f"_{network}"
        for base, outputs in families.items():
            name = ("fid" if network == "inception" else f"fd_{network}") if base == "fd" else base + s
            metric = registry.METRICS[name]
            assert metric.outputs == tuple(o.format(s=s, fd=name) for o in outputs)
            assert metric.needs == (EXTRACTORS[network].embedding,)
            assert ("paper-comparable" in metric.follows) == (network == "inception" and base in ("fd",
                                                                                             "precision_recall"))
    assert registry.METRICS["cmmd"].needs == ("clip",) and registry.METRICS["cmmd"].reads == "features"
    fake = FeatureNetwork("siglip", {"siglip": 1152}, load=lambda **kw: None, description="", embedding="siglip",
                          title="SigLIP")
    made = [family(registry.Space(fake)) for family in registry._FAMILIES]
    assert [m.name for m in made] == ["fd_siglip", "kid_siglip", "precision_recall_siglip", "density_coverage_siglip",
                                      "vendi_siglip"]
    assert made[0].title == "FD_SigLIP" and made[2].output_titles == ("Precision_SigLIP", "Recall_SigLIP")


def test_new_metrics_select_rank_and_resample_as_declared():
    chosen = registry.select("+density,+cmmd,+precision_dinov2,+fd-clip,+vendi_per_class_clip")
    assert [m.name for m in chosen][-5:] == ["density_coverage", "cmmd", "precision_recall_dinov2", "fd_clip",
                                             "vendi_clip"]
    assert registry.arrays_needed(registry.select("cmmd,vendi_dinov2")) == {"clip": "features",
                                                                            "dinov2": "statistics"}
    for key in ("cmmd", "fd_clip", "kid_dinov2"):
        assert registry.lower_is_better(key)
    for key in ("density", "coverage_clip", "vendi", "vendi_per_class_dinov2", "recall_clip"):
        assert not registry.lower_is_better(key)
    not_resampled = {m.name for m in registry.METRICS.values() if m.compute and not m.bootstrap}
    assert not_resampled == {"precision_recall", "density_coverage", "cmmd"} | {
        f"{base}_{n}" for base in ("precision_recall", "density_coverage") for n in ("dinov2", "clip")}
    assert registry.OUTPUT_TITLES["coverage_dinov2"] == "Coverage_DINOv2" and registry.OUTPUT_TITLES["cmmd"] == "CMMD"


def test_a_metric_may_give_some_outputs_and_say_why_not_the_others():
    rng = np.random.default_rng(0)
    sample = FeatureSet("s", {"clip": rng.standard_normal((6, 4))})
    scored = registry.score(FeatureSet("r"), sample, registry.select("vendi_clip"))
    assert scored["metrics"]["vendi_clip"] > 1 and scored["metrics"]["vendi_per_class_clip"] is None
    assert "no class labels" in scored["unavailable"]["vendi_per_class_clip"]
    with pytest.raises(BenchError, match="class labels of shape"):
        FeatureSet("s", {"clip": rng.standard_normal((6, 4))}, labels=np.zeros(5, np.int64))


def test_docs_metric_table_is_the_registry():
    from pathlib import Path

    docs = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    assert registry.markdown_table() in docs, "regenerate the table in docs/metrics.md from markdown_table()"


def test_sample_size_warnings_follow_the_selection():
    widths = {"pool": 2048, "spatial": 2023, "logits": 1008}
    adm = registry.sample_size_warnings(100, widths, registry.select(None))
    assert any(w.startswith("FID is unreliable") for w in adm) and any("Inception Score" in w for w in adm)
    only_fid = registry.sample_size_warnings(100, widths, registry.select("fid"))
    assert not any("sFID" in w or "Inception" in w for w in only_fid)


def test_kid_spread_is_not_reported_when_subsets_are_the_whole_set():
    assert registry.kid_subset_size(200, 200) == 100 and registry.kid_subset_size(50_000, 10_000) == 1000
    with pytest.raises(BenchError, match="--kid-subset-size 300"):
        registry.kid_subset_size(200, 250, 300)


@pytest.fixture
def batches(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    sample = np.clip(rng.integers(0, 256, (10, 32, 32, 3)) * 0.7 + 40, 0, 255).astype(np.uint8)
    np.savez(tmp_path / "ref.npz", ref)
    np.savez(tmp_path / "sample.npz", sample)
    return tmp_path, ref, sample


def test_fd_dinov2_through_bench_eval(batches, monkeypatch):
    tmp_path, ref, sample = batches
    monkeypatch.setattr(dinov2, "load", small_dinov2)
    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: ToyInception())
    out = CliRunner().invoke(cli, ["eval", str(tmp_path / "ref.npz"), str(tmp_path / "sample.npz"),
                                   "--metrics", "+fd_dinov2", "--json", str(tmp_path / "out.json"), "--no-cache"])
    assert out.exit_code == 0, out.output
    extractor = small_dinov2()
    expected = fid_scipy(extractor.extract(sample)["dinov2"].astype(np.float64),
                         extractor.extract(ref)["dinov2"].astype(np.float64))
    result = read(tmp_path / "out.json")
    assert result["metrics"]["fd_dinov2"] == pytest.approx(expected, rel=1e-5)
    assert result["provenance"]["features"]["dinov2"]["resize"] == "tensor"
    assert result["provenance"]["features"]["dinov2"]["weights_sha256"] == "small" * 8
    assert "FD_DINOv2: " in out.stdout and result["metrics"]["inception_score"] is None


def test_ref_build_stores_dinov2_statistics_that_eval_uses(batches, monkeypatch):
    tmp_path, ref, sample = batches
    monkeypatch.setattr(dinov2, "load", small_dinov2)
    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: ToyInception())
    out = CliRunner().invoke(cli, ["ref", "build", str(tmp_path / "ref.npz"), "-o", str(tmp_path / "stats.npz"),
                                   "--dinov2", "--dinov2-resize", "pil"])
    assert out.exit_code == 0, out.output
    extractor = small_dinov2(resize="pil")
    feats = extractor.extract(ref)["dinov2"].astype(np.float64)
    with np.load(tmp_path / "stats.npz") as npz:
        assert set(npz.files) == {"mu", "sigma", "mu_s", "sigma_s", "mu_dinov2", "sigma_dinov2"}
        np.testing.assert_allclose(npz["mu_dinov2"], feats.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(npz["sigma_dinov2"], np.cov(feats, rowvar=False), rtol=1e-4, atol=1e-6)
    provenance = json.loads((tmp_path / "stats.npz.json").read_text())
    assert provenance["features"]["dinov2"]["resize"] == "pil" and provenance["num_images"] == 12
    # A statistics-only reference gives FD_DINOv2 from its stored statistics, as ADM does for FID
    out = CliRunner().invoke(cli, ["eval", str(tmp_path / "stats.npz"), str(tmp_path / "sample.npz"),
                                   "--metrics", "fid,fd_dinov2", "--dinov2-resize", "pil",
                                   "--json", str(tmp_path / "out.json")])
    assert out.exit_code == 0, out.output
    expected = fid_scipy(extractor.extract(sample)["dinov2"].astype(np.float64), feats)
    assert read(tmp_path / "out.json")["metrics"]["fd_dinov2"] == pytest.approx(expected, rel=1e-5)


def test_eval_loads_only_the_networks_its_metrics_need(batches, monkeypatch):
    tmp_path, _, _ = batches
    monkeypatch.setattr(dinov2, "load", lambda **kw: pytest.fail("DINOv2 loaded though no metric reads it"))
    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: ToyInception())
    out = CliRunner().invoke(cli, ["eval", str(tmp_path / "ref.npz"), str(tmp_path / "sample.npz")])
    assert out.exit_code == 0, out.output


def test_result_schema_round_trip_and_refusals(tmp_path):
    result = Result(task="eval", metrics={"fid": 1.5, "psnr": float("inf")}, reference={"sha256": "ab"},
                    samples={"num_samples": 10}, settings={}, provenance={})
    path = result.write(tmp_path / "r.json")
    data = read(path)
    assert data["schema_version"] == 1 and data["metrics"]["psnr"] == "inf"
    assert set(data["reference"]) == {"name", "path", "sha256", "resolution", "num_ref"}
    (tmp_path / "foo.json").write_text('{"foo": 1}')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "future.json").write_text('{"schema_version": 99, "metrics": {}}')
    for name, message in [("foo.json", "not a bench result"), ("list.json", "not a bench result"),
                          ("future.json", "schema_version 99")]:
        with pytest.raises(BenchError, match=message):
            read(tmp_path / name)
    with pytest.raises(BenchError, match="task"):
        Result(task="train", metrics={}, reference={}, samples={}, settings={}, provenance={})


def test_results_written_before_the_schema_still_read(tmp_path):
    old_eval = {"inception_score": None, "inception_score_unavailable": "no softmax", "fid": 3.2, "sfid": 5.1,
                "precision": 0.7, "recall": 0.6, "num_ref": 10000, "num_samples": 50000,
                "reference": {"path": "ref.npz", "sha256": "cd"}, "warnings": [],
                "provenance": {"sample": "s.npz", "distances": "ADM (float16, as TensorFlow)",
                               "inception": {"sha256": "ef"}}}
    (tmp_path / "eval.json").write_text(json.dumps(old_eval))
    data = read(tmp_path / "eval.json")
    assert data["metrics"]["fid"] == 3.2 and data["unavailable"]["inception_score"] == "no softmax"
    assert data["reference"]["num_ref"] == 10000 and data["samples"]["num_samples"] == 50000
    assert data["provenance"]["features"]["inception"]["sha256"] == "ef" and data["upgraded_from"] == "pre-schema"
    old_recon = {"run_id": "vq", "task": "reconstruct", "generator": "llamagen-vq16", "config": {"eval_size": 256},
                 "metrics": {"rfid": 2.2, "vs_reference": {"fid": 2.2, "sfid": 4.0, "num_ref": 10},
                             "vs_originals": {"fid": 0.9, "sfid": 1.1}, "psnr": 20.0, "ssim": 0.6,
                             "ssim_llamagen_convention": 0.7, "conventions": {"psnr": "x"}},
                 "num_samples": 50000, "num_ref": 10, "reference": {"sha256": "ab"}}
    (tmp_path / "recon.json").write_text(json.dumps(old_recon))
    data = read(tmp_path / "recon.json")
    assert data["metrics"] == {"rfid": 2.2, "sfid": 4.0, "rfid_vs_originals": 0.9, "sfid_vs_originals": 1.1,
                               "psnr": 20.0, "ssim": 0.6, "ssim_llamagen": 0.7}
    assert data["details"]["conventions"] == {"psnr": "x"} and data["task"] == "reconstruct"


def test_every_result_key_has_its_own_title_in_every_format():
    """`sfid_vs_originals` was headed "rFID vs originals" like `rfid_vs_originals`: no two result keys may share a
    title, and every report format uses it."""
    from bench.report.formats import metric_title, to_latex, to_markdown, to_text
    import pandas as pd

    titles = {key: metric_title(key) for key in registry.OUTPUTS}
    assert len(set(titles.values())) == len(titles), titles
    assert titles["sfid_vs_originals"] == "sFID vs originals" and titles["recall"] == "Recall"
    board = pd.DataFrame({"run": ["r"], "rfid_vs_originals": [1.0], "sfid_vs_originals": [2.0]})
    for render in (to_text, to_markdown, to_latex):
        out = render(board)
        assert "rFID vs originals" in out and "sFID vs originals" in out
    with pytest.raises(ValueError, match="give each a title"):
        registry.Metric("two", "Two", ("a", "b"), (), "pairs", True, "", "")
