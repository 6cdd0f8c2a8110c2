"""asd/fsutil.py is the one way asd puts a file or a directory in place: readers see the old
content or all of the new, a failed writer leaves no trace, and no other module renames
files into place itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asd.fsutil import atomic_dir, atomic_file, atomic_write

REPO = Path(__file__).resolve().parents[1]


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic_write(target, b"old")
    atomic_write(target, lambda fh: fh.write(b"new"))
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, b"old")

    def half_then_fail(fh):
        fh.write(b"ne")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError, match="writer died"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_dir_swaps_a_whole_directory_or_nothing(tmp_path):
    target = tmp_path / "bundle"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("2")
            raise ValueError
    assert (target / "a").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_no_module_but_fsutil_renames_files_into_place():
    offenders = []
    for file in (REPO / "asd").rglob("*.py"):
        if file.name == "fsutil.py":
            continue
        text = file.read_text()
        if re.search(r"\bos\.replace\(|\bos\.rename\(|tempfile\.mk(s|d)temp\(", text):
            offenders.append(str(file.relative_to(REPO)))
    assert offenders == []
