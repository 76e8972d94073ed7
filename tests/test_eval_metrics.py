"""`bench eval` and `bench ref build` end to end with the metrics beyond ADM's five, on tiny npz batches: the real
(bundled) Inception, and small random-weight DINOv2 and CLIP files given by path, as a user gives theirs. Every
number is recomputed here from the extractors' own features with an independent implementation: scipy's sqrtm
FID, the `prdc` package, the `vendi-score` package, and CMMD's formula with full numpy matrices."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from prdc import compute_prdc
from vendi_score import vendi

import bench.features.clip as clip
import bench.features.dinov2 as dinov2
import bench.inception
from bench.cli import cli
from bench.result import read
from test_evaluate import fid_scipy
from test_registries import ToyInception

pytestmark = pytest.mark.usefixtures("one_thread")

DINO = dinov2.ViTConfig(dim=64, depth=2, heads=4)
CLIP = clip.CLIPConfig(image_size=28, patch_size=14, width=128, layers=2, heads=2, output_dim=32)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """Batches (the samples with class labels in arr_1, as ADM's sampler writes them) and weight files."""
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (14, 32, 32, 3), dtype=np.uint8)
    sample = np.clip(rng.integers(0, 256, (12, 32, 32, 3)) * 0.8 + 30, 0, 255).astype(np.uint8)
    labels = np.array([0, 1, 2] * 4)
    np.savez(tmp_path / "ref.npz", ref)
    np.savez(tmp_path / "sample.npz", sample, labels)
    torch.save(dinov2.random_state_dict(0, DINO), tmp_path / "dino.pth")
    torch.save(clip.random_state_dict(0, CLIP), tmp_path / "clip.pt")
    monkeypatch.setattr(dinov2, "VITL14", DINO)  # the layout the loaders expect: the small one, for this test
    monkeypatch.setattr(clip, "VITL14_336", CLIP)
    return tmp_path, ref, sample, labels


def features(tmp_path, images):
    """The features of `images` from the same files, extracted here directly."""
    return {"dinov2": dinov2.load(weights=tmp_path / "dino.pth").extract(images)["dinov2"].astype(np.float64),
            "clip": clip.load(weights=tmp_path / "clip.pt").extract(images)["clip"].astype(np.float64)}


def mmd_numpy(x, y, sigma=10.0):
    k = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma**2))
    return 1000 * (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())


def test_every_new_metric_through_bench_eval(setup, capsys):
    tmp_path, ref, sample, labels = setup
    spec = ("fid,fd_dinov2,cmmd,density_coverage_dinov2,precision_recall_clip,kid_clip,vendi_clip,"
            "density_coverage")
    out = CliRunner().invoke(cli, ["eval", str(tmp_path / "ref.npz"), str(tmp_path / "sample.npz"), "--metrics", spec,
                                   "--dinov2-weights", str(tmp_path / "dino.pth"),
                                   "--clip-weights", str(tmp_path / "clip.pt"),
                                   "--kid-subset-size", "5", "--json", str(tmp_path / "r.json"), "--no-cache"])
    assert out.exit_code == 0, out.output
    result = read(tmp_path / "r.json")
    m = result["metrics"]
    r, s = features(tmp_path, ref), features(tmp_path, sample)
    assert m["fd_dinov2"] == pytest.approx(fid_scipy(s["dinov2"], r["dinov2"]), rel=1e-5)
    assert m["cmmd"] == pytest.approx(mmd_numpy(r["clip"], s["clip"]), rel=1e-5)
    official = {k: float(v) for k, v in compute_prdc(r["dinov2"], s["dinov2"], nearest_k=5).items()}
    assert (m["density_dinov2"], m["coverage_dinov2"]) == pytest.approx((official["density"], official["coverage"]))
    official = {k: float(v) for k, v in compute_prdc(r["clip"], s["clip"], nearest_k=5).items()}
    assert (m["precision_clip"], m["recall_clip"]) == pytest.approx((official["precision"], official["recall"]))
    assert m["vendi_clip"] == pytest.approx(vendi.score_X(s["clip"]), rel=1e-5)
    per_class = np.mean([vendi.score_X(s["clip"][labels == c]) for c in range(3)])
    assert m["vendi_per_class_clip"] == pytest.approx(per_class, rel=1e-5)
    assert result["details"]["vendi_classes_clip"] == 3 and m["kid_clip"] is not None
    assert result["details"]["kid_subset_size_clip"] == 5 and "kid_std_clip" in result["details"]
    assert m["fid"] > 0 and 0 <= m["coverage"] <= 1  # the real Inception's pool_3
    # the user's weights: used, recorded as not the published files, said once each
    features_prov = result["provenance"]["features"]
    assert features_prov["dinov2"]["official_weights"] is False and features_prov["clip"]["official_weights"] is False
    assert features_prov["inception"]["official_weights"] is True  # the bundled 2015 weights
    unofficial = [w for w in result["warnings"] if "not the published file" in w]
    assert len(unofficial) == 2 and all("not comparable with published numbers" in w for w in unofficial)
    assert out.stderr.count("not the published file") == 2
    printed = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
    assert set(printed) >= {"FID", "FD_DINOv2", "CMMD", "Density_DINOv2", "Coverage_DINOv2", "Precision_CLIP",
                            "Recall_CLIP", "Vendi_CLIP", "Vendi_CLIP per class", "Density", "Coverage"}
    assert printed["KID_CLIP"].endswith("(subsets of 5)") and " +- " in printed["KID_CLIP"]


