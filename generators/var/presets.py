"""VAR presets as data: which transformer, which files, which sampling settings reproduce which paper number.

Files: the Hugging Face repo FoundationVision/var (the official README's "VAR zoo"): `vae_ch160v4096z32.pth`
(the tokenizer every model shares) and `var_d16.pth`, `var_d20.pth`, `var_d24.pth`, `var_d30.pth` (256 px). The
512 px `var_d36.pth` (VAR-d36-s, shared AdaLN) is not supported: this port builds shared_aln=False only.

Checksums: the authors publish none. `vae_ch160v4096z32.pth` (436,075,834 bytes) is pinned to the sha256 that two
independent public sources agree on: a research project's asset manifest (the digest of its downloaded copy,
recorded beside var_d16.pth and the upstream commit 78b9539) and an SSL-benchmark port that took it from the Hub's
git-lfs pointer `oid` (docs/checksums.md). For `var_d16.pth` only one public record was found
(4f6151aad91c94e03e224dd7358d8389fa05301c0c291279566998efb54b0ecb, the same manifest), so it stays unpinned
until a second source agrees; for d20/d24/d30 none was found. Unpinned files are used unverified (their sha256
is recorded in every result); the Hub API lists the LFS sha256 of each for anyone online.

Sampling settings: the official README's FID recipe, `autoregressive_infer_cfg(..., cfg=1.5, top_p=0.96,
top_k=900, more_smooth=False)`, 50 images per class, ADM's evaluator at 256. VAR's cfg is a ramp over the 10
scales (guidance weight t = 1.5 * si / 9), not LlamaGen's or DiT's constant scale (docs/var.md).
FoundationVision/VAR issue #86 points out that the paper's ablation table states cfg 2.0; the README's 1.5 is
what the authors give (issues #38, #39) for the released files.

Paper numbers (ImageNet 256x256, Table 1, 50k samples, ADM's evaluator). Pinned: arXiv:2404.02905v2 (June 2024;
its abstract's 1.73 / 350.2 is the NeurIPS 2024 paper's); the same rows are in reports/published.csv.

    model       params  v2 FID / IS / Pre / Rec      v1 FID / IS     README FID (= v1)
    VAR-d16     310M    3.30 / 274.4 / 0.84 / 0.51   3.55 / 280.4    3.55
    VAR-d20     600M    2.57 / 302.6 / 0.83 / 0.56   2.95 / 302.6    2.95
    VAR-d24     1.0B    2.09 / 312.9 / 0.82 / 0.59   2.33 / 312.9    2.33
    VAR-d30     2.0B    1.92 / 323.1 / 0.82 / 0.59   1.97 / 323.1    1.97
    VAR-d30-re  2.0B    1.73 / 350.2 / 0.82 / 0.60   1.80 / 356.4    1.80   (rejection sampling: not a preset)

The versions disagree on every FID (and on d16's IS); the README's table still prints v1's. The files on the Hub
were replaced in April 2024 by attention-normalised ones (issue #38; the official demo loads them with
strict=True into attn_l2_norm=True models, so they carry scale_mul_1H11), and v2's ablation, as public readings
of its Table 3 give it, credits attention normalisation with d16's 3.60 -> 3.30: so v2's numbers are the
likelier description of the files these presets download.
Sources: the two abstracts as arxiv.org shows them (v1: 1.80 / 356.4, v2: 1.73 / 350.2); the table rows as
several later papers' comparison tables reprint them (v2: 3.30 / 274.4 / 0.84 / 0.51 ... 1.92 / 323.1 and
1.73 / 350.2 / 0.82 / 0.60; v1: 3.55 / 280.4, 2.95 / 302.6, 2.33 / 312.9), not transcribed from the PDF here:
check them against it before relying on a digit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.download import RemoteFile

HF_REPO = "FoundationVision/var"
#: the arXiv version whose Table 1 the `paper` numbers (and reports/published.csv) come from
PAPER = "arXiv:2404.02905v2 Table 1"
README_SETTINGS = "the official README's FID recipe: autoregressive_infer_cfg(cfg=1.5, top_p=0.96, top_k=900)"

#: pinned sha256 of the released files; None = not pinned (see the module docstring for why each is or is not)
SHA256: dict[str, str | None] = {
    "vae_ch160v4096z32.pth": "7c3ec27ae28a3f87055e83211ea8cc8558bd1985d7b51742d074fb4c2fcf186c",
    "var_d16.pth": None,  # one public record only: 4f6151aa...4b0ecb
    "var_d20.pth": None,  # no public record found
    "var_d24.pth": None,  # no public record found
    "var_d30.pth": None,  # no public record found
}
#: byte sizes where a source states them
SIZES: dict[str, int] = {"vae_ch160v4096z32.pth": 436_075_834}


def remote_file(filename: str) -> RemoteFile:
    """A release file on the VAR hub repo, cached under its own name."""
    return RemoteFile(filename=filename, sha256=SHA256[filename], hf_repo=HF_REPO, hf_filename=filename)


VAE_FILE = remote_file("vae_ch160v4096z32.pth")


@dataclass(frozen=True)
class VARPreset:
    name: str
    depth: int | None  # None: the tokenizer alone (reconstruction / rFID)
    var_file: RemoteFile | None
    vae_file: RemoteFile = VAE_FILE
    image_size: int = 256
    eval_size: int = 256
    cfg_scale: float = 1.5  # VAR's ramp: t = cfg_scale * si / 9 at scale si
    top_k: int = 900
    top_p: float = 0.96
    more_smooth: bool = False  # the official visualisation option (Gumbel-softmax inputs); FID uses False
    num_classes: int = 1000
    params_m: float | None = None  # the paper's count
    readme_fid: float | None = None  # the official README's table (arXiv v1's numbers)
    paper: dict[str, float] = field(default_factory=dict)  # PAPER's row at these settings
    settings_source: str = README_SETTINGS


def _model(depth: int, params_m: float, readme_fid: float, fid: float, is_: float, pre: float, rec: float
           ) -> VARPreset:
    return VARPreset(name=f"var-d{depth}", depth=depth, var_file=remote_file(f"var_d{depth}.pth"), params_m=params_m,
                     readme_fid=readme_fid, paper={"fid": fid, "is": is_, "precision": pre, "recall": rec})


PRESETS: dict[str, VARPreset] = {p.name: p for p in [
    _model(16, 310, 3.55, 3.30, 274.4, 0.84, 0.51),
    _model(20, 600, 2.95, 2.57, 302.6, 0.83, 0.56),
    _model(24, 1000, 2.33, 2.09, 312.9, 0.82, 0.59),
    _model(30, 2000, 1.97, 1.92, 323.1, 0.82, 0.59),
    VARPreset(name="var-vae", depth=None, var_file=None, settings_source=""),
]}
