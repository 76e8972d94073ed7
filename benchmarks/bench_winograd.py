"""Would Winograd convolutions make the torch Inception backend 1.5x TensorFlow on CPU? Measured per layer.

    python benchmarks/bench_winograd.py [--chunk 4] [--repeats 5] [--compile]

Both backends already run the direct float32 convolutions near the machine's ceiling (see bench_inception.py), so
only fewer FLOPs could buy 1.5x. Winograd F(4x4, 3x3) (Lavin & Gray, 2016) computes a 4x4 output tile from a 6x6
input tile with 36 multiplies per channel pair instead of 144: it turns each 3x3 stride-1 layer (36% of the graph's
FLOPs) into an input transform, 36 GEMMs of [tiles x C_in] @ [C_in x C_out], and an output transform.

For every 3x3 stride-1 layer of the graph at its real shape this script times, single-threaded on a chunk of
images as `TorchInception` runs them: oneDNN's direct convolution (what the backend uses), the Winograd
convolution (transforms as slice arithmetic; `--compile` fuses them with torch.compile), and its GEMMs alone; it
prints the error of both against a float64 convolution, and the whole-network speed-up the Winograd layers would
give, measured against the network's own forward time in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench.inception.network import ConvBNReLU, InceptionV3, tf_same_pads

# F(4x4, 3x3) with interpolation points 0, +-1, +-2, infinity: Y = AT [(G g G^T) * (BT d B)] A.
BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
      [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
TILE, WINDOW = 4, 6  # output tile, input tile


def combine(terms: list[torch.Tensor], coefficients: list[float]) -> torch.Tensor:
    """sum_i c_i * t_i over the non-zero coefficients (the transforms are sparse with small integers)."""
    out = None
    for c, t in zip(coefficients, terms):
        if c:
            t = t if c == 1 else -t if c == -1 else t * float(c)
            out = t if out is None else out + t
    return out


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """[C_out, C_in, 3, 3] -> [36, C_in, C_out]: G g G^T per channel pair, computed in float64."""
    g = torch.tensor(G, dtype=torch.float64)
    u = torch.einsum("ai,oij,bj->abo", g, weight.double().flatten(0, 1), g)
    return u.reshape(36, *weight.shape[:2]).transpose(1, 2).float().contiguous()


def transform_input(x: torch.Tensor, tiles_h: int, tiles_w: int) -> torch.Tensor:
    """Padded NHWC input -> [36, tiles, C]: BT d B on every overlapping 6x6 window (stride 4)."""
    rows = [x[:, i:i + TILE * tiles_h:TILE] for i in range(WINDOW)]
    by_rows = [combine(rows, BT[p]) for p in range(WINDOW)]
    out = []
    for r in by_rows:
        cols = [r[:, :, j:j + TILE * tiles_w:TILE] for j in range(WINDOW)]
        out += [combine(cols, BT[q]) for q in range(WINDOW)]
    return torch.stack(out).reshape(36, -1, x.shape[-1])


def transform_output(m: torch.Tensor, shape: tuple[int, int, int], bias: torch.Tensor) -> torch.Tensor:
    """[36, tiles, C_out] -> NHWC relu(AT m A + bias), 4x4 output tiles laid side by side."""
    n, tiles_h, tiles_w = shape
    m = m.view(WINDOW, WINDOW, n, tiles_h, tiles_w, -1)
    by_rows = [combine(list(m), AT[p]) for p in range(TILE)]
    y = torch.stack([torch.stack([combine(list(r), AT[q]) for q in range(TILE)], 3) for r in by_rows], 2)
    return torch.relu(y.reshape(n, tiles_h * TILE, tiles_w * TILE, -1) + bias)


def winograd_conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor, pads: tuple[int, int, int, int],
                     transforms=(transform_input, transform_output)) -> torch.Tensor:
    """relu(conv3x3(x) + bias), stride 1, on NHWC `x` with explicit (top, bottom, left, right) zero padding."""
    n, h, w, _ = x.shape
    top, bottom, left, right = pads
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    tiles_h, tiles_w = -(-out_h // TILE), -(-out_w // TILE)
    x = F.pad(x, (0, 0, left, tiles_w * TILE + 2 - w - left, top, tiles_h * TILE + 2 - h - top))
    forward, backward = transforms
    y = backward(torch.bmm(forward(x, tiles_h, tiles_w), u), (n, tiles_h, tiles_w), bias)
    return y[:, :out_h, :out_w]


def layers_3x3(chunk: int) -> list[tuple[str, tuple[int, ...], int, tuple[int, int, int, int]]]:
    """(name, NCHW input shape, C_out, pads) of every 3x3 stride-1 convolution, found on the meta device."""
    found = []

    def record(layer, inputs, _out):
        x = inputs[0]
        if tuple(layer.weight.shape[2:]) == (3, 3) and layer.stride == 1:
            pads = (0, 0, 0, 0) if layer.padding == "VALID" else (*tf_same_pads(x.shape[2], 3, 1),
                                                                    *tf_same_pads(x.shape[3], 3, 1))
            found.append((layer.name, (chunk, *x.shape[1:]), layer.weight.shape[0], pads))

    net = InceptionV3().to("meta")
    for layer in net.modules():
        if isinstance(layer, ConvBNReLU):
            layer.register_forward_hook(record)
    net(torch.empty(1, 3, 299, 299, device="meta"))
    return found


def best_time(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunk", type=int, default=4, help="images per forward, as TorchInception.cpu_chunk")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="fuse each transform into one kernel (torch.compile)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # TorchInception runs one single-threaded worker per core
    torch.manual_seed(0)
    transforms = ((torch.compile(transform_input, dynamic=False), torch.compile(transform_output, dynamic=False))
                  if args.compile else (transform_input, transform_output))

    net = InceptionV3().eval().to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    with torch.inference_mode():
        images = torch.rand(args.chunk, 3, 256, 256).mul(255).contiguous(memory_format=torch.channels_last)
        network = best_time(lambda: net(images), args.repeats)

        print(f"chunk {args.chunk}, 1 thread, best of {args.repeats}, transforms "
              f"{'compiled' if args.compile else 'eager'}; whole network {network * 1e3:.0f} ms")
        print(f"{'layer':28s} {'input':>16s} {'C_out':>5s} {'direct ms':>9s} {'winograd':>9s} {'GEMMs':>7s} "
              f"{'speed-up':>8s} {'err direct':>10s} {'err wino':>9s}")
        direct_total = winograd_total = best_total = 0.0
        for name, shape, c_out, pads in layers_3x3(args.chunk):
            x = torch.rand(shape)
            weight, bias = torch.randn(c_out, shape[1], 3, 3) / (3 * shape[1] ** 0.5), torch.randn(c_out) * 0.1
            top, bottom, left, right = pads  # a 3x3 stride-1 layer pads symmetrically: conv2d's own padding
            x_cl = x.contiguous(memory_format=torch.channels_last)
            x_nhwc, u = x.permute(0, 2, 3, 1).contiguous(), transform_weight(weight)

            def direct():
                return F.relu(F.conv2d(x_cl, weight, bias, padding=(top, left)))

            def winograd():
                return winograd_conv3x3(x_nhwc, u, bias, pads, transforms)

            exact = F.relu(F.conv2d(F.pad(x.double(), (left, right, top, bottom)), weight.double(), bias.double()))
            scale = exact.abs().max()
            err_direct = ((direct().double() - exact).abs().max() / scale).item()
            err_winograd = ((winograd().permute(0, 3, 1, 2).double() - exact).abs().max() / scale).item()
            v = transform_input(F.pad(x_nhwc, (0, 0, 0, 6, 0, 6)), -(-shape[2] // TILE), -(-shape[3] // TILE))
            t_direct, t_winograd = best_time(direct, args.repeats), best_time(winograd, args.repeats)
            t_gemm = best_time(lambda: torch.bmm(v, u), args.repeats)
            direct_total, winograd_total = direct_total + t_direct, winograd_total + t_winograd
            best_total += min(t_direct, t_winograd)
            print(f"{name:28s} {str(tuple(shape[1:])):>16s} {c_out:5d} {t_direct * 1e3:9.1f} {t_winograd * 1e3:9.1f} "
                  f"{t_gemm * 1e3:7.1f} {t_direct / t_winograd:7.2f}x {err_direct:10.1e} {err_winograd:9.1e}")

    print(f"3x3 stride-1 layers: direct {direct_total * 1e3:.0f} ms = {direct_total / network:.0%} of the network, "
          f"winograd {winograd_total * 1e3:.0f} ms ({direct_total / winograd_total:.2f}x)")
    print(f"whole network, every 3x3 layer Winograd: {network / (network - direct_total + winograd_total):.2f}x; "
          f"Winograd only where it wins: {network / (network - direct_total + best_total):.2f}x "
          "(1.5x the TF backend needs about 1.6x; see bench_inception.py)")


if __name__ == "__main__":
    main()
