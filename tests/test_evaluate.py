"""The ADM evaluator pipeline and `bench eval` / `bench ref build`, checked against independent computations.

Most tests use a stand-in extractor (fixed random projections of 8x8 pixels) so that the pipeline's
arithmetic can be recomputed by hand with numpy/scipy; one test runs the real Inception end to end.
"""

import hashlib
import json

import numpy as np
import pytest
import scipy.linalg
from click.testing import CliRunner
from PIL import Image

import bench.download
import bench.evaluate
import bench.inception
from bench.batches import center_crop_arr
from bench.cli import cli
from bench.errors import BenchError
from bench.evaluate import evaluate


class ToyExtractor:
    """pool/spatial/logits = fixed projections of the flattened 8x8 image: an extractor we can recompute."""

    has_logits = True
    logits_unavailable_reason = None

    def __init__(self, with_logits=True, nan_rows=0):
        rng = np.random.default_rng(123)
        self.proj = {"pool": rng.normal(size=(192, 6)), "spatial": rng.normal(size=(192, 5)),
                     "logits": rng.normal(size=(192, 4)) / 50}
        self.has_logits = with_logits
        self.logits_unavailable_reason = None if with_logits else "toy weights have no softmax"
        self.provenance = {"sha256": "toy" * 8, "backend": "toy", "kind": "toy"}
        self.nan_rows = nan_rows
        self.calls = 0

    def features(self, images):
        x = images.reshape(len(images), -1).astype(np.float64) / 255
        out = {k: (x @ p).astype(np.float32) for k, p in self.proj.items() if k != "logits" or self.has_logits}
        out["pool"][: self.nan_rows] = np.nan
        return out

    def extract(self, images):
        self.calls += 1
        return self.features(images)


def fid_scipy(a, b):
    """FID the textbook way: np.cov + scipy sqrtm (the formula ADM uses)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def is_direct(logits, split=5000):
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(p), split):
        part = p[i:i + split]
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores))


def pr_bruteforce(ref, sample, k=3):
    def radii(x):
        d = ((x[:, None] - x[None]) ** 2).sum(-1)
        return np.sort(d, axis=1)[:, k]

    d = ((ref[:, None].astype(np.float64) - sample[None]) ** 2).sum(-1)  # [ref, sample]
    r_ref, r_sample = radii(ref.astype(np.float64)), radii(sample.astype(np.float64))
    precision = (d <= r_ref[:, None]).any(0).mean()
    recall = (d <= r_sample[None, :]).any(1).mean()
    return precision, recall


@pytest.fixture
def batches(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    sample = np.clip(rng.integers(0, 256, (30, 8, 8, 3)) * 0.8 + 20, 0, 255).astype(np.uint8)
    np.savez(tmp_path / "ref.npz", ref)
    np.savez(tmp_path / "sample.npz", sample)
    return tmp_path / "ref.npz", tmp_path / "sample.npz", ref, sample


def test_numbers_match_independent_computations(batches):
    ref_path, sample_path, ref, sample = batches
    toy = ToyExtractor()
    result = evaluate(ref_path, sample_path, toy, exact=True, batch_size=7)
    fr, fs = toy.features(ref), toy.features(sample)
    assert result["metrics"]["fid"] == pytest.approx(fid_scipy(fs["pool"], fr["pool"]), rel=1e-6)
    assert result["metrics"]["sfid"] == pytest.approx(fid_scipy(fs["spatial"], fr["spatial"]), rel=1e-6)
    assert result["metrics"]["inception_score"] == pytest.approx(is_direct(fs["logits"].astype(np.float64)), rel=1e-6)
    assert (result["metrics"]["precision"], result["metrics"]["recall"]) == pytest.approx(pr_bruteforce(fr["pool"], fs["pool"]))
    assert result["reference"]["num_ref"] == 40 and result["samples"]["num_samples"] == 30


def kid_direct(a, b, subset, subsets=100, seed=2020):
    """torch-fidelity's KID written out: cubic kernel, gamma 1/d, unbiased MMD^2 on seeded subsets."""
    rng = np.random.RandomState(seed)
    k = lambda x, y: (x @ y.T / x.shape[1] + 1) ** 3  # noqa: E731
    mmds = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), subset, replace=False)].astype(np.float64)
        y = b[rng.choice(len(b), subset, replace=False)].astype(np.float64)
        kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
        m = subset
        mmds.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    return float(np.mean(mmds)), float(np.std(mmds))


