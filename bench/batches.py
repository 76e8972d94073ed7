"""Image batches as the ADM evaluator sees them: `.npz` files with a uint8 NHWC `arr_0`, or image folders.

A 50k x 256x256 batch is ~10 GB, so nothing here loads `arr_0` whole: the `.npy` member is read from the zip
archive row block by row block (stored or deflated members alike), and written the same way. Every way a
user's file can be wrong (missing `arr_0`, wrong rank, channels or dtype, a truncated or corrupt archive, an
unreadable image) raises a `BenchError` that says what was found and what is expected.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import zipfile
import zlib
from pathlib import Path
from typing import IO, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.download import sha256_file
from bench.errors import BenchError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
#: Pillow modes wider than 8 bits per channel (16-bit PNG, 32-bit int and float TIFF)
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
STATISTICS_KEYS = ("mu", "sigma", "mu_s", "sigma_s")


def check_layout(shape: tuple[int, ...], dtype: np.dtype, where: str = "images") -> None:
    """Validate a uint8 [N, H, W, 3] layout, the only one the Inception pipeline accepts."""
    if len(shape) != 4 or shape[-1] != 3 or min(shape[1:3]) < 1:
        hint = " (channels first? ADM batches are NHWC)" if len(shape) == 4 and shape[1] == 3 else ""
        raise BenchError(f"{where}: expected uint8 images of shape [N, H, W, 3] (NHWC, RGB), found shape "
                         f"{tuple(shape)}{hint}")
    if dtype != np.uint8:
        raise BenchError(
            f"{where}: expected dtype uint8 with values 0..255, found {dtype}. "
            "Convert with np.clip(np.round(x), 0, 255).astype(np.uint8) from the right range first."
        )


def check_images(images: np.ndarray, where: str = "images") -> np.ndarray:
    """Validate a uint8 [N, H, W, 3] numpy array and return it."""
    if not isinstance(images, np.ndarray):
        raise BenchError(f"{where}: expected a numpy uint8 array [N, H, W, 3], found {type(images).__name__}")
    check_layout(images.shape, images.dtype, where)
    return images


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """ADM's resize: BOX-halve while the short side is at least twice `size` (cheap anti-aliasing), then a
    BICUBIC resize that makes the short side `size` (the long side rounded)."""
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    return image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)


def center_crop_arr(image: Image.Image, image_size: int) -> np.ndarray:
    """ADM's ImageNet preprocessing (guided-diffusion `center_crop_arr`).

    Convert to RGB first (ADM's loader does; palette and 1-bit images would otherwise be resized with
    nearest-neighbour, which Pillow forces for those modes), halve with a BOX filter while the short side is at
    least twice the target (cheap anti-aliasing), then a BICUBIC resize so the short side equals `image_size`
    (sizes rounded), then a centered crop. Reference batches built any other way give a different FID against
    the same samples.
    """
    arr = np.asarray(resize_short_side(image.convert("RGB"), image_size))
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


class ImageSource(abc.ABC):
    """A readable set of images, iterated in uint8 NHWC blocks."""

    path: Path

    @property
    @abc.abstractmethod
    def num_images(self) -> int: ...

    @abc.abstractmethod
    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield uint8 [n, H, W, 3] blocks of at most `batch_size` images, in a fixed order."""

    @abc.abstractmethod
    def content_hash(self) -> str:
        """A digest of the images' content, the key of the activation cache."""


def _read_npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    return np.lib.format._read_array_header(f, version)  # (3, 0): utf-8 header, no public reader


