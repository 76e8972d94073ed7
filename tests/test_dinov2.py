"""FD_DINOv2's extractor (bench/features/dinov2.py) against independent computations, on random weights.

- the network: HuggingFace transformers' `Dinov2Model` with the official weights mapped onto it, at the native
  518 px (no positional-embedding interpolation) and at 224 px with the official interpolated table (HF's own
  interpolation uses `size=`, not the official `scale_factor` with the 0.1 offset, and differs: shown below);
- the interpolation: a numpy bicubic (Keys a = -0.75) written here from the official formula;
- the preprocessing: EDM2's `DINOv2Detector` recipe written out with torch ops, and PIL for 'pil';
- strict loading, input checks, chunking, the offline message and the real ViT-L/14 layout and size.
"""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import bench.features.dinov2 as dinov2
from bench.download import cache_dir, sha256_file
from bench.errors import BenchError, MissingFilesError
from bench.features.dinov2 import (VITL14, DINOv2Extractor, ViTConfig, build_network, expected_shapes, preprocess,
                                   random_state_dict)

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ViTConfig(dim=64, depth=2, heads=4)  # patch 14, img_size 518: the real 37 x 37 table
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope="module")
def small_sd():
    return random_state_dict(0, SMALL)


@pytest.fixture(scope="module")
def small_net(small_sd):
    return build_network(small_sd, SMALL)


