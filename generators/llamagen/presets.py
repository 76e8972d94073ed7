"""Every released LlamaGen class-conditional checkpoint as data: model, resolution, tokenizer, the sampling
settings of the official evaluation, where the file lives, and the FID the authors report.

Sources (FoundationVision/LlamaGen):
  * sizes, files and FIDs: README "class-conditional image generation on ImageNet" table
    (B 256: 5.46, B 384: 6.09, L 256: 3.80, L 384: 3.07, XL 384: 2.62, XXL 384: 2.34, 3B 384: 2.18);
  * cfg scales and resolutions: GETTING_STARTED.md "Sampling" commands -- every model is sampled at 384
    and evaluated at 256 (`--image-size 384 --image-size-eval 256`), cfg 2.0 (B, L), 1.75 (XL, XXL),
    1.65 (3B). The 256-px B/L checkpoints have no published command; cfg 2.0 (their family's) is assumed;
  * top_k 0, top_p 1.0, temperature 1.0, cfg_interval -1: the defaults of `sample_c2i_ddp.py`;
  * 384 -> 256: `sample_c2i_ddp.py` resizes the float decoder output with
    F.interpolate(mode="bicubic") (align_corners=False, no antialiasing) before converting to uint8.
The sha256 of the hub files is not published anywhere we could read; they are None (unverified) until
someone with the files pins them (`bench.download.sha256_file`).

The demo presets are not releases: a tiny GPT-demo + VQ-demo trained by this project's own trainers on the
embedded photo dataset (`bench/demo/`), shipped with the package in `weights/` (see weights/README.md), and the
same architecture with seeded random weights (no file at all) as the floor any trained model must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.download import RemoteFile

HF_REPO = "FoundationVision/LlamaGen"
#: package data: the demo weights ship inside the package, beside this file
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: pinned sha256 of the released files; None = not yet pinned (the file is used unverified)
SHA256: dict[str, str | None] = {
    "vq_ds16_c2i.pt": None,
    "vq_ds8_c2i.pt": None,
    "c2i_B_256.pt": None,
    "c2i_B_384.pt": None,
    "c2i_L_256.pt": None,
    "c2i_L_384.pt": None,
    "c2i_XL_384.pt": None,
    "c2i_XXL_384.pt": None,
    "c2i_3B_384.pt": None,
    # shipped in weights/ (weights/retrain.sh makes them)
    "demo_vq.safetensors": "c30f43f04cba8594a464ea7315490e10a29e8f8392b28ac85bd8c7a060962832",
    "demo_gpt.safetensors": "8687174c67000ceebe7df9a49cac35dcbd088ae5a4c5cef5b62808d7125cc5e8",
}


#: weight files that ship inside the package (in WEIGHTS_DIR) rather than on the hub
PACKAGED_FILES = ("demo_vq.safetensors", "demo_gpt.safetensors")


def remote_file(filename: str) -> RemoteFile:
    """A release file on the LlamaGen hub repo, cached under its own name. A packaged file has no download
    source: presets that use it name its path in `WEIGHTS_DIR` explicitly (`packaged_path`)."""
    if filename in PACKAGED_FILES:
        return RemoteFile(filename=filename, sha256=SHA256.get(filename))
    return RemoteFile(filename=filename, sha256=SHA256.get(filename), hf_repo=HF_REPO, hf_filename=filename)


def packaged_path(filename: str) -> Path:
    """Where a weight file that ships with the package lives."""
    return WEIGHTS_DIR / filename


@dataclass(frozen=True)
class Preset:
    name: str
    gpt_model: str | None  # None: tokenizer-only preset (reconstruction / rFID)
    gpt_file: str | None
    image_size: int  # resolution the GPT generates (or the tokenizer reconstructs) at
    vq_model: str = "VQ-16"
    vq_file: str | None = "vq_ds16_c2i.pt"  # None only with random_seed
    downsample: int = 16
    cfg_scale: float = 1.0
    cfg_interval: float = -1
    top_k: int = 0
    top_p: float = 1.0
    temperature: float = 1.0
    eval_size: int = 256
    # The FID-50k the official README's table states for this checkpoint. Not always the paper's number at the
    # settings above: `bench generators` checks it against the paper's tables (reports/published.csv) and names
    # the difference (llamagen-b's 6.09 is Table 9's cfg 2.25 row; at cfg 2.0 the table gives 6.437).
    readme_fid: float | None = None
    settings_source: str = ""  # where the sampling settings above come from (shown by `bench generators`)
    num_classes: int = 1000  # the classes the GPT is conditioned on (ImageNet's 1000; the demo's 8 photographs)
    packaged: bool = False  # the files ship with the package (WEIGHTS_DIR): nothing to download
    random_seed: int | None = None  # no files: both models hold random weights drawn from this seed
    reference: str | None = None  # what `bench run` scores against without --ref (None: ADM's ImageNet batch)


#: where the release presets' sampling settings come from (see the module docstring)
OFFICIAL_COMMAND = "the official GETTING_STARTED.md sampling command"
NO_COMMAND = "assumed: no published command"

#: the demo presets' default guidance scale: the GPT-B/L presets' 2.0. For the demo model FID barely depends on it
#: (278.7 / 284.8 / 288.9 at cfg 1 / 2 / 4, weights/README.md): its tokenizer, not the guidance, limits the samples
DEMO_CFG = 2.0
DEMO_SETTINGS = "the demo's choice: the GPT-B/L presets' cfg, see weights/README.md"

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("llamagen-b", "GPT-B", "c2i_B_384.pt", 384, cfg_scale=2.0, readme_fid=6.09,
           settings_source=OFFICIAL_COMMAND),
    Preset("llamagen-b-256", "GPT-B", "c2i_B_256.pt", 256, cfg_scale=2.0, readme_fid=5.46,
           settings_source=NO_COMMAND),
    Preset("llamagen-l", "GPT-L", "c2i_L_384.pt", 384, cfg_scale=2.0, readme_fid=3.07,
           settings_source=OFFICIAL_COMMAND),
    Preset("llamagen-l-256", "GPT-L", "c2i_L_256.pt", 256, cfg_scale=2.0, readme_fid=3.80,
           settings_source=NO_COMMAND),
    Preset("llamagen-xl", "GPT-XL", "c2i_XL_384.pt", 384, cfg_scale=1.75, readme_fid=2.62,
           settings_source=OFFICIAL_COMMAND),
    Preset("llamagen-xxl", "GPT-XXL", "c2i_XXL_384.pt", 384, cfg_scale=1.75, readme_fid=2.34,
           settings_source=OFFICIAL_COMMAND),
    Preset("llamagen-3b", "GPT-3B", "c2i_3B_384.pt", 384, cfg_scale=1.65, readme_fid=2.18,
           settings_source=OFFICIAL_COMMAND),
    Preset("llamagen-vq16", None, None, 256),
    Preset("llamagen-vq8", None, None, 256, vq_model="VQ-8", vq_file="vq_ds8_c2i.pt", downsample=8),
    # The embedded demo (64 px, 8 classes, 8x8 tokens): not a release, see the module docstring.
    Preset("llamagen-demo", "GPT-demo", "demo_gpt.safetensors", 64, vq_model="VQ-demo",
           vq_file="demo_vq.safetensors", downsample=8, cfg_scale=DEMO_CFG, eval_size=64, num_classes=8,
           packaged=True, settings_source=DEMO_SETTINGS, reference="demo64"),
    Preset("llamagen-demo-vq", None, None, 64, vq_model="VQ-demo", vq_file="demo_vq.safetensors", downsample=8,
           eval_size=64, num_classes=8, packaged=True, reference="demo64"),
    Preset("llamagen-demo-random", "GPT-demo", None, 64, vq_model="VQ-demo", vq_file=None, downsample=8,
           cfg_scale=DEMO_CFG, eval_size=64, num_classes=8, random_seed=0, settings_source=DEMO_SETTINGS,
           reference="demo64"),
]}
