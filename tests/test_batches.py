"""ADM batch I/O: streaming npz reads/writes, image folders, ADM's center crop, and every bad-input path."""

import numpy as np
import pytest
from PIL import Image

from bench.batches import (FolderImages, NpzWriter, center_crop_arr, check_images, has_images, open_images,
                           read_statistics)
from bench.errors import BenchError


def _images(n=7, h=8, w=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_streams_blocks_equal_to_the_array(tmp_path, save):
    images = _images()
    path = tmp_path / "b.npz"
    save(path, images, np.arange(7))
    source = open_images(path)
    assert source.num_images == 7
    blocks = list(source.batches(3))
    assert [len(b) for b in blocks] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(blocks), images)


def test_writer_round_trips_through_np_load(tmp_path):
    images = _images(n=5)
    writer = NpzWriter(tmp_path / "out.npz", 5, images.shape[1:])
    writer.write(images[:2])
    assert not (tmp_path / "out.npz").exists()  # published only on close
    writer.write(images[2:])
    writer.close(arr_1=np.arange(5), mu=np.ones(3))
    with np.load(tmp_path / "out.npz") as npz:
        np.testing.assert_array_equal(npz["arr_0"], images)
        np.testing.assert_array_equal(npz["arr_1"], np.arange(5))
    assert list(tmp_path.iterdir()) == [tmp_path / "out.npz"]


def test_writer_refuses_wrong_row_count(tmp_path):
    writer = NpzWriter(tmp_path / "out.npz", 3, (4, 4, 3))
    writer.write(_images(2, 4, 4))
    with pytest.raises(BenchError, match="2 rows written, 3 declared"):
        writer.close()
    writer.abort()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 3, 8, 8), np.uint8), "channels first"),
        (np.zeros((2, 8, 8), np.uint8), r"found shape \(2, 8, 8\)"),
        (np.zeros((2, 8, 8, 4), np.uint8), r"found shape \(2, 8, 8, 4\)"),
        (np.zeros((2, 8, 8, 3), np.float32), "found float32"),
    ],
)
def test_bad_layouts_say_what_was_found(tmp_path, array, message):
    np.savez(tmp_path / "b.npz", array)
    with pytest.raises(BenchError, match=message):
        open_images(tmp_path / "b.npz")
    with pytest.raises(BenchError, match=message):
        check_images(array)


def test_missing_arr_0_lists_keys(tmp_path):
    np.savez(tmp_path / "b.npz", images=_images())
    with pytest.raises(BenchError, match="no 'arr_0'.*images"):
        open_images(tmp_path / "b.npz")


