"""`bench run`'s executor: the one skeleton every task runs in, streaming, resumable and sharded over torchrun.

    build the generator         resolve, verify and load its files (the first process of each node downloads)
    check the reference         resolve it and refuse another resolution -- before any sampling
    load the feature networks   those the selected metrics need (`--metrics +kid`, ADM's five by default)
    claim the run folder        locked; shards of another configuration are refused, damaged ones set aside
    process the shards          this rank's unfinished ones, one batch at a time (a `Task` says how), Ctrl-C safe
    gather and score            every shard onto rank 0, scored against the reference (the task says with what)
    write the result            runs/<run-id>/result.json, a `bench.result.Result`

A task (bench/run/task.py) supplies only what differs between kinds of run; this module imports none of them.

    execute(SampleTask(num_samples=10_000), RunSettings(generator="llamagen-xl"))
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import click
import numpy as np
import torch
from tqdm.auto import tqdm

from bench import features
from bench.atomic import atomic_path
from bench.device import check_device
from bench.distributed import ProcessGroup, gather_files, init_from_env, shutdown
from bench.download import resolve_all, sha256_file
from bench.errors import BenchError, MissingFilesError
from bench.generator import Generator
from bench.plugins import load_preset
from bench.metrics import registry
from bench.metrics.registry import Metric
from bench.result import Result, json_safe, package_versions
from bench.references import Reference, check_resolution, offline_hint, registry_file, resolve_reference
from bench.run.score import Scorer, resampled_metrics
from bench.run.shards import RunFolder, Shard, fingerprint, release_run_folders
from bench.run.task import Extract, Task

#: bumped when the shard layout changes: shards of another format are never mixed in
FORMAT = 2


@dataclass
class RunSettings:
    """What every `bench run` is asked, whatever its task."""

    generator: str
    #: sampling settings for the generator's preset: the common flags and --set NAME=VALUE, given ones only
    overrides: dict[str, Any] = field(default_factory=dict)
    ckpt: str | None = None
    batch_size: int = 32
    shard_size: int = 1000
    ref: str | None = None
    #: `--metrics`: None for ADM's five, "+kid" to add, "fid,kid" for exactly these (bench.metrics.registry.select)
    metrics: str | None = None
    #: each feature network's own options, e.g. {"inception": {"weights": "pt_inception.pth"}} (`--inception`)
    feature_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: bootstrap resamples of the samples for the result's noise estimate (0: none); see bench/metrics/bootstrap.py
    noise_resamples: int = 10
    force: bool = False
    run_id: str | None = None
    runs_dir: str = "runs"
    device: str = "cpu"
    allow_download: bool = True
    #: print each warning when it arises (they are in the result either way); the demo says them once per board
    echo_warnings: bool = True

    def __post_init__(self):
        if self.run_id is not None and (self.run_id in ("", ".", "..") or Path(self.run_id).name != self.run_id):
            raise BenchError(f"--run-id {self.run_id!r}: a folder name inside --runs-dir, without '/' or '..'")
        check_device(self.device)
        if self.noise_resamples < 0 or self.noise_resamples == 1:
            raise BenchError(f"--noise-resamples must be 0 (off) or at least 2, found {self.noise_resamples}")
        if self.batch_size < 1 or self.shard_size < 1:
            raise BenchError(f"--batch-size and --shard-size must be at least 1, found {self.batch_size} and "
                             f"{self.shard_size}")
        registry.select(self.metrics)  # a misspelt metric fails now, not after the weights are fetched


#: (reference, extractors, metrics) -> the scorer rank 0 uses; it reads the reference when made
ScorerFactory = Callable[[Reference, list, list[Metric]], Scorer]


def default_scorer(ref: Reference, extractors: list, metrics: list[Metric]) -> Scorer:
    return Scorer(ref.path, extractors, metrics)


def execute(task: Task, settings: RunSettings, *, extractors: Sequence | None = None,
            scorer: ScorerFactory | None = None, on_shard_done: Callable[[Shard], None] | None = None
            ) -> dict[str, Any] | None:
    """Run `task` to its result; returns the result on rank 0 and None on the other ranks.

    `extractors` (default: the networks the selected metrics need) and `scorer` (default: `Scorer` against the
    reference) can be replaced, e.g. by tests; `on_shard_done` is called after each shard this process finishes.
    """
    group, device = init_from_env(settings.device)
    try:
        return _execute(task, settings, group, device, extractors, scorer or default_scorer, on_shard_done)
    finally:
        release_run_folders()
        shutdown(group)


def _execute(task: Task, settings: RunSettings, group: ProcessGroup, device: str, extractors: Sequence | None,
             scorer: ScorerFactory, on_shard_done: Callable[[Shard], None] | None) -> dict[str, Any] | None:
    started = time.perf_counter()
    metrics = registry.select(settings.metrics)
    warn = say if settings.echo_warnings else (lambda message: message)
    if group.is_main:
        writable_folder(Path(settings.runs_dir), "--runs-dir")  # before any weights, reference or sampling
    generator, checkpoints = build_generator(settings, device, group, check=task.check)
    task.prepare(generator, settings.shard_size)
    ref, warnings = None, []
    if group.is_main:  # fail before sampling, not after hours of it
        ref = resolve_reference(settings.ref or generator.default_reference, settings.allow_download)
        warning = check_resolution(ref, generator.eval_size, settings.force)
        warnings += [warn(warning)] if warning else []
    if extractors is None:
        extractors = features.load_extractors(registry.arrays_needed(metrics), device, settings.allow_download,
                                              settings.feature_options)
    extractors = list(extractors)
    warnings += [warn(w) for w in missing_array_warnings(extractors, metrics) + features.weights_warnings(extractors)]
    score = scorer(ref, extractors, metrics) if group.is_main else None  # reads the reference now: fails early
    config = run_config(task, settings, generator, checkpoints, extractors)
    run_id = settings.run_id or "-".join(filter(None, [settings.generator, task.run_id_tag, fingerprint(config)[:12]]))
    folder = RunFolder.open(Path(settings.runs_dir) / run_id, config, group)
    keep_images = group.broadcast(task.keeps_images(folder) if group.is_main else None)
    kinds = ("features", "images") if keep_images else ("features",)

    shards = task.shards()
    todo = [s for s in shards[group.rank :: group.world_size] if not folder.is_done(s, kinds)]
    extract = extract_with(extractors)
    sampling_started = time.perf_counter()
    try:
        with tqdm(total=sum(e - s for s, e in todo), unit="img", disable=not group.is_main,
                  desc=f"{settings.generator} -> {folder.path}") as bar:
            for shard, rows in task.inputs(todo):
                process_shard(task, generator, shard, rows, extract, settings.batch_size, device, folder, kinds, bar)
                if on_shard_done is not None:
                    on_shard_done(shard)
    except KeyboardInterrupt:
        done = sum(folder.is_written(s, kinds) for s in shards)
        raise KeyboardInterrupt(f"{done} of {len(shards)} shards are finished and kept in {folder.path}; "
                                "run the same command again to resume") from None
    timing = group.gather((sum(e - s for s, e in todo), time.perf_counter() - sampling_started))
    gather_files(group, [(folder.shard_file(s, kind), i % group.world_size)
                         for i, s in enumerate(shards) for kind in kinds])
    if not group.is_main:
        return None

    def score_features(sample: dict[str, np.ndarray]) -> dict[str, Any]:
        widths = {k: v.shape[1] for k, v in sample.items() if v.ndim == 2}
        count = len(next(iter(sample.values())))
        warnings.extend(warn(w) for w in registry.sample_size_warnings(count, widths, metrics) if w not in warnings)
        return score(sample)

    arrays = folder.concat_features(shards)
    scored = task.score(arrays, score_features)
    noise = {}
    if settings.noise_resamples:
        resampled, skipped = resampled_metrics(metrics, len(arrays["index"]), getattr(score, "num_ref", None))
        noise = task.noise(arrays, lambda sample: score(sample, resampled), settings.noise_resamples)
        noise.update({"not_estimated": skipped} if skipped else {})
    outputs = task.outputs(folder, shards, arrays, generator, settings.batch_size)
    generated, seconds = sum(n for n, _ in timing), max(s for _, s in timing)
    result = Result(
        task=task.name, run_id=run_id, generator=settings.generator,
        metrics=scored["metrics"], unavailable=scored.get("unavailable", {}), details=scored.get("details", {}),
        reference={**ref.provenance(), "num_ref": getattr(score, "num_ref", None)},
        samples={"num_samples": shards[-1][1], "resolution": generator.eval_size, "path": outputs.get("npz")},
        settings={**asdict(settings), **task_fields(task), **config, "metrics": [m.name for m in metrics]},
        provenance={"bench": package_versions().get("bench"), "versions": package_versions(),
                    "device": device_description(device),
                    "features": {extractor_name(e): getattr(e, "provenance", None) for e in extractors},
                    "checkpoints": checkpoints, "distances": (getattr(score, "provenance", None) or {}).get("distances"),
                    "fingerprint": fingerprint(config)},
        timing={"wall_time_s": time.perf_counter() - started,
                "images_per_s": generated / seconds if generated and seconds > 0 else None,
                "images_generated": generated, "images_resumed": shards[-1][1] - generated,
                "world_size": group.world_size},
        warnings=warnings, outputs=outputs, noise=noise,
    ).to_json()
    folder.write_result(result)
    return result


# -- set-up ---------------------------------------------------------------------------------------------------
def build_generator(settings: RunSettings, device: str, group: ProcessGroup = ProcessGroup(),
                    check: Callable[[Generator], None] | None = None,
                    with_reference: bool = True) -> tuple[Generator, dict[str, dict[str, str]]]:
    """Instantiate the preset, resolve and verify its files, load them; returns it and {file: {path, sha256}}.

    `check` refuses a generator before its weights are fetched (a task that needs a tokenizer). The first process
    of each node resolves first, so a download happens once per node, not once per rank; the registry reference
    is resolved alongside (`with_reference`), so an offline user learns every missing file at once.
    """
    generator = load_preset(settings.generator)(ckpt=settings.ckpt, device=device, **settings.overrides)
    if check is not None:
        check(generator)  # before gigabytes of weights are fetched
    remotes = generator.required_files()
    if settings.ckpt and not remotes:
        raise BenchError(f"generator {settings.generator!r} needs no checkpoint: --ckpt is not accepted")
    explicit = generator.explicit_files()
    if explicit is None:
        explicit = {remotes[0].filename: settings.ckpt} if settings.ckpt else {}
    paths = None
    if group.local_rank == 0:
        # The registry reference is fetched alongside, so an offline user learns every missing file at once.
        reference = registry_file(settings.ref or generator.default_reference) if group.is_main and with_reference \
            else None
        extra = [reference] if reference is not None else []
        try:
            paths = resolve_all(remotes + extra, explicit, settings.allow_download)[:len(remotes)]
        except MissingFilesError as err:
            if reference is None or reference.filename not in {name for name, _, _ in err.missing}:
                raise
            raise MissingFilesError(err.missing, offline_hint(generator.eval_size)) from None
    group.barrier()
    if paths is None:
        paths = resolve_all(remotes, explicit, allow_download=False)
    generator.load({r.filename: p for r, p in zip(remotes, paths)})
    return generator, {r.filename: {"path": str(Path(p).resolve()), "sha256": sha256_file(p)}
                       for r, p in zip(remotes, paths)}


def writable_folder(path: Path, option: str) -> None:
    """Say in one line, before any work, when `path` cannot be written or created (checked on its nearest existing
    folder: nothing is created here, so a run refused later leaves no empty folder behind)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BenchError(f"{option} {path}: {existing} is a file, so the folder is not writable")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BenchError(f"{option} {path}: {existing} is not writable")


