"""CMMD's CLIP extractor (bench/features/clip.py) against independent computations, on small random weights.

- the network: transformers' `CLIPVisionModelWithProjection` with the weights mapped key by key, and OpenAI's
  model.py structure typed out here with torch's own `nn.MultiheadAttention`, traced into a TorchScript archive;
- the archive reader (`bench.checkpoint.torchscript_tensors`): against `torch.jit.load(...).state_dict()`, and a
  refusal of any global it does not know;
- the preprocessing: transformers' CLIP image processor on square images, numpy slicing for the crop of others;
- files: OpenAI's archive and a plain state dict give one extractor, a user's file is used and marked, the pin,
  the offline message, strict loading with the 224 px file named, and ViT-L/14@336's layout enumerated by hand.
"""

import collections
import pickle
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import bench.features.clip as clip
from bench.checkpoint import torchscript_tensors
from bench.download import cache_dir, sha256_file
from bench.errors import BenchError, MissingFilesError
from bench.features.clip import VITL14_336, CLIPConfig, CLIPExtractor, build_network, preprocess, random_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = CLIPConfig(image_size=28, patch_size=14, width=128, layers=2, heads=2, output_dim=32)  # 2 x 2 patches
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


@pytest.fixture(scope="module")
def small_sd():
    return random_state_dict(0, SMALL)


def images(n, h=40, w=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Independent implementations


def hf_embeddings(state_dict, config: CLIPConfig, pixels: torch.Tensor) -> np.ndarray:
    """transformers' CLIPVisionModelWithProjection (eager attention) with OpenAI's weights, its image_embeds made
    unit length as CMMD's encode_image(normalize=True) does."""
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.CLIPVisionConfig(
        hidden_size=config.width, intermediate_size=4 * config.width, num_hidden_layers=config.layers,
        num_attention_heads=config.heads, image_size=config.image_size, patch_size=config.patch_size,
        projection_dim=config.output_dim, hidden_act="quick_gelu", layer_norm_eps=1e-5, attn_implementation="eager")
    model = transformers.CLIPVisionModelWithProjection(hf_config).eval()  # small: its own init is cheap
    v, w = {k.removeprefix("visual."): t for k, t in state_dict.items()}, config.width
    mapped = {"vision_model.embeddings.class_embedding": v["class_embedding"],
              "vision_model.embeddings.patch_embedding.weight": v["conv1.weight"],
              "vision_model.embeddings.position_embedding.weight": v["positional_embedding"],
              "vision_model.pre_layrnorm.weight": v["ln_pre.weight"], "vision_model.pre_layrnorm.bias": v["ln_pre.bias"],
              "vision_model.post_layernorm.weight": v["ln_post.weight"],
              "vision_model.post_layernorm.bias": v["ln_post.bias"],
              "visual_projection.weight": v["proj"].T}  # OpenAI multiplies x @ proj; HF's Linear is x @ W^T
    for i in range(config.layers):
        src, dst = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):  # in_proj rows are [q; k; v]
            mapped[dst + f"self_attn.{name}.weight"] = v[src + "attn.in_proj_weight"][j * w:(j + 1) * w]
            mapped[dst + f"self_attn.{name}.bias"] = v[src + "attn.in_proj_bias"][j * w:(j + 1) * w]
        pairs = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                 "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
        for hf_name, openai_name in pairs.items():
            for field in ("weight", "bias"):
                mapped[dst + f"{hf_name}.{field}"] = v[src + f"{openai_name}.{field}"]
    model.load_state_dict(mapped, strict=True)
    with torch.inference_mode():
        out = model(pixel_values=pixels).image_embeds
    return (out / out.norm(dim=-1, keepdim=True)).numpy()


