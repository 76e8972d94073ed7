"""Training data for LlamaGen: image folders, the official crops, VQ code extraction, and the code dataset.

The GPT never sees pixels: every training image is encoded once by the tokenizer into a grid of code indices
(`extract_codes`), several augmented views per image, and the GPT trains on those codes (`CodeDataset`).

Views per image (LlamaGen `extract_codes_c2i.py`):
  * default: ADM center crop at `image_size`, and its horizontal flip -> 2 views;
  * `ten_crop`: ADM center crop at int(image_size * crop_range) (crop_range 1.1: 281 px for 256), then
    torchvision's TenCrop(image_size): corners tl, tr, bl, br, center, then the same five of the mirrored
    image -> 10 views. Each epoch a sample uses one view, drawn uniformly.

Code dataset layout (a folder; written by one or many ranks, readable while training with mmap):
    codes.npy   [N, views, tokens]  uint16 (int32 for codebooks over 65536 entries), row-major token grid
    labels.npy  [N]                 int64 class index (sorted class-folder order, as torchvision ImageFolder)
    meta.json   image_size, views, tokens, ten_crop, crop_range, codebook_size, classes; where the codes come
                from: the image folder, the images left out (--skip-bad-images), the tokenizer (path, sha256,
                weights, config) and the sha256 of codes.npy and labels.npy. Written last, so a folder without
                it is an unfinished extraction and is refused.

Every image is decoded once before the first step or batch (`drop_unreadable`): a truncated JPEG stops the run
up front with the list of every unreadable file, not hours in, or is left out with --skip-bad-images.

Randomness (crop offsets, flips, view choice) is drawn from a generator seeded by (seed, epoch, index), never
from global state, so a resumed run and DataLoader workers see exactly the data an uninterrupted run sees.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator

import click
import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from bench.atomic import write_json
from bench.batches import IMAGE_EXTENSIONS, center_crop_arr, read_rgb, resize_short_side  # one reader, one list
from bench.checkpoint import load_torch_file
from bench.distributed import init_from_env, shutdown
from bench.download import sha256_file
from bench.errors import BenchError
from bench.locks import lock_folder, release_folder
from generators.llamagen.vq import VQ_CONFIGS


# ----------------------------------------------------------------------------------------------------------------
# Image folders and crops


def list_image_folder(root: str | os.PathLike) -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, labels, classes) of an ImageNet-style folder, ordered like torchvision's ImageFolder.

    Classes are the sorted subfolder names (label = position); files are walked recursively and sorted, so
    labels match those of the official pipeline and of every released checkpoint.
    """
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"{root}: not a directory. Expected an ImageNet-style folder: one subfolder per class.")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise BenchError(f"{root}: no class subfolders. Expected root/<class name>/<image files>.")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        for dirpath, _, filenames in sorted(os.walk(root / name, followlinks=True)):
            for fname in sorted(filenames):
                if fname.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(Path(dirpath) / fname)
                    labels.append(label)
    if not files:
        raise BenchError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its {len(classes)} class folders")
    return files, np.asarray(labels, dtype=np.int64), classes


class _DecodeCheck(Dataset):
    """(index, "" or why it cannot be read) for each file, decoded exactly as training decodes it (`bench.batches.read_rgb`)."""

    def __init__(self, files: list[Path], indices: list[int]):
        self.files, self.indices = files, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, str]:
        index = self.indices[i]
        try:
            read_rgb(self.files[index])
        except BenchError as err:
            return index, str(err)
        return index, ""


