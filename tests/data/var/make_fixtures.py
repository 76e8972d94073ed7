"""Make tests/data/var/expected.npz and layouts.json by running the OFFICIAL VAR code on seeded random weights.

Not run in CI; run it again only to regenerate the fixtures (see tests/test_var_official.py for what they check):

    git -C /path/to/VAR checkout 78b9539        # github.com/FoundationVision/VAR, the commit the port follows
    python tests/data/var/make_fixtures.py /path/to/VAR

The official repository is imported from the path given (its `models/` and `dist.py`; it needs only torch, numpy
and huggingface_hub); nothing of it is copied here. Weights: `tests/var_common.seeded_state`, a function of each
key's name and shape, so the tests rebuild the same numbers for the port from its own state dict. The small
models: VQVAE vocab 64, Cvae 8, ch 160 -> 32 (patch_nums as released), VAR depth 2 (width 128, 2 heads), 10
classes, attn_l2_norm True, shared_aln False. Decisions the tests compare exactly (nearest codes, greedy
tokens) are checked here to have a margin far above float rounding, so the fixtures hold on any CPU.

Contents of expected.npz:
  images_seed            the seed of tests/var_common.sample_images(2) (the encoder's input): the first whose every
                         nearest-code decision has a margin > 1e-3
  enc_tokens             int16 [2, 680]: `vae.img_to_idxBl(images)`, the 10 maps concatenated
  enc_margin             the smallest gap (squared distance) between the nearest and second-nearest code
  phi_index              int [10]: which of the 4 Phi convs each scale uses (`quant_resi[si / 9]`)
  fhat                   float32 [2, 8, 16, 16]: `quantize.embed_to_fhat(..., all_to_max_scale=True, last_one=True)`
  dec_pixels             float32 [2, 3, 16, 16]: `idxBl_to_img(enc_tokens, same_shape=True, last_one=True)`,
                         every 16th pixel
  dec_mean               float64 [2, 3]: the full decoded image's channel means
  tf_labels              int [2]; tf_positions int [P]; tf_logits float32 [2, P, 64]: the official forward
                         (cond_drop_rate 0) on `idxBl_to_var_input(enc_tokens)` at P positions;
                         tf_lse float32 [2, 680]: logsumexp of the logits at every position
  greedy_labels          int [G, 2]; greedy_cfg float [G]; greedy_tokens int16 [G, 2, 680]: `autoregressive_infer_cfg(
                         B=2, label_B, cfg, top_k=1, top_p=0)`; greedy_margin [G]: the smallest top-1/top-2 gap of
                         the guided logits (> 2e-4: per cfg, the first label pair with such margins);
                         greedy_pixels float32 [G, 2, 3, 8, 8]: the returned image ([0, 1]), every 32nd pixel
  sample_*               B=1 draws: sample_label, sample_seed, sample_cfg, sample_top_k, sample_top_p [N] and
                         sample_tokens int16 [N, 680] from `autoregressive_infer_cfg(B=1, g_seed=seed, ...)`
layouts.json: key layouts (tests/var_common.layout) of the small models and of the released architectures
(VQVAE ch 160, VAR d16/d20/d24/d30; with the VARs' parameter counts), and the small VAR's key -> shape list.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/: var_common
from var_common import SMALL_VAE, SMALL_VAR, key_shapes, layout, sample_images, seeded_state  # noqa: E402

PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
MIN_MARGIN = 1e-3  # squared code distances are O(10): float32 rounds them by ~1e-5
MIN_LOGIT_MARGIN = 2e-4  # logits are O(1): float32 rounds them by ~1e-6, across CPU kinds too


def official_small(models):
    vae = models.VQVAE(vocab_size=SMALL_VAE["vocab_size"], z_channels=SMALL_VAE["Cvae"], ch=SMALL_VAE["ch"],
                       test_mode=True, share_quant_resi=4, v_patch_nums=PATCH_NUMS)
    vae.load_state_dict(seeded_state(vae.state_dict()), strict=True)
    d = SMALL_VAR["depth"]
    var = models.VAR(vae_local=vae, num_classes=SMALL_VAR["num_classes"], depth=d, embed_dim=64 * d, num_heads=d,
                     drop_path_rate=0.0, norm_eps=1e-6, shared_aln=False, cond_drop_rate=0.0, attn_l2_norm=True,
                     patch_nums=PATCH_NUMS, flash_if_available=False, fused_if_available=False)
    var.load_state_dict(seeded_state(var.state_dict()), strict=True)
    return vae.eval(), var.eval()


def encoder_margin(vae, images) -> float:
    """Rerun the official residual quantisation, recording the best/second-best distance gap at every position."""
    import torch.nn.functional as F

    q = vae.quantize
    f = vae.quant_conv(vae.encoder(images))
    B, C, H, W = f.shape
    f_rest, gaps = f.clone(), []
    for si, pn in enumerate(PATCH_NUMS):
        z = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != len(PATCH_NUMS) - 1 else f_rest
        z = z.permute(0, 2, 3, 1).reshape(-1, C)
        d = torch.cdist(z.double(), q.embedding.weight.double()) ** 2
        two = d.topk(2, largest=False).values
        gaps.append((two[:, 1] - two[:, 0]).min().item())
        idx = d.argmin(1).view(B, pn, pn)
        h = q.embedding(idx).permute(0, 3, 1, 2)
        if si != len(PATCH_NUMS) - 1:
            h = F.interpolate(h, size=(H, W), mode="bicubic")
        f_rest = f_rest - q.quant_resi[si / (len(PATCH_NUMS) - 1)](h.contiguous())
    return min(gaps)


def run_infer(var_module, var, B, labels, cfg, top_k, top_p, seed):
    """autoregressive_infer_cfg, recording the tokens of each scale and the top-1/top-2 gap of the logits."""
    original, tokens, gaps = var_module.sample_with_top_k_top_p_, [], []

    def recording(logits, **kw):
        two = logits.topk(2, dim=-1).values
        gaps.append((two[..., 0] - two[..., 1]).min().item())
        idx = original(logits, **kw)
        tokens.append(idx[:, :, 0].clone())
        return idx

    var_module.sample_with_top_k_top_p_ = recording
    try:
        image = var.autoregressive_infer_cfg(B=B, label_B=labels, g_seed=seed, cfg=cfg, top_k=top_k, top_p=top_p,
                                             more_smooth=False)
    finally:
        var_module.sample_with_top_k_top_p_ = original
    return torch.cat(tokens, dim=1), min(gaps), image


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("official", type=Path, help="a checkout of github.com/FoundationVision/VAR (78b9539)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    sys.path.insert(0, str(args.official.resolve()))
    import models
    import models.var as var_module

    torch.manual_seed(0)
    torch.set_num_threads(1)
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        vae, var = official_small(models)
        # the first image seed whose every nearest-code decision has a margin (most seeds do)
        seed = next(s for s in range(100) if encoder_margin(vae, sample_images(2, seed=s)) > MIN_MARGIN)
        images = sample_images(2, seed=seed)
        enc = vae.img_to_idxBl(images)
        out["images_seed"] = np.array(seed)
        out["enc_tokens"] = torch.cat(enc, 1).to(torch.int16).numpy()
        out["enc_margin"] = np.array(encoder_margin(vae, images))
        out["phi_index"] = np.array([list(vae.quantize.quant_resi.qresi_ls).index(vae.quantize.quant_resi[si / 9])
                                     for si in range(10)])
        ms_h = [vae.quantize.embedding(idx).transpose(1, 2).view(2, SMALL_VAE["Cvae"], pn, pn)
                for idx, pn in zip(enc, PATCH_NUMS)]
        out["fhat"] = vae.quantize.embed_to_fhat(ms_h, all_to_max_scale=True, last_one=True).numpy()
        decoded = vae.idxBl_to_img(enc, same_shape=True, last_one=True)
        out["dec_pixels"] = decoded[..., ::16, ::16].numpy()
        out["dec_mean"] = decoded.double().mean((2, 3)).numpy()

        labels = torch.tensor([3, 7])
        out["tf_labels"] = labels.numpy()
        logits = var(labels, vae.quantize.idxBl_to_var_input(enc))
        begins = np.cumsum([0] + [pn * pn for pn in PATCH_NUMS])[:-1]
        positions = np.unique(np.concatenate([begins, begins + 1, np.arange(0, 680, 37), [679]]))
        positions = positions[positions < 680]
        out["tf_positions"] = positions
        out["tf_logits"] = logits[:, positions].numpy()
        out["tf_lse"] = logits.logsumexp(-1).numpy()

        # per cfg, the first label pair whose every greedy decision has a margin (a random 64-way argmax has a
        # top-1/top-2 gap below 2e-4 about once in 2000 positions; 1360 are compared per setting)
        cfgs, greedy, greedy_labels = [0.0, 1.5, 4.0], [], []
        pairs = [(a, b) for a in range(10) for b in range(10) if a != b]
        for cfg in cfgs:
            for pair in pairs:
                run = run_infer(var_module, var, 2, torch.tensor(pair), cfg, 1, 0.0, None)
                if run[1] > MIN_LOGIT_MARGIN:
                    break
            greedy.append(run)
            greedy_labels.append(pair)
        out["greedy_labels"], out["greedy_cfg"] = np.array(greedy_labels), np.array(cfgs)
        out["greedy_tokens"] = np.stack([g[0].to(torch.int16).numpy() for g in greedy])
        out["greedy_margin"] = np.array([g[1] for g in greedy])
        assert (out["greedy_margin"] > MIN_LOGIT_MARGIN).all(), out["greedy_margin"]
        out["greedy_pixels"] = np.stack([g[2][..., ::32, ::32].numpy() for g in greedy])

        draws = [(5, 1234, 1.5, 20, 0.9), (2, 7, 1.5, 0, 0.0), (9, 99, 3.0, 40, 0.96)]
        sampled = [run_infer(var_module, var, 1, torch.tensor([label]), cfg, k, p, seed)[0]
                   for label, seed, cfg, k, p in draws]
        for i, name in enumerate(("label", "seed", "cfg", "top_k", "top_p")):
            out[f"sample_{name}"] = np.array([d[i] for d in draws])
        out["sample_tokens"] = torch.cat(sampled).to(torch.int16).numpy()

    layouts = {"small_vae": layout(vae.state_dict()), "small_var": layout(var.state_dict()),
               "small_var_keys": key_shapes(var.state_dict())}
    # The released architectures, without initialising 2B parameters (as the official build_vae_var does).
    for cls in (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Conv2d, torch.nn.Embedding, torch.nn.GroupNorm):
        cls.reset_parameters = lambda self: None
    big_vae = models.VQVAE(vocab_size=4096, z_channels=32, ch=160, test_mode=True, share_quant_resi=4,
                           v_patch_nums=PATCH_NUMS)
    layouts["release_vae"] = layout(big_vae.state_dict())
    for depth in (16, 20, 24, 30):
        big = models.VAR(vae_local=big_vae, num_classes=1000, depth=depth, embed_dim=64 * depth, num_heads=depth,
                         drop_path_rate=0.1 * depth / 24, shared_aln=False, attn_l2_norm=True, patch_nums=PATCH_NUMS,
                         flash_if_available=False, fused_if_available=False)
        layouts[f"release_var_d{depth}"] = layout(big.state_dict())
        layouts[f"release_var_d{depth}"]["params"] = int(sum(p.numel() for p in big.parameters()))
        del big

    np.savez_compressed(args.out / "expected.npz", **out)
    (args.out / "layouts.json").write_text(json.dumps(layouts, indent=1, sort_keys=True) + "\n")
    print({k: v.shape for k, v in out.items()}, "margins", out["enc_margin"], out["greedy_margin"])


if __name__ == "__main__":
    main()
