"""Atomic writes: the one way asd puts a file or a directory in place.

A file is written to a hidden temporary name beside its target, flushed and fsynced, then
renamed over the target (`os.replace`), and the directory is fsynced: readers see the old
content or all of the new, never a torn file. A directory is built beside its target and
swapped in the same way. Policy files, assembled models, bundles, splits and `asd record`'s
shards all go through here.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from asd.errors import AsdError


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# read once: os.umask can only be read by setting it, which is not safe while other threads write
_UMASK = _process_umask()


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_parents(path: Path) -> None:
    """Create `path`'s missing parent directories. Where an ancestor is a file, mkdir says only
    "File exists" (or "Not a directory") about it; the error names the target and that file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((a for a in reversed(path.parents) if a.exists() and not a.is_dir()), None)
        if blocker is None:
            raise
        raise NotADirectoryError(exc.errno, f"{blocker} is a file, not a directory", str(path)) from None


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """`with atomic_file(target) as tmp:` write the file `tmp` (by path, for libraries that
    take one); on success it is fsynced and renamed over `target`; on an exception it is
    removed and `target` is left as it was."""
    path = Path(path)
    make_parents(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # name the file the user asked for, not a temporary one they never saw
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file 0600: give it the target's mode, or a new file's (0666 less the umask)
        try:
            mode = path.stat().st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is not None and Path(exc.filename) == tmp:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], object] | bytes) -> Path:
    """Write `path` atomically (`atomic_file`). `writer` is the bytes, or a function given
    the open binary file (e.g. `lambda fh: np.savez(fh, ...)`); a writer that raises leaves
    no trace and the old file untouched."""
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        if isinstance(writer, (bytes, bytearray, memoryview)):
            fh.write(writer)
        else:
            writer(fh)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """`with atomic_dir(target) as tmp:` fill `tmp`; on success it replaces `target` (an
    existing one is swapped out, then removed); on an exception `tmp` is removed and
    `target` is left as it was."""
    path = Path(path)
    make_parents(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        for file in tmp.iterdir():
            if file.is_file():
                with open(file, "rb") as fh:
                    os.fsync(fh.fileno())
        try:  # mkdtemp makes it 0700: the target's mode, or a new directory's (0777 less the umask)
            mode = path.stat().st_mode & 0o7777
        except OSError:
            mode = 0o777 & ~_UMASK
        os.chmod(tmp, mode)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def scratch_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new hidden temporary directory inside `parent`, for assembling files that
    `move_into_place` then renames over their targets (same filesystem)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def move_into_place(src: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Rename a finished file `src` over `target` (same filesystem), durably: the file is
    fsynced first and the directory after, as `atomic_write` does."""
    src, target = Path(src), Path(target)
    with open(src, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(src, target)
    fsync_dir(target.parent)
    return target


def replace_dir(new: Path, target: Path) -> None:
    """Move directory `new` to `target`; an existing target is swapped out, then removed."""
    new, target = Path(new), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)
    fsync_dir(target.parent)


def is_temporary(name: str) -> bool:
    """A leftover of an interrupted `atomic_write` / `atomic_dir` (hidden, `.tmp` marked)."""
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp-" in name)


def check_writable_file(path: str | os.PathLike, option: str) -> Path:
    """Refuse (AsdError naming `path` and `option`) a file that cannot be written there, before
    any work: empty, a directory, under a file (missing folders are fine: every writer makes them,
    `make_parents`; the nearest existing ancestor must be a directory), or the file system says
    no — tried for real, since permission bits say nothing for root and /proc takes no new files."""
    if not str(path).strip():  # Path("") is the working directory: never what an empty argument meant
        raise AsdError(f"{option} '': give a file path")
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise AsdError(f"{path}: cannot write {option} (it is a directory)")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise AsdError(f"{path}: cannot write {option} ({parent} is a file, not a directory)")
    if not parent.is_dir():
        raise AsdError(f"{path}: cannot write {option} (no directory {parent})")
    try:
        if target.exists():
            with open(target, "ab"):
                pass
        else:
            with tempfile.TemporaryFile(dir=parent):
                pass
    except OSError as exc:
        raise AsdError(f"{path}: cannot write {option} ({(exc.strerror or str(exc)).lower()})") from None
    return target


def finite_json(value):
    """`value` with every NaN or infinity as None, for the JSON files asd writes: NaN is not
    JSON and strict readers refuse the file; a figure that cannot be measured is null."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if getattr(value, "shape", None) == () and hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value

