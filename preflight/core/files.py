"""Files the guard creates: exclusive creation, atomic replacement, fsync.

The database folder may be writable by others (the app, a neighbour container), so a
name the guard is about to create may already be a planted symlink. Every file the
guard creates is opened with O_EXCL (which never follows a symlink at the final name)
and O_NOFOLLOW; a name that must be reused (a fixed temp name) is unlinked first:
unlinking a symlink removes the link, never its target.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from preflight.core.errors import EnvironmentProblem

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
        if os.path.lexists(path):  # no unlink when nothing is there (the usual case)
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
                view = view[os.write(fd, view) :]
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


def remove_quietly(path: Path, what: str) -> None:
    """Remove a temp file or folder once the work succeeded; a failure is logged, not raised.

    The result is already safe (a backup renamed into place, a report made): an I/O error
    while cleaning up must not turn it into a failure.
    """
    if not os.path.lexists(path):
        return  # the usual case: renamed into place, or never created
    try:
        if path.is_dir() and not path.is_symlink():
            import shutil  # only folders need it

            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        logging.getLogger("preflight").warning(
            "%s: could not remove %s: %s (remove it by hand)", what, path, exc.strerror or exc
        )


@contextmanager
def private_folder(prefix: str, fallback: Path | None = None) -> Iterator[Path]:
    """A new folder only this user can enter (0700), removed afterwards.

    Tried in order: the system's temp folder (TMPDIR, /tmp, ...), /dev/shm (a tmpfs that
    containers have even with a read-only root), then `fallback`, a folder the caller
    writes anyway. None usable: exit 7 naming TMPDIR.
    """
    import tempfile  # only a snapshot or a rehearsal needs it

    tried: list[str] = []
    made = None
    for where in [None, "/dev/shm"] + ([str(fallback)] if fallback else []):
        try:
            made = Path(tempfile.mkdtemp(prefix=prefix, dir=where))
            break
        except OSError as exc:  # FileNotFoundError: no usable one among TMPDIR, /tmp, ...
            name = where or f"TMPDIR={os.environ.get('TMPDIR', '(unset)')}"
            tried.append(f"{name}: {exc.strerror or exc}")
    if made is None:
        raise EnvironmentProblem(
            f"no usable temporary folder for a private copy ({'; '.join(tried)})",
            "set TMPDIR to a writable folder (e.g. mount a tmpfs at /tmp)",
        )
    try:
        yield made
    finally:
        remove_quietly(made, "cleanup")
