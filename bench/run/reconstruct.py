"""`bench run --task reconstruct`: a tokenizer's rFID, PSNR and SSIM on a folder of images (ImageNet val).

Every image is ADM-center-cropped to the tokenizer's resolution (as LlamaGen's validation does), encoded and
decoded; originals and reconstructions are brought to the eval size by the preset's own resize, then
streamed shard by shard through the feature extractor, exactly like `bench run` (same run folder, resume
and torchrun sharding). The result holds:

- rFID (`metrics.rfid`), and sFID/IS/Precision/Recall, of the reconstructions against the reference batch
  (`--ref`, ADM's training-set statistics by default). IS is taken over the reconstructions in a seeded
  shuffled order, as LlamaGen's validation does: an ImageNet val folder is read class by class, and splits of
  5,000 class-sorted images would cap IS near 100;
- FID/sFID of the reconstructions against the originals themselves (`metrics.vs_originals`), the reading
  LlamaGen-derived code reports as rFID. Papers differ: say which one you compare (docs/metrics.md);
- PSNR (data_range 1 on [0, 1] images), and SSIM twice: the correct data_range=1.0, and data_range=2.0
  on the same [0, 1] images -- LlamaGen's validation script's convention, which inflates SSIM and is what
  its paper's table reports. Both are labelled; only the first is comparable across papers.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.batches import FolderImages, NpzImages, open_images
from bench.download import sha256_file
from bench.evaluate import package_versions
from bench.errors import BenchError
from bench.generator import Generator
from bench.run.loop import (RunSettings, ScorerFactory, adm_scorer_factory, device_types, is_oom, json_safe, build_generator,
                       default_extractor, device_description, run_provenance, sample_size_warnings, warn)
from bench.run.dist import ProcessGroup, gather_files, init_from_env, shutdown
from bench.run.references import check_resolution, resolve_reference
from bench.run.shards import RunFolder, Shard, fingerprint, release_run_folders


def data_fingerprint(source) -> str:
    """Cheap identity of the data: file list with sizes and modification times for a folder (an image replaced
    by another of the same size must not pass for the old one on resume), the sha256 of an npz."""
    if isinstance(source, FolderImages):
        digest = hashlib.sha256()
        for file in source.files:
            stat = file.stat()
            digest.update(f"{file.relative_to(source.path).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    return sha256_file(source.path)


def shard_images(source, shards: list[Shard], shard_size: int) -> Iterator[tuple[Shard, np.ndarray]]:
    """uint8 [n, H, W, 3] originals of each wanted shard (folders center-cropped by `source`), in the order given.

    Folder images are read individually (only the wanted ones); an npz is streamed once, skipping the rest.
    """
    if isinstance(source, FolderImages):
        for start, end in shards:
            yield (start, end), source.read(start, end)
        return
    wanted = set(shards)
    for i, block in enumerate(source.batches(shard_size)):
        shard = (i * shard_size, i * shard_size + len(block))
        if shard in wanted:
            yield shard, np.array(block)  # writable: the archive's read-only buffer upsets torch.from_numpy


def reconstruct_shard(generator: Generator, extractor, originals: np.ndarray, batch_size: int,
                      device: str) -> dict[str, np.ndarray]:
    """Features of originals and reconstructions at eval size, and per-image PSNR / SSIM."""
    from bench.metrics import psnr, ssim

    parts: dict[str, list[np.ndarray]] = {}
    for b in range(0, len(originals), batch_size):
        batch = originals[b : b + batch_size]
        try:
            recon = generator.reconstruct(batch)
            if not isinstance(recon, np.ndarray) or recon.dtype != np.uint8 or recon.shape != batch.shape:
                found = (recon.dtype, recon.shape) if isinstance(recon, np.ndarray) else type(recon).__name__
                raise BenchError(f"generator {generator.name!r} reconstructed {found}; expected uint8 {batch.shape}")
            orig_eval, recon_eval = generator.to_eval_size(batch), generator.to_eval_size(recon)
            orig_feats, recon_feats = extractor.extract(orig_eval), extractor.extract(recon_eval)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
            if not is_oom(err):
                raise
            raise BenchError(f"out of memory on {device} reconstructing a batch of {len(batch)}: finished shards "
                             f"are kept; rerun with a smaller --batch-size, e.g. {max(1, len(batch) // 2)}") from None
        x, y = orig_eval.astype(np.float64) / 255, recon_eval.astype(np.float64) / 255
        values = {"psnr": np.atleast_1d(psnr(y, x, data_range=1.0)),
                  "ssim": np.atleast_1d(ssim(y, x, data_range=1.0)),
                  "ssim_llamagen": np.atleast_1d(ssim(y, x, data_range=2.0))}
        values.update({f"orig_{k}": np.asarray(v) for k, v in orig_feats.items() if v is not None})
        values.update({f"recon_{k}": np.asarray(v) for k, v in recon_feats.items() if v is not None})
        for key, value in values.items():
            parts.setdefault(key, []).append(value)
    return {k: np.concatenate(v) for k, v in parts.items()}


def reconstruct(settings: RunSettings, data: str | Path, *, extractor=None, scorer: ScorerFactory | None = None,
                on_shard_done: Callable[[Shard], None] | None = None) -> dict[str, Any] | None:
    """Run the reconstruction benchmark; the result on rank 0, None on the other ranks."""
    group, device = init_from_env(settings.device)
    try:
        return _reconstruct(settings, Path(data), group, device, extractor, scorer or adm_scorer_factory, on_shard_done)
    finally:
        release_run_folders()
        shutdown(group)


def _reconstruct(settings: RunSettings, data: Path, group: ProcessGroup, device: str, extractor,
                 scorer: ScorerFactory, on_shard_done) -> dict[str, Any] | None:
    started = time.perf_counter()
    generator, files = build_generator(settings, device, group, task="reconstruct")
    source = open_images(data, center_crop=generator.image_size if Path(data).is_dir() else None)
    if isinstance(source, NpzImages) and source.shape[1:3] != (generator.image_size, generator.image_size):
        raise BenchError(f"{data}: holds {source.shape[1]}x{source.shape[2]} images; {settings.generator!r} "
                         f"reconstructs {generator.image_size}x{generator.image_size} (pass an image folder to "
                         "have it center-cropped)")
    num = source.num_images
    if num < 2:
        raise BenchError(f"{data}: {num} image; FID needs at least 2 (tokenizer papers use the 50,000 val images)")
    shards = [(s, min(s + settings.shard_size, num)) for s in range(0, num, settings.shard_size)]
    ref, warnings = None, []
    if group.is_main:
        ref = resolve_reference(settings.ref or f"imagenet{generator.eval_size}", settings.allow_download)
        warning = check_resolution(ref, generator.eval_size, settings.force)
        warnings += [warn(warning)] if warning else []
    extractor = extractor if extractor is not None else default_extractor(device, settings.allow_download)
    score = scorer(ref, extractor) if group.is_main else None  # reads the reference now: a bad one fails early
    config = json_safe({
        "format": 1, "bench": package_versions().get("bench"), "task": "reconstruct", "generator": settings.generator,
        "generator_config": device_types(generator.config()), "files": files,
        "data": {"path": str(data), "fingerprint": data_fingerprint(source), "num_images": num},
        "shard_size": settings.shard_size, "image_size": generator.image_size,
        "eval_size": generator.eval_size, "extractor": device_types(getattr(extractor, "provenance", None) or {}),
    })
    run_id = settings.run_id or f"{settings.generator}-reconstruct-{fingerprint(config)[:12]}"
    folder = RunFolder.open(Path(settings.runs_dir) / run_id, config, group)

    todo = [s for s in shards[group.rank :: group.world_size] if not folder.is_done(s, ("features",))]
    sampling_started = time.perf_counter()
    try:
        with tqdm(total=sum(e - s for s, e in todo), unit="img", disable=not group.is_main,
                  desc=f"reconstruct {settings.generator}") as bar, torch.inference_mode():
            for shard, originals in shard_images(source, todo, settings.shard_size):
                arrays = reconstruct_shard(generator, extractor, originals, settings.batch_size, device)
                arrays["index"] = np.arange(*shard)
                folder.write_features(shard, arrays)
                bar.update(len(originals))
                if on_shard_done is not None:
                    on_shard_done(shard)
    except KeyboardInterrupt:
        done = sum(folder.is_written(s, ("features",)) for s in shards)
        raise KeyboardInterrupt(f"{done} of {len(shards)} shards are finished and kept in {folder.path}; "
                                "run the same command again to resume") from None
    timing = group.gather((sum(e - s for s, e in todo), time.perf_counter() - sampling_started))
    gather_files(group, [(folder.shard_file(s, "features"), i % group.world_size) for i, s in enumerate(shards)])
    if not group.is_main:
        return None

    arrays = folder.concat_features(shards)
    recon = {k[len("recon_"):]: v for k, v in arrays.items() if k.startswith("recon_")}
    orig = {k[len("orig_"):]: v for k, v in arrays.items() if k.startswith("orig_")}
    warnings += [warn(w) for w in sample_size_warnings(num, {k: v.shape[1] for k, v in recon.items() if v.ndim == 2}, score.metrics)]
    shuffled = np.random.default_rng(0).permutation(num)  # only IS depends on the order (see the docstring)
    scored = score({k: v[shuffled] for k, v in recon.items()})
    vs_reference = {**scored['metrics'], **scored['details'], 'num_ref': score.num_ref}
    metrics = {
        "rfid": vs_reference.get("fid"),
        "vs_reference": vs_reference,
        "vs_originals": fid_between(recon, orig),
        "psnr": float(arrays["psnr"].mean()),
        "ssim": float(arrays["ssim"].mean()),
        "ssim_llamagen_convention": float(arrays["ssim_llamagen"].mean()),
        "conventions": {
            "psnr": "data_range=1.0 on [0, 1] images at eval size, mean over images",
            "ssim": "scikit-image structural_similarity, 7x7 uniform window, data_range=1.0 on [0, 1] images",
            "ssim_llamagen_convention": "the same with data_range=2.0 on [0, 1] images, as LlamaGen's "
                                        "validation script computes it (inflated; not comparable)",
        },
    }
    generated = sum(n for n, _ in timing)
    seconds = max(s for _, s in timing)
    result = {
        "run_id": run_id, "task": "reconstruct", "generator": settings.generator, "metrics": json_safe(metrics),
        "settings": json_safe({**settings.__dict__, "data": str(data)}), "config": config,
        "fingerprint": fingerprint(config), "checkpoint_sha256": files, "reference": ref.provenance(),
        "num_images": num, "num_samples": num, "num_ref": vs_reference.get("num_ref"),
        "provenance": run_provenance(extractor, score), "device": device_description(device),
        "world_size": group.world_size, "wall_time_s": time.perf_counter() - started,
        "images_processed": generated, "images_resumed": num - generated,
        "images_per_s": generated / seconds if generated and seconds > 0 else None, "warnings": warnings,
    }
    folder.write_result(result)
    return result


def fid_between(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """FID (pool) and sFID (spatial) between two feature sets, e.g. reconstructions and their originals."""
    from bench.metrics import feature_statistics, frechet_distance

    out = {}
    for key, name in (("pool", "fid"), ("spatial", "sfid")):
        if key in a and key in b:
            out[name] = frechet_distance(*feature_statistics(a[key]), *feature_statistics(b[key]))
    return out
