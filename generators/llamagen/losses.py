"""The tokenizer's training objective: L2 + LPIPS + VQ codebook terms + a PatchGAN adversarial term.

Generator (encoder/quantizer/decoder) loss, as LlamaGen's `VQLoss` adds it up:
    rec_weight * L2(x, x_rec) + perceptual_weight * LPIPS(x, x_rec)
    + adaptive_weight * disc_weight(step) * gen_adv(D(x_rec))
    + vq_loss + beta * commit_loss + entropy_ratio * entropy_loss     (the quantizer in vq.py computes these)
Discriminator loss: disc_weight(step) * d_loss(D(x), D(x_rec.detach())).

`disc_weight(step)` is 0 before `disc_start` and `disc_weight` from then on; `step` is the 1-based number of the
step being taken (LlamaGen passes `train_steps + 1`), so with disc_start=20000 the GAN term first acts on step
20000. The adaptive weight (taming-transformers' |grad nll| / |grad gan| at the decoder's last layer) is OFF in
LlamaGen's recipe (VQLoss default, never enabled by vq_train.py); it is available as an option.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from generators.llamagen.discriminator import DiscriminatorConfig, PatchGANDiscriminator
from generators.llamagen.lpips import LPIPS

# ----------------------------------------------------------------------------------------------------------------
# GAN losses. Discriminator losses average the real and fake halves (the 0.5 matters: it sets the D step size).


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(x_rec))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (E[softplus(-D(x))] + E[softplus(D(x_rec))]): the original GAN log-loss."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def non_saturating_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (BCE(D(x), 1) + BCE(D(x_rec), 0)).

    Equal to `vanilla_d_loss`. (LlamaGen's version passes BCE's arguments swapped, input=ones and target=logits,
    which is not a GAN loss; we implement the intended one.)
    """
    real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
    fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    return 0.5 * (real + fake)


def hinge_gen_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """-E[D(x_rec)]."""
    return -logits_fake.mean()


def non_saturating_gen_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """BCE(D(x_rec), 1) = E[softplus(-D(x_rec))] (the same swapped-argument caveat as above applies upstream)."""
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


D_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss, "non-saturating": non_saturating_d_loss}
GEN_LOSSES = {"hinge": hinge_gen_loss, "non-saturating": non_saturating_gen_loss}


def disc_weight_at(step: int, disc_start: int, weight: float) -> float:
    """The GAN weight for the 1-based `step`: nothing before `disc_start`, `weight` from it on."""
    return 0.0 if step < disc_start else weight


def adaptive_weight(nll_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """taming-transformers' balance: ||d nll / d W_last|| / (||d gan / d W_last|| + 1e-4), clamped to [0, 1e4].

    It rescales the adversarial gradient at the decoder's output conv to the size of the reconstruction gradient.
    """
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (nll_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TokenizerLossConfig:
    disc_start: int = 20000
    disc_weight: float = 0.5
    disc_loss: str = "hinge"  # hinge | vanilla | non-saturating
    gen_loss: str = "hinge"  # hinge | non-saturating
    disc_adaptive_weight: bool = False
    disc_dim: int = 64
    disc_num_layers: int = 3
    reconstruction_loss: str = "l2"  # l2 | l1
    reconstruction_weight: float = 1.0
    perceptual_weight: float = 1.0


class TokenizerLoss(nn.Module):
    """Owns the discriminator and the (optional, frozen) LPIPS network; computes both halves of the GAN game."""

    def __init__(self, config: TokenizerLossConfig, lpips: LPIPS | None):
        super().__init__()
        if config.disc_loss not in D_LOSSES:
            raise ValueError(f"disc_loss must be one of {sorted(D_LOSSES)}, got {config.disc_loss!r}")
        if config.gen_loss not in GEN_LOSSES:
            raise ValueError(f"gen_loss must be one of {sorted(GEN_LOSSES)}, got {config.gen_loss!r}")
        if config.reconstruction_loss not in ("l1", "l2"):
            raise ValueError(f"reconstruction_loss must be l1 or l2, got {config.reconstruction_loss!r}")
        self.config = config
        self.discriminator = PatchGANDiscriminator(DiscriminatorConfig(ndf=config.disc_dim,
                                                                       n_layers=config.disc_num_layers))
        self.lpips = lpips

    def _discriminate_frozen(self, images: torch.Tensor) -> torch.Tensor:
        """D(images) with D's weights detached: the tokenizer's loss must move the tokenizer, not D.

        Calls the bare module (not a DDP wrapper around it) so no gradient reduction is armed for D here.
        """
        disc = getattr(self.discriminator, "module", self.discriminator)
        params = {name: p.detach() for name, p in disc.named_parameters()}
        return torch.func.functional_call(disc, params, (images,))

    def disc_weight(self, step: int) -> float:
        return disc_weight_at(step, self.config.disc_start, self.config.disc_weight)

    def generator_loss(self, inputs: torch.Tensor, recons: torch.Tensor, codebook_loss: torch.Tensor, step: int,
                       last_layer: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss for the tokenizer update. `codebook_loss` is vq + beta*commit + entropy, already weighted."""
        cfg = self.config
        rec_fn = F.mse_loss if cfg.reconstruction_loss == "l2" else F.l1_loss
        rec = rec_fn(recons, inputs)
        if self.lpips is not None and cfg.perceptual_weight > 0:
            perceptual = self.lpips(inputs, recons).mean()
        else:
            perceptual = torch.zeros((), device=inputs.device)
        nll = cfg.reconstruction_weight * rec + cfg.perceptual_weight * perceptual
        weight = self.disc_weight(step)
        if weight > 0:
            gan = GEN_LOSSES[cfg.gen_loss](self._discriminate_frozen(recons))
            scale = adaptive_weight(nll, gan, last_layer) if cfg.disc_adaptive_weight else 1.0
        else:
            # Before disc_start the GAN term is multiplied by 0 upstream: skipping D changes no gradient.
            gan, scale = torch.zeros((), device=inputs.device), 0.0
        loss = nll + scale * weight * gan + codebook_loss
        logs = {"rec_loss": rec.item(), "perceptual_loss": perceptual.item(), "codebook_loss": codebook_loss.item(),
                "gen_adv_loss": float(gan.item()), "disc_weight": weight, "adaptive_weight": float(scale)}
        return loss, logs

    def discriminator_loss(self, inputs: torch.Tensor, recons: torch.Tensor,
                           step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss for the discriminator update (reconstructions are detached: it must not train the tokenizer).

        `self.discriminator` may be replaced by a DistributedDataParallel wrapper; it is called as is here.
        """
        logits_real = self.discriminator(inputs.detach())
        logits_fake = self.discriminator(recons.detach())
        loss = self.disc_weight(step) * D_LOSSES[self.config.disc_loss](logits_real, logits_fake)
        logs = {"disc_loss": loss.item(), "logits_real": logits_real.detach().mean().item(),
                "logits_fake": logits_fake.detach().mean().item()}
        return loss, logs
