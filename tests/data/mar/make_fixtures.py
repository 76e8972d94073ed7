"""Make tests/data/mar/official.pt: outputs of the OFFICIAL MAR code (LTH14/mar, commit fe470ac) on small random
weights, for tests/test_mar_official.py. Not run in CI: it needs the official code and timm, which do not import
beside this project's torch. How these fixtures were made:

    # the official files, outside the repo
    git -C <bare LTH14/mar> show fe470ac:models/mar.py > /tmp/mar_official/models/mar.py   (and models/diffloss.py,
        models/vae.py, diffusion/{__init__,diffusion_utils,gaussian_diffusion,respace}.py likewise)
    python -m venv /tmp/venv_mar
    /tmp/venv_mar/bin/pip install torch==2.14.1 torchvision==0.29.1 timm==0.9.12 scipy numpy tqdm
    /tmp/venv_mar/bin/python tests/data/mar/make_fixtures.py /tmp/mar_official tests/data/mar/official.pt

The official code runs unmodified except for what a CPU and injected randomness need, all patched from here:
  * `torch.Tensor.cuda` returns the tensor itself (the code calls .cuda() on CPU tensors);
  * `MAR.sample_orders` returns the injected orders;
  * the one `torch.randn` of `DiffLoss.sample` (each step's starting noise of the token chains) returns the
    injected per-position noise of the tokens that step predicts: the positions are read from the official run
    itself (the mask `forward_mae_encoder` receives and the next mask `mask_by_order` returns; a request for as
    many rows as tokens remain unknown is the last step, which predicts them all);
  * sampling is at temperature 0, so the per-step noise (`th.randn_like` in `p_sample`) is multiplied by 0.
The VAE is the official AutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4)) with the base width `ch` cut from 128
to 32 (passed to the official Encoder/Decoder) so it runs in milliseconds; everything else is as released.

Weights are not stored: `recipe_state` makes them from the key names and shapes with seeded torch.randn (CPU
generators give the same stream in every torch version), and the fixture stores the official key -> shape map
and each tensor's float64 sum, so the test checks both the key layout and that it rebuilt the same weights.
"""

from __future__ import annotations

import math
import sys
from functools import partial

import torch

#: the tiny MAR used on both sides (official kwargs; generators.mar.model.MARConfig takes the same values)
MAR_KWARGS = dict(img_size=128, vae_stride=16, patch_size=1, encoder_embed_dim=32, encoder_depth=2,
                  encoder_num_heads=4, decoder_embed_dim=24, decoder_depth=2, decoder_num_heads=4, mlp_ratio=4,
                  vae_embed_dim=16, class_num=10, buffer_size=64, diffloss_d=2, diffloss_w=32)
VAE_CH = 32
#: sample_tokens cases: (num_iter, cfg, cfg_schedule, num_sampling_steps)
CASES = [(4, 1.0, "linear", "100"), (4, 3.0, "linear", "100"), (16, 3.0, "linear", "100"),
         (16, 2.0, "constant", "100"), (16, 1.0, "linear", "50"), (64, 3.0, "linear", "20")]
LABELS = [3, 7]
SEED = 20240617


