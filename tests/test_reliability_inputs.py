"""Reliability of the CLI's inputs and messages: which files of a folder are read (one list, no silent skip),
how errors, warnings and Ctrl-C reach the terminal, and outputs that would destroy an input or lose their record.
"""

import json
import os
import warnings

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_evaluate import ToyExtractor
from tqdm.auto import tqdm

import bench.batches
import bench.inception
from bench.batches import IMAGE_EXTENSIONS, FolderImages, list_images
from bench.cli import cli
from bench.download import sha256_file
from bench.errors import BenchError


@pytest.fixture
def toy(monkeypatch):
    extractor = ToyExtractor()
    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: extractor)
    return extractor


def _image(path, value=0, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


@pytest.fixture
def mixed_folder(tmp_path):
    """Images of six kinds in mixed letter case, plus what is not data: notes, a resource fork, a thumbnail cache."""
    folder = tmp_path / "images"
    for i, name in enumerate(["a.png", "b.PNG", "c.tif", "d.gif", "sub/e.JPEG", "sub/f.ppm"]):
        _image(folder / name, 10 * i)
    (folder / "notes.txt").write_text("not an image")
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    _image(folder / ".thumbnails" / "a.png")
    _image(folder / "sub" / ".cache" / "deep" / "x.png")
    return folder


EXPECTED = ["a.png", "b.PNG", "c.tif", "d.gif", "sub/e.JPEG", "sub/f.ppm"]


# 1. One reader for every folder, and no silent skip


def test_list_images_reads_every_kind_and_says_what_it_skips(mixed_folder):
    files, skipped = list_images(mixed_folder)
    assert [f.relative_to(mixed_folder).as_posix() for f in files] == EXPECTED
    assert skipped == {"not images (.txt)": 1, "hidden (name starts with '.')": 1, "in hidden folders": 2}


def test_the_llamagen_trainers_read_the_same_extensions():
    from generators.llamagen import codes

    assert codes.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert {".png", ".jpeg", ".tif", ".tiff", ".ppm", ".pgm", ".gif"} <= set(IMAGE_EXTENSIONS)


def test_a_hidden_folder_given_on_the_command_line_is_read(tmp_path):
    """Only folders below the one given are skipped for being hidden: ~/.cache/x is a fine place for images."""
    _image(tmp_path / ".cache" / "imgs" / "a.png")
    files, skipped = list_images(tmp_path / ".cache" / "imgs")
    assert [f.name for f in files] == ["a.png"] and skipped == {}


def test_folder_links_are_followed_but_not_round_a_loop(tmp_path):
    _image(tmp_path / "elsewhere" / "z.png")
    _image(tmp_path / "data" / "a.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "data" / "linked")
    os.symlink(tmp_path / "data", tmp_path / "data" / "linked_back")
    files, skipped = list_images(tmp_path / "data")
    assert [f.relative_to(tmp_path / "data").as_posix() for f in files] == ["a.png", "linked/z.png"]
    assert skipped == {"folder links back to a parent folder (not followed)": 1}


def test_a_gif_is_read_as_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), c, np.uint8)) for c in ((255, 0, 0), (0, 0, 255))]
    (tmp_path / "d").mkdir()
    frames[0].save(tmp_path / "d" / "anim.gif", save_all=True, append_images=frames[1:])
    block = next(FolderImages(tmp_path / "d").batches(4))
    assert block.shape == (1, 8, 8, 3) and (block[0] == (255, 0, 0)).all()


