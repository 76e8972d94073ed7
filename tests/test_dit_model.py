"""DiT network: official state-dict layout, strict loading, forward semantics, classifier-free guidance.

Independent references: the official key/shape layout is written out here by hand; the forward pass is checked
against diffusers' own DiT implementation (`DiTTransformer2DModel`) with converted weights; embeddings against
hand-worked closed forms; the parameter count against the number the official train.py prints for DiT-XL/2.
"""

import argparse
import math
import pickle

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from generators.dit.models import MODEL_NAMES, DiT, DiTConfig, load_dit, sincos_2d, timestep_embedding

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = DiTConfig(input_size=8, patch_size=2, hidden_size=64, depth=2, num_heads=4, num_classes=10)


def official_layout(depth, hidden, patch, latent, num_classes, channels=4, mlp_ratio=4):
    """Key -> shape of facebookresearch/DiT's state dict (timm PatchEmbed/Attention/Mlp, learn_sigma=True)."""
    out = channels * 2
    layout = {
        "pos_embed": (1, (latent // patch) ** 2, hidden),
        "x_embedder.proj.weight": (hidden, channels, patch, patch),
        "x_embedder.proj.bias": (hidden,),
        "t_embedder.mlp.0.weight": (hidden, 256),
        "t_embedder.mlp.0.bias": (hidden,),
        "t_embedder.mlp.2.weight": (hidden, hidden),
        "t_embedder.mlp.2.bias": (hidden,),
        "y_embedder.embedding_table.weight": (num_classes + 1, hidden),
        "final_layer.linear.weight": (patch * patch * out, hidden),
        "final_layer.linear.bias": (patch * patch * out,),
        "final_layer.adaLN_modulation.1.weight": (2 * hidden, hidden),
        "final_layer.adaLN_modulation.1.bias": (2 * hidden,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        layout.update({
            b + "attn.qkv.weight": (3 * hidden, hidden), b + "attn.qkv.bias": (3 * hidden,),
            b + "attn.proj.weight": (hidden, hidden), b + "attn.proj.bias": (hidden,),
            b + "mlp.fc1.weight": (mlp_ratio * hidden, hidden), b + "mlp.fc1.bias": (mlp_ratio * hidden,),
            b + "mlp.fc2.weight": (hidden, mlp_ratio * hidden), b + "mlp.fc2.bias": (hidden,),
            b + "adaLN_modulation.1.weight": (6 * hidden, hidden), b + "adaLN_modulation.1.bias": (6 * hidden,),
        })
    return layout


def random_state(layout, seed=0, std=0.05):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * std for k, shape in layout.items()}


def randomised(config, seed=0):
    """A model whose zero-initialised (adaLN-Zero) layers are random too, so every path affects the output."""
    torch.manual_seed(seed)
    model = DiT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return model


def test_all_official_configs_have_the_official_layout():
    sizes = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
    assert set(MODEL_NAMES) == {f"DiT-{s}/{p}" for s in sizes for p in (2, 4, 8)}
    for name in MODEL_NAMES:
        depth, hidden, heads = sizes[name[4:].split("/")[0]]
        patch = int(name.split("/")[1])
        for image_size in (256, 512):
            with torch.device("meta"):
                model = DiT(DiTConfig.named(name, image_size))
            found = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            assert found == official_layout(depth, hidden, patch, image_size // 8, 1000), (name, image_size)
            assert model.blocks[0].attn.num_heads == heads


def test_dit_xl2_parameter_count_matches_official():
    with torch.device("meta"):
        model = DiT(DiTConfig.named("DiT-XL/2", 256))
    assert sum(p.numel() for p in model.parameters()) == 675_129_632  # "DiT Parameters" printed by train.py
    assert not model.pos_embed.requires_grad


def test_named_config_rejects_bad_names_and_sizes():
    with pytest.raises(BenchError, match="unknown DiT model"):
        DiTConfig.named("DiT-XXL/2")
    with pytest.raises(BenchError, match="multiple of 8"):
        DiTConfig.named("DiT-S/2", 100)
    with pytest.raises(BenchError, match="not divisible by patch 8"):
        DiTConfig.named("DiT-S/8", 32)  # 4x4 latent


def test_pos_embed_closed_form():
    dim, grid = 16, 3
    emb = sincos_2d(dim, grid)
    quarter = dim // 4
    for token in range(grid * grid):
        row, col = divmod(token, grid)  # row-major token order
        for k in range(quarter):
            w = 10000 ** (-k / quarter)
            assert emb[token, k] == pytest.approx(math.sin(col * w), abs=1e-12)  # first half: column
            assert emb[token, quarter + k] == pytest.approx(math.cos(col * w), abs=1e-12)
            assert emb[token, 2 * quarter + k] == pytest.approx(math.sin(row * w), abs=1e-12)  # second: row
            assert emb[token, 3 * quarter + k] == pytest.approx(math.cos(row * w), abs=1e-12)
    model = DiT(TINY)
    assert torch.equal(model.pos_embed[0], torch.from_numpy(sincos_2d(64, 4)).float())


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 1.0, 999.0])
    emb = timestep_embedding(t, 8)
    freqs = [math.exp(-math.log(10000) * k / 4) for k in range(4)]
    for n, tv in enumerate(t.tolist()):
        want = [math.cos(tv * f) for f in freqs] + [math.sin(tv * f) for f in freqs]
        assert emb[n].tolist() == pytest.approx(want, abs=1e-4)


def test_initialisation_is_adaln_zero():
    model = DiT(TINY).eval()
    x = torch.randn(2, 4, 8, 8)
    assert torch.count_nonzero(model(x, torch.tensor([3, 500]), torch.tensor([1, 10]))) == 0


def to_diffusers(state, config):
    """Map an official-layout state dict onto diffusers' DiTTransformer2DModel (its own conversion rules)."""
    d = config.hidden_size
    out = {"pos_embed.proj.weight": state["x_embedder.proj.weight"], "pos_embed.proj.bias": state["x_embedder.proj.bias"],
           "proj_out_1.weight": state["final_layer.adaLN_modulation.1.weight"],
           "proj_out_1.bias": state["final_layer.adaLN_modulation.1.bias"],
           "proj_out_2.weight": state["final_layer.linear.weight"], "proj_out_2.bias": state["final_layer.linear.bias"]}
    for i in range(config.depth):
        src, dst = f"blocks.{i}.", f"transformer_blocks.{i}."
        emb = dst + "norm1.emb."
        for w in ("weight", "bias"):
            out[emb + f"timestep_embedder.linear_1.{w}"] = state[f"t_embedder.mlp.0.{w}"]
            out[emb + f"timestep_embedder.linear_2.{w}"] = state[f"t_embedder.mlp.2.{w}"]
            q, k, v = state[src + f"attn.qkv.{w}"].split(d)
            out[dst + f"attn1.to_q.{w}"], out[dst + f"attn1.to_k.{w}"], out[dst + f"attn1.to_v.{w}"] = q, k, v
            out[dst + f"attn1.to_out.0.{w}"] = state[src + f"attn.proj.{w}"]
            out[dst + f"norm1.linear.{w}"] = state[src + f"adaLN_modulation.1.{w}"]
            out[dst + f"ff.net.0.proj.{w}"] = state[src + f"mlp.fc1.{w}"]
            out[dst + f"ff.net.2.{w}"] = state[src + f"mlp.fc2.{w}"]
        out[emb + "class_embedder.embedding_table.weight"] = state["y_embedder.embedding_table.weight"]
    return out


def test_forward_matches_diffusers_dit():
    from diffusers import DiTTransformer2DModel

    state = random_state(official_layout(TINY.depth, TINY.hidden_size, TINY.patch_size, TINY.input_size, 10))
    state["pos_embed"] = torch.from_numpy(sincos_2d(TINY.hidden_size, 4)).float()[None]  # the fixed embedding
    ours = DiT(TINY).eval()
    ours.load_state_dict(state, strict=True)
    ref = DiTTransformer2DModel(num_attention_heads=4, attention_head_dim=16, in_channels=4, out_channels=8,
                                num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10,
                                norm_eps=1e-6).eval()
    ref.load_state_dict(to_diffusers(state, TINY), strict=True)
    for block in ref.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0  # DiT divides frequencies by half, not half - 1
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 417, 999])
    y = torch.tensor([2, 9, 10])  # 10 = null class
    with torch.no_grad():
        want = ref(x, timestep=t, class_labels=y).sample
        got = ours(x, t, y)
    assert got.shape == (3, 8, 8, 8)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_cfg_arithmetic_and_three_channel_rule():
    model = randomised(TINY)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 8, 8, generator=g)
    other = torch.randn(2, 4, 8, 8, generator=g)  # the null half's latents are ignored
    t = torch.tensor([321, 321, 321, 321])
    y = torch.tensor([3, 7, 10, 10])
    s = 2.5
    with torch.no_grad():
        cond = model(x, t[:2], y[:2])
        uncond = model(x, t[2:], y[2:])
        out3 = model.forward_with_cfg(torch.cat([x, other]), t, y, s)
        out4 = model.forward_with_cfg(torch.cat([x, other]), t, y, s, cfg_all_channels=True)
    guided = uncond + s * (cond - uncond)
    atol = 1e-5
    for half, own in ((out3[:2], cond), (out3[2:], uncond)):
        torch.testing.assert_close(half[:, :3], guided[:, :3], atol=atol, rtol=0)
        torch.testing.assert_close(half[:, 3:], own[:, 3:], atol=atol, rtol=0)  # channel 4 and variance: unguided
    for half, own in ((out4[:2], cond), (out4[2:], uncond)):
        torch.testing.assert_close(half[:, :4], guided[:, :4], atol=atol, rtol=0)
        torch.testing.assert_close(half[:, 4:], own[:, 4:], atol=atol, rtol=0)
    assert not torch.allclose(out3[:, 3], out4[:, 3])


