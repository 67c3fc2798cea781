"""Files the guard creates: exclusive creation, atomic replacement, fsync.

The database folder may be writable by others, so a name the guard creates may already
be a planted symlink: every file is created with O_EXCL and O_NOFOLLOW, and a fixed
name is unlinked first (unlinking a symlink never touches its target).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from preflight.core.errors import EnvironmentProblem

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


def read_small(path: Path, limit: int) -> bytes | None:
    """Up to `limit` bytes of a file others may have planted: never through a symlink, never
    blocking on a FIFO; None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return os.read(fd, limit)
        finally:
            os.close(fd)
    except OSError:
        return None


def create_exclusive(path: Path) -> int:
    """A new 0600 file at `path`, open for writing; FileExistsError if anything is there."""
    fd = os.open(path, CREATE, 0o600)
    os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask narrowed
    return fd


def create_fresh(path: Path) -> int:
    """`create_exclusive` after unlinking whatever is at `path` (a crash's leftover, a link):
    for a fixed name the guard alone writes, under its lock."""
    try:
        if os.path.lexists(path):  # no unlink when nothing is there (the usual case)
            os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise FileExistsError(f"{path} is a folder") from None
    return create_exclusive(path)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` (a symlink there itself, never its target) with `data` atomically:
    fixed temp name, fsync, rename, fsync folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = create_fresh(tmp)
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
    """Remove a temp file or folder once the work succeeded: a failure is logged, not raised
    (the result is already safe)."""
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
    """A new folder only this user can enter (0700), removed afterwards: in TMPDIR (/tmp...),
    else /dev/shm (there even with a read-only root), else `fallback`; else exit 7."""
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
