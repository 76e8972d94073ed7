"""`bench run`: sample a generator and score it in one streaming pass, resumable and shardable over torchrun.

For each shard of sample indices this process owns: generate a batch (labels and seeds from the
`SamplingPlan`), resize it to the eval size the preset's paper used, extract Inception features, and write
the shard's features to the run folder. Images never accumulate beyond one shard. When every shard exists,
rank 0 gathers them, scores them against the reference and writes `runs/<run-id>/result.json`.

    bench run --generator llamagen-xl --ref imagenet256 --cfg-scale 1.75 --save-npz
    torchrun --nproc_per_node=8 -m bench.cli run --generator dit-xl-2 --steps 250
"""

from __future__ import annotations

import contextlib
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from bench.atomic import atomic_path
from bench.batches import NpzWriter
from bench.device import check_device
from bench.download import resolve_all, sha256_file
from bench.evaluate import package_versions
from bench.metrics.registry import PAPER_NUM_SAMPLES
from bench.errors import BenchError
from bench.generator import Generator, available_generators, load_generator_factory, preset_info
from bench.run.dist import ProcessGroup, gather_files, init_from_env, shutdown
from bench.run.plan import LABEL_MODES, SamplingPlan
from bench.run.references import Reference, check_resolution, registry_file, resolve_reference
from bench.metrics.registry import sample_size_warnings
from bench.run.score import Scorer, adm_scorer
from bench.run.shards import RunFolder, Shard, fingerprint, release_run_folders

#: CLI sampling settings forwarded to the generator factory (only those the user gives)
SAMPLING_SETTINGS = ("cfg_scale", "top_k", "top_p", "temperature", "steps", "precision", "compile")
GRID_SIZE = 64


@dataclass
class RunSettings:
    """Everything a `bench run` invocation was asked to do."""

    generator: str
    overrides: dict[str, Any] = field(default_factory=dict)
    ckpt: str | None = None
    num_samples: int = PAPER_NUM_SAMPLES
    batch_size: int = 32
    seed: int = 0
    labels: str = "random"
    shard_size: int = 1000
    ref: str | None = None
    force: bool = False
    save_npz: bool = False
    save_grid: bool = False
    run_id: str | None = None
    runs_dir: str = "runs"
    device: str = "cpu"
    allow_download: bool = True

    def __post_init__(self):
        if self.run_id is not None and (self.run_id in ("", ".", "..") or Path(self.run_id).name != self.run_id):
            raise BenchError(f"--run-id {self.run_id!r}: a folder name inside --runs-dir, without '/' or '..'")
        check_device(self.device)
        if self.num_samples < 2:
            raise BenchError(f"--num-samples must be at least 2 (FID needs a covariance), found {self.num_samples}")
        if self.batch_size < 1 or self.shard_size < 1:
            raise BenchError(f"--batch-size and --shard-size must be at least 1, found {self.batch_size} and "
                             f"{self.shard_size}")


# -- set-up ---------------------------------------------------------------------------------------------------
def build_generator(settings: RunSettings, device: str, group: ProcessGroup,
                    task: str = "sample") -> tuple[Generator, dict[str, str]]:
    """Instantiate the preset, resolve and verify its files, load them; returns it and {file: sha256}.

    The first process of each node resolves first, so a download happens once per node, not once per rank.
    """
    factory = load_generator_factory(settings.generator)
    generator = factory(ckpt=settings.ckpt, device=device, **settings.overrides)
    if task == "reconstruct" and not generator.can_reconstruct:  # before gigabytes of weights are fetched
        raise BenchError(f"generator {settings.generator!r} is not a tokenizer: --task reconstruct needs one, "
                         "e.g. -g llamagen-vq16")
    remotes = generator.required_files()
    if settings.ckpt and not remotes:
        raise BenchError(f"generator {settings.generator!r} needs no checkpoint: --ckpt is not accepted")
    explicit = generator.explicit_files()
    if explicit is None:
        explicit = {remotes[0].filename: settings.ckpt} if settings.ckpt else {}
    paths = None
    if group.local_rank == 0:
        # The registry reference is fetched alongside, so an offline user learns every missing file at once.
        reference = registry_file(settings.ref or f"imagenet{generator.eval_size}") if group.is_main else None
        extra = [reference] if reference is not None else []
        paths = resolve_all(remotes + extra, explicit, settings.allow_download)[:len(remotes)]
    group.barrier()
    if paths is None:
        paths = resolve_all(remotes, explicit, allow_download=False)
    generator.load({r.filename: p for r, p in zip(remotes, paths)})
    return generator, {r.filename: sha256_file(p) for r, p in zip(remotes, paths)}


