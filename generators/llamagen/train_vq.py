"""Train LlamaGen's VQ image tokenizer (VQ-16 / VQ-8) as a VQGAN: reconstruction + perceptual + codebook + GAN.

Recipe (LlamaGen `tokenizer/tokenizer_image/vq_train.py`), with its defaults:
  * data: ADM random-resized crop (short side to [S, S/0.8]) + random horizontal flip, images in [-1, 1];
  * tokenizer loss: L2 + LPIPS + vq + 0.25 * commitment (+ optional entropy term) + 0.5 * hinge GAN loss
    from step `disc_start` (20000) on, fixed weight (the adaptive weight is an option, off upstream);
  * discriminator: PatchGAN, hinge loss, trained every step; before disc_start its loss is multiplied by 0,
    so its Adam takes zero-gradient steps. We keep those steps (they only advance Adam's step count, which
    shapes the first real updates) but skip D's forward passes, which cannot change anything;
  * two optimizers, lr 1e-4, betas (0.9, 0.95), grad-norm clipping at 1.0 for each, bf16 autocast (fp16 adds
    one GradScaler per optimizer); weight decay 0 (upstream builds plain Adam and never passes its
    --weight-decay), optional EMA of the tokenizer.
LPIPS needs two weight files that cannot always be downloaded; without them training warns once and goes on
without the perceptual term (see lpips.py for the files and where to put them), and the checkpoints record
what ran: `perceptual_weight` 0.0, with the reason under `notes`.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import click
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from bench.errors import BenchError
from bench.locks import release_folder
from generators.llamagen.codes import ImageFolderDataset, ResumableSampler, to_model_range
from generators.llamagen.losses import D_LOSSES, GEN_LOSSES, TokenizerLoss, TokenizerLossConfig
from generators.llamagen.lpips import load_lpips
from generators.llamagen.training import (PRECISIONS, DistEnv, autocast, check_counts, check_finite_loss,
                                          check_finite_weights, check_resumed_config, config_defaults, epoch_batches,
                                          grad_scaler, lock_results, mean_over_ranks, prune_checkpoints,
                                          read_checkpoint, resolve_resume, rewind, rng_state, seed_everything,
                                          set_rng_state, setup_distributed, update_ema, write_checkpoint)
from generators.llamagen.vq import VQ_CONFIGS


@dataclass
class VQTrainConfig:
    data_path: str
    results_dir: str
    vq_model: str = "VQ-16"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. tiny widths for tests
    codebook_size: int | None = None  # None: the named model's (16384 for VQ-16 / VQ-8, 512 for VQ-demo)
    codebook_embed_dim: int | None = None  # None: the named model's (8)
    commit_loss_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    dropout_p: float = 0.0
    image_size: int = 256
    loss: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)
    lpips_heads: str | None = None  # explicit LPIPS weight files (else: cache, then download)
    vgg_weights: str | None = None
    allow_download: bool = True
    lr: float = 1e-4
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    max_grad_norm: float = 1.0
    global_batch_size: int = 128
    max_steps: int = 0  # 0: run `epochs` epochs
    epochs: int = 40
    mixed_precision: str = "bf16"
    ema: bool = False
    ema_decay: float = 0.9999
    compile: bool = False
    seed: int = 0
    num_workers: int = 8
    log_every: int = 100
    ckpt_every: int = 5000
    keep_last: int | None = None  # keep only the newest K checkpoints (None: all)
    skip_bad_images: bool = False  # leave out images that cannot be decoded (else: refuse to start)
    resume: str | None = None  # None, "auto" or a checkpoint folder
    init_from: str | None = None  # fine-tune: start from this tokenizer's weights (fresh optimizers, step 0)
    device: str | None = None


def resolve_codebook(cfg: VQTrainConfig) -> VQTrainConfig:
    """`cfg` with the codebook sizes left open (None) filled in from the named model, so the run's recorded
    settings say what was trained (and a resume under the old explicit defaults still matches)."""
    from generators.llamagen.vq import VQ_CONFIGS, VQConfig

    if cfg.vq_model not in VQ_CONFIGS:
        raise BenchError(f"unknown VQ model {cfg.vq_model!r}; known: {', '.join(VQ_CONFIGS)}")
    named = VQConfig(**VQ_CONFIGS[cfg.vq_model])
    return replace(cfg, codebook_size=named.codebook_size if cfg.codebook_size is None else cfg.codebook_size,
                   codebook_embed_dim=(named.codebook_embed_dim if cfg.codebook_embed_dim is None
                                       else cfg.codebook_embed_dim))


def build_vq(cfg: VQTrainConfig):
    from generators.llamagen.vq import VQ_CONFIGS, VQConfig, VQModel

    cfg = resolve_codebook(cfg)
    return VQModel(VQConfig(**{
        **VQ_CONFIGS[cfg.vq_model], "codebook_size": cfg.codebook_size, "codebook_embed_dim": cfg.codebook_embed_dim,
        "commit_loss_beta": cfg.commit_loss_beta, "entropy_loss_ratio": cfg.entropy_loss_ratio,
        "dropout_p": cfg.dropout_p, **cfg.model_overrides}))


def init_from(model: nn.Module, cfg: VQTrainConfig) -> str:
    """Load the tokenizer weights of `cfg.init_from` (a train-vq checkpoint or an export) into `model`, strictly,
    as upstream's `--finetune`: a second stage (e.g. the GAN phase) starts from a first stage's tokenizer with
    fresh optimizers and a new discriminator. Returns what the checkpoints' notes record of it."""
    from bench.download import sha256_file
    from generators.llamagen.checkpoints import load_strict, read_checkpoint as read_model_file

    state, _, _ = read_model_file(cfg.init_from, "vq")
    load_strict(model, state, f"the {cfg.vq_model} tokenizer being trained (--init-from {cfg.init_from})",
                optional=("quantize.codebook_used",))
    return f"{cfg.init_from} (sha256 {sha256_file(cfg.init_from)})"


