"""torchrun process groups for every bench command: set-up from the environment, and gathering files on rank 0.

`torchrun --nproc_per_node=K bench run ...` (or `... llamagen train-gpt ...`) sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR; without them a command is a single process and every collective here is a no-op. `bench run` joins a
gloo group (it exchanges only files and small objects) and `gather_files` copies whole shard files onto rank 0, so
rank 0 ends up with every shard in its own run folder whether or not the folder is on a shared filesystem, and
scoring reads the same files in the same order as a single-process run. The trainers join an NCCL group on GPUs.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bench.atomic import write_bytes


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` on rank 0 (None elsewhere); `[obj]` when single-process."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


#: ranks wait for the slowest one at the end; with 1000-sample shards of a 3B model that can be an hour
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=6)


def init_from_env(device: str, backend: str = "gloo") -> tuple[ProcessGroup, str]:
    """Join the torchrun process group if there is one; returns it and this rank's device.

    Each rank on CUDA takes `cuda:LOCAL_RANK`. `bench run` keeps gloo even then: it only exchanges files and small
    objects, which live on the CPU, and gloo needs no device placement for them. Trainers all-reduce CUDA
    tensors and pass `backend="nccl"`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return ProcessGroup(rank, world_size, local_rank), device


def shutdown(group: ProcessGroup) -> None:
    """Leave the process group (at the end of a command, however it ends)."""
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()


def gather_files(group: ProcessGroup, wanted: list[tuple[Path, int]]) -> None:
    """Copy files onto rank 0: `wanted` lists (path, owner rank) in the same order on every rank.

    Rank 0 announces which paths it lacks; each is then sent, one at a time, by its owner, so at most one
    shard file is in flight and memory stays bounded by a shard.
    """
    if not group.distributed:
        return
    missing = group.broadcast([i for i, (path, _) in enumerate(wanted) if not path.exists()] if group.is_main else None)
    for i in missing:
        path, owner = wanted[i]
        payload = path.read_bytes() if group.rank == owner and path.exists() else None
        received = group.gather(payload)
        if group.is_main:
            data = received[owner]
            if data is None:
                raise RuntimeError(f"rank {owner} did not produce {path.name}")
            write_bytes(path, data)