def default_extractor(device: str, allow_download: bool = True):
    """The ADM Inception-v3 (pool, spatial, logits) on `device`. Without softmax weights (offline, nothing in
    the cache) the Inception Score will be missing: said now, not after the samples."""
    from bench.inception import load_extractor

    extractor = load_extractor(device=device, allow_download=allow_download)
    if not extractor.has_logits:
        warn(f"no Inception Score for this run: {extractor.logits_unavailable_reason}")
    return extractor


def json_safe(value: Any) -> Any:
    """Strict-JSON copy: numpy scalars and arrays as numbers and lists, inf/NaN as "inf"/"nan" strings
    (a perfect reconstruction has infinite PSNR), anything else (paths, devices) as its str."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def shard_config(settings: RunSettings, generator: Generator, files: dict[str, str], extractor) -> dict[str, Any]:
    """Everything that determines a shard's contents: the run folder's fingerprint is taken over this."""
    return json_safe({
        "format": 1,
        "bench": package_versions().get("bench"),  # another version may sample differently: no mixing
        "task": "sample",
        "generator": settings.generator,
        "generator_config": device_types(generator.config()),
        "files": files,
        "num_samples": settings.num_samples,
        "seed": settings.seed,
        "labels": settings.labels,
        "shard_size": settings.shard_size,
        "image_size": generator.image_size,
        "eval_size": generator.eval_size,
        "extractor": device_types(getattr(extractor, "provenance", None) or {}),
    })


def device_types(config: dict[str, Any]) -> dict[str, Any]:
    """`device: cuda:3` -> `cuda`: every rank must fingerprint alike, yet CPU and GPU numerics differ."""
    return {k: (str(v).split(":")[0] if k == "device" else v) for k, v in config.items()}


def warn(message: str) -> str:
    """Print a warning now (not after hours of sampling) and return it for the result file."""
    click.echo(f"Warning: {message}", err=True)
    return message


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


# -- sampling -------------------------------------------------------------------------------------------------
def sample_batch(generator: Generator, extractor, plan: SamplingPlan, indices: np.ndarray,
                 device: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Images at eval size and their Inception features for one batch of sample indices."""
    labels = torch.from_numpy(plan.labels(indices))
    seeds = torch.from_numpy(plan.seeds(indices))
    try:
        images = generator.sample_for_eval(labels, seeds)
        expected = (len(indices), generator.eval_size, generator.eval_size, 3)
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape != expected:
            found = (images.dtype, images.shape) if isinstance(images, np.ndarray) else type(images).__name__
            raise BenchError(f"generator {generator.name!r} returned {found}; the contract is uint8 {expected}")
        features = extractor.extract(images)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
        if not is_oom(err):
            raise
        raise BenchError(
            f"out of memory on {device} with a batch of {len(indices)} (samples {indices[0]}..{indices[-1]}). "
            f"Finished shards are kept: rerun the same command with a smaller --batch-size, e.g. "
            f"{max(1, len(indices) // 2)}, to continue from them."
        ) from None
    return images, {k: np.asarray(v) for k, v in features.items() if v is not None}


