"""MAR presets as data: which network, which files, which sampling settings reproduce which paper number.

Settings: the official README's evaluation commands (LTH14/mar, `main_mar.py --evaluate`), one per model:
  * MAR-B: `--model mar_base --diffloss_d 6 --diffloss_w 1024 --num_iter 256 --num_sampling_steps 100 --cfg 2.9
    --cfg_schedule linear --temperature 1.0`; MAR-L: diffloss 8 x 1280, cfg 3.0; MAR-H: diffloss 12 x 1536, cfg 3.2;
  * all: 50,000 images (50 per class), the EMA weights (`evaluate(..., use_ema=True)`), sampled and decoded under
    `torch.cuda.amp.autocast()` (fp16), images = round(clip((x + 1) / 2, 0, 1) * 255);
  * without guidance the README says `--cfg 1.0 --temperature 0.95` (`UNGUIDED`).
The paper (arXiv:2406.11838, App. B) states 256 autoregressive steps for its Table 4, 100 diffusion steps (Sec. 4.1)
and a Muse-style (linear) cfg schedule; the scales and temperatures are swept per model and not printed.

Paper numbers (arXiv:2406.11838 Table 4, ImageNet 256x256, 50K samples, ADM evaluation suite, 800 epochs):
  * MAR-B (208M): w/ CFG FID 2.31, IS 281.7, Precision 0.82, Recall 0.57; w/o CFG 3.48, 192.4, 0.78, 0.58
  * MAR-L (479M): w/ CFG 1.78, 296.0, 0.81, 0.60; w/o CFG 2.60, 221.4, 0.79, 0.60
  * MAR-H (943M): w/ CFG 1.55, 303.7, 0.81, 0.62; w/o CFG 2.35, 227.8, 0.79, 0.62
The README's table repeats the guided FID and IS (2.31 / 281.7, 1.78 / 296.0, 1.55 / 303.7).

Files: the official links are Dropbox shares (README table; `util/download.py`, which fetches them with a wget
user agent); `dl=1` is Dropbox's direct-download form of the same links. Checksums: the release publishes none.
  * kl16.ckpt (265,900,046 bytes): sha256 34ce001b... is pinned by independent public projects that fetched it
    (one from this Dropbox link, one from the Hugging Face mirror jadechoghari/mar), agreeing on size and digest.
  * MAR-B checkpoint-last.pth (1,663,614,946 bytes): one public project records sha256
    7e970a33bc90353e2fabe3498ed1f2d194dd8d17cd387665f80b2984dfca538c (for the copy on the Hugging Face mirror's
    history, revision 773c9bd); a single source, so it is not pinned (`None`: used unverified, recorded in results).
  * MAR-L (~3.6 GiB) and MAR-H (~7.0 GiB) checkpoint-last.pth: no public digest found; None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.download import RemoteFile

#: the evaluation settings README gives for sampling without guidance
UNGUIDED = {"cfg_scale": 1.0, "temperature": 0.95}

#: where the official scripts put the files (`pretrained_models/...`); the cache keeps the same layout
VAE_FILE = RemoteFile(
    "mar/vae/kl16.ckpt",
    sha256="34ce001bcfffb7af67ec8af1e683a30d7bd45760855ddc7deedc1330f2cfd38f",
    url="https://www.dropbox.com/scl/fi/hhmuvaiacrarfg28qxhwz/kl16.ckpt?rlkey=l44xipsezc8atcffdp4q7mwmh&dl=1",
)


def _checkpoint(folder: str, share: str, rlkey: str) -> RemoteFile:
    return RemoteFile(f"mar/{folder}/checkpoint-last.pth", sha256=None,
                      url=f"https://www.dropbox.com/scl/fi/{share}/checkpoint-last.pth?rlkey={rlkey}&dl=1")


@dataclass(frozen=True)
class MARPreset:
    name: str
    model: str  # one of model.MAR_CONFIGS
    checkpoint: RemoteFile
    cfg_scale: float
    vae: RemoteFile = VAE_FILE
    weights: str = "model_ema"  # the training checkpoint holds "model" and "model_ema"; the paper samples the EMA
    num_iter: int = 256
    sampling_steps: int = 100
    cfg_schedule: str = "linear"
    temperature: float = 1.0
    precision: str = "fp16"  # the official evaluation samples and decodes under CUDA autocast
    image_size: int = 256
    eval_size: int = 256
    num_classes: int = 1000
    paper: dict[str, float] = field(default_factory=dict)  # Table 4, w/ CFG
    paper_unguided: dict[str, float] = field(default_factory=dict)  # Table 4, w/o CFG (at UNGUIDED settings)


PRESETS: dict[str, MARPreset] = {
    "mar-b": MARPreset(
        name="mar-b",
        model="MAR-B",
        checkpoint=_checkpoint("mar_base", "f6dpuyjb7fudzxcyhvrhk", "a6i4bo71vhfo4anp33n9ukujb"),
        cfg_scale=2.9,
        paper={"fid": 2.31, "is": 281.7, "precision": 0.82, "recall": 0.57},
        paper_unguided={"fid": 3.48, "is": 192.4, "precision": 0.78, "recall": 0.58},
    ),
    "mar-l": MARPreset(
        name="mar-l",
        model="MAR-L",
        checkpoint=_checkpoint("mar_large", "pxacc5b2mrt3ifw4cah6k", "m48ovo6g7ivcbosrbdaz0ehqt"),
        cfg_scale=3.0,
        paper={"fid": 1.78, "is": 296.0, "precision": 0.81, "recall": 0.60},
        paper_unguided={"fid": 2.60, "is": 221.4, "precision": 0.79, "recall": 0.60},
    ),
    "mar-h": MARPreset(
        name="mar-h",
        model="MAR-H",
        checkpoint=_checkpoint("mar_huge", "1qmfx6fpy3k7j9vcjjs3s", "4lae281yzxb406atp32vzc83o"),
        cfg_scale=3.2,
        paper={"fid": 1.55, "is": 303.7, "precision": 0.81, "recall": 0.62},
        paper_unguided={"fid": 2.35, "is": 227.8, "precision": 0.79, "recall": 0.62},
    ),
}
