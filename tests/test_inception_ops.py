"""Each TensorFlow convention of the FID graph, checked in isolation against TensorFlow's own ops."""

import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn.functional as F

from bench.inception.network import (
    ConvBNReLU,
    tf1_resize_bilinear,
    tf_pool,
    tf_same_pads,
)

torch.manual_seed(0)


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("in_hw,out_hw", [((256, 256), (299, 299)), ((64, 64), (299, 299)), ((512, 384), (299, 299)),
                                          ((299, 299), (299, 299)), ((7, 13), (299, 299)), ((300, 301), (17, 23))])
def test_tf1_resize_matches_tensorflow(in_hw, out_hw):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, *in_hw, 3)).astype(np.float32)  # uint8 values as float, as ADM feeds them
    expected = tf.compat.v1.image.resize_bilinear(images, out_hw, align_corners=False).numpy()
    ours = _nhwc(tf1_resize_bilinear(_nchw(images), *out_hw))
    assert ours.shape == expected.shape
    # Same float32 ops in the same order: bit-exact on the CPUs tried; allow one ulp at 255 for other FMA choices.
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5)


def test_tf1_resize_is_not_torch_interpolate():
    """F.interpolate(align_corners=False) samples at half-pixel centres; TF1 legacy does not."""
    images = np.random.default_rng(1).integers(0, 256, (1, 256, 256, 3)).astype(np.float32)
    expected = tf.compat.v1.image.resize_bilinear(images, (299, 299), align_corners=False).numpy()
    torch_default = _nhwc(F.interpolate(_nchw(images), size=(299, 299), mode="bilinear", align_corners=False))
    assert np.abs(torch_default - expected).max() > 10  # whole grey levels apart, not rounding


def test_tf1_resize_hand_worked():
    """2 -> 4 pixels: src = dst * 0.5 = 0, .5, 1, 1.5 -> 0, 5, 10, 10 (right edge clamps, no half-pixel shift)."""
    row = torch.tensor([[[[0.0, 10.0]]]])
    out = tf1_resize_bilinear(row.expand(1, 1, 1, 2), 1, 4)
    assert out.flatten().tolist() == [0.0, 5.0, 10.0, 10.0]


@pytest.mark.parametrize("size,kernel,stride", [(299, 3, 2), (147, 3, 1), (8, 3, 1), (17, 7, 1), (10, 3, 2),
                                                (9, 4, 2), (6, 2, 1), (5, 1, 2)])
def test_same_pads_match_tensorflow_output_and_values(size, kernel, stride):
    """TF SAME: output ceil(in/stride); the odd padding cell goes to the bottom/right. Checked via tf.nn.conv2d."""
    top, bottom = tf_same_pads(size, kernel, stride)
    assert bottom - top in (0, 1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, size, size + 1, 4)).astype(np.float32)
    w = rng.standard_normal((kernel, kernel, 4, 5)).astype(np.float32)  # HWIO
    expected = tf.nn.conv2d(x, w, strides=stride, padding="SAME").numpy()
    layer = ConvBNReLU("c", 4, 5, (kernel, kernel), stride, "SAME")
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w).permute(3, 2, 0, 1))
        layer.bias.zero_()
        ours = _nhwc(layer(_nchw(x)))
    assert ours.shape[1] == -(-size // stride)
    np.testing.assert_allclose(ours, np.maximum(expected, 0), rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("size,kernel,stride,padding", [(35, 3, 1, "SAME"), (8, 3, 1, "SAME"), (35, 3, 2, "VALID"),
                                                        (8, 8, 8, "VALID"), (10, 3, 2, "SAME"), (9, 2, 2, "SAME"),
                                                        (7, 4, 1, "SAME")])
def test_pools_match_tensorflow(kind, size, kernel, stride, padding):
    """SAME avg pools divide by the count of valid cells (count_include_pad=False); max pools pad with -inf."""
    x = np.random.default_rng(3).standard_normal((2, size, size + 2, 3)).astype(np.float32) - 2  # negative: -inf pad
    op = tf.nn.avg_pool2d if kind == "avg" else tf.nn.max_pool2d
    expected = op(x, ksize=kernel, strides=stride, padding=padding).numpy()
    ours = _nhwc(tf_pool(_nchw(x), kind, kernel, stride, padding))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6)


def test_avg_pool_same_excludes_padding():
    """Hand-worked corner: a 3x3 SAME average at (0, 0) of a ones-with-a-9 grid sees 4 cells, not 9."""
    x = torch.ones(1, 1, 4, 4)
    x[0, 0, 0, 0] = 9.0
    assert tf_pool(x, "avg", 3, 1, "SAME")[0, 0, 0, 0].item() == pytest.approx((9 + 1 + 1 + 1) / 4)


def test_batchnorm_folding_matches_tf_batch_normalization():
    """conv with folded BN == TF conv2d followed by (x - mean) / sqrt(var + 0.001) * gamma + beta, then ReLU."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 9, 9, 6)).astype(np.float32)
    w = rng.standard_normal((3, 3, 6, 8)).astype(np.float32)
    mean, beta, gamma = (rng.standard_normal(8).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.01, 2, 8).astype(np.float32)
    expected = tf.nn.relu(tf.nn.batch_normalization(tf.nn.conv2d(x, w, 1, "SAME"), mean, var, beta, gamma, 0.001))
    layer = ConvBNReLU("c", 6, 8, (3, 3))
    tensors = {"c.weight": torch.from_numpy(w).permute(3, 2, 0, 1), "c.mean": torch.from_numpy(mean),
               "c.var": torch.from_numpy(var), "c.beta": torch.from_numpy(beta), "c.gamma": torch.from_numpy(gamma)}
    with torch.no_grad():
        layer.load_folded(tensors, 0.001)
        ours = _nhwc(layer(_nchw(x)))
    np.testing.assert_allclose(ours, expected.numpy(), rtol=0, atol=2e-5)


def test_torchscript_uses_eps_0001_and_no_gamma():
    """The bundled TorchScript's conv block calls batch_norm(x, mean, var, None, beta, ..., eps=0.001)."""
    from bench.inception.weights import bundled_torchscript

    code = torch.jit.load(str(bundled_torchscript())).net.layers.conv.code
    assert "0.001" in code and "None, beta" in code