def sample_shard(generator: Generator, extractor, plan: SamplingPlan, shard: Shard, batch_size: int,
                 device: str, folder: RunFolder, keep_images: bool, bar: tqdm) -> None:
    """Generate, score and store one shard; its files appear (atomically) only once it is complete.

    With `keep_images` the images stream into a memory-mapped `.npy`, so memory stays one batch deep.
    """
    start, end = shard
    parts: dict[str, list[np.ndarray]] = {}
    images_file = atomic_path(folder.shard_file(shard, "images")) if keep_images else contextlib.nullcontext()
    with torch.inference_mode(), images_file as images_tmp:
        images_out = None
        for b in range(start, end, batch_size):
            indices = np.arange(b, min(b + batch_size, end))
            images, features = sample_batch(generator, extractor, plan, indices, device)
            if keep_images:
                if images_out is None:
                    shape = (end - start,) + images.shape[1:]
                    images_out = np.lib.format.open_memmap(images_tmp, "w+", np.uint8, shape)
                images_out[b - start : b - start + len(indices)] = images
            for key, value in features.items():
                parts.setdefault(key, []).append(value)
            bar.update(len(indices))
        if images_out is not None:
            images_out.flush()
            del images_out
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["index"] = np.arange(start, end)
    arrays["label"] = plan.labels(arrays["index"])
    folder.write_features(shard, arrays)


# -- the run --------------------------------------------------------------------------------------------------
ScorerFactory = Callable[[Reference, Any], Scorer]


def adm_scorer_factory(ref: Reference, extractor) -> Scorer:
    return adm_scorer(ref.path, extractor)


def run(settings: RunSettings, *, extractor=None, scorer: ScorerFactory | None = None,
        on_shard_done: Callable[[Shard], None] | None = None) -> dict[str, Any] | None:
    """Sample, score and record one run; returns the result on rank 0 and None on the other ranks.

    `extractor` (default: the ADM Inception) and `scorer` (default: ADM's metrics against the reference)
    can be replaced, e.g. by tests; `on_shard_done` is called after each shard this process finishes.
    """
    group, device = init_from_env(settings.device)
    try:
        return _run(settings, group, device, extractor, scorer or adm_scorer_factory, on_shard_done)
    finally:
        release_run_folders()
        shutdown(group)


def _run(settings: RunSettings, group: ProcessGroup, device: str, extractor, scorer: ScorerFactory,
         on_shard_done: Callable[[Shard], None] | None) -> dict[str, Any] | None:
    started = time.perf_counter()
    generator, files = build_generator(settings, device, group)
    plan = SamplingPlan(settings.num_samples, generator.num_classes, settings.seed, settings.labels,
                        settings.shard_size)
    ref, warnings = None, []
    if group.is_main:  # fail before sampling, not after hours of it
        ref = resolve_reference(settings.ref or f"imagenet{generator.eval_size}", settings.allow_download)
        warning = check_resolution(ref, generator.eval_size, settings.force)
        warnings += [warn(warning)] if warning else []
    extractor = extractor if extractor is not None else default_extractor(device, settings.allow_download)
    score = scorer(ref, extractor) if group.is_main else None  # reads the reference now: a bad one fails early
    config = shard_config(settings, generator, files, extractor)
    run_id = settings.run_id or f"{settings.generator}-{fingerprint(config)[:12]}"
    folder = RunFolder.open(Path(settings.runs_dir) / run_id, config, group)
    npz_path = folder.path / "samples.npz"
    keep_images = group.broadcast(settings.save_npz and not npz_path.exists())
    kinds = ("features", "images") if keep_images else ("features",)

    todo = [s for s in plan.shards_of_rank(group.rank, group.world_size) if not folder.is_done(s, kinds)]
    sampling_started = time.perf_counter()
    try:
        with tqdm(total=sum(e - s for s, e in todo), unit="img", disable=not group.is_main,
                  desc=f"{settings.generator} -> {folder.path}") as bar:
            for shard in todo:
                sample_shard(generator, extractor, plan, shard, settings.batch_size, device, folder, keep_images, bar)
                if on_shard_done is not None:
                    on_shard_done(shard)
    except KeyboardInterrupt:
        done = sum(folder.is_written(s, kinds) for s in plan.shards())
        raise KeyboardInterrupt(f"{done} of {len(plan.shards())} shards are finished and kept in {folder.path}; "
                                "run the same command again to resume") from None
    timing = group.gather((sum(e - s for s, e in todo), time.perf_counter() - sampling_started))

    shards = plan.shards()
    wanted = [(folder.shard_file(s, kind), i % group.world_size) for i, s in enumerate(shards) for kind in kinds]
    gather_files(group, wanted)
    if not group.is_main:
        return None

    features = folder.concat_features(shards)
    labels = features.pop("label")
    features.pop("index")
    dims = {k: v.shape[1] for k, v in features.items() if v.ndim == 2}
    warnings += [warn(w) for w in sample_size_warnings(plan.num_samples, dims, score.metrics)]
    scored = score(features)
    metrics = {**scored['metrics'], **scored['details'], **{f'{k}_unavailable': v for k, v in scored['unavailable'].items()}, 'num_ref': score.num_ref}
    outputs = {}
    if settings.save_npz:
        if keep_images:
            write_npz(folder, shards, labels, npz_path)
        outputs["npz"] = str(npz_path)
    if settings.save_grid:
        outputs["grid"] = str(write_grid(generator, plan, settings.batch_size, folder.path / "grid.png"))
    generated = sum(n for n, _ in timing)
    sampling_s = max(s for _, s in timing)
    result = {
        "run_id": run_id,
        "task": "sample",
        "generator": settings.generator,
        "metrics": json_safe(metrics),
        "settings": json_safe(asdict(settings)),
        "config": config,
        "fingerprint": fingerprint(config),
        "checkpoint_sha256": files,
        "reference": ref.provenance(),
        "seed": settings.seed,
        "labels": settings.labels,
        "num_samples": plan.num_samples,
        "num_ref": metrics.get("num_ref"),
        "provenance": run_provenance(extractor, score),
        "device": device_description(device),
        "world_size": group.world_size,
        "wall_time_s": time.perf_counter() - started,
        "images_generated": generated,
        "images_resumed": plan.num_samples - generated,
        "images_per_s": generated / sampling_s if generated and sampling_s > 0 else None,
        "warnings": warnings,
        "outputs": outputs,
    }
    folder.write_result(result)
    return result