def test_vendi_per_class_without_labels_says_why(setup):
    tmp_path, ref, sample, _ = setup
    np.savez(tmp_path / "unlabelled.npz", sample)
    out = CliRunner().invoke(cli, ["eval", str(tmp_path / "ref.npz"), str(tmp_path / "unlabelled.npz"), "--metrics",
                                   "vendi_dinov2", "--dinov2-weights", str(tmp_path / "dino.pth"),
                                   "--json", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    result = read(tmp_path / "r.json")
    assert result["metrics"]["vendi_dinov2"] > 1 and result["metrics"]["vendi_per_class_dinov2"] is None
    assert "no class labels" in result["unavailable"]["vendi_per_class_dinov2"]
    np.savez(tmp_path / "badlabels.npz", sample, np.zeros(3, np.int64))
    out = CliRunner().invoke(cli, ["eval", str(tmp_path / "ref.npz"), str(tmp_path / "badlabels.npz"), "--metrics",
                                   "vendi_dinov2", "--dinov2-weights", str(tmp_path / "dino.pth")])
    assert out.exit_code == 2 and "arr_1 has shape (3,)" in out.output


def test_ref_build_clip_stores_embeddings_that_eval_uses(setup, monkeypatch):
    """`bench ref build --clip --include-images` stores mu_clip/sigma_clip and the stored images' embeddings
    (feat_clip); `bench eval` then takes CMMD's reference side from them and runs CLIP on the samples only."""
    tmp_path, ref, sample, _ = setup
    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: ToyInception())  # the real one: above
    out = CliRunner().invoke(cli, ["ref", "build", str(tmp_path / "ref.npz"), "-o", str(tmp_path / "built.npz"),
                                   "--include-images", "--subset", "9", "--clip",
                                   "--clip-weights", str(tmp_path / "clip.pt")])
    assert out.exit_code == 0, out.output
    assert "not the published file" in out.stderr
    r = features(tmp_path, ref)["clip"]
    with np.load(tmp_path / "built.npz") as npz:
        chosen = [i for i in range(len(ref)) if any((npz["arr_0"] == ref[i]).all((1, 2, 3)))]
        assert len(chosen) == 9
        np.testing.assert_allclose(npz["feat_clip"], r[chosen], atol=1e-6)
        np.testing.assert_allclose(npz["mu_clip"], r.mean(0), atol=1e-6)  # statistics: every image
    record = json.loads((tmp_path / "built.npz.json").read_text())
    assert record["features"]["clip"]["official_weights"] is False
    seen = []
    real_load = clip.load

    def counting_load(**options):
        extractor = real_load(**options)
        extract = extractor.extract
        extractor.extract = lambda images: seen.append(len(images)) or extract(images)
        return extractor

    monkeypatch.setattr(clip, "load", counting_load)
    out = CliRunner().invoke(cli, ["eval", str(tmp_path / "built.npz"), str(tmp_path / "sample.npz"), "--metrics",
                                   "cmmd,fd_clip", "--clip-weights", str(tmp_path / "clip.pt"), "--no-cache",
                                   "--json", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    assert sum(seen) == len(sample)  # the reference's embeddings came from the file
    s = features(tmp_path, sample)["clip"]
    metrics = read(tmp_path / "r.json")["metrics"]
    assert metrics["cmmd"] == pytest.approx(mmd_numpy(r[chosen], s), rel=1e-5)
    assert metrics["fd_clip"] == pytest.approx(fid_scipy(s, r), rel=1e-5)  # from the stored statistics of all 14
