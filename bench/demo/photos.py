"""A class-conditional 64x64 dataset built offline, bit-identically, from eight photographs scikit-image ships.

The demo benchmark has to train, sample and score a generator with no download. ImageNet is out of reach, but
scikit-image's wheel carries a handful of public-domain / CC0 photographs (see README.md here for each one's
source and license). Each photograph is one class; its examples are random square crops of it, taken at
different scales, mirrored at random and resized to 64x64:

    side  ~ uniform integer in [0.3, 0.7] x the photo's short side   (a 2.3x range of scales)
    top   ~ uniform integer in [0, H - side],  left ~ uniform in [0, W - side]
    flip  ~ 0 or 1 (horizontal mirror, applied after the resize)
    image = PIL BICUBIC resize of photo[top:top+side, left:left+side] to 64x64   (always a downscale: side >= 90)

Every crop parameter is an integer drawn from `np.random.RandomState([SEED, class index])` -- the legacy
generator, whose streams NumPy freezes -- and the only arithmetic on pixels is Pillow's fixed-point resize, so
a split is the same bytes on every machine: `FINGERPRINTS` pins the sha256 of each and a test checks them.
Within a class the parameter draws are de-duplicated and the first `SPLITS["val"]` go to the validation
split, the next `SPLITS["train"]` to the training split: no crop is in both.

    images, labels = build_split("val")         # uint8 [512, 64, 64, 3], int64 [512] (class-major order)
    write_folder("train", "demo64/train")       # ImageNet-style <class>/<n>.png, for the LlamaGen trainers
    python -m bench.demo train demo64/train     # the same from a shell
    python -m bench.demo val demo64_val.npz     # an ADM-style batch (arr_0 images, arr_1 labels): a reference

The validation split is the demo's reference batch (FID) and the tokenizer's reconstruction set (rFID). A
folder written here lists its classes in `CLASSES` order (they are sorted), so the labels a trainer derives
from the folder (torchvision ImageFolder order) are the labels `build_split` returns.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import zipfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
from PIL import Image

from bench.errors import BenchError

IMAGE_SIZE = 64
#: examples per class in each split (8 classes: 4,000 training and 512 validation images)
SPLITS: dict[str, int] = {"train": 500, "val": 64}
#: the crop side's range, as a fraction of the photo's short side
SCALE_RANGE = (0.3, 0.7)
SEED = 20240601


@dataclass(frozen=True)
class Photo:
    """One class: a photograph in scikit-image's `skimage/data` folder and the sha256 of that file (as pinned in
    scikit-image's own data registry), so a scikit-image release that changes the picture is noticed."""

    name: str
    filename: str
    sha256: str


#: one class per photograph, in sorted name order (= the label order of a folder written by `write_folder`)
PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut", "astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
    Photo("camera", "camera.png", "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a"),
    Photo("chelsea", "chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
    Photo("coffee", "coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
    Photo("hubble_deep_field", "hubble_deep_field.jpg",
          "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4"),
    Photo("immunohistochemistry", "ihc.png", "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef"),
    Photo("retina", "retina.jpg", "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6"),
    Photo("rocket", "rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
)
CLASSES: tuple[str, ...] = tuple(photo.name for photo in PHOTOS)

#: sha256 of each split: `fingerprint(*build_split(split))`
FINGERPRINTS: dict[str, str] = {
    "train": "7388ff49502c451296656cba3d573a27c472ccb680798b5b9606a00cc19f9467",
    "val": "49391a4af9e1b4d8f0c4f41d9d48d71841691e3caf42e8d2f7ffb9297e64a687",
}


def photo_path(photo: Photo) -> Path:
    """Where the installed scikit-image keeps the photograph (bundled in its wheel: no download)."""
    try:
        root = files("skimage") / "data"
    except ModuleNotFoundError:
        raise BenchError("the demo dataset is built from photographs scikit-image ships: "
                         "pip install 'scikit-image>=0.22'") from None
    return Path(str(root / photo.filename))


def load_photo(photo: Photo) -> np.ndarray:
    """The photograph as uint8 [H, W, 3] (the grayscale `camera` repeated over three channels), after checking
    the file is the one the dataset was defined with."""
    path = photo_path(photo)
    if not path.exists():
        raise BenchError(f"{path}: missing from the installed scikit-image; the demo dataset needs its bundled "
                         f"photograph {photo.filename} (reinstall scikit-image>=0.22)")
    data = path.read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if found != photo.sha256:
        raise BenchError(f"{path}: this scikit-image ships another {photo.filename} (sha256 {found[:16]}..., the "
                         f"demo dataset was defined on {photo.sha256[:16]}...), so the demo's splits, reference "
                         "statistics and weights would not match it. Install a scikit-image with the original file.")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def crop_params(split: str) -> np.ndarray:
    """The crops of a split: int64 [N, 5] rows (class, top, left, side, flip), class-major, in image order."""
    _check_split(split)
    rows = []
    for label, photo in enumerate(PHOTOS):
        height, width = _photo_shape(photo)
        rows.extend([(label, *crop) for crop in _class_crops(label, height, width)[split]])
    return np.asarray(rows, dtype=np.int64)


def build_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 64, 64, 3], labels int64 [N]) of "train" or "val", class-major, bit-identical per run."""
    _check_split(split)
    images, labels = [], []
    for label, photo in enumerate(PHOTOS):
        pixels = load_photo(photo)
        for top, left, side, flip in _class_crops(label, *pixels.shape[:2])[split]:
            crop = Image.fromarray(pixels[top:top + side, left:left + side])
            small = np.asarray(crop.resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.BICUBIC))
            images.append(small[:, ::-1] if flip else small)
            labels.append(label)
    return np.ascontiguousarray(np.stack(images)), np.asarray(labels, dtype=np.int64)


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of a split's bytes: the C-ordered uint8 images, then the labels as little-endian int64."""
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return digest.hexdigest()