def images(n, h=256, w=256, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Independent references


def hf_model(state_dict, config: ViTConfig, image_size: int):
    """transformers' Dinov2Model (eager attention) with the official weights, mapped key by key."""
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.Dinov2Config(
        hidden_size=config.dim, num_hidden_layers=config.depth, num_attention_heads=config.heads,
        mlp_ratio=int(config.mlp_ratio), image_size=image_size, patch_size=config.patch_size, layer_norm_eps=1e-6,
        qkv_bias=True, use_swiglu_ffn=False, hidden_act="gelu", attn_implementation="eager")
    with torch.device("meta"):  # no random init (16 s for ViT-L on 2 cores): every tensor is assigned below
        model = transformers.Dinov2Model(hf_config).eval()
    hf_keys = set(model.state_dict())
    new_names = "encoder.layer.0.attention.q_proj.weight" in hf_keys  # transformers 5 renamed the projections
    q, k, v, o = (("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj") if new_names else
                  ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                   "attention.output.dense"))
    d = config.dim
    mapped = {
        "embeddings.cls_token": state_dict["cls_token"],
        "embeddings.mask_token": state_dict["mask_token"],
        "embeddings.position_embeddings": state_dict["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state_dict["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state_dict["patch_embed.proj.bias"],
        "layernorm.weight": state_dict["norm.weight"],
        "layernorm.bias": state_dict["norm.bias"],
    }
    for i in range(config.depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        qkv_w, qkv_b = state_dict[src + "attn.qkv.weight"], state_dict[src + "attn.qkv.bias"]
        for j, name in enumerate((q, k, v)):  # the fused qkv rows are [q; k; v]
            mapped[dst + name + ".weight"] = qkv_w[j * d:(j + 1) * d]
            mapped[dst + name + ".bias"] = qkv_b[j * d:(j + 1) * d]
        mapped[dst + o + ".weight"] = state_dict[src + "attn.proj.weight"]
        mapped[dst + o + ".bias"] = state_dict[src + "attn.proj.bias"]
        for ours, theirs in (("norm1", "norm1"), ("norm2", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for p in ("weight", "bias"):
                mapped[f"{dst}{theirs}.{p}"] = state_dict[f"{src}{ours}.{p}"]
        mapped[dst + "layer_scale1.lambda1"] = state_dict[src + "ls1.gamma"]
        mapped[dst + "layer_scale2.lambda1"] = state_dict[src + "ls2.gamma"]
    assert set(mapped) == hf_keys
    model.load_state_dict({k: v.contiguous() for k, v in mapped.items()}, strict=True, assign=True)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    return model


def cubic_weights(t: float, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution weights for the 4 taps at offsets -1, 0, 1, 2 from floor(x) (t = x - floor(x))."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.array([far(t + 1), near(t), near(1 - t), far(2 - t)])


def official_table(pos_embed: torch.Tensor, grid: int, out: int, offset: float = 0.1) -> torch.Tensor:
    """dinov2's interpolate_pos_encoding for a square out x out grid, in float64 numpy: the output has
    floor(grid * (out + offset) / grid) = out cells, and output cell i samples the input at
    (i + 0.5) / s - 0.5 with s = (out + offset) / grid, the scale factor torch was given (not out / grid);
    taps beyond the border are clamped."""
    table = pos_embed[0, 1:].double().numpy().reshape(grid, grid, -1)
    scale = (out + offset) / grid
    matrix = np.zeros((out, grid))
    for i in range(out):
        x = (i + 0.5) / scale - 0.5
        x0 = int(np.floor(x))
        for tap, weight in zip(range(x0 - 1, x0 + 3), cubic_weights(x - x0)):
            matrix[i, min(max(tap, 0), grid - 1)] += weight
    resized = np.einsum("ir,js,rsc->ijc", matrix, matrix, table).reshape(out * out, -1)
    return torch.cat([pos_embed[:, :1], torch.from_numpy(resized).float()[None]], dim=1)


def edm2_tensor_recipe(batch: np.ndarray) -> torch.Tensor:
    """calculate_metrics.py DINOv2Detector, resize_mode='torch', on the NCHW uint8 tensor its loader yields."""
    x = torch.as_tensor(batch).permute(0, 3, 1, 2).contiguous()
    x = F.interpolate(x.to(torch.float32), size=(224, 224), mode="bicubic", antialias=True)
    x = x.to(torch.float32) / 255
    x = x - torch.tensor([0.485, 0.456, 0.406]).reshape(1, -1, 1, 1)
    return x / torch.tensor([0.229, 0.224, 0.225]).reshape(1, -1, 1, 1)


# ----------------------------------------------------------------------------------------------------------------
# The network


def test_network_matches_transformers_at_native_518(small_sd, small_net):
    x = torch.randn(2, 3, 518, 518)
    with torch.inference_mode():
        ours = small_net(x)
        ref = hf_model(small_sd, SMALL, 518)(pixel_values=x).pooler_output
    assert ours.shape == (2, 64) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_interpolated_positions_follow_the_official_formula(small_sd, small_net):
    ref = official_table(small_sd["pos_embed"], 37, 16)
    ours = small_net.interpolate_pos_encoding(16, 16)
    assert ours.shape == (1, 257, 64)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # size=(16, 16) -- HF's interpolation, and the official one only with interpolate_offset=0 -- is another table
    patch = small_sd["pos_embed"][:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    by_size = F.interpolate(patch, size=(16, 16), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 256, -1)
    assert (by_size - ours[:, 1:]).abs().max() > 0.1
    # the native grid is used as is
    assert small_net.interpolate_pos_encoding(37, 37) is small_net.pos_embed


def test_network_matches_transformers_at_224_with_the_official_table(small_sd, small_net):
    x = torch.randn(3, 3, 224, 224)
    sd224 = dict(small_sd, pos_embed=official_table(small_sd["pos_embed"], 37, 16))
    with torch.inference_mode():
        ours = small_net(x)
        ref = hf_model(sd224, SMALL, 224)(pixel_values=x).pooler_output  # 16 x 16 grid: HF does not interpolate
        hf_own = hf_model(small_sd, SMALL, 518)(pixel_values=x).pooler_output  # HF interpolates with size=
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert (hf_own - ours).abs().max() > 1e-3  # the difference the docstring documents


def test_non_square_grid_scales_rows_and_columns_separately(small_net):
    x = torch.randn(1, 3, 14 * 10, 14 * 12)
    with torch.inference_mode():
        assert small_net(x).shape == (1, 64)
        table = small_net.interpolate_pos_encoding(10, 12)
    assert table.shape == (1, 1 + 120, 64)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        small_net(torch.randn(1, 3, 100, 98))


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing


def test_tensor_resize_is_edm2s_recipe():
    batch = images(3, 256, 256)
    got = preprocess(batch, "tensor")
    assert got.shape == (3, 3, 224, 224) and got.dtype == torch.float32
    torch.testing.assert_close(got, edm2_tensor_recipe(batch), atol=0, rtol=0)
    # not square, upsampled, already 224: same recipe
    for h, w in ((300, 200), (64, 64), (224, 224)):
        b = images(2, h, w, seed=h)
        torch.testing.assert_close(preprocess(b, "tensor"), edm2_tensor_recipe(b), atol=0, rtol=0)


def test_normalisation_constants_and_order():
    """A flat image stays flat through the resize: each channel is exactly (v / 255 - mean) / std."""
    for v in (0, 37, 255):
        got = preprocess(np.full((1, 256, 256, 3), v, np.uint8), "tensor")
        want = ((np.float32(v) / 255 - MEAN) / STD).astype(np.float32)
        np.testing.assert_allclose(got[0].mean(dim=(1, 2)).numpy(), want, atol=1e-5)
        assert got.std(dim=(2, 3)).max() < 1e-4


def test_pil_resize_is_dgm_evals_recipe():
    batch = images(2, 256, 256, seed=3)
    resized = np.stack([np.asarray(Image.fromarray(im).resize((224, 224), Image.BICUBIC)) for im in batch])
    want = (resized.astype(np.float32) / 255 - MEAN) / STD
    got = preprocess(batch, "pil")
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), want, atol=1e-6, rtol=0)
    # EDM2: "almost the same results" as the tensor resize, on natural (smooth) images: PIL rounds and clips to
    # uint8 after each of its two passes. On white noise, where bicubic overshoots, the two differ by many levels.
    yy, xx = np.mgrid[0:256, 0:256]
    smooth = np.stack([128 + 100 * np.sin(xx / 9), 128 + 100 * np.cos(yy / 13), (xx + yy) / 2], -1)
    smooth = np.round(smooth).astype(np.uint8)[None]
    levels = (preprocess(smooth, "pil") - preprocess(smooth, "tensor")).abs() * 255 * torch.tensor(STD)[:, None, None]
    assert levels.max() < 1 and levels.mean() < 0.3


# ----------------------------------------------------------------------------------------------------------------
# The extractor


def small_extractor(small_sd, **kwargs):
    return DINOv2Extractor(small_sd, SMALL, **kwargs)


def test_extract_shapes_dtype_chunking_and_empty(small_sd, small_net):
    ex = small_extractor(small_sd, batch_size=2)
    assert (ex.name, ex.has_logits, DINOv2Extractor.arrays, ex.arrays) == ("dinov2", False, {"dinov2": 1024},
                                                                          {"dinov2": 64})
    batch = images(5, 64, 80, seed=1)
    out = ex.extract(batch)
    assert set(out) == {"dinov2"} and out["dinov2"].shape == (5, 64) and out["dinov2"].dtype == np.float32
    with torch.inference_mode():
        direct = small_net(edm2_tensor_recipe(batch)).numpy()
    np.testing.assert_allclose(out["dinov2"], direct, atol=1e-5, rtol=1e-5)
    whole = small_extractor(small_sd, batch_size=64).extract(batch)["dinov2"]
    np.testing.assert_allclose(out["dinov2"], whole, atol=1e-5, rtol=1e-5)
    empty = ex.extract(np.zeros((0, 32, 32, 3), np.uint8))["dinov2"]
    assert empty.shape == (0, 64) and empty.dtype == np.float32
    # a torch tensor is accepted like the Inception extractor accepts one
    np.testing.assert_allclose(ex.extract(torch.from_numpy(batch[:2]))["dinov2"], out["dinov2"][:2], atol=1e-6)


def test_pil_mode_extractor(small_sd):
    batch = images(2, 96, 96, seed=4)
    out = small_extractor(small_sd, resize="pil").extract(batch)["dinov2"]
    net = build_network(small_sd, SMALL)
    with torch.inference_mode():
        want = net(preprocess(batch, "pil")).numpy()
    np.testing.assert_allclose(out, want, atol=1e-6)
    assert small_extractor(small_sd, resize="pil").provenance["resize"] == "pil"


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 3, 64, 64), np.uint8), r"channels first"),
    (np.zeros((2, 64, 64, 3), np.float32), r"dtype uint8"),
    (np.zeros((64, 64, 3), np.uint8), r"\[N, H, W, 3\]"),
    (np.zeros((2, 64, 64, 4), np.uint8), r"\[N, H, W, 3\]"),
    ([[1, 2, 3]], r"numpy uint8 array"),
])
def test_bad_inputs_are_refused(small_sd, bad, match):
    with pytest.raises(BenchError, match=match):
        small_extractor(small_sd).extract(bad)


