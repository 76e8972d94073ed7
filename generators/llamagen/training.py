"""Training machinery shared by the LlamaGen trainers (train_vq.py, train_gpt.py).

Process setup under torchrun (NCCL on GPUs, gloo on CPU), mixed precision, EMA, RNG state capture, and atomic,
resumable checkpoints: a checkpoint folder appears whole or not at all, and a resumed run continues with the
exact next step (model, optimizer, data position and every RNG). A results folder is locked while a run uses it
(`lock_results`), and `--keep-last` prunes old checkpoints (`prune_checkpoints`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from bench.atomic import atomic_path, write_text
from bench.errors import BenchError
from bench.distributed import ProcessGroup, init_from_env
from generators.llamagen.codes import ResumableSampler, load_checkpoint, lock_on_all_ranks

#: why a results folder is refused while another training holds its lock
BUSY = "is in use by another training run; wait for it to finish, or train into another folder (-o)"


@dataclass(frozen=True)
class DistEnv(ProcessGroup):
    """A trainer's place in the torchrun job: the harness's process group plus the device its tensors use."""

    device: torch.device = torch.device("cpu")


def setup_distributed(device: str | None = None) -> DistEnv:
    """Join the torchrun process group if launched by torchrun (NCCL on GPUs, gloo on CPU); else one process.
    On GPUs each process takes `cuda:LOCAL_RANK` (cuda:0 alone)."""
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    group, dev = init_from_env("cuda" if cuda else device or "cpu", backend="nccl" if cuda else "gloo")
    if cuda:
        dev = f"cuda:{group.local_rank}"
        torch.cuda.set_device(dev)
    return DistEnv(rank=group.rank, world_size=group.world_size, local_rank=group.local_rank, device=torch.device(dev))


def mean_over_ranks(value: float, env: DistEnv) -> float:
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return t.item() / env.world_size


PRECISIONS = {"none": torch.float32, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(env: DistEnv, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; weights and optimizer state stay float32."""
    if PRECISIONS[precision] == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(env.device.type, dtype=PRECISIONS[precision])


def grad_scaler(env: DistEnv, precision: str) -> torch.amp.GradScaler:
    """fp16 needs loss scaling (its exponent range underflows small gradients); bf16 and fp32 do not."""
    return torch.amp.GradScaler(env.device.type, enabled=precision == "fp16")


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, over parameters (buffers are not averaged, as upstream)."""
    model_params = dict(model.named_parameters())
    for name, p in ema.named_parameters():
        p.mul_(decay).add_(model_params[name].detach(), alpha=1 - decay)


def seed_everything(seed: int, env: DistEnv) -> None:
    """Rank-dependent seed, as upstream (seed * world + rank): dropout masks differ across ranks."""
    torch.manual_seed(seed * env.world_size + env.rank)


def rng_state() -> dict[str, Any]:
    """The torch RNG streams dropout and label dropout draw from (data randomness is seeded per sample)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_torch(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


CKPT_DIR_RE = re.compile(r"^(\d{7,})$")


def lock_results(results_dir: Path) -> None:
    """Lock the results folder (rank 0 holds it; every rank stops if it is taken) before anything reads or writes
    it, with the lock `bench run` takes on run folders: two trainings started into one folder would otherwise both
    run, their checkpoints replacing each other's and their log lines interleaving under the same steps. The
    refusal to start fresh where checkpoints exist (`resolve_resume`) only sees a run once it has checkpointed."""
    lock_on_all_ranks(results_dir, BUSY)


def check_counts(max_steps: int, epochs: int, keep_last: int | None) -> None:
    """Refuse a run that would train nothing (--epochs 0 without --max-steps: it would exit 0 and look done), and
    a --keep-last that would delete the checkpoint just written."""
    if max_steps <= 0 and epochs <= 0:
        raise BenchError("--epochs 0 with no --max-steps trains nothing: give --epochs N or --max-steps N (N >= 1)")
    if keep_last is not None and keep_last < 1:
        raise BenchError(f"--keep-last must be at least 1, found {keep_last}")


def checkpoint_dir(results_dir: Path, step: int) -> Path:
    return results_dir / "checkpoints" / f"{step:07d}"


def latest_checkpoint(results_dir: Path) -> Path | None:
    """The newest complete checkpoint folder (a folder is renamed into place only once every rank wrote)."""
    root = results_dir / "checkpoints"
    if not root.is_dir():
        return None
    steps = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and CKPT_DIR_RE.match(p.name))
    return checkpoint_dir(results_dir, steps[-1]) if steps else None