def test_kid_on_request(batches, tmp_path):
    ref_path, sample_path, ref, sample = batches
    toy = ToyExtractor()
    result = evaluate(ref_path, sample_path, toy, with_kid=True)
    expected = kid_direct(toy.features(ref)["pool"], toy.features(sample)["pool"], subset=15)
    assert (result["metrics"]["kid"], result["details"]["kid_std"]) == pytest.approx(expected, rel=1e-6)
    assert result["details"]["kid_subset_size"] == 15  # half the smaller batch: subsets of all 30 would not vary
    assert "kid" not in evaluate(ref_path, sample_path, toy)["metrics"]


def test_precomputed_reference_statistics_are_used(batches, tmp_path):
    _, sample_path, ref, sample = batches
    toy = ToyExtractor()
    rng = np.random.default_rng(5)
    a = rng.normal(size=(50, 6))
    b = rng.normal(size=(50, 5))
    stats = {"mu": a.mean(0), "sigma": np.cov(a, rowvar=False), "mu_s": b.mean(0), "sigma_s": np.cov(b, rowvar=False)}
    np.savez(tmp_path / "ref_stats.npz", ref, **stats)
    result = evaluate(tmp_path / "ref_stats.npz", sample_path, toy, exact=True)
    fs = toy.features(sample)
    assert result["metrics"]["fid"] == pytest.approx(fid_scipy(fs["pool"], a), rel=1e-6)
    assert result["metrics"]["sfid"] == pytest.approx(fid_scipy(fs["spatial"], b), rel=1e-6)
    # statistics only, no images: FID still works, Precision/Recall are unavailable with a reason
    np.savez(tmp_path / "stats_only.npz", **stats)
    result = evaluate(tmp_path / "stats_only.npz", sample_path, toy)
    assert result["metrics"]["fid"] == pytest.approx(fid_scipy(fs["pool"], a), rel=1e-6)
    assert result["metrics"]["precision"] is None and "statistics only" in result["unavailable"]["precision"]


def test_activations_are_cached_by_content(batches):
    ref_path, sample_path, ref, _ = batches
    toy = ToyExtractor()
    first = evaluate(ref_path, sample_path, toy, batch_size=64)
    calls = toy.calls
    again = evaluate(ref_path, sample_path, toy, batch_size=64)
    assert toy.calls == calls  # ("created" is the second each result was made in: it may differ)
    assert {k: v for k, v in again.items() if k != "created"} == {k: v for k, v in first.items() if k != "created"}
    np.savez(ref_path, ref[::-1].copy())  # same images, new content order -> recomputed
    evaluate(ref_path, sample_path, toy, batch_size=64)
    assert toy.calls == calls + 1


def test_inception_score_unavailable_says_why(batches):
    ref_path, sample_path, _, _ = batches
    result = evaluate(ref_path, sample_path, ToyExtractor(with_logits=False))
    assert result["metrics"]["inception_score"] is None
    assert result["unavailable"]["inception_score"] == "toy weights have no softmax"


def test_bad_inputs(batches, tmp_path):
    ref_path, sample_path, ref, sample = batches
    np.savez(tmp_path / "one.npz", sample[:1])
    with pytest.raises(BenchError, match="1 image.*at least 2"):
        evaluate(ref_path, tmp_path / "one.npz", ToyExtractor())
    with pytest.raises(BenchError, match="3 of 40 pool feature rows are NaN"):
        evaluate(ref_path, sample_path, ToyExtractor(nan_rows=3), cache=False)
    np.savez(tmp_path / "wrong_dims.npz", mu=np.zeros(7), sigma=np.eye(7), mu_s=np.zeros(5), sigma_s=np.eye(5))
    with pytest.raises(BenchError, match="feature dimensions differ"):
        evaluate(tmp_path / "wrong_dims.npz", sample_path, ToyExtractor())
    np.savez(tmp_path / "nothing.npz", labels=np.arange(3))
    with pytest.raises(BenchError, match="neither images"):
        evaluate(tmp_path / "nothing.npz", sample_path, ToyExtractor())


