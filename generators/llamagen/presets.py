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
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.download import RemoteFile

HF_REPO = "FoundationVision/LlamaGen"

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
}


def remote_file(filename: str) -> RemoteFile:
    """A release file on the LlamaGen hub repo, cached under its own name."""
    return RemoteFile(filename=filename, sha256=SHA256.get(filename), hf_repo=HF_REPO, hf_filename=filename)


@dataclass(frozen=True)
class Preset:
    name: str
    gpt_model: str | None  # None: tokenizer-only preset (reconstruction / rFID)
    gpt_file: str | None
    image_size: int  # resolution the GPT generates (or the tokenizer reconstructs) at
    vq_model: str = "VQ-16"
    vq_file: str = "vq_ds16_c2i.pt"
    downsample: int = 16
    cfg_scale: float = 1.0
    cfg_interval: float = -1
    top_k: int = 0
    top_p: float = 1.0
    temperature: float = 1.0
    eval_size: int = 256
    paper_fid: float | None = None  # the authors' FID-50k on ImageNet 256x256 with these settings


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("llamagen-b", "GPT-B", "c2i_B_384.pt", 384, cfg_scale=2.0, paper_fid=6.09),
    Preset("llamagen-b-256", "GPT-B", "c2i_B_256.pt", 256, cfg_scale=2.0, paper_fid=5.46),
    Preset("llamagen-l", "GPT-L", "c2i_L_384.pt", 384, cfg_scale=2.0, paper_fid=3.07),
    Preset("llamagen-l-256", "GPT-L", "c2i_L_256.pt", 256, cfg_scale=2.0, paper_fid=3.80),
    Preset("llamagen-xl", "GPT-XL", "c2i_XL_384.pt", 384, cfg_scale=1.75, paper_fid=2.62),
    Preset("llamagen-xxl", "GPT-XXL", "c2i_XXL_384.pt", 384, cfg_scale=1.75, paper_fid=2.34),
    Preset("llamagen-3b", "GPT-3B", "c2i_3B_384.pt", 384, cfg_scale=1.65, paper_fid=2.18),
    Preset("llamagen-vq16", None, None, 256),
    Preset("llamagen-vq8", None, None, 256, vq_model="VQ-8", vq_file="vq_ds8_c2i.pt", downsample=8),
]}
