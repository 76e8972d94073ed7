"""The torch network against three independent executions of the same REAL weights (the bundled TorchScript):
TensorFlow running the graph (ground truth), the TorchScript module itself, and torch-fidelity's Inception."""

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import scipy.linalg
import torch

from bench.inception import load_extractor
from bench.inception.extractor import InceptionExtractor
from bench.inception.network import tf1_resize_bilinear
from bench.inception.tf_backend import TFInception, build_graph_def
from bench.inception.weights import (
    InceptionWeights,
    bundled_torchscript,
    load_file,
    to_pytorch_fid,
)

torch.manual_seed(0)


def _images() -> dict[str, np.ndarray]:
    """Random and structured uint8 images in the sizes generators produce or ADM meets."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    structured = np.stack([
        np.stack([xx * 255, yy * 255, (1 - xx) * 255], -1),  # gradients
        np.repeat(((np.indices((256, 256)).sum(0) // 16) % 2 * 255)[..., None], 3, -1),  # checkerboard
        np.full((256, 256, 3), (200, 30, 90)),  # solid colour
        np.stack([127.5 + 127.5 * np.sin(xx * 9 + c) * np.cos(yy * 7 - c) for c in range(3)], -1),  # smooth blobs
    ]).round().astype(np.uint8)
    return {
        "random 64x64": rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8),
        "random 256x256": rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8),
        "random 299x299": rng.integers(0, 256, (1, 299, 299, 3), dtype=np.uint8),
        "random 512x384": rng.integers(0, 256, (1, 512, 384, 3), dtype=np.uint8),
        "structured 256x256": structured,
    }


@pytest.fixture(scope="module")
def real_weights(tmp_path_factory) -> InceptionWeights:
    """The real tensors, written as a GraphDef in ADM's format and loaded back, so TF imports the file like ADM."""
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the per-test cache isolation
        mp.setenv("BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        tensors = load_file(bundled_torchscript()).tensors
        # The TorchScript has no softmax; a fixed random matrix stands in so the logits path is exercised too.
        tensors["softmax.weight"] = torch.randn(2048, 1008, generator=torch.Generator().manual_seed(0)) * 0.05
        path = tmp_path_factory.mktemp("graph") / "classify_image_graph_def.pb"
        path.write_bytes(build_graph_def(tensors).SerializeToString())
        weights = load_file(path)
    assert weights.graph_path == path
    return weights


@pytest.fixture(scope="module")
def features(real_weights):
    torch_ex = InceptionExtractor(real_weights, backend="torch", batch_size=4)
    tf_ex = InceptionExtractor(real_weights, backend="tf", batch_size=4)
    assert tf_ex.provenance["tf_graph"].startswith("imported")
    images = _images()
    return images, {k: torch_ex.extract(v) for k, v in images.items()}, {k: tf_ex.extract(v) for k, v in images.items()}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets. With n << d, Tr sqrtm(S1 S2) is the nuclear norm of A1 A2^T / (n - 1) (centred
    rows), which scipy gets from an n x n SVD instead of a 2048 x 2048 sqrtm."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    ca, cb = a - a.mean(0), b - b.mean(0)
    n = len(a)
    trace_sqrt = scipy.linalg.svdvals(ca @ cb.T / (n - 1)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + (ca ** 2).sum() / (n - 1) + (cb ** 2).sum() / (n - 1)
                 - 2 * trace_sqrt)


def test_frechet_helper_matches_scipy_sqrtm():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((40, 12)), rng.standard_normal((40, 12)) * 1.3 + 0.2
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_torch_matches_tensorflow_graph(features):
    images, ours, truth = features
    for name in images:
        for key in ("pool", "spatial", "logits"):
            diff = np.abs(ours[name][key] - truth[name][key]).max()
            scale = np.abs(truth[name][key]).max()
            print(f"{name:20s} {key:8s} max|torch - tf| = {diff:.2e}  (max |value| {scale:.2f})")
            assert ours[name][key].shape == truth[name][key].shape
            assert diff < {"pool": 5e-5, "spatial": 1e-4, "logits": 5e-5}[key]
    all_ours = np.concatenate([ours[k]["pool"] for k in images])
    all_truth = np.concatenate([truth[k]["pool"] for k in images])
    fid = frechet_distance(all_ours, all_truth)
    print(f"FID(torch, tf) over {len(all_ours)} images = {fid:.3e}")
    assert abs(fid) < 1e-3
    # ... while a real change of the images moves FID by orders of magnitude more.
    assert frechet_distance(all_ours, all_ours * 1.01) > 1e-2


def test_tf_graph_written_from_canonical_weights(features, real_weights):
    """Without a .pb the TF backend writes the graph itself; same numbers as importing the file."""
    images, _, truth = features
    runner = TFInception(InceptionWeights(real_weights.tensors))
    out = runner.run(images["random 64x64"])
    for key in ("pool", "spatial", "logits"):
        np.testing.assert_allclose(out[key], truth["random 64x64"][key], rtol=0, atol=1e-6)


def test_output_shapes_and_dtypes(features):
    images, ours, _ = features
    for name, batch in images.items():
        assert ours[name]["pool"].shape == (len(batch), 2048) and ours[name]["pool"].dtype == np.float32
        assert ours[name]["spatial"].shape == (len(batch), 17 * 17 * 7) and ours[name]["spatial"].dtype == np.float32
        assert ours[name]["logits"].shape == (len(batch), 1008)


def test_logits_are_pool_times_softmax_weights_without_bias(features, real_weights):
    images, ours, _ = features
    w = real_weights.tensors["softmax.weight"].double().numpy()
    for name in images:
        np.testing.assert_allclose(ours[name]["logits"], ours[name]["pool"].astype(np.float64) @ w, rtol=0, atol=2e-5)


def test_torch_matches_the_torchscript_module(features):
    """The TorchScript module (symmetric torch padding, unfolded BN) on our TF1-resized, normalised input."""
    images, ours, _ = features
    module = torch.jit.load(str(bundled_torchscript())).eval()
    for name in ("random 64x64", "structured 256x256"):
        batch = images[name]
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            pool = module((tf1_resize_bilinear(x, 299, 299) - 128) / 128).numpy()
        np.testing.assert_allclose(ours[name]["pool"], pool, rtol=0, atol=1e-4)


def torch_fidelity_inception(state_path):
    """torch-fidelity's FeatureExtractorInceptionV3 without its package __init__ (which needs torchvision)."""
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        spec = importlib.util.find_spec("torch_fidelity")
        package = types.ModuleType("torch_fidelity")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["torch_fidelity"] = package
    module = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
    return module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                              feature_extractor_weights_path=str(state_path)).eval()


