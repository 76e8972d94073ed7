"""Train LlamaGen's class-conditional GPT on extracted VQ codes (next-token cross-entropy).

Recipe (LlamaGen `autoregressive/train/train_c2i.py`): AdamW lr 1e-4, betas (0.9, 0.95), weight decay 0.05 on
matrices and embeddings only (not on norm gains), grad-norm clipping at 1.0, bf16 autocast, class labels
replaced by the null class with probability 0.1 (what classifier-free guidance needs at sampling time),
dropout 0.1 on the input embeddings ("token dropout": element-wise on [class token, image tokens], inside the
model) and on the residual / FFN branches, optional EMA. Gradient accumulation is real here (upstream parses
the flag but ignores it), and checkpoints resume mid-epoch to the exact next step.

Parallelism: one process, or `torchrun` with DDP (default) or FSDP (`--parallel fsdp`: each transformer block
is its own shard unit, params in the autocast dtype, gradients reduced in float32) for the big models.

The machinery shared with train_vq.py (process setup, precision, EMA, RNG state, checkpoints) is in
training.py.
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from bench.errors import BenchError
from bench.locks import release_folder
from generators.llamagen.codes import CodeDataset, ResumableSampler
from generators.llamagen.gpt import GPT_CONFIGS
from generators.llamagen.training import (PRECISIONS, DistEnv, adamw, autocast, check_counts, check_finite_loss,
                                          check_finite_weights, check_resumed_config, config_defaults, epoch_batches,
                                          grad_scaler, lock_results, mean_over_ranks, prune_checkpoints,
                                          read_checkpoint, resolve_resume, rewind, rng_state, seed_everything,
                                          set_rng_state, setup_distributed, update_ema, write_checkpoint)

# ================================================================================================================
# GPT training


@dataclass
class GPTTrainConfig:
    code_path: str
    results_dir: str
    gpt_model: str = "GPT-B"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. tiny dims for tests
    class_dropout_p: float = 0.1
    token_dropout_p: float = 0.1
    dropout_p: float = 0.1  # residual and FFN dropout (forced to 0 when drop_path_rate > 0, as upstream)
    drop_path_rate: float = 0.0
    lr: float = 1e-4
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    max_grad_norm: float = 1.0
    global_batch_size: int = 256
    grad_accum: int = 1
    max_steps: int = 0  # 0: run `epochs` epochs
    epochs: int = 300
    mixed_precision: str = "bf16"
    ema: bool = False
    ema_decay: float = 0.9999
    parallel: str = "ddp"  # ddp | fsdp
    compile: bool = False
    seed: int = 0
    num_workers: int = 4
    log_every: int = 100
    ckpt_every: int = 5000
    keep_last: int | None = None  # keep only the newest K checkpoints (None: all)
    resume: str | None = None  # None, "auto" or a checkpoint folder
    device: str | None = None


def drop_labels(labels: torch.Tensor, p: float, null_class: int) -> torch.Tensor:
    """Replace each label by the null class with probability p (classifier-free guidance training)."""
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape[0], device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_class), labels)


def next_token_loss(model: nn.Module, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of every image token given the class token and the tokens before it."""
    logits = model(labels, codes)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))


def build_gpt(cfg: GPTTrainConfig, vocab_size: int, block_size: int, num_classes: int):
    from generators.llamagen.gpt import GPT, GPT_CONFIGS, GPTConfig

    if cfg.gpt_model not in GPT_CONFIGS:
        raise BenchError(f"unknown GPT model {cfg.gpt_model!r}; known: {', '.join(GPT_CONFIGS)}")
    dropout = 0.0 if cfg.drop_path_rate > 0 else cfg.dropout_p
    config = GPTConfig(**{**GPT_CONFIGS[cfg.gpt_model],
        "vocab_size": vocab_size, "block_size": block_size, "num_classes": num_classes,
        "token_dropout_p": cfg.token_dropout_p, "resid_dropout_p": dropout, "ffn_dropout_p": dropout,
        "drop_path_rate": cfg.drop_path_rate, **cfg.model_overrides})
    return GPT(config)