def missing_array_warnings(extractors: Sequence, metrics: list[Metric]) -> list[str]:
    """Said before sampling: the Inception Score will be missing (weights without softmax, e.g. offline)."""
    if "logits" not in registry.arrays_needed(metrics) or any(getattr(e, "has_logits", False) for e in extractors):
        return []
    reason = next((r for e in extractors if (r := getattr(e, "logits_unavailable_reason", None))),
                  "no loaded feature network gives Inception logits")
    return [f"no Inception Score for this run: {reason}"]


def extractor_name(extractor) -> str:
    return getattr(extractor, "name", "inception")  # extractors written before the registry are Inception


def run_config(task: Task, settings: RunSettings, generator: Generator, checkpoints: dict[str, dict[str, str]],
               extractors: Sequence) -> dict[str, Any]:
    """Everything that determines a shard's contents: the run folder's fingerprint is taken over this."""
    return json_safe({
        "format": FORMAT,
        "bench": package_versions().get("bench"),  # another version may sample differently: no mixing
        "task": task.name,
        "generator": settings.generator,
        "generator_config": device_types(generator.config()),
        "files": {name: c["sha256"] for name, c in checkpoints.items()},
        **task.config(),
        "shard_size": settings.shard_size,
        "image_size": generator.image_size,
        "eval_size": generator.eval_size,
        "extractors": {extractor_name(e): device_types(getattr(e, "provenance", None) or {}) for e in extractors},
    })