def test_label_dropout_only_in_training():
    model = randomised(TINY)
    model.y_embedder.dropout_prob = 1.0
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([5, 5]), torch.tensor([1, 2])
    null = torch.tensor([10, 10])
    with torch.no_grad():
        model.train()
        dropped = model(x, t, y)
        model.eval()
        torch.testing.assert_close(dropped, model(x, t, null))
        assert not torch.allclose(model(x, t, y), dropped)


@pytest.fixture
def dit_s2_state():
    """A random DiT-S/2 state dict at 32x32 pixels (4x4 latent), in the official layout, 10 classes."""
    return random_state(official_layout(12, 384, 2, 4, 10), seed=3)


def test_strict_load_bare_state_dict(tmp_path, dit_s2_state):
    path = tmp_path / "DiT-S-2-32x32.pt"
    torch.save(dit_s2_state, path)
    model = load_dit(path, "DiT-S/2", image_size=32, num_classes=10)
    assert not model.training
    loaded = model.state_dict()
    assert loaded.keys() == dit_s2_state.keys()
    for k, v in dit_s2_state.items():
        assert torch.equal(loaded[k], v), k


def test_strict_load_training_checkpoint_uses_ema(tmp_path, dit_s2_state):
    raw = {k: v + 1 for k, v in dit_s2_state.items()}
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=1e-4).state_dict()
    args = argparse.Namespace(model="DiT-S/2", image_size=32, num_classes=10, global_seed=0, results_dir="results")
    path = tmp_path / "0400000.pt"
    torch.save({"model": raw, "ema": dit_s2_state, "opt": opt, "args": args}, path)
    model = load_dit(path, "DiT-S/2", image_size=32, num_classes=10)
    for k, v in dit_s2_state.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_mismatched_checkpoint_names_expected_and_found(tmp_path, dit_s2_state):
    path = tmp_path / "s2.pt"
    torch.save(dit_s2_state, path)
    with pytest.raises(BenchError) as e:
        load_dit(path, "DiT-S/2", image_size=64, num_classes=10)  # 8x8 latent: 16 tokens, not 4
    assert "pos_embed: expected shape [1, 16, 384], found [1, 4, 384]" in str(e.value)
    with pytest.raises(BenchError) as e:
        load_dit(path, "DiT-B/2", image_size=32, num_classes=10)
    assert "expected shape [768" in str(e.value) and "found [384" in str(e.value)
    with pytest.raises(BenchError) as e:
        load_dit(path, "DiT-S/2", image_size=32, num_classes=1000)
    assert "y_embedder.embedding_table.weight: expected shape [1001, 384], found [11, 384]" in str(e.value)
    # the hint names what `bench run` takes (there is no --model option: the preset fixes the model)
    assert "--model" not in str(e.value) and "-g dit-xl-2-512" in str(e.value) and "--ckpt" in str(e.value)