class NpzImages(ImageSource):
    """The `arr_0` of an ADM-format `.npz`, streamed from the archive."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.shape, self.dtype = self._inspect()

    def _open_member(self) -> tuple[zipfile.ZipFile, IO[bytes]]:
        try:
            archive = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise BenchError(f"{self.path}: no such file") from None
        except (zipfile.BadZipFile, OSError) as err:
            raise BenchError(f"{self.path}: not a readable .npz archive ({err}); is it truncated or corrupt?")
        names = archive.namelist()
        if "arr_0.npy" not in names:
            archive.close()
            keys = ", ".join(n.removesuffix(".npy") for n in names) or "none"
            raise BenchError(f"{self.path}: no 'arr_0' array (the images of an ADM batch); keys found: {keys}")
        return archive, archive.open("arr_0.npy")

    def _inspect(self) -> tuple[tuple[int, ...], np.dtype]:
        archive, member = self._open_member()
        with archive, member:
            try:
                shape, fortran, dtype = _read_npy_header(member)
            except (ValueError, EOFError, zlib.error, zipfile.BadZipFile) as err:
                raise BenchError(f"{self.path}: 'arr_0' has a corrupt header ({err})") from None
        if fortran:
            raise BenchError(f"{self.path}: 'arr_0' is stored in Fortran order; save it C-contiguous (np.savez)")
        check_layout(shape, dtype, f"{self.path}: 'arr_0'")
        return tuple(shape), dtype

    @property
    def num_images(self) -> int:
        return self.shape[0]

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        row_shape = self.shape[1:]
        row_bytes = int(np.prod(row_shape)) * self.dtype.itemsize
        archive, member = self._open_member()
        with archive, member:
            try:
                _read_npy_header(member)
                for start in range(0, self.num_images, batch_size):
                    n = min(batch_size, self.num_images - start)
                    buf = member.read(n * row_bytes)
                    if len(buf) != n * row_bytes:
                        raise BenchError(
                            f"{self.path}: truncated: 'arr_0' declares {self.num_images} images but the data "
                            f"ends after {start + len(buf) // row_bytes}"
                        )
                    yield np.frombuffer(buf, self.dtype).reshape((n,) + row_shape)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
                raise BenchError(f"{self.path}: corrupt or truncated archive while reading 'arr_0' ({err})") from None

    def content_hash(self) -> str:
        return sha256_file(self.path, progress=True)


class FolderImages(ImageSource):
    """All images under a folder (recursively, sorted by relative path), optionally ADM-center-cropped."""

    def __init__(self, path: str | os.PathLike, center_crop: int | None = None):
        self.path = Path(path)
        self.center_crop = center_crop
        self.files = sorted(  # hidden files are skipped: macOS `._x.png` resource forks are not images
            p for p in self.path.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        )
        if not self.files:
            raise BenchError(f"{self.path}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")

    @property
    def num_images(self) -> int:
        return len(self.files)

    def _load(self, file: Path) -> np.ndarray:
        with _opened(file) as image:
            image.load()
            if image.mode in WIDE_MODES:  # convert("RGB") would clip 16-bit values to white, silently
                raise BenchError(f"{file}: a {image.mode} image (more than 8 bits per channel); ADM's evaluator "
                                 "reads 8-bit RGB, so convert the images to 8 bits first")
            if self.center_crop:
                return center_crop_arr(image, self.center_crop)
            return np.asarray(image.convert("RGB"))

    def sizes(self) -> set[tuple[int, int]]:
        """The distinct (width, height) of the images, from their headers (no decoding)."""
        found = set()
        for file in self.files:
            with _opened(file) as image:
                found.add(image.size)
        return found

    def read(self, start: int, end: int) -> np.ndarray:
        """Images start..end-1 as one uint8 block (they must share a size, e.g. when center-cropped)."""
        return np.stack([self._load(file) for file in self.files[start:end]])

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Blocks of same-sized images: a block ends early where the image size changes."""
        block: list[np.ndarray] = []
        for file in self.files:
            image = self._load(file)
            if block and (len(block) == batch_size or image.shape != block[0].shape):
                yield np.stack(block)
                block = []
            block.append(image)
        if block:
            yield np.stack(block)

    def content_hash(self) -> str:
        digest = hashlib.sha256(f"center_crop={self.center_crop}\n".encode())
        for file in self.files:
            digest.update(f"{file.relative_to(self.path).as_posix()}\t{sha256_file(file)}\n".encode())
        return digest.hexdigest()


@contextlib.contextmanager
def _opened(file: Path) -> Iterator[Image.Image]:
    """`Image.open`, with any failure to read or decode the file (inside the block too) named as that file's."""
    try:
        with Image.open(file) as image:
            yield image
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise BenchError(f"{file}: unreadable image ({err})") from None


def open_images(path: str | os.PathLike, center_crop: int | None = None) -> ImageSource:
    """An `.npz` batch or an image folder, chosen by what `path` is."""
    path = Path(path)
    if path.is_dir():
        return FolderImages(path, center_crop)
    if not path.exists():
        raise BenchError(f"{path}: no such file or folder")
    if center_crop:
        raise BenchError(f"{path}: center cropping applies to image folders, not to .npz batches")
    return NpzImages(path)


