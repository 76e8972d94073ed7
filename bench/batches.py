"""Image batches as the ADM evaluator sees them: `.npz` files with a uint8 NHWC `arr_0`, or image folders.

A 50k x 256x256 batch is ~10 GB, so nothing here loads `arr_0` whole: the `.npy` member is read from the zip
archive row block by row block (stored or deflated members alike), and written the same way. Every way a
user's file can be wrong (missing `arr_0`, wrong rank, channels or dtype, a truncated or corrupt archive, an
unreadable image) raises a `BenchError` that says what was found and what is expected.

Every command that reads an image folder (`bench eval`, `bench ref build`, `--task reconstruct`, the LlamaGen
trainers) lists it with `list_images`, so they all read the same files and none skips one without saying so.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import IO, Iterator

import click
import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.download import sha256_file
from bench.errors import BenchError

#: The one list of file extensions read as images, matched case-insensitively (ImageNet's train set is `.JPEG`):
#: torchvision ImageFolder's list (what the LlamaGen trainers always read), the other netpbm kinds, and GIF, of
#: which only the first frame is read (as Pillow opens it). A tuple, so `str.endswith` takes it.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff",
                    ".webp")
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


class ArrayImages(ImageSource):
    """Images already in memory (uint8 NHWC), e.g. a validation split built on the fly: an `ImageSource`, so the
    activation cache keys them by content like any file."""

    def __init__(self, images: np.ndarray, label: str = "images"):
        self.images = check_images(images, label)
        self.path = Path(label)
        self._content_hash: str | None = None

    @property
    def num_images(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.images), batch_size):
            yield self.images[start:start + batch_size]

    def content_hash(self) -> str:
        if self._content_hash is None:
            digest = hashlib.sha256(f"{self.images.shape}\n".encode())
            digest.update(np.ascontiguousarray(self.images).data)
            self._content_hash = digest.hexdigest()
        return self._content_hash


def _read_npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    return np.lib.format._read_array_header(f, version)  # (3, 0): utf-8 header, no public reader


def _not_an_npz(path: Path, err: Exception) -> BenchError:
    """The error for a file that zipfile cannot open, saying what the file is when its first bytes tell: a `.npy`
    (one bare array, which np.save writes) or an image is not damaged, just not an ADM batch."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        head = b""
    if head.startswith(b"\x93NUMPY"):
        return BenchError(f"{path}: a .npy file (one bare array), not an .npz archive; ADM's batches are .npz: "
                          "np.savez(out, arr_0=images) for images, or pass mu/sigma/mu_s/sigma_s as named arrays")
    for magic, kind in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image")):
        if head.startswith(magic):
            return BenchError(f"{path}: {kind}, not an .npz batch; pass the folder that holds the images")
    if not head and path.is_file() and path.stat().st_size == 0:
        return BenchError(f"{path}: an empty file, not an .npz archive; was it written completely?")
    return BenchError(f"{path}: not a readable .npz archive ({err}); is it truncated or corrupt?")


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
            raise _not_an_npz(self.path, err) from None
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


HIDDEN = "hidden (name starts with '.')"
IN_HIDDEN_FOLDER = "in hidden folders"
NOT_REGULAR = "broken links or special files"
LINK_LOOP = "folder links back to a parent folder (not followed)"


