"""Atomic writes: the old file or the complete new one, never a half-written one; plain-file permissions."""

import os
import stat

import pytest

from bench import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    atomic.write_json(path, {"fid": 2.0})
    with pytest.raises(ValueError):
        atomic.write_json(path, {"fid": float("nan")})  # strict JSON: NaN is refused before the rename
    assert path.read_text() == '{\n  "fid": 2.0\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_written_files_get_the_permissions_the_umask_allows(tmp_path):
    old = os.umask(0o027)
    try:
        atomic.write_text(tmp_path / "board.html", "<table></table>")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "board.html").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o640