def test_bad_options_are_refused(small_sd):
    with pytest.raises(BenchError, match="resize: expected one of tensor, pil"):
        small_extractor(small_sd, resize="torch")
    with pytest.raises(BenchError, match="batch_size"):
        small_extractor(small_sd, batch_size=0)
    with pytest.raises(BenchError, match="not a torch device"):
        small_extractor(small_sd, device="gpu0")
    with pytest.raises(BenchError, match="resize"):
        preprocess(images(1, 8, 8), "nearest")


# ----------------------------------------------------------------------------------------------------------------
# Strict loading


def test_strict_loading_names_missing_extra_and_misshapen_keys(small_sd):
    sd = dict(small_sd)
    del sd["blocks.1.ls2.gamma"]
    with pytest.raises(BenchError, match=r"missing keys: blocks\.1\.ls2\.gamma"):
        build_network(sd, SMALL)
    with pytest.raises(BenchError, match=r"unexpected keys: head\.weight"):
        build_network(dict(small_sd, **{"head.weight": torch.zeros(3)}), SMALL)
    with pytest.raises(BenchError, match=r"\*_reg4 checkpoint"):
        build_network(dict(small_sd, register_tokens=torch.zeros(1, 4, 64)), SMALL)
    with pytest.raises(BenchError, match=r"wrong shapes: pos_embed: expected \[1, 1370, 64\], found \[1, 257, 64\]"):
        build_network(dict(small_sd, pos_embed=torch.zeros(1, 257, 64)), SMALL)
    # the mask token is part of the official file and of strict loading, though inference never uses it
    assert "mask_token" in expected_shapes(SMALL)
    sd = dict(small_sd)
    del sd["mask_token"]
    with pytest.raises(BenchError, match="missing keys: mask_token"):
        build_network(sd, SMALL)