class OpenAIBlock(nn.Module):
    """OpenAI clip/model.py's ResidualAttentionBlock, typed out with torch's own MultiheadAttention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(collections.OrderedDict([("c_fc", nn.Linear(width, 4 * width)),
                                                          ("gelu", clip.QuickGELU()),
                                                          ("c_proj", nn.Linear(4 * width, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x):  # [tokens, batch, width], as OpenAI runs it
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class OpenAIVisual(nn.Module):
    def __init__(self, c: CLIPConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c.width, c.patch_size, c.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(c.width))
        self.positional_embedding = nn.Parameter(torch.zeros(c.grid ** 2 + 1, c.width))
        self.ln_pre = nn.LayerNorm(c.width)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(*[OpenAIBlock(c.width, c.heads) for _ in range(c.layers)])
        self.ln_post = nn.LayerNorm(c.width)
        self.proj = nn.Parameter(torch.zeros(c.width, c.output_dim))

    def forward(self, x):
        x = self.conv1(x).reshape(x.shape[0], self.conv1.out_channels, -1).permute(0, 2, 1)
        x = torch.cat([self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1]), x], dim=1)
        x = self.ln_pre(x + self.positional_embedding).permute(1, 0, 2)
        x = self.transformer.resblocks(x).permute(1, 0, 2)
        x = self.ln_post(x[:, 0]) @ self.proj
        return x / x.norm(dim=-1, keepdim=True)


class OpenAICLIP(nn.Module):
    """The whole model as OpenAI's archive holds it: the image tower under `visual.` beside text-tower tensors (in
    float16, as released) that the extractor must ignore."""

    def __init__(self, c: CLIPConfig):
        super().__init__()
        self.visual = OpenAIVisual(c)
        self.token_embedding = nn.Embedding(10, 16)
        self.positional_embedding = nn.Parameter(torch.randn(5, 16).half())
        self.logit_scale = nn.Parameter(torch.ones([]))
        self.register_buffer("input_resolution", torch.tensor(c.image_size))

    def forward(self, x):
        return self.visual(x)


@pytest.fixture(scope="module")
def archive(small_sd, tmp_path_factory):
    """A TorchScript archive of OpenAICLIP(SMALL) holding `small_sd` in its image tower in float16 (as OpenAI's
    release does), and those float16 values."""
    half = {k: v.half() for k, v in small_sd.items()}
    model = OpenAICLIP(SMALL).eval()
    model.load_state_dict({**model.state_dict(), **{k: v.float() for k, v in half.items()}})
    scripted = torch.jit.trace(model, torch.zeros(1, 3, SMALL.image_size, SMALL.image_size))
    scripted.visual.half()  # traced in float32 (CPU float16 kernels are patchy), stored in float16
    path = tmp_path_factory.mktemp("clip") / "ViT-L-14-336px.pt"
    scripted.save(str(path))
    return path, half


# ----------------------------------------------------------------------------------------------------------------
# The network


def test_network_matches_transformers(small_sd):
    batch = images(3, 36, 50, seed=1)
    pixels = preprocess(batch, SMALL.image_size)
    with torch.inference_mode():
        ours = build_network(small_sd, SMALL)(pixels).numpy()
    np.testing.assert_allclose(ours, hf_embeddings(small_sd, SMALL, pixels), atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-6)
    assert np.abs(ours[0] - ours[1]).max() > 0.05  # the images matter


def test_torchscript_tensors_are_what_torch_jit_load_reads(archive):
    path, _ = archive
    ours, theirs = torchscript_tensors(path), torch.jit.load(str(path), map_location="cpu").state_dict()
    assert sorted(ours) == sorted(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape, name
        assert torch.equal(ours[name], tensor), name
    assert ours["visual.conv1.weight"].dtype == torch.float16 and "input_resolution" in ours


def test_archive_and_state_dict_give_the_traced_models_embeddings(archive, small_sd, tmp_path, monkeypatch):
    """The extractor loaded from the archive and from a plain state dict of the same values, against OpenAI's
    structure (nn.MultiheadAttention, token-major) run by torch with the archive's float16 values widened."""
    path, half = archive
    monkeypatch.setattr(clip, "VITL14_336", SMALL)
    from_archive = clip.load(weights=path, batch_size=2)
    state = tmp_path / "plain.pt"
    torch.save({k: v.float() for k, v in torch.jit.load(str(path)).state_dict().items()}, state)
    from_state = clip.load(weights=state, batch_size=2)
    batch = images(5, 30, 30, seed=2)
    got = from_archive.extract(batch)["clip"]
    np.testing.assert_array_equal(got, from_state.extract(batch)["clip"])
    with torch.inference_mode():
        openai = OpenAICLIP(SMALL).eval()
        openai.load_state_dict({**openai.state_dict(), **{k: v.float() for k, v in half.items()}})
        expected = openai(preprocess(batch, SMALL.image_size)).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)
    assert got.shape == (5, 32) and got.dtype == np.float32