def unreadable_images(files: list[Path], num_workers: int = 0) -> dict[int, str]:
    """Index -> why, for every file of `files` that cannot be decoded; the same answer on every rank.

    Each image is decoded once, the ranks splitting the files and each using `num_workers` processes: on
    ImageNet's 1.28M JPEGs that is minutes, against a run that would otherwise stop at the first bad file hours
    in (and again at the next one after a resume)."""
    rank, world = _dist_info()
    loader = DataLoader(_DecodeCheck(files, list(range(rank, len(files), world))), batch_size=64,
                        num_workers=num_workers, collate_fn=list)
    bad = {}
    for batch in tqdm(loader, desc=f"check {len(files):,} images", unit="batch", disable=rank != 0, leave=False):
        bad.update((index, why) for index, why in batch if why)
    if world > 1:
        every: list[dict[int, str] | None] = [None] * world
        dist.all_gather_object(every, bad)
        bad = {index: why for part in every for index, why in (part or {}).items()}
    return bad


def drop_unreadable(files: list[Path], labels: np.ndarray, root: str | os.PathLike, skip_bad: bool,
                    num_workers: int = 0) -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, labels) without the unreadable images, and those images' paths relative to `root`.

    Without `skip_bad` any unreadable image is a `BenchError` listing every one of them, so one look fixes
    them all; with it they are left out and one warning says how many.
    """
    bad = unreadable_images(files, num_workers)
    if not bad:
        return files, labels, []
    listing = "\n".join(f"  {bad[i]}" for i in sorted(bad))
    if not skip_bad:
        raise BenchError(f"{root}: {len(bad)} of {len(files)} images cannot be read:\n{listing}\nReplace or remove "
                         "them, or pass --skip-bad-images to leave them out")
    if len(bad) == len(files):
        raise BenchError(f"{root}: none of its {len(files)} images can be read:\n{listing}")
    if _dist_info()[0] == 0:
        warnings.warn(f"{root}: left out {len(bad)} unreadable image(s) of {len(files)} (--skip-bad-images):\n"
                      f"{listing}", stacklevel=2)
    keep = [i for i in range(len(files)) if i not in bad]
    skipped = [os.path.relpath(files[i], root) for i in sorted(bad)]
    return [files[i] for i in keep], labels[keep], skipped


def lock_on_all_ranks(path: str | os.PathLike, busy: str) -> None:
    """Rank 0 locks the output folder `path` (`bench.locks.lock_folder`, as `bench run` locks run folders; held
    until `release_folder` or the process ends), and every rank raises if it is taken: a rank going on alone would
    wait forever at its next collective."""
    rank, world = _dist_info()
    refusal = None
    if rank == 0:
        try:
            lock_folder(path, busy)
        except BenchError as err:
            refusal = str(err)
    if world > 1:
        box = [refusal]
        dist.broadcast_object_list(box, src=0)
        refusal = box[0]
    if refusal is not None:
        raise BenchError(refusal)


def random_crop_arr(image: Image.Image, image_size: int, rng: np.random.Generator,
                    min_crop_frac: float = 0.8, max_crop_frac: float = 1.0) -> np.ndarray:
    """ADM's random-resized crop (tokenizer training): short side resized to a random size in
    [ceil(S / max_frac), ceil(S / min_frac)] (BOX halvings, then BICUBIC), then a random S x S window."""
    smaller = int(rng.integers(math.ceil(image_size / max_crop_frac), math.ceil(image_size / min_crop_frac) + 1))
    arr = np.asarray(resize_short_side(image, smaller))
    top = int(rng.integers(arr.shape[0] - image_size + 1))
    left = int(rng.integers(arr.shape[1] - image_size + 1))
    return arr[top : top + image_size, left : left + image_size]


def five_crop(arr: np.ndarray, size: int) -> list[np.ndarray]:
    """torchvision five_crop on an HWC array: top-left, top-right, bottom-left, bottom-right, center.

    The center offset is int(round((H - size) / 2)) with Python's round-half-to-even, as torchvision does
    (281 -> 256: offset 12, not 13).
    """
    h, w = arr.shape[:2]
    if size > h or size > w:
        raise BenchError(f"crop size {size} is larger than the image ({h}x{w})")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return [arr[:size, :size], arr[:size, w - size :], arr[h - size :, :size], arr[h - size :, w - size :],
            arr[top : top + size, left : left + size]]


def ten_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """torchvision TenCrop: the five crops, then the five crops of the horizontally mirrored image. [10, S, S, C]"""
    return np.stack(five_crop(arr, size) + five_crop(arr[:, ::-1], size))


def image_views(image: Image.Image, image_size: int, use_ten_crop: bool, crop_range: float = 1.1) -> np.ndarray:
    """The augmented views the official extraction encodes for one image: uint8 [2 or 10, S, S, 3]."""
    if use_ten_crop:
        return ten_crop(center_crop_arr(image, int(image_size * crop_range)), image_size)
    center = center_crop_arr(image, image_size)
    return np.stack([center, center[:, ::-1]])


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1] (ToTensor then Normalize(0.5, 0.5), as upstream)."""
    return (images.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The private random stream of one sample in one epoch (independent of workers, ranks and resumes)."""
    return np.random.default_rng([seed, epoch, index])


class ImageFolderDataset(Dataset):
    """Tokenizer training images: random ADM crop + random horizontal flip, uint8 [S, S, 3] and the label."""

    def __init__(self, root: str | os.PathLike, image_size: int, seed: int = 0):
        self.root = Path(root)
        self.files, self.labels, self.classes = list_image_folder(root)
        self.image_size = image_size
        self.seed = seed
        self.epoch = 0

    def check_images(self, skip_bad: bool, num_workers: int = 0) -> list[str]:
        """Decode every image once before training (see `drop_unreadable`); returns the images left out."""
        self.files, self.labels, skipped = drop_unreadable(self.files, self.labels, self.root, skip_bad, num_workers)
        return skipped

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        rng = sample_rng(self.seed, self.epoch, index)
        arr = random_crop_arr(read_rgb(self.files[index]), self.image_size, rng)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        return np.array(arr), int(self.labels[index])  # a writable, contiguous copy


class ResumableSampler(Sampler[int]):
    """Per-epoch shuffled indices for one rank, able to start mid-epoch.

    Epoch e uses torch.randperm(N) seeded with seed + e, cut to whole global batches; rank r takes positions
    r, r + W, r + 2W, ... (like DistributedSampler), so the union of the ranks' k-th batches is exactly the k-th
    global batch of a single-process run. `set_epoch(e, skip_batches=k)` resumes after k global batches.
    """

    def __init__(self, num_samples: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if global_batch % world_size:
            raise BenchError(f"global batch size {global_batch} is not divisible by the {world_size} processes")
        if num_samples < global_batch:
            raise BenchError(f"the dataset has {num_samples} samples, fewer than one global batch ({global_batch})")
        self.num_samples, self.global_batch = num_samples, global_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.skip = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def _rank_indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.num_samples, generator=g)[: self.batches_per_epoch * self.global_batch]
        start = self.skip * self.global_batch
        return perm[start + self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._rank_indices())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip) * (self.global_batch // self.world_size)


# ----------------------------------------------------------------------------------------------------------------
# Code extraction


class _ViewsDataset(Dataset):
    def __init__(self, files: list[Path], indices: list[int], image_size: int, use_ten_crop: bool,
                 crop_range: float):
        self.files, self.indices = files, indices
        self.image_size, self.use_ten_crop, self.crop_range = image_size, use_ten_crop, crop_range

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        index = self.indices[i]
        views = image_views(read_rgb(self.files[index]), self.image_size, self.use_ten_crop, self.crop_range)
        return np.ascontiguousarray(views), index


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def extract_codes(encode: Callable[[torch.Tensor], torch.Tensor], data_dir: str | os.PathLike,
                  out_dir: str | os.PathLike, image_size: int, codebook_size: int, use_ten_crop: bool = False,
                  crop_range: float = 1.1, batch_size: int = 32, num_workers: int = 4,
                  device: str | torch.device = "cpu", skip_bad_images: bool = False,
                  tokenizer: dict | None = None) -> Path:
    """Encode every image of `data_dir` (all its views) with `encode` and write a code dataset to `out_dir`.

    `encode` maps float [B, 3, S, S] in [-1, 1] to integer codes [B, h, w] (or [B, tokens]). Under torchrun each
    rank encodes images rank, rank + W, ... into the shared `codes.npy`; rank 0 finishes the folder. `tokenizer`
    (what `encode` runs: its checkpoint's path and sha256, weights, config) is recorded in meta.json, so the codes
    say which tokenizer they need at sampling time. The folder is locked while extraction writes into it.
    """
    out = Path(out_dir)
    lock_on_all_ranks(out, "is in use by another code extraction; wait for it to finish, or write to another "
                           "folder (-o)")
    try:
        return _extract_codes(encode, data_dir, out, image_size, codebook_size, use_ten_crop, crop_range,
                              batch_size, num_workers, device, skip_bad_images, tokenizer)
    finally:
        release_folder(out)


def _extract_codes(encode: Callable[[torch.Tensor], torch.Tensor], data_dir: str | os.PathLike, out: Path,
                   image_size: int, codebook_size: int, use_ten_crop: bool, crop_range: float, batch_size: int,
                   num_workers: int, device: str | torch.device, skip_bad_images: bool,
                   tokenizer: dict | None) -> Path:
    rank, world = _dist_info()
    if (out / "meta.json").exists():  # checked on every rank, before any of them writes
        raise BenchError(f"{out} already holds a finished code dataset; write the new one to another folder (or "
                         "delete this one first)")
    files, labels, classes = list_image_folder(data_dir)
    files, labels, skipped = drop_unreadable(files, labels, data_dir, skip_bad_images, num_workers)
    n_views = 10 if use_ten_crop else 2
    codes_path = out / "codes.npy"
    dtype = np.uint16 if codebook_size <= 65536 else np.int32

    # The token count comes from encoding one view (the tokenizer decides the grid).
    probe = image_views(read_rgb(files[0]), image_size, use_ten_crop, crop_range)[:1]
    with torch.no_grad():
        n_tokens = int(encode(to_model_range(torch.from_numpy(probe).to(device))).reshape(1, -1).shape[1])

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)  # incomplete until meta.json is written, last
        np.lib.format.open_memmap(codes_path, mode="w+", dtype=dtype, shape=(len(files), n_views, n_tokens))
    _barrier()
    codes = np.lib.format.open_memmap(codes_path, mode="r+")

    dataset = _ViewsDataset(files, list(range(rank, len(files), world)), image_size, use_ten_crop, crop_range)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    with torch.no_grad():
        for views, index in tqdm(loader, desc=f"extract codes (rank {rank})", disable=rank != 0):
            b = views.shape[0]
            flat = to_model_range(views.flatten(0, 1).to(device))
            got = encode(flat).reshape(b, n_views, -1)
            if got.shape[-1] != n_tokens:
                raise BenchError(f"the tokenizer returned {got.shape[-1]} tokens per view, expected {n_tokens}")
            if int(got.min()) < 0 or int(got.max()) >= codebook_size:
                raise BenchError(f"codes outside [0, {codebook_size}): is --codebook-size right?")
            codes[index.numpy()] = got.cpu().numpy().astype(dtype)
    codes.flush()
    del codes
    _barrier()

    if rank == 0:
        with open(out / "labels.npy.tmp", "wb") as f:
            np.save(f, labels)
        os.replace(out / "labels.npy.tmp", out / "labels.npy")
        write_json(out / "meta.json", {
            "num_images": len(files), "views": n_views, "tokens": n_tokens, "image_size": image_size,
            "ten_crop": use_ten_crop, "crop_range": crop_range if use_ten_crop else 1.0,
            "codebook_size": codebook_size, "classes": classes,
            "data": str(Path(data_dir).resolve()), "skipped_images": skipped, "tokenizer": tokenizer,
            "codes_sha256": sha256_file(codes_path), "labels_sha256": sha256_file(out / "labels.npy"),
        })
    _barrier()
    return out


# ----------------------------------------------------------------------------------------------------------------
# Code dataset


class CodeDataset(Dataset):
    """(codes LongTensor [tokens], label) pairs from an extracted folder; one random view per sample and epoch."""

    def __init__(self, path: str | os.PathLike, seed: int = 0):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            raise BenchError(f"{self.path}: not a finished code dataset (no meta.json). Run the code extraction "
                             "first (bench llamagen extract-codes), and let it finish.")
        try:
            raw = meta_path.read_bytes()
            #: identifies the code dataset (meta.json records the sha256 of codes.npy and labels.npy, and the tokenizer)
            self.meta_sha256 = hashlib.sha256(raw).hexdigest()
            self.meta = json.loads(raw)
            self.shape = (int(self.meta["num_images"]), int(self.meta["views"]), int(self.meta["tokens"]))
            codebook_size, num_classes = int(self.meta["codebook_size"]), len(self.meta["classes"])
            self.labels = np.load(self.path / "labels.npy", allow_pickle=False)
            codes = self._open_codes()
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise BenchError(f"{self.path}: not a readable code dataset ({type(err).__name__}: {err}); extract it "
                             "again with bench llamagen extract-codes") from None
        if codes.shape != self.shape or self.labels.shape != (self.shape[0],):
            raise BenchError(f"{self.path}: codes.npy has shape {codes.shape} and labels.npy {self.labels.shape}; "
                             f"meta.json promises {self.shape} and ({self.shape[0]},)")
        self._check_range("codes.npy", codes, codebook_size, "the codebook size")
        self._check_range("labels.npy", self.labels, num_classes, "the number of classes in meta.json")
        self._codes: np.ndarray | None = None
        self.seed = seed
        self.epoch = 0

    def _check_range(self, name: str, values: np.ndarray, bound: int, what: str, chunk: int = 1 << 16) -> None:
        """Integers in [0, bound), scanned in chunks of the memory map. An out-of-range code or label would fail
        mid-training as an index error (a device-side assert on GPU), or silently train as the null class."""
        if values.dtype.kind not in "iu":
            raise BenchError(f"{self.path / name}: holds {values.dtype} values; codes and labels are integers")
        low, high = 0, -1
        for start in range(0, len(values), chunk):
            part = np.asarray(values[start:start + chunk])
            if part.size:
                low, high = min(low, int(part.min())), max(high, int(part.max()))
        if low < 0 or high >= bound:
            raise BenchError(f"{self.path / name}: values span [{low}, {high}], outside [0, {bound}) ({what})")

    def _open_codes(self) -> np.ndarray:
        return np.load(self.path / "codes.npy", mmap_mode="r")

    def __getstate__(self) -> dict:
        # DataLoader workers started with "spawn" pickle the dataset: send the path, never the mapped array.
        return {**self.__dict__, "_codes": None}

    @property
    def tokens(self) -> int:
        return int(self.meta["tokens"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._codes is None:
            self._codes = self._open_codes()  # one memory map per process
        view = int(sample_rng(self.seed, self.epoch, index).integers(self.shape[1]))
        return torch.from_numpy(self._codes[index, view].astype(np.int64)), int(self.labels[index])


# ----------------------------------------------------------------------------------------------------------------
# Loading a tokenizer checkpoint and the command line


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint, read weights-only (`bench.checkpoint`); upstream ones also pickle their arguments."""
    ckpt = load_torch_file(path, "tokenizer checkpoint")
    if not isinstance(ckpt, dict):
        raise BenchError(f"{path}: expected a dict checkpoint, found {type(ckpt).__name__}")
    return ckpt


def load_vq(path: str | os.PathLike, vq_model: str = "VQ-16", weights: str = "model", **config_overrides):
    """A VQModel in eval mode from a training checkpoint: ours (its config is stored inside) or upstream's
    ({"model": ..., "ema": ...}, architecture from `vq_model` and `config_overrides`)."""
    from generators.llamagen.checkpoints import load_strict
    from generators.llamagen.vq import VQ_CONFIGS, VQConfig, VQModel, vq_config

    ckpt = load_checkpoint(path)
    if weights not in ckpt:
        raise BenchError(f"{path}: no {weights!r} weights in this checkpoint (keys: {', '.join(map(str, ckpt))})")
    if "vq_config" in ckpt:
        config, what = VQConfig(**ckpt["vq_config"]), "the tokenizer described in the checkpoint"
    elif vq_model in VQ_CONFIGS:
        config, what = vq_config(vq_model, **config_overrides), f"a {vq_model} tokenizer with {config_overrides}"
    else:
        raise BenchError(f"unknown VQ model {vq_model!r}; known: {', '.join(VQ_CONFIGS)}")
    model = VQModel(config)
    load_strict(model, ckpt[weights], what, optional=("quantize.codebook_used",))
    return model.eval()


@click.command("extract-codes", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write codes.npy, labels.npy and meta.json into.")
@click.option("--vq-ckpt", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Tokenizer checkpoint: one written by `train-vq`, or upstream's vq_ds16_c2i.pt.")
@click.option("--vq-model", default="VQ-16", show_default=True, type=click.Choice(list(VQ_CONFIGS)),
              help="Architecture, for upstream checkpoints (ours record it).")
@click.option("--codebook-size", default=16384, show_default=True, help="For upstream checkpoints.")
@click.option("--codebook-embed-dim", default=8, show_default=True, help="For upstream checkpoints.")
@click.option("--weights", default="model", show_default=True, type=click.Choice(["model", "ema"]),
              help="Which weights of the checkpoint to encode with.")
@click.option("--image-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Crop size fed to the tokenizer.")
@click.option("--ten-crop", is_flag=True,
              help="10 views per image (4 corners + center of a crop_range-larger center crop, and mirrors) "
                   "instead of 2 (center crop and its mirror). LlamaGen's 384px models use this.")
@click.option("--crop-range", default=1.1, show_default=True,
              help="With --ten-crop: center crop to S*crop_range first.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per batch (each brings all its views).")
@click.option("--num-workers", type=click.IntRange(min=0), default=4, show_default=True,
              help="Image decoding processes.")
@click.option("--skip-bad-images", is_flag=True,
              help="Leave out images that cannot be decoded (listed in a warning and in meta.json) instead of "
                   "stopping; every image is decoded once up front either way.")
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
def extract_codes_command(data_dir: str, out_dir: str, vq_ckpt: str, vq_model: str, codebook_size: int,
                          codebook_embed_dim: int, weights: str, image_size: int, ten_crop: bool, crop_range: float,
                          batch_size: int, num_workers: int, skip_bad_images: bool, device: str) -> None:
    """Encode an ImageNet-style folder (DATA_DIR/<class>/<images>) into the code dataset the GPT trains on.

    \b
    Single process:  bench llamagen extract-codes /data/imagenet/train -o codes256 --vq-ckpt vq_ds16_c2i.pt
    Several GPUs:    torchrun --nproc_per_node 8 -m bench.cli llamagen extract-codes ... (ranks share the output)
    Then:            bench llamagen train-gpt codes256 ...
    """
    group, device = init_from_env(device, backend="nccl" if device.startswith("cuda") else "gloo")
    model = load_vq(vq_ckpt, vq_model, weights, codebook_size=codebook_size,
                    codebook_embed_dim=codebook_embed_dim).to(device)
    tokenizer = None
    if group.is_main:  # only rank 0 writes meta.json
        tokenizer = {"path": str(Path(vq_ckpt).resolve()), "sha256": sha256_file(vq_ckpt), "weights": weights,
                     "vq_config": dataclasses.asdict(model.config)}
    out = extract_codes(lambda x: model.encode_to_codes(x), data_dir, out_dir, image_size,
                        model.config.codebook_size, ten_crop, crop_range, batch_size, num_workers, device,
                        skip_bad_images=skip_bad_images, tokenizer=tokenizer)
    if group.is_main:
        click.echo(f"wrote {out}")
    shutdown(group)
