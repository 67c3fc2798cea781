"""Files the guard creates: exclusive creation, atomic replacement, fsync.

The database folder may be writable by others (the app, a neighbour container), so a
name the guard is about to create may already be a planted symlink. Every file the
guard creates is opened with O_EXCL (which never follows a symlink at the final name)
and O_NOFOLLOW; a name that must be reused (a fixed temp name) is unlinked first:
unlinking a symlink removes the link, never its target.
"""
from __future__ import annotations

import os
from pathlib import Path

# Opening flags for a file the guard creates and nobody else may have prepared.
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename or unlink in it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync one file's data and metadata (the file itself, never a symlink's target)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive(path: Path, mode: int = 0o600) -> int:
    """A new file at `path`, open for writing; raises FileExistsError if anything is there.

    Nothing already at `path` (a file, a planted symlink, a dangling one) is followed or
    touched. The caller owns the returned descriptor.
    """
    fd = os.open(path, CREATE, mode)
    # The umask may have narrowed `mode`; a copy of the data must be exactly `mode`.
    os.fchmod(fd, mode)
    return fd


def create_fresh(path: Path, mode: int = 0o600) -> int:
    """`create_exclusive` after removing whatever is at `path` (a crash's leftover, a link).

    For a fixed name the guard alone writes, under its lock: the old entry is unlinked
    (a symlink's target is untouched), then the name is created exclusively.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise FileExistsError(f"{path} is a folder") from None
    return create_exclusive(path, mode)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically: temp file, fsync, rename, fsync folder.

    The temp name is fixed (a crash's leftover is removed by the next write) and created
    exclusively; the rename replaces a symlink at `path` itself, never its target.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = create_fresh(tmp, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # the original error is the one to report
        raise
    fsync_dir(path.parent)
