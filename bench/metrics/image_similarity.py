"""PSNR and SSIM of reconstructions, matching scikit-image's `peak_signal_noise_ratio` and
`structural_similarity(channel_axis=-1)`, batched over images.

Images are channel-last, [H, W, C] or [N, H, W, C] (the generators' uint8 NHWC); one value per image.
All arithmetic is float64 (scikit-image uses float64 for integer images and the input's own precision for
float32 ones, so float32 input agrees to ~1e-6 rather than ~1e-12).

SSIM conventions (scikit-image defaults): per-channel 2-D SSIM averaged over channels; a 7x7 uniform window
(or, with gaussian_weights, a sigma=1.5 Gaussian truncated at 3.5 sigma, i.e. 11x11); local variances and
covariance scaled by NP / (NP - 1) (use_sample_covariance, NP = win_size^2); C1 = (K1 R)^2, C2 = (K2 R)^2
with R = data_range; the SSIM map is cropped by (win_size - 1) / 2 on every side before averaging. Since the
crop removes exactly the pixels whose window touches the border, the filter's border mode never matters and
a 'valid' pooling is exact.

`data_range` is required: LlamaGen's own validation passes data_range=2.0 for [0, 1] images, so the harness
reports both conventions and must be able to ask for either.
"""

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.metrics._checks import as_numpy


def _as_batch(a, b) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """float64 NCHW tensors from two HWC/NHWC arrays of one shape; also whether the input was a single image."""
    a, b = as_numpy(a, "a"), as_numpy(b, "b")
    if a.shape != b.shape:
        raise BenchError(f"images differ in shape: {a.shape} and {b.shape}")
    if a.ndim not in (3, 4):
        raise BenchError(f"expected [H, W, C] or [N, H, W, C] images, found shape {a.shape}")
    if a.shape[-1] not in (1, 3, 4):
        hint = " (channels first? pass [N, H, W, C])" if a.ndim == 4 and a.shape[1] in (1, 3, 4) else \
            " (a grayscale batch? add a channel axis: images[..., None])" if a.ndim == 3 else ""
        raise BenchError(f"expected channels last (1, 3 or 4 of them), found shape {a.shape}{hint}")
    single = a.ndim == 3
    if single:
        a, b = a[None], b[None]
    to_nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64).permute(0, 3, 1, 2)
    return to_nchw(a), to_nchw(b), single


def _check_data_range(data_range: float) -> float:
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise BenchError(f"data_range must be a positive number (max - min of the pixel scale), found {data_range}")
    return data_range


def _result(values: torch.Tensor, single: bool) -> float | np.ndarray:
    values = values.numpy()
    return float(values[0]) if single else values


def psnr(a, b, data_range: float) -> float | np.ndarray:
    """10 log10(data_range^2 / MSE) per image, the MSE taken over all pixels and channels (inf if identical)."""
    data_range = _check_data_range(data_range)
    a, b, single = _as_batch(a, b)
    mse = ((a - b) ** 2).flatten(1).mean(dim=1)
    with np.errstate(divide="ignore"):
        return _result(10 * torch.log10(data_range**2 / mse), single)


def _gaussian_window(sigma: float, truncate: float = 3.5) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate * sigma + 0.5), weights normalised to sum 1."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(
    a,
    b,
    data_range: float,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    K1: float = 0.01,
    K2: float = 0.03,
    use_sample_covariance: bool = True,
) -> float | np.ndarray:
    """Mean SSIM per image over the cropped map and the channels (scikit-image's conventions and defaults)."""
    data_range = _check_data_range(data_range)
    a, b, single = _as_batch(a, b)
    n, c, h, w = a.shape
    if gaussian_weights:
        window_1d = _gaussian_window(sigma)
        win_size = len(window_1d)
    else:
        win_size = 7 if win_size is None else win_size
        window_1d = torch.full((win_size,), 1.0 / win_size, dtype=torch.float64)
    if win_size % 2 != 1 or win_size < 1:
        raise BenchError(f"win_size must be a positive odd number, found {win_size}")
    if h < win_size or w < win_size:
        raise BenchError(f"images of {h}x{w} pixels are smaller than the {win_size}x{win_size} SSIM window")

    # Separable 'valid' filtering of the five moment images of every channel at once.
    kernel_h = window_1d.view(1, 1, -1, 1)
    kernel_w = window_1d.view(1, 1, 1, -1)
    planes = torch.stack([a, b, a * a, b * b, a * b], dim=2).reshape(-1, 1, h, w)
    means = F.conv2d(F.conv2d(planes, kernel_h), kernel_w).reshape(n, c, 5, h - win_size + 1, w - win_size + 1)
    ux, uy, uxx, uyy, uxy = means.unbind(dim=2)

    np_ = win_size**2
    cov_norm = np_ / (np_ - 1) if use_sample_covariance else 1.0
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return _result(s.flatten(2).mean(dim=2).mean(dim=1), single)