def list_images(folder: str | os.PathLike) -> tuple[list[Path], dict[str, int]]:
    """The image files under `folder`, recursively and sorted by relative path, and what was skipped and why.

    Returns `(files, skipped)`, `skipped` mapping a reason to a count, e.g. {"not images (.txt)": 2,
    "in hidden folders": 1}. Skipped are: files whose extension is not in `IMAGE_EXTENSIONS`; hidden files
    (macOS `._x.png` resource forks are not images); everything under a hidden folder below `folder`
    (`.thumbnails/`, `.ipynb_checkpoints/`, `.git/`: copies and caches, not the data set); broken links.
    Folder links are followed, as torchvision's ImageFolder follows them (ImageNet set-ups link class
    folders), except one that points back to a folder it lies in. A folder that cannot be listed raises a
    `BenchError`: a reference built without some of its images would be silently wrong.
    """
    folder = Path(folder)
    files: list[Path] = []
    not_images: Counter[str] = Counter()
    skipped: Counter[str] = Counter()

    def walk(directory: Path, hidden: bool, parents: frozenset[str]) -> None:
        try:
            entries = list(os.scandir(directory))
        except OSError as err:
            raise BenchError(f"{directory}: cannot list this folder ({err.strerror or err}); fix its permissions "
                             "or move it out, so that no images are left out silently") from None
        for entry in entries:
            if entry.is_dir():  # follows links, like ImageFolder's os.walk(followlinks=True)
                real = os.path.realpath(entry.path)
                if real in parents:
                    skipped[LINK_LOOP] += 1
                else:
                    walk(Path(entry.path), hidden or entry.name.startswith("."), parents | {real})
            elif hidden:
                skipped[IN_HIDDEN_FOLDER] += 1
            elif entry.name.startswith("."):
                skipped[HIDDEN] += 1
            elif os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                not_images[os.path.splitext(entry.name)[1].lower() or "no extension"] += 1
            elif not entry.is_file():
                skipped[NOT_REGULAR] += 1
            else:
                files.append(Path(entry.path))

    walk(folder, False, frozenset({os.path.realpath(folder)}))
    if not_images:
        shown = [ext for ext, _ in not_images.most_common(4)]
        more = ", ..." if len(not_images) > len(shown) else ""
        skipped[f"not images ({', '.join(shown)}{more})"] = sum(not_images.values())
    order = [key for key in skipped if key.startswith("not images")] + [HIDDEN, IN_HIDDEN_FOLDER, NOT_REGULAR,
                                                                       LINK_LOOP]
    return sorted(files), {key: skipped[key] for key in order if skipped[key]}


def describe_skipped(skipped: dict[str, int]) -> str:
    """'2 not images (.txt), 1 in hidden folders': the reasons of `list_images`, for one line of text."""
    return ", ".join(f"{count} {reason}" for reason, count in skipped.items())


_noticed: set[tuple] = set()


def notice_skipped(folder: Path, skipped: dict[str, int]) -> None:
    """Say on stderr, once per folder and process (a command may list a folder several times) and on the
    main process only (torchrun ranks would repeat it), which files of `folder` are not read and why."""
    key = (os.path.realpath(folder), tuple(skipped.items()))
    if not skipped or key in _noticed or os.environ.get("RANK", "0") != "0":
        return
    _noticed.add(key)
    total = sum(skipped.values())
    click.echo(f"Notice: {total} file{'s' if total != 1 else ''} skipped in {folder}: {describe_skipped(skipped)}",
               err=True)


class FolderImages(ImageSource):
    """All images under a folder (as `list_images` finds them: recursively, sorted by relative path), optionally
    ADM-center-cropped. A GIF is read as its first frame."""

    def __init__(self, path: str | os.PathLike, center_crop: int | None = None):
        self.path = Path(path)
        self.center_crop = center_crop
        self.files, self.skipped = list_images(self.path)
        self._content_hash: str | None = None
        if not self.files:
            found = f"; skipped {describe_skipped(self.skipped)}" if self.skipped else ""
            raise BenchError(f"{self.path}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}{found})")
        notice_skipped(self.path, self.skipped)

    @property
    def num_images(self) -> int:
        return len(self.files)

    def _load(self, file: Path) -> np.ndarray:
        image = read_rgb(file)
        return center_crop_arr(image, self.center_crop) if self.center_crop else np.asarray(image)

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
        """Memoised: each file's digest is itself memoised, but 1.28M memo lookups are still worth doing once."""
        if self._content_hash is None:
            digest = hashlib.sha256(f"center_crop={self.center_crop}\n".encode())
            for file in self.files:
                digest.update(f"{file.relative_to(self.path).as_posix()}\t{sha256_file(file)}\n".encode())
            self._content_hash = digest.hexdigest()
        return self._content_hash


