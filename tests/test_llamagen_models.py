"""LlamaGen model definitions against the official layout and independent computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from generators.llamagen.gpt import GPT, GPTConfig, apply_rope, gpt_config, precompute_rope_2d, RMSNorm
from generators.llamagen.vq import AttnBlock, Downsample, VQModel, vq_config


pytestmark = pytest.mark.usefixtures("one_thread")


torch.manual_seed(0)


def tiny_gpt(**kw) -> GPT:
    cfg = dict(dim=64, n_layer=2, n_head=4, block_size=16, vocab_size=40, num_classes=10, multiple_of=32)
    cfg.update(kw)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**cfg)).eval()
    for p in model.parameters():  # the official init zeroes the head; randomise everything
        torch.nn.init.normal_(p, std=0.2)
    return model


# ---- parameter counts and official key layout ----------------------------------------------------------

# Paper / official comments: GPT-B 111M, L 343M, XL 775M, XXL 1.4B, 1B 1.2B, 3B 3.1B, 7B 6.6B.
@pytest.mark.parametrize("name,paper,tol", [
    ("GPT-B", 111e6, 0.01), ("GPT-L", 343e6, 0.01), ("GPT-XL", 775e6, 0.01), ("GPT-XXL", 1.4e9, 0.01),
    ("GPT-1B", 1.2e9, 0.01), ("GPT-3B", 3.1e9, 0.01), ("GPT-7B", 6.6e9, 0.01)])
def test_gpt_param_counts_match_paper(name, paper, tol):
    with torch.device("meta"):
        model = GPT(gpt_config(name, block_size=576))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - paper) / paper < tol, (name, n)


def official_gpt_shapes(dim, n_layer, n_head, hidden, vocab=16384, num_classes=1000):
    """The official state dict written out by hand from autoregressive/models/gpt.py."""
    shapes = {"cls_embedding.embedding_table.weight": (num_classes + 1, dim), "tok_embeddings.weight": (vocab, dim)}
    for i in range(n_layer):
        shapes.update({
            f"layers.{i}.attention.wqkv.weight": (3 * dim, dim),
            f"layers.{i}.attention.wo.weight": (dim, dim),
            f"layers.{i}.feed_forward.w1.weight": (hidden, dim),
            f"layers.{i}.feed_forward.w3.weight": (hidden, dim),
            f"layers.{i}.feed_forward.w2.weight": (dim, hidden),
            f"layers.{i}.attention_norm.weight": (dim,),
            f"layers.{i}.ffn_norm.weight": (dim,),
        })
    shapes.update({"norm.weight": (dim,), "output.weight": (vocab, dim)})
    return shapes


# hidden = find_multiple(int(2 * 4 * dim / 3), 256), worked by hand:
# B: 2048 -> 2048; L: 2730 -> 2816; XL: 3413 -> 3584; XXL: 4096 -> 4096; 3B: 8533 -> 8704.
@pytest.mark.parametrize("name,dim,n_layer,n_head,hidden", [
    ("GPT-B", 768, 12, 12, 2048), ("GPT-L", 1024, 24, 16, 2816), ("GPT-XL", 1280, 36, 20, 3584),
    ("GPT-XXL", 1536, 48, 24, 4096), ("GPT-3B", 3200, 24, 32, 8704)])
def test_gpt_state_dict_is_official_layout(name, dim, n_layer, n_head, hidden):
    with torch.device("meta"):
        model = GPT(gpt_config(name, block_size=256))
    found = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert found == official_gpt_shapes(dim, n_layer, n_head, hidden)


def official_vq_keys(ch_mult, ch=128, z=256, e_dim=8, n_res=2):
    """Official VQModel parameter names/shapes, enumerated by hand from tokenizer/tokenizer_image/vq_model.py."""
    s = {}

    def conv(name, cin, cout, k):
        s[f"{name}.weight"] = (cout, cin, k, k)
        s[f"{name}.bias"] = (cout,)

    def norm(name, c):
        s[f"{name}.weight"] = (c,)
        s[f"{name}.bias"] = (c,)

    def res(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for p in "qkv":
            conv(f"{name}.{p}", c, c, 1)
        conv(f"{name}.proj_out", c, c, 1)

    L = len(ch_mult)
    conv("encoder.conv_in", 3, ch, 3)
    cin = ch
    for i in range(L):
        for j in range(n_res):
            res(f"encoder.conv_blocks.{i}.res.{j}", cin, ch * ch_mult[i])
            cin = ch * ch_mult[i]
            if i == L - 1:
                attn(f"encoder.conv_blocks.{i}.attn.{j}", cin)
        if i != L - 1:
            conv(f"encoder.conv_blocks.{i}.downsample.conv", cin, cin, 3)
    res("encoder.mid.0", cin, cin), attn("encoder.mid.1", cin), res("encoder.mid.2", cin, cin)
    norm("encoder.norm_out", cin)
    conv("encoder.conv_out", cin, z, 3)
    cin = ch * ch_mult[-1]
    conv("decoder.conv_in", z, cin, 3)
    res("decoder.mid.0", cin, cin), attn("decoder.mid.1", cin), res("decoder.mid.2", cin, cin)
    for k, i in enumerate(reversed(range(L))):
        for j in range(n_res + 1):
            res(f"decoder.conv_blocks.{k}.res.{j}", cin, ch * ch_mult[i])
            cin = ch * ch_mult[i]
            if i == L - 1:
                attn(f"decoder.conv_blocks.{k}.attn.{j}", cin)
        if i != 0:
            conv(f"decoder.conv_blocks.{k}.upsample.conv", cin, cin, 3)
    norm("decoder.norm_out", cin)
    conv("decoder.conv_out", cin, 3, 3)
    s["quantize.embedding.weight"] = (16384, e_dim)
    s["quantize.codebook_used"] = (65536,)
    conv("quant_conv", z, e_dim, 1)
    conv("post_quant_conv", e_dim, z, 1)
    return s


@pytest.mark.parametrize("name,mult", [("VQ-16", [1, 1, 2, 2, 4]), ("VQ-8", [1, 2, 2, 4])])
def test_vq_state_dict_is_official_layout(name, mult):
    with torch.device("meta"):
        model = VQModel(vq_config(name))
    found = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert found == official_vq_keys(mult)
    assert model.downsample == 2 ** (len(mult) - 1)


def test_vq16_param_count_is_72m():
    with torch.device("meta"):
        model = VQModel(vq_config("VQ-16"))
    assert abs(sum(p.numel() for p in model.parameters()) - 72e6) / 72e6 < 0.01


# ---- building blocks vs independent computations -------------------------------------------------------

def test_rope_2d_matches_hand_computed_angles():
    grid, head_dim, base = 3, 8, 10000.0
    rope = precompute_rope_2d(grid, head_dim, base, cls_token_num=1)
    assert rope.shape == (1 + grid * grid, head_dim // 2, 2)
    assert torch.all(rope[0] == 0)  # class token: cos = sin = 0, as the official zero-filled cache
    # head_dim 8 -> 4 pairs: pairs 0,1 rotate by row * (1, base^-1/2), pairs 2,3 by column * (1, base^-1/2)
    freqs = [1.0, base ** -0.5]
    for p in range(grid * grid):
        r, c = divmod(p, grid)
        angles = [r * freqs[0], r * freqs[1], c * freqs[0], c * freqs[1]]
        for k, a in enumerate(angles):
            assert rope[1 + p, k, 0].item() == pytest.approx(math.cos(a), abs=1e-6)
            assert rope[1 + p, k, 1].item() == pytest.approx(math.sin(a), abs=1e-6)


def test_apply_rope_is_complex_multiplication_of_interleaved_pairs():
    x = torch.randn(2, 5, 3, 8)
    rope = precompute_rope_2d(2, 8, 100.0, cls_token_num=1)  # 5 positions
    z = torch.view_as_complex(x.reshape(2, 5, 3, 4, 2).contiguous())
    w = torch.complex(rope[..., 0], rope[..., 1])[None, :, None, :]
    expected = torch.view_as_real(z * w).reshape(2, 5, 3, 8)
    torch.testing.assert_close(apply_rope(x, rope), expected)
    assert torch.all(apply_rope(x, rope)[:, 0] == 0)  # class position zeroed


def test_rmsnorm_formula():
    norm = RMSNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(4, 6)
    expected = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-5) * torch.arange(1.0, 7.0)
    torch.testing.assert_close(norm(x), expected)


def test_gpt_forward_is_causal_and_row_i_predicts_token_i():
    model = tiny_gpt()
    labels = torch.tensor([3, 10])
    tokens = torch.randint(0, 40, (2, 16))
    logits = model.teacher_forced_logits(labels, tokens)
    assert logits.shape == (2, 16, 40) and logits.dtype == torch.float32
    changed = tokens.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 40
    other = model.teacher_forced_logits(labels, changed)
    torch.testing.assert_close(other[:, :8], logits[:, :8])  # rows 0..7 never see token 7
    assert (other[:, 8:] - logits[:, 8:]).abs().max() > 1e-4
    changed_last = tokens.clone()
    changed_last[:, -1] = (changed_last[:, -1] + 1) % 40
    torch.testing.assert_close(model.teacher_forced_logits(labels, changed_last), logits)


def test_gpt_first_row_depends_only_on_the_label():
    model = tiny_gpt()
    a = model.teacher_forced_logits(torch.tensor([4]), torch.randint(0, 40, (1, 16)))
    b = model.teacher_forced_logits(torch.tensor([4]), torch.randint(0, 40, (1, 16)))
    torch.testing.assert_close(a[:, 0], b[:, 0])


def test_kv_cache_decoding_equals_teacher_forcing():
    model = tiny_gpt(n_kv_head=2)  # also exercises grouped keys/values
    labels = torch.tensor([1, 10, 5])
    tokens = torch.randint(0, 40, (3, 16))
    full = model.teacher_forced_logits(labels, tokens)
    model.setup_kv_cache(3)
    with torch.no_grad():
        steps = [model.prefill(labels)] + [model.decode_step(tokens[:, t - 1:t], torch.tensor([t]))
                                           for t in range(1, 16)]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_state_dict_after_sampling_keeps_official_keys():
    model = tiny_gpt()
    before = set(model.state_dict())
    model.setup_kv_cache(2)
    assert set(model.state_dict()) == before


def test_bf16_cast_keeps_rope_in_float32():
    model = tiny_gpt().to(torch.bfloat16)
    assert model.rope.dtype == torch.float32
    out = model.teacher_forced_logits(torch.tensor([1]), torch.randint(0, 40, (1, 16)))
    assert out.dtype == torch.float32


# ---- VQ --------------------------------------------------------------------------------------------------

def tiny_vq(**kw) -> VQModel:
    torch.manual_seed(0)
    return VQModel(vq_config("VQ-16", ch=32, z_channels=32, codebook_size=64, **kw)).eval()


def test_codebook_lookup_is_l2_normalised_rows():
    vq = tiny_vq()
    with torch.no_grad():
        vq.quantize.embedding.weight.mul_(torch.rand(64, 1) * 5 + 0.1)  # stored rows need not be unit
    codes = torch.randint(0, 64, (2, 3, 4))
    z = vq.quantize.lookup(codes)
    w = vq.quantize.embedding.weight
    expected = (w / w.norm(dim=1, keepdim=True))[codes].permute(0, 3, 1, 2)
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2, 3, 4))


def test_encode_to_codes_is_the_max_cosine_code():
    vq = tiny_vq()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    codes = vq.encode_to_codes(x)
    assert codes.shape == (2, 2, 2) and codes.dtype == torch.long
    with torch.no_grad():
        z = vq.quant_conv(vq.encoder(x)).permute(0, 2, 3, 1).reshape(-1, 8)
    cos = F.normalize(z, dim=1) @ F.normalize(vq.quantize.embedding.weight, dim=1).t()
    assert torch.equal(codes.view(-1), cos.argmax(1))


def test_decode_codes_is_decoder_of_looked_up_codes_and_shapes():
    vq = tiny_vq()
    codes = torch.randint(0, 64, (2, 2, 3))
    images = vq.decode_codes(codes)
    assert images.shape == (2, 3, 32, 48)
    with torch.no_grad():
        e = F.normalize(vq.quantize.embedding.weight, dim=1)
        expected = vq.decoder(vq.post_quant_conv(e[codes].permute(0, 3, 1, 2)))
    torch.testing.assert_close(images, expected, atol=1e-4, rtol=1e-4)  # memory layout changes conv rounding


def test_vq_training_forward_returns_losses_with_straight_through_gradient():
    vq = tiny_vq(entropy_loss_ratio=0.1).train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    rec, losses = vq(x)
    assert rec.shape == x.shape
    z = F.normalize(vq.quant_conv(vq.encoder(x)).permute(0, 2, 3, 1).reshape(-1, 8), dim=1)
    zq = F.normalize(vq.quantize.embedding.weight, dim=1)[vq.encode_to_codes(x).view(-1)]
    torch.testing.assert_close(losses.vq_loss, ((zq - z) ** 2).mean())
    torch.testing.assert_close(losses.commit_loss, 0.25 * ((zq - z) ** 2).mean())
    assert losses.entropy_loss.ndim == 0 and 0 < losses.codebook_usage <= 1
    (rec.mean() + losses.vq_loss + losses.commit_loss).backward()
    assert vq.encoder.conv_in.weight.grad is not None and vq.quantize.embedding.weight.grad is not None


def test_vq_eval_forward_has_no_losses():
    rec, losses = tiny_vq()(torch.zeros(1, 3, 16, 16))
    assert losses.vq_loss is None and losses.commit_loss is None


def test_attention_block_matches_explicit_softmax():
    torch.manual_seed(1)
    block = AttnBlock(32).eval()
    x = torch.randn(2, 32, 3, 4)
    h = block.norm(x)
    q, k, v = (m(h).reshape(2, 32, 12) for m in (block.q, block.k, block.v))
    w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(32), dim=2)
    y = torch.einsum("bcj,bij->bci", v, w).reshape(2, 32, 3, 4)
    torch.testing.assert_close(block(x), x + block.proj_out(y), atol=1e-5, rtol=1e-5)


def test_downsample_pads_right_and_bottom_only():
    down = Downsample(1)
    with torch.no_grad():
        down.conv.weight.zero_()
        down.conv.weight[0, 0, 2, 2] = 1.0  # picks the bottom-right tap of each 3x3 window
        down.conv.bias.zero_()
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # windows start at (0,0),(0,2),(2,0),(2,2); bottom-right taps (2,2),(2,4),(4,2),(4,4); row/col 4 is padding
    expected = torch.tensor([[10.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    torch.testing.assert_close(down(x), expected)