def has_images(path: str | os.PathLike) -> bool:
    """Whether `path` holds images (a folder, or an npz with `arr_0`) rather than statistics only."""
    path = Path(path)
    if path.is_dir():
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            return "arr_0.npy" in archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise BenchError(f"{path}: not a readable .npz archive ({err}); is it truncated or corrupt?") from None


def read_statistics(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """Precomputed `mu`, `sigma`, `mu_s`, `sigma_s` of a reference batch, or None where it has none.

    ADM uses these instead of recomputing them from `arr_0` when a batch carries them.
    """
    path = Path(path)
    if path.is_dir():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            present = [k for k in STATISTICS_KEYS if f"{k}.npy" in archive.namelist()]
            if not present:
                return None
            if len(present) != len(STATISTICS_KEYS):
                missing = sorted(set(STATISTICS_KEYS) - set(present))
                raise BenchError(f"{path}: has {present} but not {missing}: reference statistics come as all four")
            names = archive.namelist()
            extra = [k for k in (n.removesuffix(".npy") for n in names) if k.startswith("mu_") and k != "mu_s"
                     and f"sigma_{k[3:]}.npy" in names]  # other networks' statistics, e.g. mu_dinov2/sigma_dinov2
            stats = {}
            for key in [*STATISTICS_KEYS, *extra, *(f"sigma_{k[3:]}" for k in extra)]:
                with archive.open(f"{key}.npy") as member:
                    array = np.lib.format.read_array(member, allow_pickle=False)
                if array.dtype.kind not in "fiu":
                    raise BenchError(f"{path}: {key} holds {array.dtype} values; statistics are numbers")
                stats[key] = array.astype(np.float64)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        if "allow_pickle" in str(err):
            raise BenchError(f"{path}: holds pickled Python objects, which are never loaded (they can run code); "
                             "a batch holds plain arrays") from None
        raise BenchError(f"{path}: not a readable .npz archive ({err}); is it truncated or corrupt?") from None
    for mean, cov in (("mu", "sigma"), ("mu_s", "sigma_s"), *((k, f"sigma_{k[3:]}") for k in extra)):
        d = stats[mean].shape[0] if stats[mean].ndim == 1 else None
        if d is None or stats[cov].shape != (d, d):
            raise BenchError(f"{path}: {mean} has shape {stats[mean].shape} and {cov} {stats[cov].shape}; expected "
                             "a vector [D] and a matrix [D, D] (ADM's 2048 for mu/sigma, 2023 for mu_s/sigma_s)")
        if not (np.isfinite(stats[mean]).all() and np.isfinite(stats[cov]).all()):
            raise BenchError(f"{path}: {mean}/{cov} contain NaN or inf; the statistics are corrupt")
    return stats


class NpzWriter:
    """Write an `.npz` whose `arr_0` [N, *row_shape] is streamed in blocks, plus small extra arrays at the end.

    The file appears atomically at `path` on `close()`; an interrupted writer leaves only a temporary file.
    The archive is stored uncompressed like `np.savez`, so `np.load` and ADM's evaluator read it unchanged.
    """

    def __init__(self, path: str | os.PathLike, num_rows: int, row_shape: tuple[int, ...], dtype=np.uint8):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.num_rows, self.row_shape, self.dtype = num_rows, tuple(row_shape), np.dtype(dtype)
        self.written = 0
        self.archive = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.member = self.archive.open("arr_0.npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (num_rows,) + self.row_shape}
        np.lib.format.write_array_header_2_0(self.member, header)

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise BenchError(f"{self.path}: rows of shape {rows.shape[1:]} do not match {self.row_shape}")
        if self.written + len(rows) > self.num_rows:
            raise BenchError(f"{self.path}: more than the declared {self.num_rows} rows written")
        self.member.write(rows.tobytes())
        self.written += len(rows)

    def close(self, **extra: np.ndarray) -> Path:
        """Finish `arr_0`, append `extra` arrays (e.g. `arr_1` labels, statistics) and publish the file."""
        if self.written != self.num_rows:
            raise BenchError(f"{self.path}: {self.written} rows written, {self.num_rows} declared")
        self.member.close()
        for name, array in extra.items():
            with self.archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
        self.archive.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.member.close()
        self.archive.close()
        self.tmp.unlink(missing_ok=True)