def test_truncated_and_corrupt_archives(tmp_path):
    path = tmp_path / "b.npz"
    np.savez(path, _images(n=50, h=16, w=16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BenchError, match="truncated or corrupt"):
        list(open_images(path).batches(8))
    corrupt = bytearray(data)
    corrupt[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    path.write_bytes(bytes(corrupt))
    with pytest.raises(BenchError, match="corrupt"):
        list(open_images(path).batches(8))
    path.write_bytes(b"not a zip")
    with pytest.raises(BenchError, match="not a readable .npz"):
        open_images(path)


def test_statistics_are_read_when_present(tmp_path):
    np.savez(tmp_path / "ref.npz", mu=np.ones(4), sigma=np.eye(4), mu_s=np.zeros(2), sigma_s=np.eye(2))
    stats = read_statistics(tmp_path / "ref.npz")
    assert stats["sigma"].dtype == np.float64 and stats["mu"].shape == (4,)
    assert not has_images(tmp_path / "ref.npz")
    np.savez(tmp_path / "half.npz", mu=np.ones(4), sigma=np.eye(4))
    with pytest.raises(BenchError, match="all four"):
        read_statistics(tmp_path / "half.npz")
    np.savez(tmp_path / "plain.npz", _images())
    assert read_statistics(tmp_path / "plain.npz") is None and has_images(tmp_path / "plain.npz")


def test_folder_reads_sorted_images_and_names_unreadable_ones(tmp_path):
    images = _images(n=3, h=10, w=12)
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i:02d}.png")
    Image.fromarray(_images(n=1, h=5, w=5)[0]).save(tmp_path / "zz.png")  # another size: a new block
    blocks = list(open_images(tmp_path).batches(8))
    assert [b.shape for b in blocks] == [(3, 10, 12, 3), (1, 5, 5, 3)]
    np.testing.assert_array_equal(blocks[0], images)
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(BenchError, match="bad.jpg: unreadable image"):
        list(open_images(tmp_path).batches(8))


def test_folder_content_hash_tracks_content(tmp_path):
    Image.fromarray(_images(n=1)[0]).save(tmp_path / "a.png")
    first = open_images(tmp_path).content_hash()
    assert open_images(tmp_path, center_crop=4).content_hash() != first
    Image.fromarray(_images(n=1, seed=1)[0]).save(tmp_path / "a.png")
    assert open_images(tmp_path).content_hash() != first


def test_center_crop_halves_with_box_then_crops_the_center():
    # 2x2 constant blocks: BOX halving is exact, so the expected result is worked out by hand.
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)  # what halving must produce
    big = small.repeat(2, axis=0).repeat(2, axis=1)  # 32 x 64: short side 32 >= 2 * 16 -> halve once
    out = center_crop_arr(Image.fromarray(big), 16)
    np.testing.assert_array_equal(out, small[:, 8:24])  # scale 1.0, then the centered 16 columns


def test_center_crop_output_size_for_odd_shapes():
    image = Image.fromarray(np.zeros((300, 451, 3), np.uint8))
    assert center_crop_arr(image, 256).shape == (256, 256, 3)
    assert center_crop_arr(image.convert("L"), 64).shape == (64, 64, 3)


def test_wide_images_are_refused_not_clipped(tmp_path):
    """convert("RGB") maps 16-bit values above 255 to white: a silently wrong FID. Refuse them."""
    (tmp_path / "d").mkdir()
    Image.fromarray(np.full((8, 8), 30000, dtype=np.uint16)).save(tmp_path / "d" / "a.png")
    assert Image.open(tmp_path / "d" / "a.png").mode.startswith("I")
    with pytest.raises(BenchError, match="more than 8 bits per channel"):
        next(FolderImages(tmp_path / "d").batches(4))


def test_center_crop_converts_to_rgb_before_resizing_as_adm_does():
    """Pillow resizes palette and 1-bit images with nearest-neighbour whatever filter is asked for."""
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(64)
    np.testing.assert_array_equal(center_crop_arr(palette, 16), center_crop_arr(palette.convert("RGB"), 16))


def test_hidden_files_are_not_images(tmp_path):
    (tmp_path / "d").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "d" / "a.png")
    (tmp_path / "d" / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a macOS resource fork
    assert [p.name for p in FolderImages(tmp_path / "d").files] == ["a.png"]


@pytest.mark.parametrize("stats,message", [
    (dict(mu=np.zeros((1, 3)), sigma=np.eye(3)), r"mu has shape \(1, 3\)"),
    (dict(mu=np.zeros(3), sigma=np.eye(4)), r"sigma \(4, 4\)"),
    (dict(mu=np.full(3, np.nan), sigma=np.eye(3)), "contain NaN or inf"),
    (dict(mu=np.array(["a", "b", "c"]), sigma=np.eye(3)), "statistics are numbers"),
    (dict(mu=np.array([{}, {}, {}], dtype=object), sigma=np.eye(3)), "pickled Python objects"),
])
def test_bad_reference_statistics_name_the_file_and_the_problem(tmp_path, stats, message):
    np.savez(tmp_path / "ref.npz", mu_s=np.zeros(2), sigma_s=np.eye(2), **stats)
    with pytest.raises(BenchError, match=message):
        read_statistics(tmp_path / "ref.npz")
