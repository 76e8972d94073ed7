"""LlamaGen tokenizer losses: GAN losses against hand-worked values, LPIPS against a from-scratch computation
with random weights in the published file layouts, the PatchGAN layout, and the disc_start schedule."""

import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from generators.llamagen.discriminator import DiscriminatorConfig, PatchGANDiscriminator
from generators.llamagen.losses import (TokenizerLoss, TokenizerLossConfig, adaptive_weight, disc_weight_at,
                                        hinge_d_loss, hinge_gen_loss, non_saturating_d_loss, non_saturating_gen_loss,
                                        vanilla_d_loss)
import generators.llamagen.lpips
from bench.errors import ChecksumError
from generators.llamagen.lpips import load_lpips

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.0, 1.0])


def test_hinge_losses_hand_worked():
    # relu(1 - real) = [0, 0.5, 2] -> mean 5/6; relu(1 + fake) = [0, 1, 2] -> mean 1; D loss = (5/6 + 1) / 2
    assert hinge_d_loss(REAL, FAKE).item() == pytest.approx((5 / 6 + 1) / 2)
    assert hinge_gen_loss(FAKE).item() == pytest.approx(1 / 3)  # -mean([-2, 0, 1])


def test_log_losses_hand_worked():
    sp = lambda x: math.log1p(math.exp(x))  # softplus
    expected_d = 0.5 * (sum(sp(-r) for r in REAL.tolist()) / 3 + sum(sp(f) for f in FAKE.tolist()) / 3)
    assert vanilla_d_loss(REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-6)
    assert non_saturating_d_loss(REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-6)
    assert non_saturating_gen_loss(FAKE).item() == pytest.approx(sum(sp(-f) for f in FAKE.tolist()) / 3, rel=1e-6)


def test_disc_weight_schedule():
    assert [disc_weight_at(s, 3, 0.5) for s in (1, 2, 3, 4)] == [0.0, 0.0, 0.5, 0.5]


def test_adaptive_weight_is_gradient_norm_ratio():
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    nll = (w * torch.tensor([[1.0, 1.0], [1.0, 1.0]])).sum()  # grad = ones -> norm 2
    gan = 3.0 * w.sum()  # grad = 3 * ones -> norm 6
    assert adaptive_weight(nll, gan, w).item() == pytest.approx(2 / (6 + 1e-4))


# ------------------------------------------------------------------------------------------------------------
# PatchGAN


def test_patchgan_layout_and_patch_grid():
    disc = PatchGANDiscriminator(DiscriminatorConfig(ndf=8, n_layers=3))
    shapes = {k: tuple(v.shape) for k, v in disc.state_dict().items() if not k.endswith("num_batches_tracked")}
    # LlamaGen / taming NLayerDiscriminator keys: conv(bias) lrelu [conv bn lrelu] x2, conv bn lrelu, conv(bias)
    expected = {
        "main.0.weight": (8, 3, 4, 4), "main.0.bias": (8,),
        "main.2.weight": (16, 8, 4, 4), "main.5.weight": (32, 16, 4, 4), "main.8.weight": (64, 32, 4, 4),
        "main.11.weight": (1, 64, 4, 4), "main.11.bias": (1,),
    }
    for bn, ch in (("main.3", 16), ("main.6", 32), ("main.9", 64)):
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            expected[f"{bn}.{suffix}"] = (ch,)
    assert shapes == expected
    # pix2pix's 70x70 PatchGAN: 256 -> 128 -> 64 -> 32 -> 31 -> 30 patch logits
    assert disc(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)


# ------------------------------------------------------------------------------------------------------------
# LPIPS

VGG_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
             (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]