# -- outputs --------------------------------------------------------------------------------------------------
def write_npz(folder: RunFolder, shards: list[Shard], labels: np.ndarray, path: Path) -> Path:
    """The ADM-format sample batch: `arr_0` uint8 NHWC in sample-index order, `arr_1` the int64 labels.

    Streamed shard by shard into the archive; the per-shard image files are removed once it is published.
    Sample order is already class-mixed (random labels are i.i.d., balanced ones a seeded shuffle), so
    ADM's Inception Score splits of 5000 consecutive samples never see a sorted class block.
    """
    first = folder.read_images(shards[0])
    writer = NpzWriter(path, len(labels), first.shape[1:])
    try:
        for shard in tqdm(shards, desc=f"write {path.name}", unit="shard"):
            writer.write(folder.read_images(shard))
    except BaseException:
        writer.abort()
        raise
    writer.close(arr_1=labels)
    for shard in shards:
        folder.shard_file(shard, "images").unlink()
    return path


def write_grid(generator: Generator, plan: SamplingPlan, batch_size: int, path: Path) -> Path:
    """A PNG grid of samples 0..63 at the generator's own resolution.

    They are regenerated from their per-sample seeds (one extra batch or two), so they are the run's first
    samples -- up to float rounding, as the batches may be shaped differently -- without the run keeping any images.
    """
    indices = np.arange(min(GRID_SIZE, plan.num_samples))
    with torch.inference_mode():
        images = np.concatenate([
            generator.sample(torch.from_numpy(plan.labels(chunk)), torch.from_numpy(plan.seeds(chunk)))
            for chunk in np.array_split(indices, math.ceil(len(indices) / batch_size))
        ])
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    h, w = images.shape[1:3]
    canvas = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    return path


def run_provenance(extractor, score: Scorer) -> dict[str, Any]:
    """The `provenance` block `bench eval` results carry too, so `bench report` compares both alike."""
    return json_safe({"inception": getattr(extractor, "provenance", None), **getattr(score, "provenance", {}),
                      "versions": package_versions()})


