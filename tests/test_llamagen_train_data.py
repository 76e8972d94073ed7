"""LlamaGen training data: ten-crop geometry, the two-view default, the resumable sampler, and code extraction
into a code dataset (checked against encoding each image's views independently)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bench.batches import center_crop_arr
from bench.errors import BenchError
from generators.llamagen.codes import (CodeDataset, ImageFolderDataset, ResumableSampler, extract_codes, image_views,
                                       list_image_folder, random_crop_arr, ten_crop, to_model_range)


def _coded_array(h, w):
    """Every pixel distinct: channel 0/1 hold the row/column, so a crop's origin can be read off it."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y, x, (y * 7 + x) % 256], -1).astype(np.int32)


def test_ten_crop_geometry_at_the_official_sizes():
    arr = _coded_array(281, 281)  # int(256 * 1.1) = 281
    views = ten_crop(arr, 256)
    assert views.shape == (10, 256, 256, 3)
    # torchvision five_crop order tl, tr, bl, br, center; center offset int(round(25 / 2)) = 12 (half to even)
    origins = [(0, 0), (0, 25), (25, 0), (25, 25), (12, 12)]
    for v, (top, left) in enumerate(origins):
        np.testing.assert_array_equal(views[v], arr[top : top + 256, left : left + 256])
    mirrored = arr[:, ::-1]
    for v, (top, left) in enumerate(origins):
        np.testing.assert_array_equal(views[5 + v], mirrored[top : top + 256, left : left + 256])
    # a mirrored top-left crop is the mirror of the original top-right crop
    np.testing.assert_array_equal(views[5], views[1][:, ::-1])


def test_ten_crop_odd_center_offset_rounds_like_torchvision():
    arr = _coded_array(23, 30)
    views = ten_crop(arr, 16)
    # (23 - 16) / 2 = 3.5 -> round() = 4 ; (30 - 16) / 2 = 7
    np.testing.assert_array_equal(views[4], arr[4:20, 7:23])


