"""The multi-scale residual quantizer, against computations written out here: which Phi each scale uses (by
hand), f_hat as the sum of the upsampled, Phi-refined embeddings of the token maps (an independent loop), the
teacher-forcing inputs as area-downsampled partial sums, and f_hat approaching f as scales are added."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from generators.var.vqvae import PATCH_NUMS, VQVAE, MultiScaleQuantizer, SharedPhi, VQVAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_phi_index_by_hand():
    """4 convs: ticks 1/12, 13/36, 23/36, 11/12 against si/9. Scale 2 (2/9) lies exactly between the first two
    ticks; the official numpy float64 arithmetic resolves it to conv 0. 2 convs: ticks 1/4, 3/4."""
    assert [SharedPhi(4, 0.5, 4).index(si, 10) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert [SharedPhi(4, 0.5, 2).index(si, 10) for si in range(10)] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]


@pytest.fixture(scope="module")
def quantizer() -> MultiScaleQuantizer:
    torch.manual_seed(0)
    q = MultiScaleQuantizer(VQVAEConfig(vocab_size=256, Cvae=4, ch=32)).eval()
    with torch.no_grad():
        q.embedding.weight.normal_(0, 0.7)
    return q


@pytest.fixture(scope="module")
def latent() -> torch.Tensor:
    torch.manual_seed(1)
    return F.interpolate(torch.randn(2, 4, 4, 4), size=(16, 16), mode="bicubic") + 0.3 * torch.randn(2, 4, 16, 16)


def written_out_fhat(q: MultiScaleQuantizer, scales: list[torch.Tensor]) -> torch.Tensor:
    """sum_k Phi_k(bicubic_up(embed(r_k))), Phi(h) = 0.5 h + 0.5 conv3x3(h), the last scale not resampled."""
    phi_of_scale = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    total = 0
    for si, (idx, pn) in enumerate(zip(scales, PATCH_NUMS)):
        h = q.embedding.weight[idx].view(idx.shape[0], pn, pn, -1).permute(0, 3, 1, 2)
        if pn != 16:
            h = F.interpolate(h, size=(16, 16), mode="bicubic", align_corners=False)
        conv = q.quant_resi.qresi_ls[phi_of_scale[si]]
        total = total + 0.5 * h + 0.5 * F.conv2d(h, conv.weight, conv.bias, padding=1)
    return total


def test_fhat_is_the_sum_of_the_scale_terms(quantizer, latent):
    with torch.no_grad():
        scales = quantizer.encode(latent)
        running = quantizer.encode(latent, return_fhat=True)
        expected = written_out_fhat(quantizer, scales)
        torch.testing.assert_close(quantizer.decode_fhat(scales), expected, rtol=1e-5, atol=1e-5)
        # the encoder's running f_hat is the same sum: the decoder needs the token maps only
        torch.testing.assert_close(running[-1], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(running[3], written_out_fhat(quantizer, scales[:4]), rtol=1e-5, atol=1e-5)


def test_each_scale_codes_the_downsampled_residual(quantizer, latent):
    """Scale k's codes are the nearest codes (brute force) to area_down(f - f_hat_{k-1})."""
    with torch.no_grad():
        scales = quantizer.encode(latent)
        for k in (0, 4, 9):
            rest = latent - written_out_fhat(quantizer, scales[:k]) if k else latent
            pn = PATCH_NUMS[k]
            rest = F.adaptive_avg_pool2d(rest, pn).permute(0, 2, 3, 1).reshape(-1, 4)
            nearest = torch.cdist(rest.double(), quantizer.embedding.weight.double()).argmin(1)
            assert torch.equal(scales[k].reshape(-1), nearest)


def test_teacher_forcing_input_is_the_downsampled_partial_sum(quantizer, latent):
    with torch.no_grad():
        scales = quantizer.encode(latent)
        x = quantizer.teacher_forcing_input(scales)
        assert x.shape == (2, 680 - 1, 4)
        begin = sum(pn * pn for pn in PATCH_NUMS[1:6])  # offset of scale 6 in the input (scale 0 has none)
        partial = F.adaptive_avg_pool2d(written_out_fhat(quantizer, scales[:6]), PATCH_NUMS[6])
        torch.testing.assert_close(x[:, begin:begin + 64], partial.flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)
        # given the first k maps only, the inputs of scales 1..k
        torch.testing.assert_close(quantizer.teacher_forcing_input(scales[:3]), x[:, :4 + 9 + 16])


@pytest.mark.parametrize("identity_phi", [True, False])
def test_fhat_approaches_f_as_scales_are_added(quantizer, latent, identity_phi):
    q = MultiScaleQuantizer(quantizer.config).eval()
    q.load_state_dict(quantizer.state_dict())
    if identity_phi:
        with torch.no_grad():
            for conv in q.quant_resi.qresi_ls:
                conv.weight.zero_()
                conv.bias.zero_()
                conv.weight[:, :, 1, 1] = torch.eye(4)
    with torch.no_grad():
        errors = [float((latent - f_hat).norm() / latent.norm()) for f_hat in q.encode(latent, return_fhat=True)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.25 * errors[0], errors


def test_vqvae_roundtrip_shapes_and_clamp():
    torch.manual_seed(0)
    vae = VQVAE(VQVAEConfig(vocab_size=32, Cvae=4, ch=32)).eval()
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    scales = vae.img_to_idx(x)
    assert [s.shape[1] for s in scales] == [pn * pn for pn in PATCH_NUMS]
    with torch.no_grad():
        raw = vae.decoder(vae.post_quant_conv(vae.quantize.decode_fhat(scales)))
    torch.testing.assert_close(vae.idx_to_img(scales), raw.clamp(-1, 1))