def test_cli_eval_with_the_real_inception(batches, tmp_path):
    """End to end through the real (bundled) Inception weights: ADM's five lines and the JSON record."""
    _, _, ref, sample = batches
    ref_path, sample_path = tmp_path / "r10.npz", tmp_path / "s6.npz"
    np.savez(ref_path, ref[:10])
    np.savez(sample_path, sample[:6])
    out = CliRunner().invoke(cli, ["eval", str(ref_path), str(sample_path), "--json", str(tmp_path / "r.json"),
                                   "--batch-size", "16"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["Inception Score", "FID", "sFID", "Precision", "Recall"]
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["schema_version"] == 1 and record["task"] == "eval"
    for key in ("inception_score", "fid", "sfid", "precision", "recall"):
        assert key in record["metrics"]
    assert record["reference"]["num_ref"] == 10 and record["samples"]["num_samples"] == 6
    assert record["samples"]["sha256"] == hashlib.sha256(sample_path.read_bytes()).hexdigest()
    assert record["reference"]["resolution"] == record["samples"]["resolution"] == ref.shape[1]
    assert record["metrics"]["inception_score"] is None and "softmax" in record["unavailable"]["inception_score"]
    assert record["provenance"]["features"]["inception"]["kind"] == "torchscript"
    assert record["reference"]["sha256"] == hashlib.sha256(ref_path.read_bytes()).hexdigest()
    assert len(record["provenance"]["features"]["inception"]["sha256"]) == 64
    assert record["metrics"]["fid"] > 0 and 0 <= record["metrics"]["precision"] <= 1
    assert "FID is unreliable: 6 samples give a rank-deficient 2048-d covariance" in out.stderr
    assert record["warnings"] and "papers report 50000" in record["warnings"][-1]


def test_cli_errors_have_no_traceback(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    np.savez(tmp_path / "ok.npz", np.zeros((2, 8, 8, 3), np.uint8))
    out = CliRunner().invoke(cli, ["eval", str(tmp_path / "ok.npz"), str(tmp_path / "bad.npz")])
    assert out.exit_code == 2 and "Traceback" not in out.output and "not a readable .npz" in out.output


def test_ref_build_from_an_imagenet_style_folder(tmp_path, monkeypatch):
    toy = ToyExtractor()
    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: toy)
    rng = np.random.default_rng(1)
    originals = []
    for cls in ("n01", "n02"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            image = rng.integers(0, 256, (12 + i, 20, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "train" / cls / f"{i}.png")
            originals.append(image)
    out = CliRunner().invoke(cli, ["ref", "build", str(tmp_path / "train"), "-o", str(tmp_path / "ref.npz"),
                                   "--image-size", "8", "--include-images"])
    assert out.exit_code == 0, out.output
    cropped = np.stack([center_crop_arr(Image.fromarray(x), 8) for x in originals])
    feats = toy.features(cropped)
    with np.load(tmp_path / "ref.npz") as npz:
        np.testing.assert_array_equal(npz["arr_0"], cropped)
        np.testing.assert_allclose(npz["mu"], feats["pool"].astype(np.float64).mean(0), rtol=1e-6)
        np.testing.assert_allclose(npz["sigma"], np.cov(feats["pool"], rowvar=False), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(npz["sigma_s"], np.cov(feats["spatial"], rowvar=False), rtol=1e-5, atol=1e-9)


def test_cli_eval_kid_line(batches, monkeypatch):
    ref_path, sample_path, _, _ = batches
    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: ToyExtractor())
    for flags in (["--kid"], ["--metrics", "+kid"]):  # --kid: the deprecated spelling of --metrics +kid
        out = CliRunner().invoke(cli, ["eval", str(ref_path), str(sample_path), *flags])
        assert out.exit_code == 0, out.output
        last = out.stdout.strip().splitlines()[-1]
        assert last.startswith("KID: ") and " +- " in last and "(subsets of 15)" in last
    out = CliRunner().invoke(cli, ["eval", str(ref_path), str(sample_path), "--metrics", "fid,kid",
                                   "--kid-subset-size", "30"])
    assert out.exit_code == 0, out.output
    assert [line.split(":")[0] for line in out.stdout.strip().splitlines()] == ["FID", "KID"]
    assert "spread unavailable" in out.stdout and "(subsets of 30)" in out.stdout  # 30 = every sample: no spread


# ------------------------------------------------------------------------------------------------------------
# Mistakes a researcher makes: refused before any work, or warned about, and no input is ever overwritten


def _invoke_eval(monkeypatch, *args):
    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: ToyExtractor())
    return CliRunner().invoke(cli, ["eval", *map(str, args)])


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(batches, monkeypatch, tmp_path):
    ref_path, sample_path, _, sample = batches
    out = _invoke_eval(monkeypatch, ref_path, sample_path, "--json", sample_path)
    assert out.exit_code == 2 and "is also an input" in out.output
    with np.load(sample_path) as npz:
        np.testing.assert_array_equal(npz["arr_0"], sample)
    out = CliRunner().invoke(cli, ["ref", "build", str(ref_path), "-o", str(ref_path)])
    assert out.exit_code == 2 and "is also an input" in out.output
    out = _invoke_eval(monkeypatch, ref_path, sample_path, "--json", tmp_path / "missing" / "r.json")
    assert out.exit_code == 2 and "does not exist" in out.output


def test_bad_batch_size_and_device_are_refused_up_front(batches, monkeypatch):
    ref_path, sample_path, _, _ = batches
    out = _invoke_eval(monkeypatch, ref_path, sample_path, "--batch-size", "0")
    assert out.exit_code == 2 and "--batch-size" in out.output and "Traceback" not in out.output
    for device, message in [("foo", "not a torch device"), ("cuda:99" if torch_cuda() else "cuda", "CUDA")]:
        out = _invoke_eval(monkeypatch, ref_path, sample_path, "--device", device)
        assert out.exit_code == 2 and message in out.output, out.output


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_a_damaged_activation_cache_is_recomputed(batches, capsys):
    ref_path, sample_path, _, _ = batches
    first = evaluate(ref_path, sample_path, ToyExtractor())
    for cached in (bench.download.cache_dir() / "activations").glob("*.npz"):
        cached.write_bytes(cached.read_bytes()[:100])
    again = evaluate(ref_path, sample_path, ToyExtractor())
    assert again["metrics"]["fid"] == first["metrics"]["fid"] and again["metrics"]["precision"] == first["metrics"]["precision"]
    assert "is damaged" in capsys.readouterr().err


def test_an_unwritable_cache_costs_a_warning_not_the_result(batches, monkeypatch, capsys):
    ref_path, sample_path, _, _ = batches
    blocker = ref_path.parent / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BENCH_CACHE", str(blocker / "cache"))
    assert evaluate(ref_path, sample_path, ToyExtractor())["metrics"]["fid"] > 0
    assert "activations not cached" in capsys.readouterr().err


def test_too_few_images_for_precision_recall_still_give_the_other_numbers(batches, tmp_path):
    ref_path, _, _, sample = batches
    np.savez(tmp_path / "three.npz", sample[:3])
    result = evaluate(ref_path, tmp_path / "three.npz", ToyExtractor())
    assert result["metrics"]["precision"] is None and "k=3 nearest neighbours" in result["unavailable"]["precision"]
    assert result["metrics"]["fid"] > 0 and result["metrics"]["inception_score"] > 0


def test_statistics_only_samples_are_refused_before_any_extraction(batches, tmp_path):
    ref_path, _, _, _ = batches
    np.savez(tmp_path / "stats.npz", mu=np.zeros(6), sigma=np.eye(6), mu_s=np.zeros(5), sigma_s=np.eye(5))
    extractor = ToyExtractor()
    with pytest.raises(BenchError, match="has no images"):
        evaluate(ref_path, tmp_path / "stats.npz", extractor)
    assert extractor.calls == 0


def test_size_warnings_for_mixed_folders_and_other_resolutions(tmp_path):
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "ref16.npz", rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8))
    (tmp_path / "mixed").mkdir()
    for i, size in enumerate([8, 8, 12, 8]):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(tmp_path / "mixed" / f"{i}.png")
    np.savez(tmp_path / "s8.npz", rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8))
    warnings = evaluate(tmp_path / "ref16.npz", tmp_path / "mixed", ToyExtractor8())["warnings"]
    assert any("sample images come in 2 sizes (8x8, 12x12)" in w for w in warnings)
    with pytest.raises(BenchError, match="reference images are 16x16 but samples are 8x8.*--force"):
        evaluate(tmp_path / "ref16.npz", tmp_path / "s8.npz", ToyExtractor8())
    warnings = evaluate(tmp_path / "ref16.npz", tmp_path / "s8.npz", ToyExtractor8(), force=True)["warnings"]
    assert any("reference images are 16x16 but samples are 8x8" in w and "--force" in w for w in warnings)