def write_checkpoint(results_dir: Path, step: int, env: DistEnv, shared: dict[str, Any] | None,
                     per_rank: dict[str, Any]) -> Path:
    """Write `<results>/checkpoints/<step>/`: model.pt from rank 0 (`shared`), rank{r}.pt from every rank.

    Files go to a hidden temporary folder first; rank 0 renames it after all ranks are done, so a crash leaves
    either no checkpoint for this step or a complete one.
    """
    final = checkpoint_dir(results_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    env.barrier()
    if env.is_main and shared is not None:
        save_torch(shared, tmp / "model.pt")
    save_torch(per_rank, tmp / f"rank{env.rank}.pt")
    env.barrier()
    if env.is_main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    env.barrier()
    return final


def read_checkpoint(path: Path, env: DistEnv) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model.pt, this rank's rank{r}.pt) of a checkpoint folder."""
    per_rank = path / f"rank{env.rank}.pt"
    saved_by = len(list(path.glob("rank*.pt")))
    if saved_by != env.world_size:
        raise BenchError(f"{path} was written by {saved_by} process(es), this run has {env.world_size}. Resume with "
                         "the same number of processes (each rank's RNG and data streams are restored).")
    return load_checkpoint(path / "model.pt"), load_checkpoint(per_rank)


def resolve_resume(resume: str | None, results_dir: Path) -> Path | None:
    """--resume auto: newest checkpoint of this run if any; --resume PATH: that folder; None: fresh start.

    A fresh start where checkpoints already are is refused: its log would replace theirs, and a later
    `--resume auto` would pick their checkpoints up, mixing two runs. (Branching from an older checkpoint is
    fine: `rewind` moves the newer ones aside.)
    """
    latest = latest_checkpoint(results_dir)
    if resume is None:
        if latest is not None:
            raise BenchError(f"{results_dir} already holds a run (checkpoints up to {latest.name}): continue it "
                             "with --resume auto, or train into another folder")
        return None
    if resume == "auto":
        return latest
    path = Path(resume)
    if not (path / "model.pt").exists():
        raise BenchError(f"{path}: not a checkpoint folder (expected model.pt and rank*.pt inside)")
    return path


#: train-config fields a resumed run may change: how long, how often and from where, not what is computed
RESUMABLE_CHANGES = frozenset({"resume", "results_dir", "max_steps", "epochs", "ckpt_every", "log_every",
                               "num_workers", "allow_download", "compile", "keep_last"})


def config_defaults(config_class: type) -> dict[str, Any]:
    """A train config's default field values: what a checkpoint written before a field existed ran with."""
    return {f.name: f.default for f in fields(config_class) if f.default is not MISSING}


def check_resumed_config(saved: dict[str, Any], current: dict[str, Any], checkpoint: Path,
                         defaults: dict[str, Any] | None = None) -> None:
    """Refuse to continue a checkpoint under other settings (learning rate, seed, data, batch size, model...):
    the run would no longer be the one its checkpoints and log describe. A field the checkpoint lacks (it was
    written before the field existed) counts as its default from `defaults`, so such checkpoints still resume."""
    saved = {**{k: v for k, v in (defaults or {}).items() if k in current}, **saved}
    changed = [f"  {k}: {saved.get(k, '(absent)')!r} -> {current.get(k, '(absent)')!r}"
               for k in sorted((set(saved) | set(current)) - RESUMABLE_CHANGES) if saved.get(k) != current.get(k)]
    if changed:
        raise BenchError(f"{checkpoint} was trained with other settings:\n" + "\n".join(changed) +
                         "\nResume with the same ones, or start a new run in another folder.")


def check_finite_loss(loss: float, step: int, results_dir: Path) -> None:
    """Stop at the first non-finite loss (all ranks pass the same all-reduced value, so all stop together)."""
    if not math.isfinite(loss):
        raise _diverged(f"the loss is {loss}", step, results_dir)


def check_finite_weights(state: dict[str, Any], step: int, results_dir: Path, env: DistEnv) -> None:
    """Refuse to checkpoint NaN/inf weights (one huge step makes them before any loss shows it): the last good
    checkpoint stays the newest. Every rank checks what it holds; the verdict is all-reduced."""
    bad = sum(1 for v in state.values() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all())
    if mean_over_ranks(float(bad), env) > 0:
        raise _diverged("the weights hold NaN or inf", step, results_dir)


def _diverged(what: str, step: int, results_dir: Path) -> BenchError:
    latest = latest_checkpoint(results_dir)
    return BenchError(f"step {step}: {what}; training stopped without writing this step. Lower --lr or clip "
                      "gradients (--max-grad-norm), then " + (f"--resume {latest}" if latest else "start again"))


def rewind(results_dir: Path, step: int) -> None:
    """Start (again) from `step` (rank 0 only): log.jsonl lines past it are dropped, since the run rewrites that
    stretch, and newer checkpoints move to `checkpoints/abandoned/`, so `--resume auto` never jumps back to them.
    A torn last log line (a crash mid-write) is dropped too."""
    log = results_dir / "log.jsonl"
    if log.exists():
        kept = []
        for line in log.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        write_text(log, "".join(line + "\n" for line in kept))
    root = results_dir / "checkpoints"
    newer = [p for p in root.iterdir() if CKPT_DIR_RE.match(p.name) and int(p.name) > step] if root.is_dir() else []
    for path in newer:
        target = root / "abandoned" / path.name
        while target.exists():
            target = target.with_name(target.name + "-")
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)