def write_folder(split: str, out_dir: str | os.PathLike) -> Path:
    """Write a split as an ImageNet-style folder, `out_dir/<class>/<split>_<n>.png`, and return it.

    The folder is assembled beside `out_dir` and renamed into place, so it is complete or absent; an existing
    `out_dir` is refused rather than mixed with (a trainer would read whatever else is in it).
    """
    out = Path(out_dir)
    if out.exists():
        raise BenchError(f"{out} already exists; write the demo {split} split to a new folder")
    images, labels = build_split(split)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        counts = np.zeros(len(CLASSES), dtype=np.int64)
        for image, label in zip(images, labels):
            folder = tmp / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{split}_{counts[label]:04d}.png")
            counts[label] += 1
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_npz(split: str, path: str | os.PathLike) -> Path:
    """Write a split as an ADM-style batch, `arr_0` uint8 NHWC images and `arr_1` int64 labels, compressed.

    The zip members get a fixed timestamp, so the same split gives the same bytes (the demo reference batch
    is pinned by sha256); written atomically.
    """
    from bench.atomic import atomic_path

    images, labels = build_split(split)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in (("arr_0", images), ("arr_1", labels)):
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)
    return Path(path)


# ---- internals ----------------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise BenchError(f"unknown demo split {split!r}; the splits are {', '.join(SPLITS)}")


def _photo_shape(photo: Photo) -> tuple[int, int]:
    with Image.open(photo_path(photo)) as image:
        width, height = image.size
    return height, width


def _class_crops(label: int, height: int, width: int) -> dict[str, list[tuple[int, int, int, int]]]:
    """Both splits' (top, left, side, flip) for one class: distinct draws from the class's own frozen stream,
    the first SPLITS["val"] for validation and the next SPLITS["train"] for training."""
    rng = np.random.RandomState([SEED, label])
    short = min(height, width)
    low, high = int(np.ceil(SCALE_RANGE[0] * short)), int(np.floor(SCALE_RANGE[1] * short))
    needed = SPLITS["val"] + SPLITS["train"]
    seen: set[tuple[int, int, int, int]] = set()
    crops: list[tuple[int, int, int, int]] = []
    while len(crops) < needed:
        side = int(rng.randint(low, high + 1))
        crop = (int(rng.randint(0, height - side + 1)), int(rng.randint(0, width - side + 1)), side,
                int(rng.randint(0, 2)))
        if crop not in seen:
            seen.add(crop)
            crops.append(crop)
    return {"val": crops[:SPLITS["val"]], "train": crops[SPLITS["val"]:]}


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.demo SPLIT OUT`: write a split as an image folder (or an .npz batch) and say its sha256."""
    parser = argparse.ArgumentParser(prog="python -m bench.demo", description="Write a demo split as an "
                                     "ImageNet-style folder of PNGs (OUT/<class>/<split>_<n>.png), or, when OUT ends "
                                     "in .npz, as an ADM-style batch (arr_0 images, arr_1 labels).")
    parser.add_argument("split", choices=sorted(SPLITS))
    parser.add_argument("out", help="a new folder, or a .npz file")
    args = parser.parse_args(argv)
    try:
        out = (write_npz if args.out.endswith(".npz") else write_folder)(args.split, args.out)
    except BenchError as err:
        raise SystemExit(f"Error: {err}") from None
    print(f"wrote {out}: {SPLITS[args.split] * len(CLASSES)} images of {len(CLASSES)} classes "
          f"(split sha256 {FINGERPRINTS[args.split] or 'not pinned'})")

