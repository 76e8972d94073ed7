"""PSNR and SSIM against scikit-image itself, image by image."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bench.errors import BenchError
from bench.metrics import psnr, ssim


def noisy_pairs(rng, n, h, w, dtype):
    """Images and distorted copies; uint8 on 0..255, floats on [0, 1]."""
    a = rng.random((n, h, w, 3))
    b = np.clip(a + rng.normal(0, 0.08, a.shape) + 0.03 * np.sin(np.arange(w) / 3.0)[None, None, :, None], 0, 1)
    if dtype == np.uint8:
        return (a * 255).round().astype(np.uint8), (b * 255).round().astype(np.uint8)
    return a.astype(dtype), b.astype(dtype)


def skimage_ssim(a, b, data_range, **kwargs):
    return np.array(
        [structural_similarity(x, y, data_range=data_range, channel_axis=-1, **kwargs) for x, y in zip(a, b)]
    )


@pytest.mark.parametrize("dtype,data_range", [(np.uint8, 255), (np.float64, 1.0), (np.float64, 2.0)])
def test_psnr_and_ssim_match_skimage(dtype, data_range):
    a, b = noisy_pairs(np.random.default_rng(0), 3, 33, 40, dtype)
    expected_psnr = [peak_signal_noise_ratio(x, y, data_range=data_range) for x, y in zip(a, b)]
    np.testing.assert_allclose(psnr(a, b, data_range), expected_psnr, rtol=1e-12)
    np.testing.assert_allclose(ssim(a, b, data_range), skimage_ssim(a, b, data_range), rtol=1e-10, atol=1e-12)


def test_ssim_options_match_skimage():
    a, b = noisy_pairs(np.random.default_rng(1), 2, 30, 28, np.float64)
    for kwargs in [
        {"gaussian_weights": True},
        {"gaussian_weights": True, "sigma": 1.0, "use_sample_covariance": False},
        {"win_size": 5},
        {"win_size": 9, "K1": 0.02, "K2": 0.05, "use_sample_covariance": False},
    ]:
        np.testing.assert_allclose(ssim(a, b, 1.0, **kwargs), skimage_ssim(a, b, 1.0, **kwargs), rtol=1e-10)


def test_float32_and_torch_inputs_and_single_images():
    a, b = noisy_pairs(np.random.default_rng(2), 2, 20, 24, np.float32)
    # skimage keeps float32 arithmetic for float32 images; this module uses float64.
    np.testing.assert_allclose(ssim(torch.from_numpy(a), torch.from_numpy(b), 1.0), skimage_ssim(a, b, 1.0), rtol=1e-5)
    single = ssim(a[0], b[0], 1.0)
    assert isinstance(single, float)
    assert single == pytest.approx(structural_similarity(a[0], b[0], data_range=1.0, channel_axis=-1), rel=1e-5)
    assert psnr(a[1], b[1], 1.0) == pytest.approx(peak_signal_noise_ratio(a[1], b[1], data_range=1.0), rel=1e-6)
    assert psnr(a, a, 1.0).tolist() == [np.inf, np.inf]
    assert ssim(a, a, 1.0) == pytest.approx([1.0, 1.0])


def test_llamagen_data_range_convention_changes_ssim():
    a, b = noisy_pairs(np.random.default_rng(3), 1, 16, 16, np.float64)
    assert ssim(a, b, 2.0)[0] > ssim(a, b, 1.0)[0]  # larger constants C1, C2 inflate SSIM


def test_bad_images_raise():
    a = np.zeros((2, 16, 16, 3))
    with pytest.raises(BenchError, match="differ in shape"):
        ssim(a, a[:1], 1.0)
    with pytest.raises(BenchError, match="smaller than the 7x7"):
        ssim(a[:, :5], a[:, :5], 1.0)
    with pytest.raises(BenchError, match="data_range"):
        psnr(a, a, 0)
    with pytest.raises(BenchError, match=r"\[N, H, W, C\]"):
        psnr(a[0, 0], a[0, 0], 1.0)
    with pytest.raises(BenchError, match="odd"):
        ssim(a, a, 1.0, win_size=6)


def test_layouts_that_would_be_misread_are_refused():
    from bench.errors import BenchError
    from bench.metrics import psnr, ssim

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (16, 32, 32), dtype=np.uint8)  # a grayscale batch, not one 32-channel image
    with pytest.raises(BenchError, match="add a channel axis"):
        ssim(gray, gray, 255)
    nchw = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    with pytest.raises(BenchError, match="channels first"):
        psnr(nchw, nchw, 255)
