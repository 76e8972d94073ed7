"""The embedded demo dataset: bit-identical splits, disjoint crops, and images that match an independent
re-derivation from scikit-image's own loaders."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from bench.demo import photos
from bench.demo.photos import CLASSES, FINGERPRINTS, IMAGE_SIZE, SPLITS, build_split, crop_params, fingerprint
from bench.errors import BenchError
from generators.llamagen.codes import list_image_folder

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def val():
    return build_split("val")


def test_val_split_is_bit_identical_to_the_pinned_one(val):
    images, labels = val
    assert images.shape == (SPLITS["val"] * len(CLASSES), IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.array_equal(labels, np.repeat(np.arange(len(CLASSES)), SPLITS["val"]))  # class-major
    assert images.flags.c_contiguous
    assert fingerprint(images, labels) == FINGERPRINTS["val"]


def test_train_split_is_bit_identical_to_the_pinned_one():
    images, labels = build_split("train")
    assert images.shape == (SPLITS["train"] * len(CLASSES), IMAGE_SIZE, IMAGE_SIZE, 3)
    assert np.bincount(labels).tolist() == [SPLITS["train"]] * len(CLASSES)
    assert fingerprint(images, labels) == FINGERPRINTS["train"]


def test_fingerprint_covers_pixels_and_labels(val):
    images, labels = val
    changed = images.copy()
    changed[-1, -1, -1, -1] ^= 1
    assert fingerprint(changed, labels) != FINGERPRINTS["val"]
    assert fingerprint(images, np.roll(labels, 1)) != FINGERPRINTS["val"]


def test_classes_are_sorted_so_folder_labels_equal_split_labels():
    assert list(CLASSES) == sorted(CLASSES) and len(set(CLASSES)) == len(CLASSES) == 8


def test_splits_share_no_crop_and_every_crop_lies_inside_its_photo():
    train, val = crop_params("train"), crop_params("val")
    assert train.shape == (len(train), 5) and len(val) == SPLITS["val"] * len(CLASSES)
    as_set = lambda rows: {tuple(r) for r in rows.tolist()}
    assert len(as_set(train)) == len(train) and len(as_set(val)) == len(val)  # no repeats within a split
    assert not as_set(train) & as_set(val)
    for label, photo in enumerate(photos.PHOTOS):
        h, w = getattr(skimage_data, photo.name)().shape[:2]
        for rows in (train, val):
            mine = rows[rows[:, 0] == label]
            top, left, side, flip = mine[:, 1], mine[:, 2], mine[:, 3], mine[:, 4]
            assert (top >= 0).all() and (left >= 0).all() and (top + side <= h).all() and (left + side <= w).all()
            assert (side >= 0.3 * min(h, w)).all() and (side <= 0.7 * min(h, w)).all() and (side > IMAGE_SIZE).all()
            assert set(flip.tolist()) == {0, 1}


def test_images_match_an_independent_rederivation_from_skimage_loaders(val):
    """Each photo through scikit-image's own loader (not the file reader under test), the crop by plain slicing,
    Pillow's bicubic resize (the recipe's one resampling step) and a numpy mirror."""
    images, _ = val
    params = crop_params("val")
    for i in range(0, len(params), 29):
        label, top, left, side, flip = params[i].tolist()
        pixels = getattr(skimage_data, CLASSES[label])()  # every class is named after its loader
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=-1)
        crop = np.ascontiguousarray(pixels[top:top + side, left:left + side])
        expected = np.asarray(Image.fromarray(crop).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
        if flip:
            expected = expected[:, ::-1]
        assert np.array_equal(images[i], expected), (i, CLASSES[label])


def test_write_folder_reads_back_as_the_split_with_imagefolder_labels(tmp_path, val, monkeypatch):
    images, labels = val
    out = photos.write_folder("val", tmp_path / "val")
    files, folder_labels, classes = list_image_folder(out)
    assert classes == list(CLASSES)
    assert np.array_equal(folder_labels, labels)
    read = np.stack([np.asarray(Image.open(f)) for f in files])
    assert np.array_equal(read, images)
    with pytest.raises(BenchError, match="already exists"):
        photos.write_folder("val", out)
    assert not list(tmp_path.glob(".*tmp"))


def test_cli_writes_a_split(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(photos.SPLITS, "val", 2)  # two crops per class: fast
    photos.main(["val", str(tmp_path / "small")])
    assert sorted(p.name for p in (tmp_path / "small").iterdir()) == sorted(CLASSES)
    assert len(list((tmp_path / "small").rglob("*.png"))) == 2 * len(CLASSES)
    assert "16 images of 8 classes" in capsys.readouterr().out


def test_unknown_split_and_a_changed_photo_are_refused(monkeypatch):
    with pytest.raises(BenchError, match="unknown demo split 'test'"):
        build_split("test")
    changed = dataclasses.replace(photos.PHOTOS[0], sha256="0" * 64)
    monkeypatch.setattr(photos, "PHOTOS", (changed,) + photos.PHOTOS[1:])
    with pytest.raises(BenchError, match="ships another astronaut.png"):
        build_split("val")


def test_npz_batch_holds_the_split_and_is_byte_reproducible(tmp_path, val):
    images, labels = val
    first = photos.write_npz("val", tmp_path / "a.npz")
    photos.main(["val", str(tmp_path / "b.npz")])
    assert first.read_bytes() == (tmp_path / "b.npz").read_bytes()  # fixed zip timestamps: a pinnable file
    with np.load(first) as batch:
        assert batch.files == ["arr_0", "arr_1"]
        assert np.array_equal(batch["arr_0"], images) and np.array_equal(batch["arr_1"], labels)