def test_weights_are_float32_copies_on_the_network(small_sd):
    half = {k: v.half() for k, v in small_sd.items()}
    net = build_network(half, SMALL)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in net.parameters())
    assert not net.training


# ----------------------------------------------------------------------------------------------------------------
# Files: load(), the offline message, the pin


def test_offline_without_the_file_says_where_to_put_it():
    with pytest.raises(MissingFilesError) as err:
        dinov2.load(allow_download=False)
    message = str(err.value)
    assert "dinov2_vitl14_pretrain.pth" in message
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth" in message
    assert str(cache_dir() / "dinov2_vitl14_pretrain.pth") in message


def test_options_are_checked_before_any_file(tmp_path):
    with pytest.raises(BenchError, match="resize"):
        dinov2.load(allow_download=False, resize="bicubic")
    with pytest.raises(BenchError, match="batch_size"):
        dinov2.load(allow_download=False, batch_size=0)
    with pytest.raises(BenchError, match="does not exist|given explicitly"):
        dinov2.load(weights=tmp_path / "nope.pth")


def test_load_from_explicit_path_and_cache(tmp_path, small_sd, monkeypatch, pin):
    """load() end to end on a small stand-in: the real layout is checked by the pinned shapes below."""
    path = tmp_path / "dinov2_vitl14_pretrain.pth"
    torch.save(small_sd, path)
    pin(dinov2, "WEIGHTS", path)
    monkeypatch.setattr(dinov2, "VITL14", SMALL)
    ex = dinov2.load(weights=path, batch_size=3)
    assert ex.provenance["weights"] == str(path)
    assert ex.provenance["weights_sha256"] == sha256_file(path)
    assert ex.provenance["weights_source"] == dinov2.WEIGHTS.url
    assert ex.provenance["network"] == "dinov2_vitl14" and ex.provenance["official_weights"] is True
    assert (ex.provenance["resize"], ex.provenance["device"], ex.provenance["torch"]) == ("tensor", "cpu",
                                                                                           torch.__version__)
    batch = images(2, 64, 64)
    np.testing.assert_allclose(ex.extract(batch)["dinov2"], small_extractor(small_sd).extract(batch)["dinov2"])
    # from the cache, offline
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / "dinov2_vitl14_pretrain.pth").write_bytes(path.read_bytes())
    assert dinov2.load(allow_download=False).provenance["weights"] == str(cache_dir() / "dinov2_vitl14_pretrain.pth")
    # DDP-wrapped and {"model": ...} containers are unwrapped
    torch.save({"model": {"module." + k: v for k, v in small_sd.items()}}, path)
    pin(dinov2, "WEIGHTS", path)
    assert dinov2.load(weights=path).arrays == {"dinov2": 64}