def _optimizer(params, cfg: VQTrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def _clip_and_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, params, max_norm: float) -> None:
    if max_norm > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def train_vq(cfg: VQTrainConfig) -> dict[str, Any]:
    """Run the training; returns {"step", "loss" (mean generator loss of the last logging window), "checkpoint"}."""
    check_counts(cfg.max_steps, cfg.epochs, cfg.keep_last)
    if cfg.mixed_precision not in PRECISIONS:
        raise BenchError(f"--mixed-precision must be one of {', '.join(PRECISIONS)}, got {cfg.mixed_precision!r}")
    if cfg.loss.disc_loss not in D_LOSSES or cfg.loss.gen_loss not in GEN_LOSSES:
        raise BenchError(f"disc loss must be one of {sorted(D_LOSSES)} and gen loss one of {sorted(GEN_LOSSES)}")
    cfg = resolve_codebook(cfg)
    env = setup_distributed(cfg.device)
    if cfg.global_batch_size % env.world_size:
        raise BenchError(f"global batch {cfg.global_batch_size} does not split over {env.world_size} processes")
    results = Path(cfg.results_dir)
    lock_results(results)
    try:
        return _train_vq(cfg, env, results)
    finally:
        release_folder(results)


def _train_vq(cfg: VQTrainConfig, env: DistEnv, results: Path) -> dict[str, Any]:
    """The run itself, while this process holds the results folder's lock."""
    dataset = ImageFolderDataset(cfg.data_path, cfg.image_size, seed=cfg.seed)
    skipped = dataset.check_images(cfg.skip_bad_images, cfg.num_workers)  # before step 1, not at the bad file
    sampler = ResumableSampler(len(dataset), cfg.global_batch_size, env.rank, env.world_size, cfg.seed)
    total_steps = cfg.max_steps or cfg.epochs * sampler.batches_per_epoch

    with warnings.catch_warnings():
        if not env.is_main:
            warnings.simplefilter("ignore")  # one warning per run, not one per rank
        lpips = load_lpips(cfg.lpips_heads, cfg.vgg_weights, cfg.allow_download) if cfg.loss.perceptual_weight else None
    notes = {}
    if skipped:
        notes["skip_bad_images"] = f"{len(skipped)} unreadable image(s) left out: {', '.join(skipped)}"
    if lpips is None and cfg.loss.perceptual_weight:
        # Record what runs, not what was asked: a checkpoint saying 1.0 would pass for the published recipe.
        notes["loss.perceptual_weight"] = (f"0.0, not the {cfg.loss.perceptual_weight} asked for: the LPIPS weights "
                                           "were not available, so the run trains without the perceptual loss")
        cfg = replace(cfg, loss=replace(cfg.loss, perceptual_weight=0.0))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_vq(cfg)
    loss_fn = TokenizerLoss(cfg.loss, lpips)
    seed_everything(cfg.seed, env)

    resume = resolve_resume(cfg.resume, results)
    shared = own = None
    if resume is not None:
        shared, own = read_checkpoint(resume, env)
        check_resumed_config(shared.get("train_config", {}), asdict(cfg), resume, config_defaults(VQTrainConfig))
        model.load_state_dict(shared["model"])
        loss_fn.discriminator.load_state_dict(shared["discriminator"])
    elif cfg.init_from is not None:
        notes["init_from"] = init_from(model, cfg)
    ema = copy.deepcopy(model).requires_grad_(False).eval() if cfg.ema else None
    if ema is not None and shared is not None and "ema" in shared:
        ema.load_state_dict(shared["ema"])
    for module in (model, loss_fn, ema):
        if module is not None:
            module.to(env.device)
    opt = _optimizer(model.parameters(), cfg)
    opt_d = _optimizer(loss_fn.discriminator.parameters(), cfg)
    scaler, scaler_d = grad_scaler(env, cfg.mixed_precision), grad_scaler(env, cfg.mixed_precision)
    step = 0
    if resume is not None:
        opt.load_state_dict(shared["optimizer"])
        opt_d.load_state_dict(shared["optimizer_disc"])
        scaler.load_state_dict(shared["scaler"])
        scaler_d.load_state_dict(shared["scaler_disc"])
        set_rng_state(own["rng"])
        step = int(shared["steps"])

    raw_disc = loss_fn.discriminator
    train_model: nn.Module = DDP(model) if env.distributed else model
    if env.distributed:
        loss_fn.discriminator = DDP(raw_disc)
    if cfg.compile:
        train_model = torch.compile(train_model)
    model.train()
    loss_fn.train()
    last_layer = model.decoder.conv_out.weight

    if env.is_main:
        results.mkdir(parents=True, exist_ok=True)
        rewind(results, step)
        tqdm.write(f"VQ {cfg.vq_model}: {sum(p.numel() for p in model.parameters()):,} parameters, discriminator "
                   f"{sum(p.numel() for p in raw_disc.parameters()):,}; {len(dataset):,} images; "
                   f"{sampler.batches_per_epoch} steps/epoch; starting at step {step} of {total_steps}; "
                   f"perceptual loss {'on' if lpips is not None else 'OFF'}")
    batches = epoch_batches(dataset, sampler, (cfg.global_batch_size // env.world_size, cfg.num_workers), step)
    running, seen, last_loss, ckpt = 0.0, 0, float("nan"), None
    bar = tqdm(total=total_steps, initial=step, desc="train vq", disable=not env.is_main)
    while step < total_steps:
        images, _ = next(batches)
        images = to_model_range(images.to(env.device, non_blocking=True))
        n = step + 1  # upstream hands the losses `train_steps + 1`

        with autocast(env, cfg.mixed_precision):
            recons, q = train_model(images)
            codebook = q.vq_loss + q.commit_loss + q.entropy_loss
            loss_g, logs = loss_fn.generator_loss(images, recons, codebook, n, last_layer)
        check_finite_loss(mean_over_ranks(loss_g.item(), env), step + 1, results)
        scaler.scale(loss_g).backward()
        _clip_and_step(scaler, opt, model.parameters(), cfg.max_grad_norm)
        if ema is not None:
            update_ema(ema, model, cfg.ema_decay)

        if loss_fn.disc_weight(n) > 0:
            with autocast(env, cfg.mixed_precision):
                loss_d, d_logs = loss_fn.discriminator_loss(images, recons, n)
            scaler_d.scale(loss_d).backward()
            logs.update(d_logs)
        else:  # upstream's 0-weighted D loss: exactly zero gradients, yet a real (scaler and) Adam step
            scaler_d.scale(sum(p.sum() for p in raw_disc.parameters()) * 0.0).backward()
        _clip_and_step(scaler_d, opt_d, raw_disc.parameters(), cfg.max_grad_norm)

        step += 1
        running, seen = running + loss_g.item(), seen + 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == total_steps:
            last_loss = mean_over_ranks(running / seen, env)
            running, seen = 0.0, 0
            bar.set_postfix(loss=f"{last_loss:.4f}", rec=f"{logs['rec_loss']:.4f}")
            if env.is_main:
                with open(results / "log.jsonl", "a") as f:
                    f.write(json.dumps({"step": step, "loss": last_loss, "codebook_usage": q.codebook_usage,
                                        **logs}) + "\n")
        if step % cfg.ckpt_every == 0 or step == total_steps:
            check_finite_weights(model.state_dict(), step, results, env)  # DDP: every rank holds the same weights
            shared_out = None
            if env.is_main:
                shared_out = {
                    "model": model.state_dict(), "discriminator": raw_disc.state_dict(),
                    "optimizer": opt.state_dict(), "optimizer_disc": opt_d.state_dict(),
                    "scaler": scaler.state_dict(), "scaler_disc": scaler_d.state_dict(), "steps": step,
                    "vq_config": asdict(model.config), "train_config": asdict(cfg), "notes": notes,
                }
                if ema is not None:
                    shared_out["ema"] = ema.state_dict()
            ckpt = write_checkpoint(results, step, env, shared_out, {"rng": rng_state()})
            if env.is_main:
                prune_checkpoints(results, cfg.keep_last)
    bar.close()
    loss_fn.discriminator = raw_disc
    return {"step": step, "loss": last_loss, "checkpoint": str(ckpt) if ckpt else None}


#: how to use what train-vq wrote (the command's epilog)
USAGE_EPILOG = """Use the result: encode a dataset for train-gpt with it, score its reconstructions, or pair it with a
GPT at sampling time:

\b
  bench llamagen extract-codes /data/imagenet/train -o codes256 --vq-ckpt runs/vq16/checkpoints/<step>/model.pt
  bench run -g llamagen-vq16 --task reconstruct --ckpt runs/vq16/checkpoints/<step>/model.pt --data /data/val
  bench run -g llamagen-b-256 --ckpt <a train-gpt checkpoint> --set vq_ckpt=runs/vq16/checkpoints/<step>/model.pt \\
            --ref my_ref.npz

`bench llamagen export CHECKPOINT OUT.safetensors` writes the weights alone (no optimizer or discriminator state),
which `bench run` takes in place of model.pt. Each checkpoint holds the optimizer and discriminator states (VQ-16:
0.9 GB); --keep-last K keeps only the newest K."""


@click.command("train-vq", context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
               epilog=USAGE_EPILOG)
@click.argument("data_path", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--results-dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: checkpoints/<step>/ (model.pt, rank*.pt) and log.jsonl.")
@click.option("--vq-model", default="VQ-16", type=click.Choice(list(VQ_CONFIGS)),
              help="VQ-16 / VQ-8: the official architectures (downsampling 16 or 8); VQ-demo: the embedded demo's "
                   "small 8x downsampling tokenizer.")
@click.option("--codebook-size", type=click.IntRange(min=2), default=None,
              help="Codebook entries.  [default: the model's: 16384; VQ-demo 512]")
@click.option("--codebook-embed-dim", type=click.IntRange(min=1), default=None,
              help="Code vector size.  [default: the model's: 8]")
@click.option("--commit-loss-beta", default=0.25, help="Weight of the commitment term.")
@click.option("--entropy-loss-ratio", default=0.0, help="Weight of the codebook entropy regulariser.")
@click.option("--image-size", type=click.IntRange(min=1), default=256, help="Training crop size.")
@click.option("--global-batch-size", type=click.IntRange(min=1), default=128,
              help="Images per step, summed over processes.")
@click.option("--epochs", type=click.IntRange(min=0), default=40)
@click.option("--max-steps", type=click.IntRange(min=0), default=0,
              help="Stop after this many steps instead (0: use --epochs).")
@click.option("--lr", default=1e-4, help="For the tokenizer and the discriminator.")
@click.option("--weight-decay", default=0.0, help="AdamW decoupled decay (upstream effectively uses 0).")
@click.option("--beta1", default=0.9)
@click.option("--beta2", default=0.95)
@click.option("--max-grad-norm", default=1.0, help="Clip each model's gradient norm (0: off).")
@click.option("--disc-start", default=20000, help="First step (1-based) on which the GAN losses count.")
@click.option("--disc-weight", default=0.5, help="Weight of the GAN term from --disc-start on.")
@click.option("--disc-loss", default="hinge", type=click.Choice(sorted(D_LOSSES)))
@click.option("--gen-loss", default="hinge", type=click.Choice(sorted(GEN_LOSSES)))
@click.option("--disc-adaptive-weight/--no-disc-adaptive-weight", default=False,
              help="taming's gradient-norm balancing of the GAN term (off in LlamaGen).")
@click.option("--reconstruction-loss", default="l2", type=click.Choice(["l2", "l1"]))
@click.option("--perceptual-weight", default=1.0, help="LPIPS weight (0: no LPIPS, no weights needed).")
@click.option("--lpips-heads", type=click.Path(exists=True, dir_okay=False), help="LPIPS vgg.pth (lin heads).")
@click.option("--vgg-weights", type=click.Path(exists=True, dir_okay=False), help="torchvision vgg16-397923af.pth.")
@click.option("--mixed-precision", default="bf16", type=click.Choice(["none", "bf16", "fp16"]))
@click.option("--ema/--no-ema", default=False, help="Keep an exponential moving average of the tokenizer.")
@click.option("--ema-decay", default=0.9999)
@click.option("--compile/--no-compile", default=False, help="torch.compile the tokenizer.")
@click.option("--seed", default=0)
@click.option("--num-workers", type=click.IntRange(min=0), default=8, help="Image decoding processes per rank.")
@click.option("--skip-bad-images", is_flag=True,
              help="Leave out images that cannot be decoded (counted in a warning and in the checkpoints' notes) "
                   "instead of refusing to start; every image is decoded once before step 1 either way.")
@click.option("--log-every", type=click.IntRange(min=1), default=100)
@click.option("--ckpt-every", type=click.IntRange(min=1), default=5000)
@click.option("--keep-last", type=click.IntRange(min=1), default=None,
              help="Keep only the newest K checkpoints, deleting older ones after each new one is written. "
                   "[default: keep all]")
@click.option("--resume", default=None, help="'auto' (newest checkpoint in --results-dir) or a checkpoint folder.")
@click.option("--init-from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Fine-tune: start from the tokenizer weights of this checkpoint (checkpoints/<step>/model.pt or an "
                   "export) with fresh optimizers at step 0, e.g. a GAN phase after an L2 phase (upstream --finetune).")
def train_vq_command(data_path: str, results_dir: str, disc_start: int, disc_weight: float, disc_loss: str,
                     gen_loss: str, disc_adaptive_weight: bool, reconstruction_loss: str, perceptual_weight: float,
                     **options) -> None:
    """Train a LlamaGen VQ tokenizer on an ImageNet-style folder (DATA_PATH/<class>/<images>).

    \b
    One GPU:  bench llamagen train-vq /data/imagenet/train -o runs/vq16
    8 GPUs:   torchrun --nproc_per_node 8 -m bench.cli llamagen train-vq /data/imagenet/train -o runs/vq16
    Resume:   ... --resume auto   (same process count; continues at the exact next step)
    Then:     bench llamagen extract-codes /data/imagenet/train -o codes256 --vq-ckpt runs/vq16/checkpoints/<step>/model.pt

    LPIPS weights are looked up in the bench cache (lpips_vgg.pth, vgg16-397923af.pth) and downloaded if
    possible; without them the run warns and trains without the perceptual loss.
    """
    if not options["epochs"] and not options["max_steps"]:
        raise click.UsageError("--epochs 0 with no --max-steps trains nothing: give --epochs N or --max-steps N")
    loss = TokenizerLossConfig(disc_start=disc_start, disc_weight=disc_weight, disc_loss=disc_loss,
                               gen_loss=gen_loss, disc_adaptive_weight=disc_adaptive_weight,
                               reconstruction_loss=reconstruction_loss, perceptual_weight=perceptual_weight)
    result = train_vq(VQTrainConfig(data_path=data_path, results_dir=results_dir, loss=loss, **options))
    if dist.is_initialized():
        dist.destroy_process_group()
    if result["checkpoint"]:
        click.echo(f"step {result['step']}: loss {result['loss']:.4f}; checkpoint {result['checkpoint']}")