def recipe_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Deterministic random weights for a state dict's keys: matrices / convs ~ N(0, 1 / fan_in), norm weights
    1 + 0.1 N, biases 0.1 N, other tensors (embeddings without a fan-in: positions, mask token, null class) 0.5 N."""
    state = {}
    for i, key in enumerate(sorted(shapes)):
        shape = tuple(shapes[key])
        w = torch.randn(shape, generator=torch.Generator().manual_seed(SEED + i), dtype=torch.float32)
        if len(shape) >= 2 and key.endswith(".weight"):
            w = w / math.sqrt(math.prod(shape[1:]))
        elif len(shape) == 1 and key.endswith(".weight"):
            w = 1 + 0.1 * w
        elif len(shape) == 1:
            w = 0.1 * w
        else:
            w = 0.5 * w
        state[key] = w
    return state


def fingerprint(state: dict[str, torch.Tensor]) -> dict[str, list]:
    return {"keys": sorted(state), "shapes": [list(state[k].shape) for k in sorted(state)],
            "sums": torch.tensor([state[k].double().sum().item() for k in sorted(state)], dtype=torch.float64)}


def main(official_root: str, out_path: str) -> None:
    sys.path.insert(0, official_root)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # CPU only
    import torch.nn as nn
    import models.mar as official_mar
    import models.vae as official_vae

    torch.set_num_threads(1)
    fixture: dict = {}

    # ---- VAE -------------------------------------------------------------------------------------------------
    encoder, decoder = official_vae.Encoder, official_vae.Decoder
    official_vae.Encoder = lambda **kw: encoder(ch=VAE_CH, **kw)
    official_vae.Decoder = lambda **kw: decoder(ch=VAE_CH, **kw)
    vae = official_vae.AutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4)).eval()
    vae.load_state_dict(recipe_state({k: tuple(v.shape) for k, v in vae.state_dict().items()}), strict=True)
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    latent = torch.randn(1, 16, 2, 2, generator=g)
    with torch.no_grad():
        posterior = vae.encode(image)
        fixture["vae"] = {"weights": fingerprint(vae.state_dict()), "image": image, "mean": posterior.mean,
                          "logvar": posterior.logvar, "latent": latent, "decoded": vae.decode(latent)}

    # ---- transformer and DiffLoss net -------------------------------------------------------------------------
    def build(steps: str) -> official_mar.MAR:
        model = official_mar.MAR(**MAR_KWARGS, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                 num_sampling_steps=steps).eval()
        model.load_state_dict(recipe_state({k: tuple(v.shape) for k, v in model.state_dict().items()}),
                              strict=True)
        return model

    mar = build("100")
    L = mar.seq_len
    g = torch.Generator().manual_seed(2)
    tokens = torch.randn(2, L, 16, generator=g)
    mask = torch.zeros(2, L)
    order = torch.stack([torch.randperm(L, generator=g) for _ in range(2)])
    mask.scatter_(1, order[:, :40], 1.0)  # 40 unknown positions per row, a different set in each row
    labels = torch.tensor(LABELS)
    with torch.no_grad():
        encoded = mar.forward_mae_encoder(tokens, mask, mar.class_emb(labels))
        z = mar.forward_mae_decoder(encoded, mask)
        x_t = torch.randn(6, 16, generator=g)
        t = torch.tensor([0, 1, 250, 500, 998, 999])
        c = torch.randn(6, MAR_KWARGS["decoder_embed_dim"], generator=g)
        net_out = mar.diffloss.net(x_t, t, c)
    fixture["mar"] = {"weights": fingerprint(mar.state_dict()), "tokens": tokens, "mask": mask, "labels": labels,
                      "encoded": encoded, "z": z, "x_t": x_t, "t": t, "c": c, "net_out": net_out}
    fixture["respacing"] = {steps: {"timestep_map": torch.tensor(build(steps).diffloss.gen_diffusion.timestep_map),
                                    "betas": torch.from_numpy(build(steps).diffloss.gen_diffusion.betas)}
                            for steps in ("100", "50", "25")}

    # ---- sample_tokens at temperature 0 with injected orders and starting noise --------------------------------
    orders = torch.stack([torch.randperm(L, generator=g) for _ in range(2)])
    noise = torch.randn(2, L, 16, generator=g)
    seen: dict[str, torch.Tensor] = {}
    encode, mask_by_order = official_mar.MAR.forward_mae_encoder, official_mar.mask_by_order

    def recording_encoder(self, x, mask, class_embedding):
        seen["mask"] = mask[: len(orders)].bool()
        return encode(self, x, mask, class_embedding)

    def recording_mask_by_order(*args):
        seen["next"] = mask_by_order(*args).bool()
        return seen["next"]

    def injected_randn(*shape, **kwargs):
        rows = shape[0]
        last = rows == int(seen["mask"].sum())
        predict = seen["mask"] if last else seen["mask"] & ~seen["next"]
        assert int(predict.sum()) == rows, (rows, int(predict.sum()))
        return noise[predict].clone()

    class TorchWithInjectedRandn:
        def __getattr__(self, name):
            return injected_randn if name == "randn" else getattr(torch, name)

    official_mar.MAR.forward_mae_encoder = recording_encoder
    official_mar.mask_by_order = recording_mask_by_order
    sys.modules["models.diffloss"].torch = TorchWithInjectedRandn()
    samples = []
    for num_iter, cfg, schedule, steps in CASES:
        model = build(steps)
        model.sample_orders = lambda bsz: orders.clone()
        with torch.no_grad():
            out = model.sample_tokens(bsz=2, num_iter=num_iter, cfg=cfg, cfg_schedule=schedule, labels=labels,
                                      temperature=0.0)
        samples.append({"num_iter": num_iter, "cfg": cfg, "cfg_schedule": schedule, "sampling_steps": steps,
                        "latents": out})
    fixture["sample"] = {"orders": orders, "noise": noise, "labels": labels, "cases": samples}
    torch.save(fixture, out_path)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