def _wrap_fsdp(model: nn.Module, precision: str) -> nn.Module:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=PRECISIONS[precision], reduce_dtype=torch.float32)
    for block in model.layers:  # one shard unit per transformer block: gathers one block at a time
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def _full_state(model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> tuple[dict, dict]:
    """Unsharded model and optimizer states (collective under FSDP: every rank must call it).

    Saving them unsharded keeps one checkpoint layout for DDP and FSDP (and lets FSDP resume on another
    process count); the price is a full copy in rank 0's CPU memory while saving.
    """
    if not fsdp:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def _load_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, fsdp: bool) -> None:
    if not fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def train_gpt(cfg: GPTTrainConfig) -> dict[str, Any]:
    """Run the training; returns {"step", "loss" (mean of the last logging window), "checkpoint"}."""
    check_counts(cfg.max_steps, cfg.epochs, cfg.keep_last)
    if cfg.parallel not in ("ddp", "fsdp"):
        raise BenchError(f"--parallel must be ddp or fsdp, got {cfg.parallel!r}")
    if cfg.mixed_precision not in PRECISIONS:
        raise BenchError(f"--mixed-precision must be one of {', '.join(PRECISIONS)}, got {cfg.mixed_precision!r}")
    env = setup_distributed(cfg.device)
    fsdp = cfg.parallel == "fsdp" and env.distributed
    if fsdp and cfg.mixed_precision == "fp16":
        raise BenchError("--parallel fsdp trains in bf16 or fp32: fp16 loss scaling is not synchronised across "
                         "shards here. Use --mixed-precision bf16.")
    if fsdp and cfg.ema:
        raise BenchError("--ema is not supported with --parallel fsdp (the EMA copy would not be sharded)")
    per_rank = cfg.global_batch_size // env.world_size
    if cfg.global_batch_size % env.world_size or per_rank % cfg.grad_accum:
        raise BenchError(f"global batch {cfg.global_batch_size} must split evenly over {env.world_size} processes "
                         f"x {cfg.grad_accum} accumulation steps")
    results = Path(cfg.results_dir)
    lock_results(results)
    try:
        return _train_gpt(cfg, env, fsdp, per_rank // cfg.grad_accum, results)
    finally:
        release_folder(results)


def _train_gpt(cfg: GPTTrainConfig, env: DistEnv, fsdp: bool, micro: int, results: Path) -> dict[str, Any]:
    """The run itself, while this process holds the results folder's lock (`micro`: the per-rank micro-batch)."""
    dataset = CodeDataset(cfg.code_path, seed=cfg.seed)
    # Which codes this run trains on, in every checkpoint: meta.json holds the sha256 of codes.npy and labels.npy
    # and the tokenizer that made them, so its own digest names them all (and a resume on other codes is refused).
    trained_on = {"path": str(Path(cfg.code_path).resolve()), "meta_sha256": dataset.meta_sha256}
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (FSDP shards them without a broadcast)
    model = build_gpt(cfg, int(dataset.meta["codebook_size"]), dataset.tokens, dataset.num_classes)
    seed_everything(cfg.seed, env)
    null_class = model.config.num_classes
    sampler = ResumableSampler(len(dataset), cfg.global_batch_size, env.rank, env.world_size, cfg.seed)
    total_steps = cfg.max_steps or cfg.epochs * sampler.batches_per_epoch

    resume = resolve_resume(cfg.resume, results)
    shared = own = None
    if resume is not None:
        shared, own = read_checkpoint(resume, env)
        check_resumed_config(shared.get("train_config", {}), asdict(cfg), resume, config_defaults(GPTTrainConfig))
        before = (shared.get("codes") or {}).get("meta_sha256")
        if before not in (None, dataset.meta_sha256):
            raise BenchError(f"{resume} was trained on another code dataset than {cfg.code_path} holds now (its "
                             f"meta.json sha256 {before[:12]}, now {dataset.meta_sha256[:12]}): resume on the codes "
                             "it was trained on, or start a new run in another folder")
        model.load_state_dict(shared["model"])
    ema = copy.deepcopy(model).requires_grad_(False).eval() if cfg.ema else None
    if ema is not None and shared is not None and "ema" in shared:
        ema.load_state_dict(shared["ema"])
    model.to(env.device)
    if ema is not None:
        ema.to(env.device)
    if fsdp:
        model = _wrap_fsdp(model, cfg.mixed_precision)
    optimizer = adamw(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    scaler = grad_scaler(env, cfg.mixed_precision)
    step = 0
    if resume is not None:
        _load_optimizer(model, optimizer, shared["optimizer"], fsdp)
        scaler.load_state_dict(shared["scaler"])
        set_rng_state(own["rng"])
        step = int(shared["steps"])
    ddp = DDP(model) if env.distributed and not fsdp else None
    train_model = ddp if ddp is not None else model
    if cfg.compile:
        train_model = torch.compile(train_model)
    train_model.train()

    if env.is_main:
        results.mkdir(parents=True, exist_ok=True)
        rewind(results, step)
        n_params = sum(p.numel() for p in model.parameters())
        tqdm.write(f"GPT {cfg.gpt_model}: {n_params:,} parameters; {len(dataset):,} images x {dataset.meta['views']} "
                   f"views; {sampler.batches_per_epoch} steps/epoch; starting at step {step} of {total_steps}")
    batches = epoch_batches(dataset, sampler, (micro, cfg.num_workers), step)
    running, seen, last_loss, ckpt = 0.0, 0, float("nan"), None
    bar = tqdm(total=total_steps, initial=step, desc="train gpt", disable=not env.is_main)
    while step < total_steps:
        step_loss = 0.0
        for micro_step in range(cfg.grad_accum):
            codes, labels = next(batches)
            codes = codes.to(env.device, non_blocking=True)
            labels = drop_labels(labels.to(env.device, non_blocking=True), cfg.class_dropout_p, null_class)
            sync = micro_step == cfg.grad_accum - 1
            no_sync = ddp.no_sync() if ddp is not None and not sync else contextlib.nullcontext()
            if fsdp:
                model.set_requires_gradient_sync(sync)
            with no_sync:
                with autocast(env, cfg.mixed_precision):
                    loss = next_token_loss(train_model, codes, labels) / cfg.grad_accum
                scaler.scale(loss).backward()
            step_loss += loss.item()
        check_finite_loss(mean_over_ranks(step_loss, env), step + 1, results)
        if cfg.max_grad_norm > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            update_ema(ema, model, cfg.ema_decay)
        step += 1
        running, seen = running + step_loss, seen + 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == total_steps:
            last_loss = mean_over_ranks(running / seen, env)
            running, seen = 0.0, 0
            bar.set_postfix(loss=f"{last_loss:.4f}")
            if env.is_main:
                with open(results / "log.jsonl", "a") as f:
                    f.write(json.dumps({"step": step, "loss": last_loss}) + "\n")
        if step % cfg.ckpt_every == 0 or step == total_steps:
            model_state, opt_state = _full_state(model, optimizer, fsdp)
            check_finite_weights(model_state, step, results, env)
            shared_out = {"model": model_state, "optimizer": opt_state, "steps": step, "scaler": scaler.state_dict(),
                          "gpt_config": asdict(model.config), "train_config": asdict(cfg),
                          "codes": trained_on}
            if ema is not None:
                shared_out["ema"] = ema.state_dict()
            rank_out = {"rng": rng_state()}
            ckpt = write_checkpoint(results, step, env, shared_out if env.is_main else None, rank_out)
            if env.is_main:
                prune_checkpoints(results, cfg.keep_last)
    bar.close()
    return {"step": step, "loss": last_loss, "checkpoint": str(ckpt) if ckpt else None}


# ================================================================================================================
# Command line


#: how to sample what train-gpt wrote (the command's epilog)
SAMPLING_EPILOG = """Sample the result with the preset of its model and image size (llamagen-b-256: GPT-B on 256 px
codes), the tokenizer the codes were made with (meta.json: tokenizer.path) and reference statistics of your data
(bench ref build):

\b
  bench run -g llamagen-b-256 --ckpt runs/gpt-b/checkpoints/<step>/model.pt \\
            --set vq_ckpt=runs/vq16/checkpoints/<step>/model.pt --ref my_ref.npz

or export the weights alone first (no optimizer state; a few hundred MB instead of GBs) and sample that file:

\b
  bench llamagen export runs/gpt-b/checkpoints/<step>/model.pt gpt-b.safetensors
  bench run -g llamagen-b-256 --ckpt gpt-b.safetensors --set vq_ckpt=... --ref my_ref.npz

Each checkpoint holds the optimizer state (GPT-B: 1.3 GB); --keep-last K keeps only the newest K."""


@click.command("train-gpt", context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
               epilog=SAMPLING_EPILOG)
@click.argument("code_path", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--results-dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: checkpoints/<step>/ (model.pt, rank*.pt) and log.jsonl.")
@click.option("--gpt-model", default="GPT-B", type=click.Choice(list(GPT_CONFIGS)),
              help="The official GPT-B ... GPT-7B, or GPT-demo (the embedded demo's 4-layer, 256-wide model).")
@click.option("--global-batch-size", type=click.IntRange(min=1), default=256,
              help="Images per optimizer step, summed over processes.")
@click.option("--grad-accum", type=click.IntRange(min=1), default=1,
              help="Split each process's share into this many sequential micro-batches.")
@click.option("--epochs", type=click.IntRange(min=0), default=300, help="Epochs to train (LlamaGen: 300 at 256px).")
@click.option("--max-steps", type=click.IntRange(min=0), default=0,
              help="Stop after this many optimizer steps instead (0: use --epochs).")
@click.option("--lr", default=1e-4)
@click.option("--weight-decay", default=0.05, help="On weight matrices and embeddings only.")
@click.option("--beta1", default=0.9)
@click.option("--beta2", default=0.95)
@click.option("--max-grad-norm", default=1.0, help="Clip the global gradient norm (0: off).")
@click.option("--class-dropout", "class_dropout_p", default=0.1, help="P(label -> null class), enables CFG.")
@click.option("--token-dropout", "token_dropout_p", default=0.1, help="Dropout on the input embeddings.")
@click.option("--dropout", "dropout_p", default=0.1, help="Residual and FFN dropout.")
@click.option("--drop-path-rate", default=0.0, help="Stochastic depth (turns --dropout off, as upstream).")
@click.option("--mixed-precision", default="bf16", type=click.Choice(["none", "bf16", "fp16"]),
              help="Autocast dtype; fp16 adds loss scaling.")
@click.option("--ema/--no-ema", default=False, help="Keep an exponential moving average of the weights.")
@click.option("--ema-decay", default=0.9999)
@click.option("--parallel", default="ddp", type=click.Choice(["ddp", "fsdp"]),
              help="Under torchrun: DDP replicates the model; FSDP shards it per transformer block (XXL and up).")
@click.option("--compile/--no-compile", default=False, help="torch.compile the model (faster on GPUs).")
@click.option("--seed", default=0)
@click.option("--num-workers", type=click.IntRange(min=0), default=4, help="DataLoader processes per rank.")
@click.option("--log-every", type=click.IntRange(min=1), default=100)
@click.option("--ckpt-every", type=click.IntRange(min=1), default=5000)
@click.option("--keep-last", type=click.IntRange(min=1), default=None,
              help="Keep only the newest K checkpoints, deleting older ones after each new one is written. "
                   "[default: keep all]")
@click.option("--resume", default=None, help="'auto' (newest checkpoint in --results-dir) or a checkpoint folder.")
def train_gpt_command(code_path: str, results_dir: str, **options) -> None:
    """Train a class-conditional LlamaGen GPT on a code dataset made by `extract-codes`.

    \b
    One GPU:    bench llamagen train-gpt codes256 -o runs/gpt-b
    8 GPUs:     torchrun --nproc_per_node 8 -m bench.cli llamagen train-gpt codes256 -o runs/gpt-b
    Big models: ... --gpt-model GPT-XXL --parallel fsdp
    Resume:     ... --resume auto   (same process count; continues at the exact next step)

    The tokenizer's codebook size, the token grid and the class count come from the code dataset.
    """
    if not options["epochs"] and not options["max_steps"]:
        raise click.UsageError("--epochs 0 with no --max-steps trains nothing: give --epochs N or --max-steps N")
    result = train_gpt(GPTTrainConfig(code_path=code_path, results_dir=results_dir, **options))
    if dist.is_initialized():
        dist.destroy_process_group()
    if result["checkpoint"]:
        click.echo(f"step {result['step']}: loss {result['loss']:.4f}; checkpoint {result['checkpoint']}")
