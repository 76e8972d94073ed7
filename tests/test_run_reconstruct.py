"""`bench run --task reconstruct`: rFID against the reference and the originals, PSNR and both SSIMs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import bench.run.cli
import bench.features
import bench.run.executor
from bench.batches import center_crop_arr
from bench.cli import _Group
from bench.errors import BenchError
from bench.run.cli import run_command
from bench.run.executor import RunSettings, execute
from bench.run.reconstruct import ReconstructTask
from test_run_helpers import ProjectionExtractor, ToyGenerator, frechet, toy_factory, toy_scorer
from test_run_helpers import toy_fixture  # noqa: F401  (the `toy` fixture)


def quantise(self, images: np.ndarray) -> np.ndarray:
    """The toy tokenizer: keep the top 5 bits of every pixel."""
    return (images // 8 * 8).astype(np.uint8)


@pytest.fixture
def tokenizer(toy, monkeypatch):
    monkeypatch.setattr(ToyGenerator, "reconstruct", quantise)
    monkeypatch.setattr(ToyGenerator, "can_reconstruct", True)
    return toy


def image_folder(root: Path, n: int = 21) -> Path:
    """ImageNet-val-like: JPEG-free PNGs of assorted sizes in class folders, one grayscale."""
    rng = np.random.default_rng(1)
    for i in range(n):
        h, w = int(rng.integers(16, 40)), int(rng.integers(16, 40))
        folder = root / f"n{i % 3:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        mode = "L" if i == 5 else "RGB"
        shape = (h, w) if mode == "L" else (h, w, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"img{i:03d}.png")
    return root


def settings(tmp_path: Path, ref: Path, **kw) -> RunSettings:
    base = dict(generator="toy", batch_size=4, shard_size=8, ref=str(ref), runs_dir=str(tmp_path / "runs"),
                run_id="rec")
    base.update(kw)
    return RunSettings(**base)


def go(s, data, **kw):
    return execute(ReconstructTask(data=str(data)), s, extractors=[ProjectionExtractor()], scorer=toy_scorer, **kw)


def expected_metrics(data: Path, ref: Path) -> dict:
    files = sorted(p for p in data.rglob("*.png"))
    originals = np.stack([center_crop_arr(Image.open(f), 16) for f in files])
    gen = toy_factory()
    orig8, rec8 = gen.to_eval_size(originals), gen.to_eval_size(quantise(gen, originals))
    x, y = orig8 / 255.0, rec8 / 255.0
    ex = ProjectionExtractor()
    fr, fo = ex.extract(rec8), ex.extract(orig8)
    return {
        "psnr": np.mean([peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(y, x)]),
        "ssim": np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=-1) for a, b in zip(y, x)]),
        "ssim2": np.mean([structural_similarity(a, b, data_range=2.0, channel_axis=-1) for a, b in zip(y, x)]),
        "fid_orig": frechet(fr["pool"], fo["pool"]), "sfid_orig": frechet(fr["spatial"], fo["spatial"]),
        "vs_ref": toy_scorer(type("R", (), {"path": ref})(), [ex])(fr)["metrics"],
    }


def test_reconstruction_metrics_match_scikit_image_and_scipy(tokenizer, tmp_path):
    data = image_folder(tmp_path / "val")
    result = go(settings(tmp_path, tokenizer), data)
    exp = expected_metrics(data, tokenizer)
    m = result["metrics"]
    assert m["psnr"] == pytest.approx(exp["psnr"], rel=1e-9)
    assert m["ssim"] == pytest.approx(exp["ssim"], rel=1e-9)
    assert m["ssim_llamagen"] == pytest.approx(exp["ssim2"], rel=1e-9)
    assert m["ssim_llamagen"] > m["ssim"]  # the data_range=2 convention inflates SSIM
    assert m["rfid_vs_originals"] == pytest.approx(exp["fid_orig"], rel=1e-6, abs=1e-9)
    assert m["sfid_vs_originals"] == pytest.approx(exp["sfid_orig"], rel=1e-6, abs=1e-9)
    assert m["rfid"] == pytest.approx(exp["vs_ref"]["fid"], rel=1e-9)
    assert m["is"] == pytest.approx(exp["vs_ref"]["is"], rel=1e-9)  # the order-free parts of the scorer's numbers
    assert "fid" not in m and "vs_reference" not in m  # flat, one key per number
    assert "data_range=2.0" in result["details"]["conventions"]["ssim_llamagen"]
    assert result["samples"]["num_samples"] == 21 and result["task"] == "reconstruct"
    assert result["settings"]["data"]["num_images"] == 21
    assert json.loads((tmp_path / "runs" / "rec" / "result.json").read_text())["metrics"] == m


def test_reconstruction_resumes_to_identical_metrics(tokenizer, tmp_path):
    data = image_folder(tmp_path / "val")
    whole = go(settings(tmp_path, tokenizer, run_id="whole"), data)

    def stop(shard):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="1 of 3 shards are finished"):
        go(settings(tmp_path, tokenizer), data, on_shard_done=stop)
    resumed = go(settings(tmp_path, tokenizer), data)
    assert resumed["timing"]["images_generated"] == 13 and resumed["metrics"] == whole["metrics"]


def test_npz_data_at_the_tokenizer_resolution(tokenizer, tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "val.npz", arr_0=images)
    result = go(settings(tmp_path, tokenizer), tmp_path / "val.npz")
    y, x = quantise(None, images), images
    gen = toy_factory()
    y, x = gen.to_eval_size(y) / 255.0, gen.to_eval_size(x) / 255.0
    assert result["metrics"]["psnr"] == pytest.approx(
        np.mean([peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(y, x)]), rel=1e-9)
    np.savez(tmp_path / "big.npz", arr_0=np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(BenchError, match="holds 32x32 images; 'toy' reconstructs 16x16"):
        go(settings(tmp_path, tokenizer, run_id="big"), tmp_path / "big.npz")


@pytest.mark.filterwarnings("ignore::bench.metrics.SingularCovarianceWarning")  # 6 images, 6-d features
def test_perfect_reconstruction_has_infinite_psnr(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(ToyGenerator, "reconstruct", lambda self, images: images.copy())
    monkeypatch.setattr(ToyGenerator, "can_reconstruct", True)
    result = go(settings(tmp_path, toy), image_folder(tmp_path / "val", n=6))
    assert result["metrics"]["psnr"] == "inf" and result["metrics"]["ssim"] == 1.0
    assert json.loads((tmp_path / "runs" / "rec" / "result.json").read_text())["metrics"]["psnr"] == "inf"


def test_non_tokenizers_are_refused_before_their_weights_load(toy, tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr(ToyGenerator, "load", lambda self, paths: loaded.append(paths))
    with pytest.raises(BenchError, match="'toy' is not a tokenizer: --task reconstruct needs one"):
        go(settings(tmp_path, toy), image_folder(tmp_path / "val", n=3))
    assert loaded == []


@pytest.mark.filterwarnings("ignore::bench.metrics.SingularCovarianceWarning")  # 6 images, 6-d features
def test_cli_reconstruct_needs_data(tokenizer, tmp_path, monkeypatch):
    group = _Group()
    group.add_command(run_command)
    res = CliRunner().invoke(group, ["run", "-g", "toy", "--task", "reconstruct"])
    assert res.exit_code == 2 and "--data is needed by --task reconstruct" in res.output
    monkeypatch.setattr(bench.features, "load_extractors", lambda arrays, device, allow_download, options: [
        ProjectionExtractor()])
    monkeypatch.setattr(bench.run.executor, "default_scorer", toy_scorer)
    res = CliRunner().invoke(group, ["run", "-g", "toy", "--task", "reconstruct", "--data",
                                     str(image_folder(tmp_path / "val", n=6)), "--ref", str(tokenizer),
                                     "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "PSNR: " in res.output and "SSIM (LlamaGen): " in res.output and "rFID vs originals: " in res.output


def test_reconstructions_are_scored_in_a_seeded_shuffled_order(tokenizer, tmp_path):
    """IS averages splits of consecutive images: a class-sorted val folder must not be scored in file order."""
    seen = []

    def recording_scorer(ref, extractors, metrics):
        def score(features, metrics=None):
            seen.append(features["pool"])
            return {"metrics": {"fid": 0.0}}
        return score

    data = image_folder(tmp_path / "val")
    execute(ReconstructTask(data=str(data)), settings(tmp_path, tokenizer), extractors=[ProjectionExtractor()],
            scorer=recording_scorer)
    files = sorted(data.rglob("*.png"))
    in_order = ProjectionExtractor().extract(toy_factory().to_eval_size(
        quantise(None, np.stack([center_crop_arr(Image.open(f), 16) for f in files]))))["pool"]
    np.testing.assert_allclose(seen[0], in_order[np.random.default_rng(0).permutation(len(files))], rtol=1e-12)


def test_a_replaced_image_of_the_same_size_is_not_taken_for_the_old_one(tmp_path):
    import os

    from bench.batches import FolderImages
    from bench.run.reconstruct import data_fingerprint

    data = image_folder(tmp_path / "val", n=3)
    before = data_fingerprint(FolderImages(data))
    target = sorted(data.rglob("*.png"))[0]
    size = target.stat().st_size
    target.write_bytes(target.read_bytes())  # same bytes count, a new write
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert target.stat().st_size == size and data_fingerprint(FolderImages(data)) != before


def test_reconstruct_refuses_one_image_and_sampling_options(tokenizer, tmp_path):
    data = image_folder(tmp_path / "val", n=1)
    with pytest.raises(BenchError, match="1 image; FID needs at least 2"):
        go(settings(tmp_path, tokenizer), data)
    group = _Group()
    group.add_command(run_command)
    out = CliRunner().invoke(group, ["run", "-g", "toy", "--task", "reconstruct", "--data", str(data),
                                     "--num-samples", "50", "--save-grid"])
    assert out.exit_code == 2 and "--num-samples, --save-grid: sampling options" in out.output