def _photo(h, w, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((w, h), Image.BILINEAR)


def test_image_views_default_and_ten_crop():
    img = _photo(40, 52, 0)
    two = image_views(img, 16, use_ten_crop=False)
    center = center_crop_arr(img, 16)
    assert two.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(two[0], center)
    np.testing.assert_array_equal(two[1], center[:, ::-1])
    ten = image_views(img, 16, use_ten_crop=True, crop_range=1.1)
    big = center_crop_arr(img, 17)  # int(16 * 1.1)
    assert ten.shape == (10, 16, 16, 3)
    np.testing.assert_array_equal(ten[0], big[:16, :16])
    np.testing.assert_array_equal(ten[3], big[1:, 1:])
    np.testing.assert_array_equal(ten[9], big[:, ::-1][0:16, 0:16])  # center of 17 -> offset round(0.5) = 0


def test_random_crop_is_a_window_of_the_resized_image():
    img = _photo(64, 80, 1)
    for seed in range(5):
        crop = random_crop_arr(img, 32, np.random.default_rng(seed))
        assert crop.shape == (32, 32, 3)
    a = random_crop_arr(img, 32, np.random.default_rng(3))
    b = random_crop_arr(img, 32, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_model_range_matches_totensor_normalize():
    x = torch.arange(256, dtype=torch.uint8).view(1, 16, 16, 1).expand(1, 16, 16, 3)
    y = to_model_range(x)
    assert y.shape == (1, 3, 16, 16)
    assert y.min().item() == -1.0 and y.max().item() == 1.0
    torch.testing.assert_close(y[0, 0].flatten(), torch.arange(256) / 255 * 2 - 1)


def test_sampler_ranks_partition_global_batches_and_resume():
    single = ResumableSampler(20, 8, seed=5)
    assert single.batches_per_epoch == 2
    single.set_epoch(1)
    flat = list(single)
    assert len(flat) == 16 and len(set(flat)) == 16
    g = torch.Generator().manual_seed(5 + 1)
    assert flat == torch.randperm(20, generator=g)[:16].tolist()
    ranks = [ResumableSampler(20, 8, rank=r, world_size=2, seed=5) for r in range(2)]
    for s in ranks:
        s.set_epoch(1)
    per_rank = [list(s) for s in ranks]
    for k in range(2):  # union of the ranks' k-th batches (4 each) = the k-th global batch
        union = set(per_rank[0][4 * k : 4 * k + 4]) | set(per_rank[1][4 * k : 4 * k + 4])
        assert union == set(flat[8 * k : 8 * k + 8])
    single.set_epoch(1, skip_batches=1)
    assert list(single) == flat[8:] and len(single) == 8
    with pytest.raises(BenchError):
        ResumableSampler(20, 8, world_size=3)


def _image_folder(root, sizes=((40, 52), (36, 36), (50, 44))):
    for c, cls in enumerate(["b_class", "a_class"]):  # label order must follow sorted names, not creation
        (root / cls).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            _photo(h, w, 10 * c + i).save(root / cls / f"img{i}.png")
    (root / "a_class" / "notes.txt").write_text("not an image")
    return root


def test_list_image_folder_and_errors(tmp_path):
    root = _image_folder(tmp_path / "data")
    files, labels, classes = list_image_folder(root)
    assert classes == ["a_class", "b_class"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert [f.name for f in files[:3]] == ["img0.png", "img1.png", "img2.png"]
    with pytest.raises(BenchError, match="no class subfolders"):
        (tmp_path / "empty").mkdir()
        list_image_folder(tmp_path / "empty")


def test_image_folder_dataset_is_deterministic_per_epoch(tmp_path):
    ds = ImageFolderDataset(_image_folder(tmp_path / "data"), 16, seed=0)
    a, la = ds[1]
    b, _ = ds[1]
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 16, 3) and a.flags.writeable and la == 0
    crops = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        crops.add(ds[1][0].tobytes())
    assert len(crops) > 1  # a different random crop/flip in different epochs


def _toy_encoder(images):
    """A stand-in tokenizer: 4x4 mean-pooled red channel quantized to 16 levels -> [B, 4, 4] codes."""
    pooled = torch.nn.functional.avg_pool2d(images[:, :1], 4)[:, 0]
    return ((pooled + 1) / 2 * 15.999).floor().long()


@pytest.mark.parametrize("use_ten_crop", [False, True])
def test_extract_codes_matches_per_image_encoding(tmp_path, use_ten_crop):
    root = _image_folder(tmp_path / "data")
    out = extract_codes(_toy_encoder, root, tmp_path / "codes", image_size=16, codebook_size=16,
                        use_ten_crop=use_ten_crop, batch_size=2, num_workers=0)
    meta = json.loads((out / "meta.json").read_text())
    views = 10 if use_ten_crop else 2
    assert meta["views"] == views and meta["tokens"] == 16 and meta["classes"] == ["a_class", "b_class"]
    codes = np.load(out / "codes.npy")
    assert codes.shape == (6, views, 16) and codes.dtype == np.uint16
    files, labels, _ = list_image_folder(root)
    np.testing.assert_array_equal(np.load(out / "labels.npy"), labels)
    for i, f in enumerate(files):
        v = image_views(Image.open(f).convert("RGB"), 16, use_ten_crop)
        expected = _toy_encoder(to_model_range(torch.from_numpy(v))).reshape(views, 16).numpy()
        np.testing.assert_array_equal(codes[i], expected)

    ds = CodeDataset(out, seed=0)
    assert len(ds) == 6 and ds.tokens == 16 and ds.num_classes == 2
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        tokens, label = ds[4]
        assert tokens.dtype == torch.int64 and label == 1
        match = [v for v in range(views) if np.array_equal(tokens.numpy(), codes[4, v])]
        assert match
        seen.add(match[0])
    assert len(seen) > 1  # views are drawn per epoch
    import pickle

    clone = pickle.loads(pickle.dumps(ds))  # what a "spawn" DataLoader worker receives
    assert not any(isinstance(v, np.memmap) for v in vars(clone).values())  # the path, never the mapped codes
    assert torch.equal(clone[4][0], ds[4][0])


def test_code_dataset_refuses_unfinished_or_inconsistent_folders(tmp_path):
    (tmp_path / "c").mkdir()
    np.save(tmp_path / "c" / "codes.npy", np.zeros((3, 2, 4), np.uint16))
    np.save(tmp_path / "c" / "labels.npy", np.zeros(3, np.int64))
    with pytest.raises(BenchError, match="no meta.json"):
        CodeDataset(tmp_path / "c")
    (tmp_path / "c" / "meta.json").write_text(json.dumps({"num_images": 3, "views": 2, "tokens": 9,
                                                          "codebook_size": 8, "classes": ["x"]}))
    with pytest.raises(BenchError, match="promises"):
        CodeDataset(tmp_path / "c")


def _extract_worker(rank: int, world: int, port: int, root, out) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        extract_codes(_toy_encoder, root, out, image_size=16, codebook_size=16, batch_size=2, num_workers=0)
    finally:
        dist.destroy_process_group()


def test_extract_codes_with_two_ranks_equals_one(tmp_path):
    import socket

    import torch.multiprocessing as mp

    root = _image_folder(tmp_path / "data")
    single = extract_codes(_toy_encoder, root, tmp_path / "single", image_size=16, codebook_size=16, num_workers=0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_extract_worker, args=(2, port, root, tmp_path / "two"), nprocs=2)
    for name in ("codes.npy", "labels.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "two" / name), np.load(single / name))
    assert json.loads((tmp_path / "two" / "meta.json").read_text()) == json.loads((single / "meta.json").read_text())


def test_extracting_into_a_finished_code_dataset_is_refused_and_keeps_it(tmp_path):
    root = _image_folder(tmp_path / "data")
    out = extract_codes(_toy_encoder, root, tmp_path / "codes", image_size=16, codebook_size=16, num_workers=0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(BenchError, match="already holds a finished code dataset"):
        extract_codes(_toy_encoder, root, out, image_size=16, codebook_size=16, num_workers=0)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_extracting_into_a_folder_in_use_is_refused(tmp_path, held_lock):
    root = _image_folder(tmp_path / "data")
    with held_lock(tmp_path / "codes"):
        with pytest.raises(BenchError, match="codes is in use by another code extraction"):
            extract_codes(_toy_encoder, root, tmp_path / "codes", image_size=16, codebook_size=16, num_workers=0)
        assert [p.name for p in (tmp_path / "codes").iterdir()] == [".lock"]
    out = extract_codes(_toy_encoder, root, tmp_path / "codes", image_size=16, codebook_size=16, num_workers=0)
    assert (out / "meta.json").exists()


def test_unreadable_images_are_listed_before_extraction_or_left_out(tmp_path):
    root = _image_folder(tmp_path / "data")
    (root / "a_class" / "img1.png").write_bytes((root / "a_class" / "img1.png").read_bytes()[:60])  # cut short
    with pytest.raises(BenchError, match=r"1 of 6 images cannot be read:\n  .*img1.png: unreadable image"):
        extract_codes(_toy_encoder, root, tmp_path / "codes", image_size=16, codebook_size=16, num_workers=0)
    assert not (tmp_path / "codes" / "codes.npy").exists()

    with pytest.warns(UserWarning, match=r"left out 1 unreadable image\(s\) of 6"):
        out = extract_codes(_toy_encoder, root, tmp_path / "codes", image_size=16, codebook_size=16, num_workers=0,
                            skip_bad_images=True)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_images"] == 5 and meta["skipped_images"] == ["a_class/img1.png"]
    assert np.load(out / "labels.npy").tolist() == [0, 0, 1, 1, 1]


def test_a_16_bit_image_gets_the_same_refusal_in_training_as_in_evaluation(tmp_path):
    """`convert("RGB")` turned 98.8% of a 16-bit grayscale PNG white in the trainers while `bench eval` refused it:
    every command now reads images through `bench.batches.read_rgb`."""
    from bench.batches import FolderImages, read_rgb

    root = _image_folder(tmp_path / "data")
    wide = np.linspace(0, 65535, 40 * 52).reshape(40, 52).astype(np.uint16)
    Image.fromarray(wide).save(root / "a_class" / "img1.png")  # a 16-bit grayscale PNG (mode I;16)
    with pytest.raises(BenchError, match="img1.png: a I;16 image \\(more than 8 bits per channel\\)") as evaluated:
        FolderImages(root).read(0, 6)
    with pytest.raises(BenchError, match=r"1 of 6 images cannot be read:\n  .*img1.png: a I;16 image") as trained:
        extract_codes(_toy_encoder, root, tmp_path / "codes", image_size=16, codebook_size=16, num_workers=0)
    assert "more than 8 bits" in str(evaluated.value) and "more than 8 bits" in str(trained.value)
    with pytest.raises(BenchError, match="more than 8 bits"):
        ImageFolderDataset(root, image_size=16)[1]  # train-vq's reader
    assert read_rgb(root / "a_class" / "img0.png").mode == "RGB"