def test_ref_build_and_eval_count_the_same_images_with_one_notice(mixed_folder, toy, tmp_path):
    out = CliRunner().invoke(cli, ["ref", "build", str(mixed_folder), "-o", str(tmp_path / "ref.npz"),
                                   "--image-size", "8"])
    assert out.exit_code == 0, out.output
    assert "statistics of 6 images" in out.stdout
    notice = (f"Notice: 4 files skipped in {mixed_folder}: 1 not images (.txt), 1 hidden (name starts with '.'), "
              "2 in hidden folders")
    assert out.stderr.count("Notice:") == 1 and notice in out.stderr

    bench.batches._noticed.clear()  # a new process
    out = CliRunner().invoke(cli, ["eval", str(mixed_folder), str(mixed_folder), "--json", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["reference"]["num_ref"] == record["samples"]["num_samples"] == 6
    assert out.stderr.count("Notice:") == 1  # the folder is listed several times, and said once


def test_an_empty_folder_says_what_it_skipped(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("x")
    with pytest.raises(BenchError, match=r"no images found .*skipped 1 not images \(\.txt\)"):
        FolderImages(tmp_path / "d")


# 2-4. Errors, warnings and Ctrl-C: one voice, each on its own line


@pytest.fixture
def extra_command():
    """Add a command to the real `bench` group for one test."""
    added = []

    def add(function):
        command = click.command(function.__name__.replace("_", "-"))(function)
        cli.add_command(command)
        added.append(command.name)
        return command.name

    yield add
    for name in added:
        cli.commands.pop(name)


def test_an_error_during_a_progress_bar_starts_on_a_fresh_line(extra_command):
    def train_for_test():  # as the trainers do: a bar outside a `with`, left open by the exception
        bar = tqdm(total=10, desc="train", mininterval=0)
        bar.update(3)
        raise BenchError("loss is NaN at step 3")

    out = CliRunner().invoke(cli, [extra_command(train_for_test)])
    assert out.exit_code == 2
    lines = out.stderr.split("\n")
    assert "Error: loss is NaN at step 3" in lines, out.stderr
    assert out.stderr.rstrip("\n").split("\n")[-1] == "Error: loss is NaN at step 3"  # the bar is not redrawn after
    assert "3/10" in out.stderr  # ... but closed where it stopped, above the error


def test_python_warnings_are_one_line_each(batches_for_eval, toy):
    ref, samples = batches_for_eval
    out = CliRunner().invoke(cli, ["eval", str(ref), str(samples), "--metrics", "fid"])
    assert out.exit_code == 0, out.output
    assert "Warning: sigma1 @ sigma2 is singular" in out.stderr  # 4 samples, 6-d toy features
    assert "Warning" in out.stderr and "registry.py" not in out.stderr and "SingularCovarianceWarning" not in out.stderr
    assert "return {" not in out.stderr  # no source line
    assert warnings.showwarning is warnings._showwarning_orig  # library use keeps Python's display


@pytest.fixture
def batches_for_eval(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ref.npz", rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8))
    np.savez(tmp_path / "sample.npz", rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    return tmp_path / "ref.npz", tmp_path / "sample.npz"


def test_a_warning_during_a_progress_bar_starts_on_a_fresh_line(extra_command):
    def warn_for_test():
        bar = tqdm(total=10, desc="sample", mininterval=0)
        bar.update(2)
        warnings.warn("loss spiked")
        bar.close()

    out = CliRunner().invoke(cli, [extra_command(warn_for_test)])
    assert out.exit_code == 0 and "Warning: loss spiked" in out.stderr.split("\n"), out.stderr


def test_ctrl_c_exits_130_with_one_message(batches_for_eval, monkeypatch, extra_command):
    class Interrupted(ToyExtractor):
        def extract(self, images):
            raise KeyboardInterrupt

    monkeypatch.setattr(bench.inception, "load_extractor", lambda **kw: Interrupted())
    ref, samples = batches_for_eval
    out = CliRunner().invoke(cli, ["eval", str(ref), str(samples), "--no-cache"])
    assert out.exit_code == 130 and "Interrupted" in out.stderr and "Aborted!" not in out.stderr

    def abort_for_test():  # click's own Ctrl-C (a prompt's)
        raise click.Abort()

    out = CliRunner().invoke(cli, [extra_command(abort_for_test)])
    assert out.exit_code == 130 and out.stderr.strip() == "Interrupted"

    def keep_shards_for_test():  # what a command says survives the interruption is kept
        raise KeyboardInterrupt("2 of 3 shards are finished and kept in runs/x; rerun the same command to resume")

    out = CliRunner().invoke(cli, [extra_command(keep_shards_for_test)])
    assert out.exit_code == 130 and "Interrupted: 2 of 3 shards are finished and kept" in out.stderr


# 5. Outputs that would destroy an input; a .npy is named as one


def test_ref_build_refuses_an_output_inside_its_source_folder(tmp_path, toy):
    for i in range(3):
        _image(tmp_path / "data" / f"img{i:03d}.png", 40 * i)
    before = (tmp_path / "data" / "img000.png").read_bytes()
    (tmp_path / "data" / "sub").mkdir()
    for output in ["data/img000.png", "data/sub/ref.npz", "data/../data/ref.npz"]:
        out = CliRunner().invoke(cli, ["ref", "build", str(tmp_path / "data"), "-o", str(tmp_path / output),
                                       "--image-size", "8"])
        assert out.exit_code == 2 and "lies inside" in out.stderr, (output, out.output)
    assert (tmp_path / "data" / "img000.png").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["img000.png", "img001.png", "img002.png", "sub"]
    assert not any((tmp_path / "data" / "sub").iterdir())


def test_ref_build_refuses_to_overwrite_an_image_linked_into_its_folder(tmp_path, toy):
    _image(tmp_path / "elsewhere" / "a.png", 7)
    _image(tmp_path / "data" / "b.png")
    os.symlink(tmp_path / "elsewhere" / "a.png", tmp_path / "data" / "a.png")
    before = (tmp_path / "elsewhere" / "a.png").read_bytes()
    out = CliRunner().invoke(cli, ["ref", "build", str(tmp_path / "data"), "-o", str(tmp_path / "elsewhere" / "a.png"),
                                   "--image-size", "8"])
    assert out.exit_code == 2 and "is one of the images" in out.stderr, out.output
    assert (tmp_path / "elsewhere" / "a.png").read_bytes() == before


def test_a_npy_is_named_as_one_not_as_a_corrupt_npz(tmp_path, toy, batches_for_eval):
    np.save(tmp_path / "images.npy", np.zeros((4, 8, 8, 3), np.uint8))
    out = CliRunner().invoke(cli, ["ref", "build", str(tmp_path / "images.npy"), "-o", str(tmp_path / "r.npz")])
    assert out.exit_code == 2 and "a .npy file" in out.stderr and "corrupt" not in out.stderr, out.output
    ref, _ = batches_for_eval
    out = CliRunner().invoke(cli, ["eval", str(ref), str(tmp_path / "images.npy")])
    assert out.exit_code == 2 and "a .npy file" in out.stderr, out.output


# 6. A reference records how it was made


def test_ref_build_records_its_weights_backend_and_its_own_digest(mixed_folder, toy, tmp_path):
    output = tmp_path / "ref.npz"
    out = CliRunner().invoke(cli, ["ref", "build", str(mixed_folder), "-o", str(output), "--image-size", "8",
                                   "--include-images", "--subset", "4", "--seed", "3"])
    assert out.exit_code == 0, out.output
    record = json.loads((tmp_path / "ref.npz.json").read_text())
    assert record["sha256"] == sha256_file(output)
    assert record["features"]["inception"] == toy.provenance  # weights sha256 and backend
    assert record["num_images"] == 6 and record["stored_images"] == 4 and record["subset_seed"] == 3
    assert record["center_crop"] == 8 and record["skipped"]["in hidden folders"] == 2
    assert record["versions"]["numpy"] == np.__version__ and record["source_sha256"]
    with np.load(output) as npz:  # the npz itself stays plain arrays, as ADM's evaluator reads it
        assert sorted(npz.files) == ["arr_0", "mu", "mu_s", "sigma", "sigma_s"]


def test_a_rebuild_that_fails_leaves_no_stale_record_beside_a_new_npz(mixed_folder, toy, tmp_path, monkeypatch):
    output = tmp_path / "ref.npz"
    assert CliRunner().invoke(cli, ["ref", "build", str(mixed_folder), "-o", str(output), "--image-size", "8"]
                              ).exit_code == 0
    import bench.references

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bench.references, "sha256_file", fail)  # dies after the npz, before its record
    out = CliRunner().invoke(cli, ["ref", "build", str(mixed_folder), "-o", str(output), "--no-crop"])
    assert out.exit_code != 0
    assert not (tmp_path / "ref.npz.json").exists()


def test_ref_build_help_names_the_record():
    out = CliRunner().invoke(cli, ["ref", "build", "--help"])
    assert "OUTPUT.json" in out.output and "sha256" in out.output