def prune_checkpoints(results_dir: Path, keep_last: int | None) -> list[str]:
    """Delete all but the newest `keep_last` complete checkpoint folders (None: keep all); rank 0, called only
    right after a new checkpoint is in place. Returns the names deleted.

    So the checkpoint a run resumed from survives until a newer one exists (a crash before then leaves it), and
    `checkpoints/abandoned/` is never touched. A folder is renamed to a hidden name before it is deleted: a crash
    mid-delete cannot leave a half-deleted folder that looks like a checkpoint (leftovers go at the next prune).
    """
    root = results_dir / "checkpoints"
    if keep_last is None or not root.is_dir():
        return []
    steps = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and CKPT_DIR_RE.match(p.name))
    doomed = [checkpoint_dir(results_dir, step) for step in steps[:-keep_last]]
    for leftover in root.glob(".*.pruned"):
        shutil.rmtree(leftover, ignore_errors=True)
    for path in doomed:
        hidden = path.with_name(f".{path.name}.pruned")
        os.replace(path, hidden)
        shutil.rmtree(hidden, ignore_errors=True)
    return [path.name for path in doomed]


def adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW decaying only >= 2-D tensors (linear weights, embeddings), not norm gains or biases (upstream)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = torch.cuda.is_available() and all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None)


def make_loader(dataset, sampler: ResumableSampler, micro_batch: int, num_workers: int) -> DataLoader:
    # A private generator: creating a loader iterator must not consume the global RNG (exact resume).
    return DataLoader(dataset, batch_size=micro_batch, sampler=sampler, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), drop_last=True, generator=torch.Generator())


def epoch_batches(dataset, sampler: ResumableSampler, loader_args: tuple[int, int], start_step: int
                  ) -> Iterator[Any]:
    """Micro-batches from optimizer step `start_step` on, forever: epoch = step // steps per epoch."""
    epoch, skip = divmod(start_step, sampler.batches_per_epoch)
    while True:
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, skip)
        yield from make_loader(dataset, sampler, *loader_args)
        epoch, skip = epoch + 1, 0