def test_torch_matches_torch_fidelity(features, real_weights, tmp_path):
    """torch-fidelity: its own TF1 resize and torchvision-style blocks, loaded strictly from our pytorch-fid export."""
    images, ours, _ = features
    path = tmp_path / "fidelity.pth"
    torch.save(to_pytorch_fid(real_weights.tensors), path)
    model = torch_fidelity_inception(path)
    for name in ("random 512x384", "structured 256x256"):
        batch = images[name]
        with torch.no_grad():
            pool, logits = model(torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous())
        np.testing.assert_allclose(ours[name]["pool"], pool.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(ours[name]["logits"], logits.numpy(), rtol=0, atol=1e-4)


def test_load_extractor_defaults_offline():
    """No cache, no network: the bundled TorchScript, logits unavailable with a reason naming both sources."""
    extractor = load_extractor(allow_download=False)
    assert extractor.provenance["kind"] == "torchscript" and extractor.provenance["backend"] == "torch"
    assert len(extractor.provenance["sha256"]) == 64
    assert not extractor.has_logits
    assert "classify_image_graph_def.pb" in extractor.logits_unavailable_reason
    assert "pt_inception-2015-12-05-6726825d.pth" in extractor.logits_unavailable_reason
    out = extractor.extract(np.zeros((2, 32, 48, 3), np.uint8))
    assert set(out) == {"pool", "spatial"}
