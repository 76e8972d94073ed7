"""The `bench run` and `bench generators` commands: options in, a task and its settings out to the executor.

`bench run` has flags for what every run shares and for the common sampling settings (`COMMON_OPTIONS` of
bench/generator.py); a generator's own settings come as `--set NAME=VALUE`, checked against the options its
plugin declares (`bench generators NAME` lists them). The flags that set plugin options before `--set` existed
still work, as aliases of `--set`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click
import torch

from bench.errors import BenchError
from bench.evaluate import summary_lines
from bench.features.cli import given_options, network_options
from bench.generator import COMMON_OPTIONS, PluginOption, Preset, preset_info
from bench.plugins import available_generators, load_preset
from bench.metrics import registry
from bench.metrics.registry import PAPER_NUM_SAMPLES
from bench.run.executor import RunSettings, execute
from bench.run.plan import LABEL_MODES
from bench.run.reconstruct import ReconstructTask
from bench.run.sample import SampleTask

#: where the settings given by the common flags and the deprecated aliases are collected, in the click context
_GIVEN = "bench.run.given"

#: flags that set a plugin option before `--set` existed: `--top-k 5` is `--set top_k=5`
DEPRECATED_ALIASES = ("cfg_interval", "top_k", "top_p", "temperature", "vq_ckpt", "steps", "sampler", "eta", "vae")
#: ... and one boolean pair: --cfg-all-channels / --cfg-first-3-channels is `--set cfg_all_channels=true|false`
DEPRECATED_SWITCH = ("cfg_all_channels", "--cfg-all-channels/--cfg-first-3-channels")


def parse_value(text: str) -> Any:
    """A `--set` value: true/false, an int, a float, else the text itself (the plugin's options check the type)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_set(items: tuple[str, ...]) -> dict[str, Any]:
    """`--set NAME=VALUE` pairs as {name: value}; names may be written with dashes (top-k = top_k)."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name.isidentifier():
            raise BenchError(f"--set {item!r}: expected NAME=VALUE, e.g. --set sampler=ddim")
        _put(out, name, parse_value(value), f"--set {name}")
    return out


def _put(given: dict[str, Any], name: str, value: Any, how: str) -> None:
    if name in given and given[name] != value:
        raise BenchError(f"{how}: {name} is given twice, as {given[name]!r} and {value!r}")
    given[name] = value


def _given(name: str, parse: Callable[[Any], Any] = lambda v: v) -> Callable:
    """A click callback that records a setting the user gave (None: not given) under its option name."""
    def record(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            _put(ctx.meta.setdefault(_GIVEN, {}), name, parse(value), f"--{name.replace('_', '-')}")

    return record


def _option_flag(option: PluginOption) -> Callable:
    """The `bench run` flag of a common option: --cfg-scale FLOAT, --precision [..], --compile/--no-compile."""
    dashed = option.name.replace("_", "-")
    if option.type is bool:
        return click.option(f"--{dashed}/--no-{dashed}", default=None, expose_value=False,
                            callback=_given(option.name), help=option.help)
    if option.type is float:  # a float setting may be swept: --cfg-scale 1.5,1.75,2.0 is one run per value
        return click.option(f"--{dashed}", metavar="FLOAT[,FLOAT...]", default=None, expose_value=False,
                            callback=_given(option.name, parse_sweep),
                            help=option.help + "; a comma-separated list runs one run per value (a sweep)")
    kind = click.Choice(list(option.choices)) if option.choices else option.type
    return click.option(f"--{dashed}", type=kind, default=None, expose_value=False, callback=_given(option.name),
                        help=option.help)


def parse_sweep(text: str) -> float | list[float]:
    """"2.0" -> 2.0; "1.5,1.75,2.0" -> [1.5, 1.75, 2.0] (a sweep: one run per value)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise BenchError(f"{text!r}: expected a number or comma-separated numbers, e.g. 1.5,1.75,2.0") from None
    if len(set(values)) != len(values):
        raise BenchError(f"{text!r}: a value is given twice")
    return values[0] if len(values) == 1 else values


def sweep(overrides: dict[str, Any], run_id: str | None) -> list[tuple[dict[str, Any], str | None]]:
    """One (overrides, run id) per value of the swept setting (at most one may be swept); --run-id gets a suffix
    per value, e.g. `base-cfg1.75`, so every run of the sweep has its own resumable folder."""
    swept = [name for name, value in overrides.items() if isinstance(value, list)]
    if not swept:
        return [(overrides, run_id)]
    if len(swept) > 1:
        raise BenchError(f"sweep one setting at a time; given lists for {', '.join(swept)}")
    name, short = swept[0], swept[0].removesuffix("_scale")
    return [({**overrides, name: value}, f"{run_id}-{short}{value:g}" if run_id else None)
            for value in overrides[name]]


def common_flags(func: Callable) -> Callable:
    """--cfg-scale, --precision, --compile/--no-compile (`COMMON_OPTIONS`): each recorded only when given."""
    for option in reversed(COMMON_OPTIONS):
        func = _option_flag(option)(func)
    return func


def deprecated_flags(func: Callable) -> Callable:
    """The flags that set plugin options before `--set`, each recorded as its `--set` would be."""
    aliases = [click.option(f"--{name.replace('_', '-')}", metavar="VALUE", default=None, expose_value=False,
                            callback=_given(name, parse_value), help=f"(deprecated: --set {name}=VALUE)")
               for name in DEPRECATED_ALIASES]
    name, decl = DEPRECATED_SWITCH
    aliases.append(click.option(decl, default=None, expose_value=False, callback=_given(name),
                                help=f"(deprecated: --set {name}=true|false)"))
    for option in reversed(aliases):
        func = option(func)
    return func


@click.command("run", epilog="A generator's own settings: --set NAME=VALUE (repeatable); `bench generators NAME` "
                             "lists them, e.g. `bench generators dit-xl-2`.")
@click.option("--generator", "-g", "generator", default=None,
              help="preset name (see `bench generators`) [none: the offline demo benchmark]")
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
@click.option("--set", "set_items", multiple=True, metavar="NAME=VALUE",
              help="a generator's own sampling setting, e.g. --set sampler=ddim --set eta=0.5 (repeatable)")
@click.option("--metrics", "metric_spec", default=None, metavar="LIST",
              help="which metrics: '+kid' adds to ADM's five, '-sfid' drops one, 'fid,kid' is exactly these. Known: "
                   + ", ".join(m.name for m in registry.METRICS.values() if m.compute) + ".")
@common_flags
@click.option("--shard-size", type=int, default=1000, show_default=True, help="samples per resumable shard")
@click.option("--noise-resamples", type=int, default=10, show_default=True,
              help="bootstrap resamples of the samples for the noise estimate the board judges deltas by (0: off)")
@click.option("--save-npz", is_flag=True, help="also write runs/<id>/samples.npz (ADM format)")
@click.option("--save-grid", is_flag=True, help="also write runs/<id>/grid.png")
@click.option("--force", is_flag=True, help="score against a reference of another resolution anyway")
@click.option("--run-id", default=None, help="run folder name [<generator>-<config hash>]")
@click.option("--runs-dir", type=click.Path(file_okay=False), default="runs", show_default=True)
@click.option("--device", default=None, help="[cuda if available, else cpu]")
@click.option("--offline", is_flag=True, help="never download; list what is missing instead")
@network_options
@deprecated_flags
@click.pass_context
def run_command(ctx, generator, task, data, ref, ckpt, num_samples, batch_size, seed, labels, set_items, metric_spec,
                shard_size, noise_resamples, save_npz, save_grid, force, run_id, runs_dir, device, offline):
    """Sample a generator and score it (FID, sFID, IS, Precision, Recall) against ImageNet reference statistics.

    \b
    bench run                                       # the offline demo: a tiny trained LlamaGen, in minutes
    bench run -g llamagen-xl                        # paper settings, 50k samples vs imagenet256
    bench run -g llamagen-xl --cfg-scale 2.0 --num-samples 10000 --save-npz --metrics +kid
    bench run -g llamagen-b --cfg-scale 1.5,1.75,2.0,2.25          # a cfg sweep: one resumable run per value
    bench run -g dit-xl-2 --set sampler=ddim --set steps=50
    torchrun --nproc_per_node=8 -m bench.cli run -g llamagen-3b      # sharded; as 1 GPU at equal --batch-size
    bench run -g llamagen-vq16 --task reconstruct --data /imagenet/val   # rFID, PSNR, SSIM

    Sample i depends only on (--seed, i) and its label, so results do not depend on the number of processes,
    and on --batch-size only through float rounding. Rerunning the same command (with any --batch-size)
    resumes a killed run from its last finished shard. The result (every metric, the resolved settings,
    checkpoint and reference sha256s, versions, timing) goes to runs/<run-id>/result.json; compare runs with
    `bench report runs/ --compare`.
    """
    if generator is None:
        return run_demo_command(ctx, runs_dir, device)
    overrides = dict(ctx.meta.get(_GIVEN, {}))
    for name, value in parse_set(set_items).items():
        _put(overrides, name, value, f"--set {name}")
    if (task == "reconstruct") != (data is not None):
        raise BenchError("--data is needed by --task reconstruct, and only by it")
    if task == "reconstruct":
        sampling_only = ["num_samples", "seed", "labels", "save_npz", "save_grid"]
        given = [f"--{name.replace('_', '-')}" for name in sampling_only
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise BenchError(f"{', '.join(given)}: sampling options; --task reconstruct encodes every image of --data")
    runs = [RunSettings(
        generator=generator, overrides=values, ckpt=ckpt, batch_size=batch_size, shard_size=shard_size, ref=ref,
        noise_resamples=noise_resamples,
        metrics=metric_spec, feature_options=given_options(ctx), force=force, run_id=one_id, runs_dir=runs_dir,
        device=device or ("cuda" if torch.cuda.is_available() else "cpu"), allow_download=not offline,
    ) for values, one_id in sweep(overrides, run_id)]  # every run's settings checked before the first one starts
    written = []
    for settings in runs:
        chosen = ReconstructTask(data=data) if task == "reconstruct" else SampleTask(
            num_samples=num_samples, seed=seed, labels=labels, save_npz=save_npz, save_grid=save_grid)
        if len(runs) > 1:
            swept = {k: v for k, v in settings.overrides.items() if overrides.get(k) != v}
            click.echo(f"\n== sweep: {', '.join(f'{k}={v}' for k, v in swept.items())}", err=True)
        result = execute(chosen, settings)  # Ctrl-C: the executor says which shards are kept, bench.cli prints it
        if result is not None:
            click.echo(summary_lines(result))
            written.append(Path(settings.runs_dir) / result["run_id"] / "result.json")
            click.echo(f"result: {written[-1]}")
    if len(written) > 1:
        click.echo(f"compare them: bench report {' '.join(map(str, written))} --compare --html sweep.html")


# -- bench generators -----------------------------------------------------------------------------------------
#: the options the demo takes (--offline too: the demo never downloads); any other without --generator is a mistake
DEMO_OPTIONS = ("runs_dir", "device", "offline")


def run_demo_command(ctx: click.Context, runs_dir: str, device: str | None) -> None:
    """`bench run` without --generator: the offline demo benchmark (bench/demo/benchmark.py)."""
    from bench.demo.benchmark import run_demo

    given = [p.opts[0] for p in ctx.command.params if p.name not in DEMO_OPTIONS and p.expose_value
             and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
    if given or ctx.meta.get(_GIVEN):
        shown = ", ".join(given + [f"--{k.replace('_', '-')}" for k in ctx.meta.get(_GIVEN, {})])
        raise BenchError(f"{shown}: options of a run; name the generator with -g (`bench generators` lists them). "
                         "Without -g, `bench run` runs the offline demo, which takes only --runs-dir, --device and --offline.")
    run_demo(runs_dir=Path(runs_dir) / "demo", device=device or "cpu")


def _describe(name: str, preset: Preset) -> str:
    info, label = preset_info(preset), "paper settings"
    if info is None:
        return f"{name}\n  (its plugin gives no description)"
    settings = ", ".join(f"{k}={v}" for k, v in info["paper_settings"].items()) or "-"
    source = f" ({info['settings_source']})" if info.get("settings_source") else ""
    return (f"{name}\n  model: {info['model']}  resolution: {info['image_size']}  eval size: {info['eval_size']}\n"
            f"  {label}: {settings}{source}" + (f"\n  paper: {info['paper']}" if info["paper"] else "")
            + _expected_fid_lines(info))


def _expected_fid_lines(info: dict[str, Any]) -> str:
    """The FID the paper's tables (reports/published.csv) give at the preset's settings, and any disagreement with
    the FID its release claims: e.g. llamagen-b's cfg 2.0 is Table 9's 6.437, while the README's 6.09 is at 2.25."""
    from bench.report.published import claim_disagreement, expected_fid

    cfg = info["paper_settings"].get("cfg_scale")
    found = expected_fid(info["model"], info["image_size"], cfg, info["eval_size"])
    lines = ""
    if found is not None:
        lines += f"\n  expected FID: {found[0]:g} at cfg {cfg if cfg is not None else '-'} ({found[1]})"
    claimed = info.get("claimed_fid")
    if claimed is not None:
        why = claim_disagreement(info["model"], info["image_size"], cfg, claimed, info["eval_size"])
        lines += f"\n  note: the release's {why}" if why else ""
    return lines


def _options_listing(preset: Preset) -> str:
    """The options a preset declares, as `bench run` takes them: a flag for the common ones, --set for the rest."""
    options = preset.options
    if not options:
        return "  options: none"
    rows = []
    for option in options:
        types = option.type if isinstance(option.type, tuple) else (option.type,)
        kind = "|".join(map(str, option.choices)) if option.choices else "|".join(t.__name__.upper() for t in types)
        if option.flag.startswith("--set"):
            usage = f"--set {option.name}={kind}"
        else:
            usage = f"{option.flag}/--no-{option.flag[2:]}" if types == (bool,) else f"{option.flag} {kind}"
        default = "" if option.default is None else f" [{option.default}]"
        rows.append((usage, f"{option.help}{default}"))
    width = max(len(usage) for usage, _ in rows)
    return "\n".join(["  options (`bench run` flags for the common ones, --set NAME=VALUE for the others):"]
                     + [f"    {usage:<{width}}  {text}" for usage, text in rows])


@click.command("generators")
@click.argument("name", required=False)
def generators_command(name: str | None):
    """List the installed generator presets, or describe preset NAME with the options it takes.

    \b
    bench generators                  every preset: model, resolution, eval size, paper settings
    bench generators dit-xl-2         the same for one preset, and its --set options
    """
    if name is not None:
        preset = load_preset(name)
        click.echo(_describe(name, preset) + "\n" + _options_listing(preset))
        return
    known = available_generators()
    if not known:
        click.echo("no generator plugins installed")
    for preset in sorted(known):
        try:
            click.echo(_describe(preset, known[preset].load()))
        except Exception as err:  # a broken plugin (failing import or listing) must not hide the others
            click.echo(f"{preset}\n  (cannot be loaded: {err})")