@pytest.mark.parametrize("wrap", [
    pytest.param(lambda sd: {"model": sd, "epoch": torch.tensor(3)}, id="model"),
    pytest.param(lambda sd: {"module": sd}, id="deepspeed"),
    pytest.param(lambda sd: {"state_dict": sd}, id="state_dict"),
    pytest.param(lambda sd: {f"module.{k}": v for k, v in sd.items()}, id="ddp-prefix"),
    pytest.param(lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()}, id="compile-prefix"),
    pytest.param(lambda sd: {"ema": {f"_orig_mod.module.{k}": v for k, v in sd.items()}}, id="ema-compiled-ddp"),
])
def test_wrapped_checkpoints_load(tmp_path, dit_s2_state, wrap):
    """The containers and key prefixes of DDP / DeepSpeed / torch.compile saves, as LlamaGen's loader accepts."""
    path = tmp_path / "wrapped.pt"
    torch.save(wrap(dit_s2_state), path)
    loaded = load_dit(path, "DiT-S/2", image_size=32, num_classes=10).state_dict()
    for k, v in dit_s2_state.items():
        assert torch.equal(loaded[k], v), k


def test_foreign_checkpoints_are_refused(tmp_path):
    foreign = tmp_path / "vq.pt"
    torch.save({"encoder.conv_in.weight": torch.zeros(3), "quantize.embedding.weight": torch.zeros(2)}, foreign)
    with pytest.raises(BenchError) as e:
        load_dit(foreign, "DiT-S/2", image_size=32, num_classes=10)
    message = str(e.value)
    assert "is not a DiT checkpoint" in message
    assert "missing keys (132): blocks.0.adaLN_modulation.1.bias" in message  # 12 blocks x 10 + 12 others
    assert "unexpected keys (2): encoder.conv_in.weight, quantize.embedding.weight" in message

    not_torch = tmp_path / "notes.pt"
    not_torch.write_text("hello")
    with pytest.raises(BenchError, match="cannot be read as a torch DiT checkpoint"):
        load_dit(not_torch, "DiT-S/2", image_size=32, num_classes=10)

    unsafe = tmp_path / "unsafe.pt"
    with open(unsafe, "wb") as f:
        pickle.dump({"model": np.float64}, f, protocol=2)  # needs a global the weights-only unpickler refuses
    with pytest.raises(BenchError) as e:
        load_dit(unsafe, "DiT-S/2", image_size=32, num_classes=10)
    message = str(e.value)
    assert str(unsafe) in message and "pickled objects other than tensors" in message
    assert "refused for safety" in message and "numpy.float64" in message  # the global torch blocked
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message

    with pytest.raises(BenchError, match="does not exist"):
        load_dit(tmp_path / "missing.pt", "DiT-S/2", image_size=32, num_classes=10)