def task_fields(task: Task) -> dict[str, Any]:
    """What the user asked of the task: its dataclass fields."""
    return {f.name: getattr(task, f.name) for f in fields(task)} if is_dataclass(task) else {}


def device_types(config: dict[str, Any]) -> dict[str, Any]:
    """`device: cuda:3` -> `cuda`: every rank must fingerprint alike, yet CPU and GPU numerics differ."""
    return {k: (str(v).split(":")[0] if k == "device" else v) for k, v in config.items()}


def device_description(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({platform.processor() or platform.machine()})"


def say(message: str) -> str:
    """Print a warning now (not after hours of sampling) and return it for the result file."""
    click.echo(f"Warning: {message}", err=True)
    return message


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


# -- the shards -----------------------------------------------------------------------------------------------
def extract_with(extractors: Sequence) -> Extract:
    """Every array of every network over one image batch: shards keep them all, whichever metrics read them."""
    def extract(images: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for extractor in extractors:
            out.update({k: np.asarray(v) for k, v in extractor.extract(images).items() if v is not None})
        return out

    return extract


def process_shard(task: Task, generator: Generator, shard: Shard, rows: np.ndarray | None, extract: Extract,
                  batch_size: int, device: str, folder: RunFolder, kinds: tuple[str, ...], bar: tqdm) -> None:
    """Process one shard batch by batch and store it; its files appear (atomically) only once it is complete.

    Kept images stream into a memory-mapped `.npy`, so memory stays one batch deep.
    """
    start, end = shard
    parts: dict[str, list[np.ndarray]] = {}
    images_file = atomic_path(folder.shard_file(shard, "images")) if "images" in kinds else contextlib.nullcontext()
    with torch.inference_mode(), images_file as images_tmp:
        images_out = None
        for b in range(start, end, batch_size):
            indices = np.arange(b, min(b + batch_size, end))
            batch_rows = None if rows is None else rows[b - start : b - start + len(indices)]
            try:
                arrays = task.process(generator, indices, batch_rows, extract)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
                if not is_oom(err):
                    raise
                raise BenchError(
                    f"out of memory on {device} with a batch of {len(indices)} (items {indices[0]}..{indices[-1]}). "
                    f"Finished shards are kept: rerun the same command with a smaller --batch-size, e.g. "
                    f"{max(1, len(indices) // 2)}, to continue from them."
                ) from None
            images = arrays.pop("images", None)
            if images_tmp is not None:
                if images_out is None:
                    images_out = np.lib.format.open_memmap(images_tmp, "w+", np.uint8, (end - start,) + images.shape[1:])
                images_out[b - start : b - start + len(indices)] = images
            for key, value in arrays.items():
                parts.setdefault(key, []).append(value)
            bar.update(len(indices))
        if images_out is not None:
            images_out.flush()
            del images_out
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["index"] = np.arange(start, end)
    folder.write_features(shard, arrays)
