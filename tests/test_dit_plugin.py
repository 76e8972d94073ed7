"""DiT plugin: presets, factories and overrides, file resolution, and sampling end to end into uint8 images.

End to end uses a random 2-block DiT at 32x32 pixels (a 4x4 latent) saved in the official layout and a tiny random
`AutoencoderKL` saved in the hub folder layout; images are compared with a pipeline assembled in the test.
"""

import json
import shutil

import numpy as np
import pytest
import torch

import bench.download
from bench.download import cache_dir, sha256_file
from bench.errors import BenchError, ChecksumError, MissingFilesError
from generators.dit.diffusion import sample_latents
from generators.dit.models import DiT, DiTConfig
from bench.generator import to_uint8
from generators.dit.plugin import DiTGenerator, load_vae, presets

dit_xl_2, dit_xl_2_512 = presets()["dit-xl-2"], presets()["dit-xl-2-512"]
from generators.dit.presets import PRESETS, VAE_SHA256, DiTPreset


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A random tiny-DiT checkpoint (32 px, 10 classes) and a tiny random SD-style VAE folder."""
    from diffusers.models import AutoencoderKL

    root = tmp_path_factory.mktemp("dit_plugin")
    torch.manual_seed(0)
    model = DiT(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
    torch.save(model.state_dict(), root / "dit-tiny-32.pt")
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4)
    vae.save_pretrained(root / "tiny-vae")
    return root / "dit-tiny-32.pt", root / "tiny-vae"


# DiT-S/2 loading is covered in test_dit_model.py; sampling here uses a 2-block DiT to stay fast on a busy CPU
TINY = DiTConfig(input_size=4, patch_size=2, hidden_size=64, depth=2, num_heads=4, num_classes=10)
TINY_PRESET = DiTPreset(name="dit-tiny", model=TINY, image_size=32, eval_size=32, num_classes=10,
                        checkpoint=PRESETS["dit-xl-2"].checkpoint, steps=4)


def test_to_uint8_is_the_official_truncating_conversion():
    x = torch.tensor([-1.5, -1.0, -0.999, -0.0039, 0.0, 0.0039, 0.5, 0.999, 1.0, 2.0]).view(1, 1, 1, -1)
    got = to_uint8(x.expand(1, 3, 1, 10))
    want = np.floor(np.clip(127.5 * x.double().numpy() + 128, 0, 255))  # truncation == floor for values >= 0
    assert got.shape == (1, 1, 10, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0, :, :, 0], want[0, 0])
    assert got[0, 0, :, 0].tolist() == [0, 0, 0, 127, 128, 128, 191, 255, 255, 255]


def test_end_to_end_images_match_a_hand_assembled_pipeline(tiny_files):
    ckpt, vae_dir = tiny_files
    gen = DiTGenerator(TINY_PRESET, ckpt=ckpt, vae=str(vae_dir), cfg_scale=1.5)
    labels, seeds = torch.tensor([1, 7, 3]), torch.tensor([11, 12, 13])
    images = gen.sample(labels, seeds)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert images.std() > 0

    from diffusers.models import AutoencoderKL

    state = torch.load(ckpt, weights_only=True)
    model = DiT(TINY).eval()
    model.load_state_dict(state)
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    with torch.no_grad():
        z = sample_latents(model, labels, cfg_scale=1.5, num_steps=4, seed=seeds)
        decoded = vae.decode(z / 0.18215).sample.double().numpy()
    want = np.floor(np.clip(127.5 * decoded + 128, 0, 255)).astype(np.uint8).transpose(0, 2, 3, 1)
    mismatch = np.abs(images.astype(int) - want.astype(int))
    assert mismatch.max() <= 1 and (mismatch > 0).mean() < 0.01  # rounding at exact integer boundaries only


def test_images_8_equal_4_plus_4(tiny_files):
    """Another batch shape gives the same images up to float rounding: pixels within +-1 on at most 0.1% of them.

    DiT's GEMMs and the VAE's convolutions sum in a batch-shape dependent order on AVX-512 CPUs (bitwise equal on
    the AVX2 machine this was written on), so a pixel whose float value sits at an integer boundary can come out 1
    apart: 1 of these 24576 (0.004%); at most 3 of 98304 (0.003%) over 32 images in batches of 1, 4, 8 and 32, with
    or without MKL held to AVX2. Bugs are well beyond the bound: seeds off by one change ~99% of pixels (by up to
    ~220), labels off by one ~2% (by 1: this random model barely uses labels). The same batch shape is bitwise."""
    ckpt, vae_dir = tiny_files
    gen = DiTGenerator(TINY_PRESET, ckpt=ckpt, vae=str(vae_dir), steps=3, sampler="ddpm")
    labels, seeds = torch.arange(8) % 10, torch.arange(1000, 1008)
    full = gen.sample(labels, seeds)
    halves = np.concatenate([gen.sample(labels[:4], seeds[:4]), gen.sample(labels[4:], seeds[4:])])
    diff = np.abs(full.astype(int) - halves.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, f"max {diff.max()}, {(diff > 0).sum()} pixels differ"
    np.testing.assert_array_equal(gen.sample(labels[4:], seeds[4:]), halves[4:])


def test_sampling_settings_change_images(tiny_files):
    ckpt, vae_dir = tiny_files
    labels, seeds = torch.tensor([2, 2]), torch.tensor([5, 6])
    base = DiTGenerator(TINY_PRESET, ckpt=ckpt, vae=str(vae_dir)).sample(labels, seeds)
    assert not np.array_equal(base[0], base[1])
    ddim = DiTGenerator(TINY_PRESET, ckpt=ckpt, vae=str(vae_dir), sampler="ddim").sample(labels, seeds)
    assert not np.array_equal(base, ddim)
    bf16 = DiTGenerator(TINY_PRESET, ckpt=ckpt, vae=str(vae_dir), precision="bf16").sample(labels, seeds)
    assert bf16.shape == base.shape


def test_presets_and_factories():
    gen = dit_xl_2()
    assert (gen.name, gen.image_size, gen.eval_size, gen.num_classes) == ("dit-xl-2", 256, 256, 1000)
    cfg = gen.config()
    assert cfg["model"] == "DiT-XL/2" and cfg["cfg_scale"] == 1.5 and cfg["steps"] == 250
    assert cfg["sampler"] == "ddpm" and cfg["vae"] == "ema" and cfg["cfg_all_channels"] is False
    assert "device" not in cfg
    files = gen.required_files()
    assert files[0].url == "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt"
    assert [f.hf_repo for f in files[1:]] == ["stabilityai/sd-vae-ft-ema"] * 2
    big = dit_xl_2_512(cfg_scale=4.0, steps="ddim50", sampler="ddim", vae="mse", top_k=None)
    assert (big.image_size, big.eval_size) == (512, 512)
    assert big.config()["cfg_scale"] == 4.0 and big.required_files()[0].filename == "DiT-XL-2-512x512.pt"
    assert big.required_files()[1].hf_repo == "stabilityai/sd-vae-ft-mse"
    assert dit_xl_2(ckpt="/somewhere/0400000.pt").required_files()[0].filename == "0400000.pt"
    assert dit_xl_2.info.paper_settings["cfg_scale"] == 1.5


@pytest.mark.parametrize("overrides,message", [
    (dict(top_k=100), "does not take --set top_k"),
    (dict(sampler="euler"), "sampler"),
    (dict(precision="fp8"), "precision"),
    (dict(cfg_scale=0.5), "--cfg-scale must be"),
    (dict(cfg_scale=float("nan")), "--cfg-scale must be"),
    (dict(eta=float("inf")), "--set eta must be"),
    (dict(steps="ddimx"), "bad step spec"),
    (dict(steps="2000"), "cannot take 2000 steps"),
    (dict(vae="/no/such/vae"), "vae"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises(BenchError, match=message):
        dit_xl_2(**overrides)


def test_offline_lists_missing_files(monkeypatch):
    def offline(remote):
        raise OSError("no network")

    monkeypatch.setattr(bench.download, "download", offline)
    gen = dit_xl_2()
    with pytest.raises(MissingFilesError) as e:
        gen.sample(torch.tensor([1]), torch.tensor([0]))
    names = [m[0] for m in e.value.missing]
    assert names == ["DiT-XL-2-256x256.pt", "sd-vae-ft-ema/config.json",
                     "sd-vae-ft-ema/diffusion_pytorch_model.safetensors"]
    assert str(cache_dir() / "sd-vae-ft-ema" / "config.json") in str(e.value)


def test_load_from_cache_layout(tiny_files, monkeypatch):
    """Files placed where the offline message says are picked up (here: a custom checkpoint + cached VAE)."""
    ckpt, vae_dir = tiny_files
    (cache_dir() / "sd-vae-ft-ema").mkdir(parents=True)
    for f in vae_dir.iterdir():
        (cache_dir() / "sd-vae-ft-ema" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(bench.download, "download", lambda remote: (_ for _ in ()).throw(OSError("offline")))
    weights = cache_dir() / "sd-vae-ft-ema" / "diffusion_pytorch_model.safetensors"
    # the tiny VAE is not the published one: the pinned digest refuses it, and the file stays where it was
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        DiTGenerator(TINY_PRESET, ckpt=ckpt).sample(torch.tensor([4]), torch.tensor([9]))
    assert weights.exists()
    for f in (weights, weights.with_name("config.json")):
        monkeypatch.setitem(VAE_SHA256, ("ema", f.name), sha256_file(f))
    gen = DiTGenerator(TINY_PRESET, ckpt=ckpt)
    assert gen.sample(torch.tensor([4]), torch.tensor([9])).shape == (1, 32, 32, 3)


def test_cached_vae_config_is_pinned(tiny_files, monkeypatch):
    """A config edit that keeps every tensor shape loads cleanly and changes the decoder, so the digest must
    catch it: with the weights pinned to the cached file, the edited config alone is refused."""
    ckpt, vae_dir = tiny_files
    folder = cache_dir() / "sd-vae-ft-ema"
    folder.mkdir(parents=True)
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes((vae_dir / weights.name).read_bytes())
    config = json.loads((vae_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "norm_num_groups": 2}))
    load_vae(folder)  # loads: the shapes do not depend on the group count
    monkeypatch.setattr(bench.download, "download", lambda remote: (_ for _ in ()).throw(OSError("offline")))
    monkeypatch.setitem(VAE_SHA256, ("ema", weights.name), sha256_file(weights))
    with pytest.raises(ChecksumError, match="config.json"):
        DiTGenerator(TINY_PRESET, ckpt=ckpt).sample(torch.tensor([4]), torch.tensor([9]))
    assert VAE_SHA256[("ema", "config.json")] == VAE_SHA256[("mse", "config.json")]  # one file in both repos


def test_bad_vae_folder(tmp_path):
    with pytest.raises(BenchError, match="no config.json"):
        load_vae(tmp_path)
    (tmp_path / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    with pytest.raises(BenchError, match="cannot load the VAE"):
        load_vae(tmp_path)


def test_vae_weights_must_match_the_config(tiny_files, tmp_path):
    """diffusers only warns about missing and unused weights (missing ones stay random): here they are errors."""
    from safetensors.torch import load_file, save_file

    _, vae_dir = tiny_files
    weights = load_file(vae_dir / "diffusion_pytorch_model.safetensors")

    def folder(name, state=None, bin_state=None):
        out = tmp_path / name
        out.mkdir()
        shutil.copy(vae_dir / "config.json", out)
        if state is not None:
            save_file(state, out / "diffusion_pytorch_model.safetensors")
        if bin_state is not None:
            torch.save(bin_state, out / "diffusion_pytorch_model.bin")
        return out

    no_decoder = folder("no-decoder", {k: v for k, v in weights.items() if not k.startswith("decoder.")})
    with pytest.raises(BenchError) as e:
        load_vae(no_decoder)
    assert str(no_decoder) in str(e.value) and "missing keys (" in str(e.value)
    assert "decoder.conv_in.bias, decoder.conv_in.weight" in str(e.value)  # sorted, first few named
    with pytest.raises(BenchError, match=r"unexpected keys \(1\): extra.weight"):
        load_vae(folder("extra", {**weights, "extra.weight": torch.zeros(2)}))
    dit_as_vae = folder("dit-as-vae", bin_state=DiT(TINY).state_dict())
    with pytest.raises(BenchError) as e:
        load_vae(dit_as_vae)
    assert "missing keys (" in str(e.value) and "unexpected keys (" in str(e.value) and "blocks.0" in str(e.value)
    assert isinstance(load_vae(folder("complete", dict(weights))), torch.nn.Module)


def test_empty_batch_gives_no_images(tiny_files):
    ckpt, vae_dir = tiny_files
    gen = DiTGenerator(TINY_PRESET, ckpt=ckpt, vae=str(vae_dir))
    no_labels = torch.zeros(0, dtype=torch.int64)
    for images in (gen.sample(no_labels, no_labels), gen.sample_for_eval(no_labels, no_labels)):
        assert images.shape == (0, 32, 32, 3) and images.dtype == np.uint8


def test_without_diffusers_the_error_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_diffusers(name, *args, **kwargs):
        if name.startswith("diffusers"):
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_diffusers)
    with pytest.raises(BenchError, match=r"pip install 'bench\[dit\]'"):
        load_vae(tmp_path)
