"""The LlamaGen Generator plugin, with the official model configs shrunk to tiny sizes (same code paths)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import BenchError, MissingFilesError
from bench.generator import option_flag, preset_info
from bench.generator import per_sample_seeds
from generators.llamagen import generate_tokens
from generators.llamagen import plugin
from generators.llamagen.gpt import GPT, GPT_CONFIGS, gpt_config
from bench.generator import to_uint8
from generators.llamagen.plugin import from_uint8, resize_for_eval
from generators.llamagen.presets import HF_REPO, PRESETS
from generators.llamagen.vq import VQ_CONFIGS, VQModel, vq_config


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_checkpoints(monkeypatch, tmp_path):
    """Shrink GPT-B and VQ-16 and write random-weight checkpoints in the official containers."""
    monkeypatch.setitem(GPT_CONFIGS, "GPT-B", dict(n_layer=1, n_head=2, dim=64))
    monkeypatch.setitem(VQ_CONFIGS, "VQ-16", dict(encoder_ch_mult=[1, 1, 2, 2, 4], decoder_ch_mult=[1, 1, 2, 2, 4],
                                                 ch=32, z_channels=32, num_res_blocks=1))
    torch.manual_seed(0)
    gpt = GPT(gpt_config("GPT-B"))
    for p in gpt.parameters():
        torch.nn.init.normal_(p, std=0.3)
    vq = VQModel(vq_config("VQ-16"))
    torch.save({"model": gpt.state_dict()}, tmp_path / "gpt.pt")
    torch.save({"model": vq.state_dict()}, tmp_path / "vq.pt")
    return str(tmp_path / "gpt.pt"), str(tmp_path / "vq.pt")


def make(name, ckpts, **kw):
    gpt_path, vq_path = ckpts
    return plugin.LlamaGen(plugin.PRESETS[name], ckpt=gpt_path, vq_ckpt=vq_path, allow_download=False, **kw)


def test_sample_is_uint8_nhwc_and_batch_independent(tiny_checkpoints):
    gen = make("llamagen-b-256", tiny_checkpoints)
    assert gen.image_size == 256 and gen.eval_size == 256
    labels = torch.tensor([500, 999])
    seeds = per_sample_seeds(0, 2)
    images = gen.sample(labels, seeds)
    assert images.dtype == np.uint8 and images.shape == (2, 256, 256, 3)
    halves = np.concatenate([gen.sample(labels[:1], seeds[:1]), gen.sample(labels[1:], seeds[1:])])
    # bitwise: the VQ decodes one image at a time, and the GPT's batch-shape rounding (logits within 4.8e-6 here)
    # is ~900x below the closest draw (its two best perturbed scores 4.4e-3 apart), so no token flips
    assert np.array_equal(images, halves)
    assert not np.array_equal(images[:1], gen.sample(labels[:1], per_sample_seeds(1, 1)))


def test_384_preset_scores_float_resized_images(tiny_checkpoints):
    gen = make("llamagen-b", tiny_checkpoints, top_k=1)
    assert (gen.image_size, gen.eval_size) == (384, 256)
    labels, seeds = torch.tensor([7]), per_sample_seeds(0, 1)
    native, scored = gen.sample(labels, seeds), gen.sample_for_eval(labels, seeds)
    assert native.shape == (1, 384, 384, 3) and scored.shape == (1, 256, 256, 3)
    gpt, vq = gen._models()
    tokens = generate_tokens(gpt, labels, cfg_scale=2.0, top_k=1, seed=seeds)
    decoded = vq.decode_codes(tokens.view(1, 24, 24))
    assert np.array_equal(native, to_uint8(decoded))
    assert np.array_equal(scored, to_uint8(resize_for_eval(decoded, 256)))
    # resizing the uint8 images instead (the harness default) is not the same thing
    assert not np.array_equal(scored, gen.to_eval_size(native))


def test_harness_flow_explicit_files_then_load(tiny_checkpoints):
    gpt_path, vq_path = tiny_checkpoints
    gen = plugin.presets()["llamagen-b-256"](ckpt=gpt_path, vq_ckpt=vq_path, top_k=1)
    remotes = gen.required_files()
    assert [r.filename for r in remotes] == ["c2i_B_256.pt", "vq_ds16_c2i.pt"]  # main checkpoint first
    explicit = gen.explicit_files()
    assert explicit == {"c2i_B_256.pt": Path(gpt_path), "vq_ds16_c2i.pt": Path(vq_path)}
    gen.load({r.filename: explicit[r.filename] for r in remotes})
    out = gen.sample_for_eval(torch.tensor([2]), torch.tensor([11]))
    assert out.shape == (1, 256, 256, 3)
    tok = plugin.presets()["llamagen-vq16"](ckpt=vq_path)
    assert tok.explicit_files() == {"vq_ds16_c2i.pt": Path(vq_path)}


def keys_bicubic(x: np.ndarray, out: int, a: float = -0.75) -> np.ndarray:
    """Independent 1-D-separable bicubic (Keys, a=-0.75), half-pixel centres, edge-clamped taps."""
    def kernel(t):
        t = abs(t)
        if t <= 1:
            return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
        if t < 2:
            return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
        return 0.0

    def along(arr, axis):
        n = arr.shape[axis]
        scale = n / out
        rows = []
        for i in range(out):
            src = (i + 0.5) * scale - 0.5
            base = int(np.floor(src))
            acc = 0
            for k in range(base - 1, base + 3):
                acc = acc + kernel(src - k) * np.take(arr, min(max(k, 0), n - 1), axis=axis)
            rows.append(acc)
        return np.stack(rows, axis=axis)

    return along(along(x, 2), 3)


def test_resize_for_eval_is_keys_bicubic_without_antialias():
    x = torch.randn(1, 2, 12, 12, dtype=torch.float64)
    np.testing.assert_allclose(resize_for_eval(x, 8).numpy(), keys_bicubic(x.numpy(), 8), atol=1e-10)
    assert resize_for_eval(x, 12) is x


def test_to_uint8_matches_the_official_truncating_conversion():
    # 127.5 x + 128 then truncation: -1 -> 0.5 -> 0; 0 -> 128; 1 -> 255.5 -> 255 (clamped);
    # -0.0039 -> 127.50275 -> 127; 0.5 -> 191.75 -> 191; out-of-range values clamp.
    values = torch.tensor([-1.0, 0.0, 1.0, -0.0039, 0.5, -3.0, 3.0])
    x = values.view(1, 1, 1, -1).expand(1, 3, 1, 7)
    out = to_uint8(x)
    assert out.shape == (1, 1, 7, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 128, 255, 127, 191, 0, 255]


def test_from_uint8_is_normalise_half():
    img = np.array([[[[0, 255, 51]]]], dtype=np.uint8)
    x = from_uint8(img)
    assert x.shape == (1, 3, 1, 1)
    torch.testing.assert_close(x.view(-1), torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]))
    with pytest.raises(BenchError, match="expected uint8 images"):
        from_uint8(img.astype(np.float32))


def test_tokenizer_preset_reconstructs(tiny_checkpoints):
    _, vq_path = tiny_checkpoints
    gen = plugin.LlamaGen(plugin.PRESETS["llamagen-vq16"], ckpt=vq_path, allow_download=False)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    rec = gen.reconstruct(images)
    assert rec.shape == images.shape and rec.dtype == np.uint8
    _, vq = gen._models()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    for i in range(2):  # one image at a time, like the plugin (conv rounding depends on the batch size)
        assert np.array_equal(rec[i:i + 1], to_uint8(vq.decode_codes(vq.encode_to_codes(x[i:i + 1]))))
    with pytest.raises(BenchError, match="multiples of 16"):
        gen.reconstruct(images[:, :30])
    with pytest.raises(BenchError, match="tokenizer"):
        gen.sample(torch.tensor([1]), torch.tensor([1]))
    with pytest.raises(BenchError, match="not a tokenizer"):
        make("llamagen-b-256", tiny_checkpoints).reconstruct(images)


def test_bad_overrides_and_inputs_are_bench_errors(tiny_checkpoints):
    with pytest.raises(BenchError, match="does not take --set steps"):
        plugin.presets()["llamagen-xl"](steps=250)
    with pytest.raises(BenchError, match="--precision must be one of"):
        plugin.presets()["llamagen-xl"](precision="int8")
    with pytest.raises(BenchError, match="does not take --cfg-scale"):
        plugin.presets()["llamagen-vq16"](cfg_scale=2.0)
    for bad in [dict(cfg_scale=float("nan")), dict(temperature=0.0), dict(top_p=1.5), dict(top_k=-1)]:
        with pytest.raises(BenchError, match=f"{option_flag(next(iter(bad)))} must be"):
            plugin.presets()["llamagen-xl"](**bad)  # each would sample silently wrong images (NaN guidance: all tokens 0)
    assert plugin.presets()["llamagen-xl"](steps=None).config()["cfg_scale"] == 1.75  # unset CLI options are ignored
    gen = make("llamagen-b-256", tiny_checkpoints)
    with pytest.raises(BenchError, match=r"class labels must lie in \[0, 1000\)"):
        gen.sample(torch.tensor([1000]), torch.tensor([0]))


def test_presets_config_and_required_files():
    expected_cfg = {"llamagen-b": 2.0, "llamagen-l": 2.0, "llamagen-xl": 1.75, "llamagen-xxl": 1.75,
                    "llamagen-3b": 1.65}
    for name, cfg in expected_cfg.items():
        gen = plugin.presets()[name]()
        c = gen.config()
        json.dumps(c)
        assert c["cfg_scale"] == cfg and c["top_k"] == 0 and c["top_p"] == 1.0 and c["temperature"] == 1.0
        assert gen.image_size == 384 and gen.eval_size == 256 and "device" not in c
        files = gen.required_files()
        assert [f.filename for f in files] == [PRESETS[name].gpt_file, "vq_ds16_c2i.pt"]
        assert preset_info(plugin.presets()[name])["paper_settings"]["cfg_scale"] == cfg
        assert all(f.hf_repo == HF_REPO and f.hf_filename == f.filename for f in files)
    assert plugin.presets()["llamagen-xl"](cfg_scale=3.0, top_k=100).config()["cfg_scale"] == 3.0
    assert [f.filename for f in plugin.presets()["llamagen-vq16"]().required_files()] == ["vq_ds16_c2i.pt"]


def test_missing_weights_offline_list_every_file():
    gen = plugin.LlamaGen(plugin.PRESETS["llamagen-3b"], allow_download=False)
    with pytest.raises(MissingFilesError) as err:
        gen.sample(torch.tensor([1]), torch.tensor([1]))
    assert "vq_ds16_c2i.pt" in str(err.value) and "c2i_3B_384.pt" in str(err.value)
    assert f"https://huggingface.co/{HF_REPO}/resolve/main/c2i_3B_384.pt" in str(err.value)


def test_empty_batch_gives_no_images(tiny_checkpoints):
    gen = make("llamagen-b", tiny_checkpoints)
    no_labels = torch.zeros(0, dtype=torch.int64)
    assert gen.sample(no_labels, no_labels).shape == (0, 384, 384, 3)
    images = gen.sample_for_eval(no_labels, no_labels)
    assert images.shape == (0, 256, 256, 3) and images.dtype == np.uint8


def test_a_checkpoint_named_for_another_resolution_is_warned_about():
    with pytest.warns(UserWarning, match="the name says a 256 px model, but llamagen-b samples at 384 px"):
        plugin.presets()["llamagen-b"](ckpt="/ckpts/c2i_B_256.pt")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plugin.presets()["llamagen-b"](ckpt="/ckpts/c2i_B_384.pt")
        plugin.presets()["llamagen-b-256"](ckpt="/ckpts/c2i_B_256.pt")


def test_only_tokenizer_presets_can_reconstruct():
    assert plugin.presets()["llamagen-vq16"]().can_reconstruct and not plugin.presets()["llamagen-xl"]().can_reconstruct


def test_config_names_the_files_used_and_whether_they_are_the_release():
    """A user's checkpoint under a release preset is recorded as itself: its file name, official_weights false,
    no README FID (the board then matches it with no paper row)."""
    official = plugin.presets()["llamagen-b-256"]().config()
    assert (official["gpt_ckpt"], official["vq_ckpt"]) == ("c2i_B_256.pt", "vq_ds16_c2i.pt")
    assert official["official_weights"] is True and official["readme_fid"] == 5.46
    mine = plugin.presets()["llamagen-b-256"](ckpt="/runs/gpt/mine.pt", vq_ckpt="/runs/vq/myvq.pt").config()
    assert (mine["gpt_ckpt"], mine["vq_ckpt"]) == ("mine.pt", "myvq.pt")
    assert mine["official_weights"] is False and mine["readme_fid"] is None
    own_tokenizer = plugin.presets()["llamagen-b-256"](vq_ckpt="/runs/vq/myvq.pt").config()
    assert own_tokenizer["gpt_ckpt"] == "c2i_B_256.pt" and own_tokenizer["official_weights"] is False
    tokenizer = plugin.presets()["llamagen-vq16"](ckpt="/runs/vq/myvq.pt").config()  # --task reconstruct
    assert tokenizer["vq_ckpt"] == "myvq.pt" and tokenizer["official_weights"] is False
    assert plugin.presets()["llamagen-vq16"]().config()["official_weights"] is True


def test_preset_info_separates_the_readme_fid_from_the_paper():
    info = preset_info(plugin.presets()["llamagen-b"])
    assert info["claimed_fid"] == 6.09 and info["paper"] == "Sun et al. 2024, arXiv:2406.06525"
    assert info["settings_source"] == "the official GETTING_STARTED.md sampling command"
    assert preset_info(plugin.presets()["llamagen-l-256"])["settings_source"] == "assumed: no published command"
