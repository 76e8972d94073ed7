"""VAR's released architectures, built on the meta device (no memory): key layout and parameter counts against the
official models' (tests/data/var/layouts.json, recorded by make_fixtures.py) and the paper's sizes; the
block-causal mask and scale index; AdaLN conditioning and the attention temperature clamp, by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from generators.var.model import VAR, VAR_CONFIGS, scale_masks, var_config
from generators.var.vqvae import VQVAE, VQVAEConfig
from var_common import DATA, layout

pytestmark = pytest.mark.usefixtures("one_thread")

#: the paper's / README's parameter counts
PAPER_PARAMS = {16: 310e6, 20: 600e6, 24: 1.0e9, 30: 2.0e9}


@pytest.fixture(scope="module")
def layouts() -> dict:
    return json.loads((DATA / "layouts.json").read_text())


@pytest.mark.parametrize("depth", [16, 20, 24, 30])
def test_release_depth_layout_and_size(depth, layouts):
    with torch.device("meta"):
        var = VAR(var_config(depth))
    c = var.config
    assert (c.embed_dim, c.num_heads, c.head_dim, c.num_tokens) == (64 * depth, depth, 64, 680)
    official = layouts[f"release_var_d{depth}"]
    assert layout(var.state_dict()) == {k: official[k] for k in ("keys", "numel", "sha256")}
    params = sum(p.numel() for p in var.parameters())
    assert params == official["params"]
    assert abs(params / PAPER_PARAMS[depth] - 1) < 0.04, params
    assert var.state_dict()["attn_bias_for_masking"].shape == (1, 1, 680, 680)
    assert var.head.weight.shape == (4096, 64 * depth) and var.class_emb.weight.shape == (1001, 64 * depth)


def test_release_vae_layout(layouts):
    with torch.device("meta"):
        vae = VQVAE(VQVAEConfig())
    assert layout(vae.state_dict()) == layouts["release_vae"]
    assert vae.config.image_size == 256 and vae.config.num_tokens == 680


def test_named_configs():
    assert set(VAR_CONFIGS) == {"VAR-d16", "VAR-d20", "VAR-d24", "VAR-d30"}
    with pytest.raises(ValueError, match="no released VAR has depth 12"):
        var_config(12)


def test_block_causal_mask_and_levels():
    """Position i sees j iff j's scale <= i's: hand-checked on scales (1, 2, 3): 1 + 4 + 9 tokens."""
    lvl, bias = scale_masks((1, 2, 3))
    assert lvl.tolist() == [[0] + [1] * 4 + [2] * 9]
    allowed = bias[0, 0] == 0
    assert allowed[0].tolist() == [True] + [False] * 13
    assert allowed[1].tolist() == [True] * 5 + [False] * 9  # a 2x2 token sees the 1x1 and its whole 2x2 map
    assert allowed[13].all()
    assert torch.isinf(bias[bias != 0]).all() and (bias[bias != 0] < 0).all()


def test_attention_temperature_is_clamped_per_head():
    """attn_l2_norm: scores = exp(min(s_h, ln 100)) cos(q, k); a head with s_h = ln 300 behaves as ln 100."""
    torch.manual_seed(0)
    var = VAR(var_config(2, num_classes=3, vocab_size=16, Cvae=4)).eval()
    attn = var.blocks[0].attn
    with torch.no_grad():
        attn.scale_mul_1H11[0, :, 0, 0] = torch.tensor([math.log(300.0), math.log(2.0)])
        x = torch.randn(1, 5, 128)
        y = attn(x, None)
        qkv = F.linear(x, attn.mat_qkv.weight, torch.cat((attn.q_bias, attn.zero_k_bias, attn.v_bias)))
        q, k, v = qkv.view(1, 5, 3, 2, 64).permute(2, 0, 3, 1, 4)
        cos = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
        scores = cos * torch.tensor([100.0, 2.0]).view(1, 2, 1, 1)
        expected = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(1, 5, 128))
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_class_conditioning_and_null_class():
    """Different labels give different logits; the null class (num_classes) is accepted by teacher forcing;
    class dropout happens only in training mode."""
    torch.manual_seed(0)
    vae = VQVAE(VQVAEConfig(vocab_size=16, Cvae=4, ch=32)).eval()
    var = VAR(var_config(2, num_classes=3, vocab_size=16, Cvae=4), vae=vae).eval()
    with torch.no_grad():
        for p in var.parameters():  # AdaLN projections start at zero-mean noise: make the class matter
            p.add_(0.05 * torch.randn_like(p))
    scales = [torch.randint(0, 16, (1, pn * pn)) for pn in vae.patch_nums]
    a, b, null = (var.teacher_forced_logits(torch.tensor([y]), scales) for y in (0, 1, 3))
    assert not torch.allclose(a, b) and not torch.allclose(a, null)
    x = vae.quantize.teacher_forcing_input(scales)
    torch.testing.assert_close(var(torch.tensor([0]), x), a)  # eval: no dropout
    var.train()
    torch.manual_seed(1)
    dropped = torch.stack([var(torch.tensor([0]), x) for _ in range(40)])
    hits = [(d - null).abs().max() < 1e-5 for d in dropped]
    assert 0 < sum(hits) < 40  # some forwards ran as the null class (p = 0.1)
