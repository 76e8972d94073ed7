"""`bench run --task reconstruct`: a tokenizer's rFID, PSNR and SSIM on a folder of images (ImageNet val).

Every image is ADM-center-cropped to the tokenizer's resolution (as LlamaGen's validation does), encoded and
decoded; originals and reconstructions are brought to the eval size by the preset's own resize and both go
through the feature networks, shard by shard, in the same executor as sampling (same run folder, resume and
torchrun sharding). The result's metrics, flat like every result's:

- `rfid`, and `sfid`, `inception_score`, `precision`, `recall` (and any metric `--metrics` adds) of the
  reconstructions against the reference batch (`--ref`, ADM's training-set statistics by default). IS is taken
  over the reconstructions in a seeded shuffled order, as LlamaGen's validation does: an ImageNet val folder is
  read class by class, and splits of 5,000 class-sorted images would cap IS near 100;
- `rfid_vs_originals`, `sfid_vs_originals`: FID/sFID of the reconstructions against the originals themselves,
  the reading LlamaGen-derived code reports as rFID. Papers differ: say which one you compare (docs/metrics.md);
- `psnr` (data_range 1 on [0, 1] images), and SSIM twice: `ssim`, the correct data_range=1.0, and
  `ssim_llamagen`, data_range=2.0 on the same [0, 1] images -- LlamaGen's validation script's convention, which
  inflates SSIM and is what its paper's table reports. `details.conventions` says which is which.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bench.batches import FolderImages, ImageSource, NpzImages, open_images
from bench.download import sha256_file
from bench.errors import BenchError
from bench.generator import Generator
from bench.run.task import Extract, Score, Shard, Task

CONVENTIONS = {
    "rfid": "FID of the reconstructions against the reference batch (--ref)",
    "rfid_vs_originals": "FID of the reconstructions against their own originals (what LlamaGen-derived code "
                         "reports as rFID)",
    "psnr": "data_range=1.0 on [0, 1] images at eval size, mean over images",
    "ssim": "scikit-image structural_similarity, 7x7 uniform window, data_range=1.0 on [0, 1] images",
    "ssim_llamagen": "the same with data_range=2.0 on [0, 1] images, as LlamaGen's validation script computes it "
                     "(inflated; not comparable)",
}


@dataclass
class ReconstructTask(Task):
    """Encode and decode every image of `data` (an image folder, center-cropped, or an npz at the tokenizer's size)."""

    data: str

    name = "reconstruct"
    run_id_tag = "reconstruct"

    def check(self, generator: Generator) -> None:
        if not generator.can_reconstruct:
            raise BenchError(f"generator {generator.name!r} is not a tokenizer: --task reconstruct needs one, "
                             "e.g. -g llamagen-vq16")

    def prepare(self, generator: Generator, shard_size: int) -> None:
        data = Path(self.data)
        self.source = open_images(data, center_crop=generator.image_size if data.is_dir() else None)
        if isinstance(self.source, NpzImages) and self.source.shape[1:3] != (generator.image_size,) * 2:
            raise BenchError(f"{data}: holds {self.source.shape[1]}x{self.source.shape[2]} images; {generator.name!r} "
                             f"reconstructs {generator.image_size}x{generator.image_size} (pass an image folder to "
                             "have it center-cropped)")
        num = self.source.num_images
        if num < 2:
            raise BenchError(f"{data}: {num} image; FID needs at least 2 (tokenizer papers use the 50,000 val images)")
        self.codebook_size = generator.codebook_size()
        self.shard_size = shard_size
        self._shards = [(s, min(s + shard_size, num)) for s in range(0, num, shard_size)]

    def config(self) -> dict[str, Any]:
        return {"data": {"path": str(self.data), "fingerprint": data_fingerprint(self.source),
                         "num_images": self.source.num_images}}

    def shards(self) -> list[Shard]:
        return self._shards

    def inputs(self, todo: list[Shard]) -> Iterator[tuple[Shard, np.ndarray]]:
        """Folder images are read individually (only the wanted ones); an npz is streamed once, skipping the rest."""
        if isinstance(self.source, FolderImages):
            for start, end in todo:
                yield (start, end), self.source.read(start, end)
            return
        wanted = set(todo)
        for i, block in enumerate(self.source.batches(self.shard_size)):
            shard = (i * self.shard_size, i * self.shard_size + len(block))
            if shard in wanted:
                yield shard, np.array(block)  # writable: the archive's read-only buffer upsets torch.from_numpy

    def process(self, generator: Generator, indices: np.ndarray, rows: np.ndarray | None,
                extract: Extract) -> dict[str, np.ndarray]:
        """Features of originals and reconstructions at eval size, and per-image PSNR / SSIM."""
        from bench.metrics import psnr, ssim

        recon, codes = generator.reconstruct_with_codes(rows)
        if not isinstance(recon, np.ndarray) or recon.dtype != np.uint8 or recon.shape != rows.shape:
            found = (recon.dtype, recon.shape) if isinstance(recon, np.ndarray) else type(recon).__name__
            raise BenchError(f"generator {generator.name!r} reconstructed {found}; expected uint8 {rows.shape}")
        orig_eval, recon_eval = generator.to_eval_size(rows), generator.to_eval_size(recon)
        x, y = orig_eval.astype(np.float64) / 255, recon_eval.astype(np.float64) / 255
        counted = {} if codes is None or not self.codebook_size else \
            {"codes": np.asarray(codes, dtype=np.int64).reshape(len(rows), -1)}
        return {**counted, "psnr": np.atleast_1d(psnr(y, x, data_range=1.0)),
                "ssim": np.atleast_1d(ssim(y, x, data_range=1.0)),
                "ssim_llamagen": np.atleast_1d(ssim(y, x, data_range=2.0)),
                **{f"orig_{k}": v for k, v in extract(orig_eval).items()},
                **{f"recon_{k}": v for k, v in extract(recon_eval).items()}}

    def score(self, arrays: dict[str, np.ndarray], score: Score) -> dict[str, Any]:
        recon = {k.removeprefix("recon_"): v for k, v in arrays.items() if k.startswith("recon_")}
        orig = {k.removeprefix("orig_"): v for k, v in arrays.items() if k.startswith("orig_")}
        shuffled = np.random.default_rng(0).permutation(len(arrays["index"]))  # only IS depends on the order
        vs_reference = score({k: v[shuffled] for k, v in recon.items()})
        renamed = {"fid": "rfid"}
        metrics = {renamed.get(k, k): v for k, v in vs_reference["metrics"].items()}
        unavailable = {renamed.get(k, k): v for k, v in vs_reference.get("unavailable", {}).items()}
        for array, key in (("pool", "rfid_vs_originals"), ("spatial", "sfid_vs_originals")):
            if array in recon and array in orig:
                metrics[key] = frechet_between(recon[array], orig[array])
            else:
                metrics[key], unavailable[key] = None, f"the feature networks gave no {array!r} features"
        metrics.update({key: float(arrays[key].mean()) for key in ("psnr", "ssim", "ssim_llamagen")})
        if "codes" in arrays:  # the codebook entries that encode at least one token of the data
            metrics["codebook_usage"] = np.unique(arrays["codes"]).size / self.codebook_size
        return {"metrics": metrics, "unavailable": unavailable,
                "details": {**vs_reference.get("details", {}), "conventions": CONVENTIONS}}


def frechet_between(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between two feature sets, e.g. reconstructions and their originals: from `a`'s rows
    (the N x N route when N is below the width: the noise estimate repeats it per resample)."""
    from bench.metrics import feature_statistics
    from bench.metrics.frechet import frechet_distance_from_rows

    return frechet_distance_from_rows(a, *feature_statistics(b))


def data_fingerprint(source: ImageSource) -> str:
    """Cheap identity of the data: file list with sizes and modification times for a folder (an image replaced
    by another of the same size must not pass for the old one on resume), the sha256 of an npz."""
    if isinstance(source, FolderImages):
        digest = hashlib.sha256()
        for file in source.files:
            stat = file.stat()
            digest.update(f"{file.relative_to(source.path).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    return sha256_file(source.path)