def test_the_reader_refuses_globals_it_does_not_know(tmp_path):
    """An archive whose data.pkl names any other callable (here os.system) is refused before anything runs."""
    import os

    class Evil:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
        z.writestr("evil/constants.pkl", pickle.dumps(()))
    with pytest.raises(BenchError, match="GLOBAL (posix|os).system is not read"):
        torchscript_tensors(path)
    (tmp_path / "notzip.pt").write_bytes(b"garbage")
    with pytest.raises(BenchError, match="cannot be read"):
        torchscript_tensors(tmp_path / "notzip.pt")


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing


def test_preprocessing_of_square_images_is_transformers_clip_processor():
    transformers = pytest.importorskip("transformers")
    processor_class = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
    processor = processor_class(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    batch = images(3, 40, 40, seed=3)
    theirs = processor(images=list(batch), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(preprocess(batch, 28).numpy(), theirs, atol=2e-6)


@pytest.mark.parametrize("h, w", [(40, 30), (31, 52), (28, 28), (17, 17)])
def test_center_crop_then_pil_bicubic_then_clip_normalisation(h, w):
    """CMMD's `_center_crop_and_resize`: crop box (left, top) = ((w - s) // 2, (h - s) // 2), s = min(h, w), then PIL
    BICUBIC; /255 and CLIP's mean and std after. Enlarging (17 -> 28) and identity sizes included."""
    batch = images(2, h, w, seed=h * w)
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crops = [np.asarray(Image.fromarray(im[top:top + s, left:left + s]).resize((28, 28), Image.BICUBIC))
             for im in batch]
    expected = ((np.stack(crops).astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(preprocess(batch, 28).numpy(), expected, atol=1e-6)


def test_extract_shapes_chunking_and_bad_inputs(small_sd):
    ex = CLIPExtractor(small_sd, SMALL, batch_size=2)
    batch = images(5, 32, 32, seed=4)
    whole = CLIPExtractor(small_sd, SMALL, batch_size=64).extract(batch)["clip"]
    np.testing.assert_allclose(ex.extract(batch)["clip"], whole, atol=1e-6)  # chunks change GEMM shapes only
    assert ex.extract(batch[:0])["clip"].shape == (0, 32)
    with pytest.raises(BenchError, match="uint8"):
        ex.extract(batch.astype(np.float32))
    with pytest.raises(BenchError, match="batch_size"):
        CLIPExtractor(small_sd, SMALL, batch_size=0)


# ----------------------------------------------------------------------------------------------------------------
# Files


def test_a_named_file_is_the_users_and_the_pin_decides_official(archive, monkeypatch, pin):
    from bench.features import UnofficialWeightsWarning, load_extractor

    path, _ = archive
    monkeypatch.setattr(clip, "VITL14_336", SMALL)
    ex = clip.load(weights=path)
    assert ex.provenance["official_weights"] is False and ex.provenance["weights_sha256"] == sha256_file(path)
    assert ex.provenance["weights_source"] == clip.WEIGHTS.url
    with pytest.warns(UnofficialWeightsWarning, match="CLIP weights .* not comparable with published numbers"):
        load_extractor("clip", weights=path)
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / "ViT-L-14-336px.pt").write_bytes(path.read_bytes())
    with pytest.raises(BenchError, match="sha256 mismatch"):  # the cache stands for the published file
        clip.load(allow_download=False)
    pin(clip, "WEIGHTS", path)
    assert clip.load(allow_download=False).provenance["official_weights"] is True


def test_offline_without_the_file_says_where_to_put_it():
    with pytest.raises(MissingFilesError) as err:
        clip.load(allow_download=False)
    message = str(err.value)
    assert clip.WEIGHTS.url in message and str(cache_dir() / "ViT-L-14-336px.pt") in message


def test_the_pin_is_the_sha256_the_url_carries_and_is_documented():
    from pathlib import Path

    assert clip.WEIGHTS.url.split("/")[-2] == clip.WEIGHTS.sha256  # OpenAI's clip._download checks exactly this
    assert clip.WEIGHTS.sha256 in (Path(__file__).parents[1] / "docs" / "checksums.md").read_text()


def test_strict_loading_names_the_224px_file():
    """ViT-L-14.pt (224 px) differs from the 336 px file only in its positional embeddings: said so."""
    shapes = clip.expected_shapes(VITL14_336)
    tower = {f"visual.{k}": torch.empty(s, device="meta") for k, s in shapes.items()}
    tower["visual.positional_embedding"] = torch.empty(257, 1024, device="meta")
    with pytest.raises(BenchError) as err:
        clip.check_state_dict(clip.image_tower(tower), VITL14_336, "ViT-L-14.pt")
    message = str(err.value)
    assert "positional_embedding: expected [577, 1024], found [257, 1024]" in message
    assert "for 224 px, not 336" in message
    del tower["visual.proj"]
    with pytest.raises(BenchError, match="missing keys: visual.proj"):
        clip.check_state_dict(clip.image_tower(tower), VITL14_336, "x")


def test_vitl14_336_layout_is_openais():
    """The image tower of OpenAI's ViT-L/14@336px, enumerated from clip/model.py: width 1024, 24 blocks, 16 heads,
    a 24 x 24 grid plus the class token, a [1024, 768] projection: 24 (12 w^2 + 13 w) + 3 * 14^2 w + w + 577 w + 4 w
    + 768 w = 304,293,888 parameters with w = 1024 ("304M" for ViT-L/14's image tower)."""
    w, layout = 1024, {"class_embedding": (1024,), "positional_embedding": (577, 1024), "proj": (1024, 768),
                       "conv1.weight": (1024, 3, 14, 14), "ln_pre.weight": (1024,), "ln_pre.bias": (1024,),
                       "ln_post.weight": (1024,), "ln_post.bias": (1024,)}
    for i in range(24):
        b = f"transformer.resblocks.{i}."
        layout |= {b + "attn.in_proj_weight": (3 * w, w), b + "attn.in_proj_bias": (3 * w,),
                   b + "attn.out_proj.weight": (w, w), b + "attn.out_proj.bias": (w,), b + "ln_1.weight": (w,),
                   b + "ln_1.bias": (w,), b + "mlp.c_fc.weight": (4 * w, w), b + "mlp.c_fc.bias": (4 * w,),
                   b + "mlp.c_proj.weight": (w, 4 * w), b + "mlp.c_proj.bias": (w,), b + "ln_2.weight": (w,),
                   b + "ln_2.bias": (w,)}
    shapes = clip.expected_shapes(VITL14_336)
    assert shapes == layout
    assert sum(int(np.prod(s)) for s in shapes.values()) == 24 * (12 * w * w + 13 * w) + 588 * w + w + 577 * w + 4 * w + 768 * w == 304_293_888
    assert VITL14_336.heads == VITL14_336.width // 64  # OpenAI's build_model: vision_heads = width // 64