class ToyExtractor8(ToyExtractor):
    """The toy projection after a nearest resize to 8x8, so that batches of any size can be scored."""

    def features(self, images):
        n, h, w, _ = images.shape
        rows, cols = np.arange(8) * h // 8, np.arange(8) * w // 8
        return super().features(np.ascontiguousarray(images[:, rows][:, :, cols]))


def test_ref_build_refuses_what_it_cannot_honour(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: ToyExtractor())
    np.savez(tmp_path / "batch.npz", np.zeros((4, 8, 8, 3), np.uint8))
    out = CliRunner().invoke(cli, ["ref", "build", str(tmp_path / "batch.npz"), "-o", str(tmp_path / "r.npz"),
                                   "--image-size", "64"])
    assert out.exit_code == 2 and "apply to image folders" in out.output
    (tmp_path / "one").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "one" / "a.png")
    out = CliRunner().invoke(cli, ["ref", "build", str(tmp_path / "one"), "-o", str(tmp_path / "r.npz")])
    assert out.exit_code == 2 and "at least 2" in out.output
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "one" / "b.png")
    out = CliRunner().invoke(cli, ["ref", "build", str(tmp_path / "one"), "-o", str(tmp_path / "r.npz"),
                                   "--no-crop", "--include-images"])
    assert out.exit_code == 2 and "images of 2 sizes (8x8, 12x8)" in out.output
    assert not (tmp_path / "r.npz").exists()


def test_ref_build_stores_a_seeded_subset_and_keeps_statistics_of_all(tmp_path, monkeypatch):
    toy = ToyExtractor()
    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: toy)
    images = np.random.default_rng(5).integers(0, 256, (23, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "all.npz", images)
    out = CliRunner().invoke(cli, ["ref", "build", str(tmp_path / "all.npz"), "-o", str(tmp_path / "ref.npz"),
                                   "--include-images", "--subset", "7", "--seed", "3", "--batch-size", "5"])
    assert out.exit_code == 0, out.output
    chosen = np.sort(np.random.default_rng(3).choice(23, 7, replace=False))
    feats = toy.features(images)
    with np.load(tmp_path / "ref.npz") as npz:
        np.testing.assert_array_equal(npz["arr_0"], images[chosen])  # across batch boundaries, in index order
        np.testing.assert_allclose(npz["mu"], feats["pool"].astype(np.float64).mean(0), rtol=1e-6)  # all 23
    out = CliRunner().invoke(cli, ["ref", "build", str(tmp_path / "all.npz"), "-o", str(tmp_path / "r2.npz"),
                                   "--subset", "7"])
    assert out.exit_code == 2 and "give both" in out.output