TAPS = {2: 0, 7: 1, 14: 2, 21: 3, 28: 4}  # conv index whose ReLU output is LPIPS feature k
POOL_BEFORE = {5, 10, 17, 24}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Random weights saved as torchvision's vgg16 file (features.*, plus classifier keys) and LPIPS's vgg.pth."""
    tmp_path = tmp_path_factory.mktemp("lpips")
    g = torch.Generator().manual_seed(0)
    vgg = {}
    for idx, cin, cout in VGG_CONVS:
        vgg[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * math.sqrt(2 / (9 * cin))
        vgg[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.1
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # present in the real file, ignored by LPIPS
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
             for k, c in enumerate([64, 128, 256, 512, 512])}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(heads, tmp_path / "vgg.pth")
    return tmp_path, vgg, heads


def _lpips_by_hand(x, y, vgg, heads):
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def features(img):
        h, taps = (img - shift) / scale, {}
        for idx, _, _ in VGG_CONVS:
            if idx in POOL_BEFORE:
                h = F.max_pool2d(h, 2)
            h = F.relu(F.conv2d(h, vgg[f"features.{idx}.weight"], vgg[f"features.{idx}.bias"], padding=1))
            if idx in TAPS:
                taps[TAPS[idx]] = h
        return taps

    fx, fy = features(x), features(y)
    total = torch.zeros(x.shape[0])
    for k in range(5):
        nx = fx[k] / (fx[k].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = fy[k] / (fy[k].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = heads[f"lin{k}.model.1.weight"].view(-1)
        total += torch.einsum("bchw,c->bhw", (nx - ny) ** 2, w).mean(dim=(1, 2))
    return total


def test_lpips_matches_hand_computation_with_published_layouts(published, pin):
    tmp_path, vgg, heads = published
    pin(generators.llamagen.lpips, "LPIPS_HEADS", tmp_path / "vgg.pth")
    pin(generators.llamagen.lpips, "VGG16_WEIGHTS", tmp_path / "vgg16.pth")
    lpips = load_lpips(tmp_path / "vgg.pth", tmp_path / "vgg16.pth", allow_download=False)
    assert "net.slice1.0.weight" in lpips.state_dict() and "net.slice5.28.bias" in lpips.state_dict()
    torch.manual_seed(1)
    x = torch.rand(2, 3, 16, 16) * 2 - 1  # 16 px: the smallest size that survives VGG's four poolings
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    lpips.train()  # must stay in eval mode: the heads' dropout would otherwise fire
    got = lpips(x, y)
    assert got.shape == (2, 1, 1, 1)
    torch.testing.assert_close(got.view(-1), _lpips_by_hand(x, y, vgg, heads), rtol=1e-4, atol=1e-6)
    assert lpips(x, x).abs().max().item() == 0.0
    assert not any(p.requires_grad for p in lpips.parameters())


def test_lpips_files_that_are_not_the_published_ones_are_refused_and_kept(published):
    tmp_path = published[0]
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        load_lpips(tmp_path / "vgg.pth", tmp_path / "vgg16.pth", allow_download=False)
    assert (tmp_path / "vgg.pth").exists()  # a user's file is never deleted


def test_lpips_missing_weights_warns_and_returns_none():
    with pytest.warns(RuntimeWarning, match="WITHOUT the perceptual loss"):
        assert load_lpips(allow_download=False) is None


def test_lpips_incomplete_or_explicitly_missing_weights_are_errors(published, tmp_path, pin):
    weights_dir = published[0]
    pin(generators.llamagen.lpips, "VGG16_WEIGHTS", weights_dir / "vgg16.pth")
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(BenchError, match="incomplete"):
        load_lpips(tmp_path / "partial.pth", weights_dir / "vgg16.pth", allow_download=False)
    with pytest.raises(BenchError):
        load_lpips(tmp_path / "nope.pth", weights_dir / "vgg16.pth", allow_download=False)


# ------------------------------------------------------------------------------------------------------------
# The combined tokenizer loss


def _loss_fn(**kw):
    torch.manual_seed(0)
    return TokenizerLoss(TokenizerLossConfig(disc_start=3, disc_weight=0.5, disc_dim=8, disc_num_layers=2,
                                             perceptual_weight=0.0, **kw), lpips=None)


def test_generator_loss_before_and_after_disc_start():
    loss_fn = _loss_fn()
    torch.manual_seed(1)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    rec = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
    codebook = torch.tensor(0.25)
    mse = ((rec - x) ** 2).mean()

    before, logs = loss_fn.generator_loss(x, rec, codebook, step=2)
    assert before.item() == pytest.approx((mse + codebook).item(), rel=1e-6)
    assert logs["disc_weight"] == 0.0

    after, logs = loss_fn.generator_loss(x, rec, codebook, step=3)
    with torch.no_grad():
        d_out = loss_fn.discriminator(rec)  # train-mode BN, as in the loss
    assert after.item() == pytest.approx((mse + codebook - 0.5 * d_out.mean()).item(), rel=1e-5)
    after.backward()
    assert rec.grad is not None
    assert all(p.grad is None for p in loss_fn.discriminator.parameters())  # D is not trained by this loss


def test_discriminator_loss_schedule_and_value():
    loss_fn = _loss_fn()
    torch.manual_seed(2)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    rec = x.flip(-1).requires_grad_(True)
    before, _ = loss_fn.discriminator_loss(x, rec, step=2)
    assert before.item() == 0.0
    after, _ = loss_fn.discriminator_loss(x, rec, step=3)
    with torch.no_grad():
        real, fake = loss_fn.discriminator(x), loss_fn.discriminator(rec)
    expected = 0.5 * 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
    assert after.item() == pytest.approx(expected.item(), rel=1e-5)
    after.backward()
    assert rec.grad is None  # reconstructions are detached: D's loss never trains the tokenizer