#: what PIL raises for a damaged, truncated or unsupported file while opening or decoding it
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)


@contextlib.contextmanager
def _opened(file: Path) -> Iterator[Image.Image]:
    """`Image.open`, with any failure to read or decode the file (inside the block too) named as that file's."""
    try:
        with Image.open(file) as image:
            yield image
    except DECODE_ERRORS as err:
        raise BenchError(f"{file}: unreadable image ({type(err).__name__}: {err})") from None


def read_rgb(file: str | os.PathLike) -> Image.Image:
    """The one image reader of every command (evaluation, references, reconstruction, the LlamaGen trainers): the
    decoded image as 8-bit RGB, or a `BenchError` naming the file. An image of more than 8 bits per channel is
    refused: `convert("RGB")` would clip a 16-bit PNG's values to white, silently."""
    with _opened(Path(file)) as image:
        image.load()
        if image.mode in WIDE_MODES:
            raise BenchError(f"{file}: a {image.mode} image (more than 8 bits per channel); ADM's evaluator reads "
                             "8-bit RGB, so convert the images to 8 bits first")
        return image.convert("RGB")


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
        raise _not_an_npz(path, err) from None


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
        raise (_not_an_npz(path, err) if isinstance(err, zipfile.BadZipFile) else
               BenchError(f"{path}: not a readable .npz archive ({err}); is it truncated or corrupt?")) from None
    for mean, cov in (("mu", "sigma"), ("mu_s", "sigma_s"), *((k, f"sigma_{k[3:]}") for k in extra)):
        d = stats[mean].shape[0] if stats[mean].ndim == 1 else None
        if d is None or stats[cov].shape != (d, d):
            raise BenchError(f"{path}: {mean} has shape {stats[mean].shape} and {cov} {stats[cov].shape}; expected "
                             "a vector [D] and a matrix [D, D] (ADM's 2048 for mu/sigma, 2023 for mu_s/sigma_s)")
        if not (np.isfinite(stats[mean]).all() and np.isfinite(stats[cov]).all()):
            raise BenchError(f"{path}: {mean}/{cov} contain NaN or inf; the statistics are corrupt")
    return stats


def _read_member(path: Path, name: str) -> np.ndarray | None:
    """One array of an npz by name (None when absent), never unpickled; a damaged archive is a `BenchError`."""
    try:
        with zipfile.ZipFile(path) as archive:
            if f"{name}.npy" not in archive.namelist():
                return None
            with archive.open(f"{name}.npy") as member:
                return np.lib.format.read_array(member, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise BenchError(f"{path}: cannot read {name} ({err}); is the file truncated or corrupt?") from None


def read_labels(path: str | os.PathLike, num_images: int) -> np.ndarray | None:
    """The class labels of an ADM batch (`arr_1`, one integer per image of `arr_0`), None for a folder or an npz
    without them."""
    path = Path(path)
    if path.is_dir():
        return None
    labels = _read_member(path, "arr_1")
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != num_images):
        raise BenchError(f"{path}: arr_1 has shape {labels.shape} and dtype {labels.dtype}; ADM batches keep one "
                         f"integer class label per image there ({num_images})")
    return labels


def read_feature_rows(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Feature rows a reference stores beside its images (`feat_<array>`, written by `bench ref build` for networks
    other than Inception, e.g. `feat_clip`), by array name; empty for a folder or an npz without them."""
    path = Path(path)
    if path.is_dir():
        return {}
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n.removesuffix(".npy") for n in archive.namelist() if n.startswith("feat_") and n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as err:
        raise _not_an_npz(path, err) from None
    rows = {}
    for name in names:
        array = _read_member(path, name)
        if array.ndim != 2 or array.dtype.kind != "f":
            raise BenchError(f"{path}: {name} has shape {array.shape} and dtype {array.dtype}; stored features are "
                             "float rows [N, D]")
        rows[name.removeprefix("feat_")] = array
    return rows


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
