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


def test_errors_name_the_target_not_the_temporary_file(tmp_path):
    """The user asked for `target`; the hidden temporary beside it is an implementation detail
    (`calibrate -o /proc/x.npz` said `/proc/.x.npz.trnmxkro.tmp: No such file or directory`)."""
    import errno
    import os

    target = tmp_path / "f.bin"

    def fail_on_own_file(fh):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), fh.name)

    with pytest.raises(OSError) as info:
        atomic_write(target, fail_on_own_file)
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert not list(tmp_path.iterdir())
    other = tmp_path / "elsewhere"

    def fail_on_another_file(fh):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(other))

    with pytest.raises(OSError) as info:  # an error about another file keeps its own name
        atomic_write(target, fail_on_another_file)
    assert info.value.filename == str(other)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (no file can be created there)")
def test_a_target_where_no_temporary_can_be_created_is_named_itself():
    with pytest.raises(OSError) as info:  # even root cannot create files in /proc
        atomic_write("/proc/asd-test.npz", b"x")
    assert info.value.filename == "/proc/asd-test.npz"


def test_a_file_where_a_parent_directory_should_be_is_named(tmp_path):
    """mkdir(parents=True) says only "File exists" about /x when asked for /x/y/z; the error
    names the target and the file in the way, for files and directories alike."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a directory")
    for target in (blocker / "sub" / "p.npz", blocker / "p.npz"):
        with pytest.raises(NotADirectoryError) as info:
            atomic_write(target, b"x")
        assert info.value.filename == str(target)
        assert info.value.strerror == f"{blocker} is a file, not a directory"
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        with atomic_dir(blocker / "bundle"):
            pass
    assert blocker.read_text() == "a file, not a directory"
    # missing parents are still created
    assert atomic_write(tmp_path / "made" / "deep" / "p.npz", b"x").read_bytes() == b"x"


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


def test_a_written_file_has_a_new_files_mode_or_keeps_the_one_it_replaces(tmp_path):
    """mkstemp's 0600 made every policy and bundle file unreadable to other users (a server
    running as another account); now a new file gets 0666 less the umask, a replaced one its mode."""
    from asd.fsutil import _UMASK

    new = atomic_write(tmp_path / "new.bin", b"x")
    assert new.stat().st_mode & 0o777 == 0o666 & ~_UMASK
    shared = tmp_path / "shared.bin"
    shared.write_bytes(b"old")
    shared.chmod(0o640)
    atomic_write(shared, b"new")
    assert shared.stat().st_mode & 0o777 == 0o640 and shared.read_bytes() == b"new"


def test_a_directory_put_in_place_has_a_new_directorys_mode(tmp_path):
    from asd.fsutil import _UMASK

    with atomic_dir(tmp_path / "bundle") as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o777 & ~_UMASK