def device_description(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({platform.processor() or platform.machine()})"


# -- command line ---------------------------------------------------------------------------------------------
@click.command("run")
@click.option("--generator", "-g", "generator", required=True, help="preset name (see `bench generators`)")
@click.option("--task", type=click.Choice(["sample", "reconstruct"]), default="sample", show_default=True,
              help="reconstruct: a tokenizer's rFID/PSNR/SSIM on --data")
@click.option("--data", type=click.Path(exists=True), default=None,
              help="reconstruct: the images (ImageNet val folder, or an npz at the tokenizer's resolution)")
@click.option("--ref", default=None,
              help="reference batch: imagenet256|imagenet512|... or a path [imagenet<eval size>]")
@click.option("--ckpt", type=click.Path(dir_okay=False), default=None, help="local checkpoint (else cache/download)")
@click.option("--num-samples", type=int, default=PAPER_NUM_SAMPLES, show_default=True,
              help="images to sample; papers use 50,000 (fewer biases FID upwards)")
@click.option("--batch-size", type=int, default=32, show_default=True, help="images per generator call, per process")
@click.option("--seed", type=int, default=0, show_default=True, help="run seed: fixes every label and image")
@click.option("--labels", type=click.Choice(LABEL_MODES), default="random", show_default=True,
              help="random: uniform labels as the official samplers; balanced: 50 per class for 50k")
@click.option("--cfg-scale", type=float, default=None,
              help="classifier-free guidance scale [the preset's paper value, e.g. 1.75 for llamagen-xl]")
@click.option("--cfg-interval", type=int, default=None, help="LlamaGen: stop guidance after this many tokens [-1: never]")
@click.option("--top-k", type=int, default=None, help="LlamaGen: sample among the k most likely tokens [0: all]")
@click.option("--top-p", type=float, default=None, help="LlamaGen: nucleus sampling mass [1.0: off]")
@click.option("--temperature", type=float, default=None, help="LlamaGen: softmax temperature [1.0]")
@click.option("--steps", default=None, help="DiT: sampling steps, e.g. 250, or a respacing like ddim25 [250]")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim"]), default=None, help="DiT: sampler [ddpm]")
@click.option("--eta", type=float, default=None, help="DiT: DDIM noise, 0 = deterministic [0.0]")
@click.option("--vae", default=None, help="DiT: ema | mse | a local diffusers AutoencoderKL folder [ema]")
@click.option("--cfg-all-channels/--cfg-first-3-channels", "cfg_all_channels", default=None,
              help="DiT: guide all 4 latent channels instead of the official first 3 [first 3]")
@click.option("--vq-ckpt", type=click.Path(dir_okay=False), default=None,
              help="LlamaGen: local tokenizer checkpoint (vq_ds16_c2i.pt) [cache, else download]")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16", "fp16"]), default=None,
              help="compute precision [bf16 on GPU for LlamaGen, tf32 for DiT, fp32 on CPU]")
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the generator's step")
@click.option("--shard-size", type=int, default=1000, show_default=True, help="samples per resumable shard")
@click.option("--save-npz", is_flag=True, help="also write runs/<id>/samples.npz (ADM format)")
@click.option("--save-grid", is_flag=True, help="also write runs/<id>/grid.png")
@click.option("--force", is_flag=True, help="score against a reference of another resolution anyway")
@click.option("--run-id", default=None, help="run folder name [<generator>-<config hash>]")
@click.option("--runs-dir", type=click.Path(file_okay=False), default="runs", show_default=True)
@click.option("--device", default=None, help="[cuda if available, else cpu]")
@click.option("--offline", is_flag=True, help="never download; list what is missing instead")
@click.pass_context
def run_command(ctx, generator, task, data, ref, ckpt, num_samples, batch_size, seed, labels, cfg_scale, cfg_interval,
                top_k, top_p, temperature, steps, sampler, eta, vae, cfg_all_channels, vq_ckpt, precision, compile_,
                shard_size, save_npz, save_grid, force, run_id, runs_dir, device, offline):
    """Sample a generator and score it (FID, sFID, IS, Precision, Recall) against ImageNet reference statistics.

    \b
    bench run -g llamagen-xl                        # paper settings, 50k samples vs imagenet256
    bench run -g llamagen-xl --cfg-scale 2.0 --num-samples 10000 --save-npz
    bench run -g dit-xl-2 --sampler ddim --steps 50
    torchrun --nproc_per_node=8 -m bench.cli run -g llamagen-3b      # sharded; same as 1 GPU at equal --batch-size
    bench run -g llamagen-vq16 --task reconstruct --data /imagenet/val   # rFID, PSNR, SSIM

    Sample i depends only on (--seed, i) and its label, so results do not depend on the number of processes
    (bitwise at the same --batch-size), and on --batch-size only through float rounding (DiT: pixels within +-1;
    LlamaGen: a token draw that rounding tips makes that image another sample). Rerunning the same command (with
    any --batch-size) resumes a killed run from its last finished shard. The
    result (every metric, the resolved config, checkpoint and reference sha256s, versions, timing) goes to
    runs/<run-id>/result.json; compare runs with `bench report runs/ --compare`.
    """
    if steps is not None and steps.isdigit():
        steps = int(steps)
    given = dict(cfg_scale=cfg_scale, cfg_interval=cfg_interval, top_k=top_k, top_p=top_p, temperature=temperature,
                 steps=steps, sampler=sampler, eta=eta, vae=vae, cfg_all_channels=cfg_all_channels, vq_ckpt=vq_ckpt,
                 precision=precision, compile=compile_)
    settings = RunSettings(
        generator=generator, overrides={k: v for k, v in given.items() if v is not None}, ckpt=ckpt,
        num_samples=num_samples, batch_size=batch_size, seed=seed, labels=labels, shard_size=shard_size, ref=ref,
        force=force, save_npz=save_npz, save_grid=save_grid, run_id=run_id, runs_dir=runs_dir,
        device=device or ("cuda" if torch.cuda.is_available() else "cpu"), allow_download=not offline,
    )
    if (task == "reconstruct") != (data is not None):
        raise BenchError("--data is needed by --task reconstruct, and only by it")
    sampling_only = ["num_samples", "seed", "labels", "save_npz", "save_grid"]
    given = [f"--{name.replace('_', '-')}" for name in sampling_only
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if task == "reconstruct" and given:
        raise BenchError(f"{', '.join(given)}: sampling options; --task reconstruct encodes every image of --data")
    try:
        if task == "reconstruct":
            from bench.run.reconstruct import reconstruct

            result = reconstruct(settings, data)
        else:
            result = run(settings)
    except KeyboardInterrupt as interrupt:
        click.echo(f"\nInterrupted: {interrupt or 'finished shards are kept; rerun to resume'}", err=True)
        sys.exit(130)
    if result is not None:
        for key, value in result["metrics"].items():
            if key != "conventions":
                click.echo(f"{key}: {value}")
        click.echo(f"result: {Path(settings.runs_dir) / result['run_id'] / 'result.json'}")


def _describe_by_building(factory: Callable[..., Generator]) -> dict[str, Any]:
    """For presets without a `PresetInfo`: build one (factories touch no weights) and read its settings."""
    generator = factory(device="cpu")
    config = generator.config()
    return {"model": config.get("model", type(generator).__name__), "image_size": generator.image_size,
            "eval_size": generator.eval_size, "paper": "",
            "paper_settings": {k: config[k] for k in SAMPLING_SETTINGS if config.get(k) is not None}}


@click.command("generators")
def generators_command():
    """List the installed generator presets with their model, resolution, eval size and paper settings."""
    known = available_generators()
    if not known:
        click.echo("no generator plugins installed")
    for name in sorted(known):
        try:
            factory = known[name].load()
            info, label = preset_info(factory), "paper settings"
            if info is None:
                info, label = _describe_by_building(factory), "default settings"
        except Exception as err:  # a broken plugin (failing import or failing factory) must not hide the others
            click.echo(f"{name}\n  (cannot be loaded: {err})")
            continue
        settings = ", ".join(f"{k}={v}" for k, v in info["paper_settings"].items()) or "-"
        click.echo(f"{name}\n  model: {info['model']}  resolution: {info['image_size']}  "
                   f"eval size: {info['eval_size']}\n  {label}: {settings}"
                   + (f"\n  paper: {info['paper']}" if info["paper"] else ""))