def test_load_refuses_a_file_of_another_size(tmp_path, small_sd, pin):
    path = tmp_path / "vits.pth"
    torch.save(small_sd, path)
    pin(dinov2, "WEIGHTS", path)
    with pytest.raises(BenchError) as err:
        dinov2.load(weights=path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a DINOv2 ViT (dim 1024, depth 24, patch 14)")
    assert "embedding width is 64, not 1024" in message
    assert "cls_token: expected [1, 1, 1024], found [1, 1, 64]" in message and "(35 in all)" in message


def test_a_named_file_is_the_users_and_a_cached_one_is_held_to_the_pin(tmp_path, small_sd, monkeypatch, pin):
    """Weights given by path are used whatever their digest, recorded as not the published file, with one warning;
    the cache stands for the published file, so a file there with another digest is refused."""
    from bench.features import UnofficialWeightsWarning, load_extractor

    monkeypatch.setattr(dinov2, "VITL14", SMALL)
    path = tmp_path / "my_dinov2.pth"
    torch.save(small_sd, path)
    ex = dinov2.load(weights=path)
    assert ex.provenance["official_weights"] is False and ex.provenance["weights_sha256"] == sha256_file(path)
    with pytest.warns(UnofficialWeightsWarning, match=r"DINOv2 weights .*my_dinov2.pth .* not comparable"):
        load_extractor("dinov2", weights=path)
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / "dinov2_vitl14_pretrain.pth").write_bytes(path.read_bytes())
    with pytest.raises(BenchError, match="sha256 mismatch"):
        dinov2.load(allow_download=False)
    pin(dinov2, "WEIGHTS", path)  # the same bytes, now the published file
    assert dinov2.load(weights=path).provenance["official_weights"] is True
    assert dinov2.load(allow_download=False).provenance["official_weights"] is True


def test_pin_is_well_formed_and_documented():
    digest = dinov2.WEIGHTS.sha256
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    checksums = (Path(__file__).parents[1] / "docs" / "checksums.md").read_text()
    assert digest in checksums


# ----------------------------------------------------------------------------------------------------------------
# The real ViT-L/14


def official_vitl14_layout() -> dict[str, tuple[int, ...]]:
    """dinov2_vitl14_pretrain.pth's keys and shapes, enumerated from the official module tree."""
    d, h, grid = 1024, 4096, 37
    layout = {"cls_token": (1, 1, d), "pos_embed": (1, 1 + grid * grid, d), "mask_token": (1, d),
              "patch_embed.proj.weight": (d, 3, 14, 14), "patch_embed.proj.bias": (d,)}
    for i in range(24):
        b = f"blocks.{i}."
        layout |= {b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
                   b + "attn.qkv.bias": (3 * d,), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                   b + "ls1.gamma": (d,), b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                   b + "mlp.fc1.weight": (h, d), b + "mlp.fc1.bias": (h,), b + "mlp.fc2.weight": (d, h),
                   b + "mlp.fc2.bias": (d,), b + "ls2.gamma": (d,)}
    return layout | {"norm.weight": (d,), "norm.bias": (d,)}


def test_vitl14_layout_and_size_match_the_published_file():
    shapes = expected_shapes(VITL14)
    assert shapes == official_vitl14_layout() and len(shapes) == 343
    params = sum(int(np.prod(s)) for s in shapes.values())
    assert params == 304_368_640  # "304M" in the model card
    # the published file is 1,217,586,395 bytes: float32 tensors plus ~110 KB of zip/pickle framing
    assert 0 < 1_217_586_395 - 4 * params < 200_000


def test_vitl14_random_weights_one_image():
    """The real size runs (1 image, ~5 s on 2 cores) and agrees with transformers at 224 px."""
    sd = random_state_dict(1, VITL14)
    ex = DINOv2Extractor(sd, VITL14)
    assert ex.provenance["network"] == "dinov2_vitl14"
    batch = images(1, 256, 256, seed=7)
    out = ex.extract(batch)["dinov2"]
    assert out.shape == (1, 1024) and out.dtype == np.float32 and np.isfinite(out).all()
    sd224 = dict(sd, pos_embed=official_table(sd["pos_embed"], 37, 16))
    with torch.inference_mode():
        ref = hf_model(sd224, VITL14, 224)(pixel_values=edm2_tensor_recipe(batch)).pooler_output.numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(small_sd):
    batch = images(4, 256, 256, seed=9)
    cpu = small_extractor(small_sd).extract(batch)["dinov2"]
    gpu = small_extractor(small_sd, device="cuda").extract(batch)["dinov2"]
    np.testing.assert_allclose(gpu, cpu, atol=1e-4, rtol=1e-4)
