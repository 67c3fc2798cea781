"""A backup's fingerprint, a sha256 tree of 8 MiB chunks hashed on every core (how, and by
hand: docs/performance.md, "the sha256 tree"), and the restore's copy that checks it in the
pass that writes. What is hashed is a file the guard just created (under its lock), mapped
from the page cache: nobody truncates it.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preflight.core import signals

if TYPE_CHECKING:
    from concurrent.futures import Future

    from preflight.core.progress import Meter

CHUNK = 8 << 20
TREE = "sha256_tree"  # the record's key of the root; "chunk_bytes" beside it
PLAIN = "sha256"  # records from before: the sha256 of the whole file


@dataclass(frozen=True)
class Fingerprint:
    """What a backup's record says its bytes hash to: `kind` TREE or PLAIN, `size` bytes."""

    kind: str
    hex: str
    size: int
    chunk: int = CHUNK

    def fields(self) -> dict[str, Any]:
        """A tree's fields in a record (backups record no other kind now)."""
        return {TREE: self.hex, "chunk_bytes": self.chunk, "bytes": self.size}


def recorded(record: dict[str, Any] | None) -> Fingerprint | None:
    """The fingerprint a record keeps, or None (none kept, or not one we can check)."""
    if record is None or not isinstance(record.get("bytes"), int):
        return None
    for kind in (TREE, PLAIN):
        value = record.get(kind)
        if isinstance(value, str) and len(value) == 64:
            chunk = record.get("chunk_bytes", CHUNK) if kind == TREE else CHUNK
            # A chunk the mapping can start at; anything else is no record of ours.
            if isinstance(chunk, int) and 0 < chunk <= 1 << 30 and chunk % mmap.PAGESIZE == 0:
                return Fingerprint(kind, value, record["bytes"], chunk)
    return None


def workers() -> int:
    """Threads for hashing chunks: the CPUs this process may run on (at most 4)."""
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):
        return max(1, min(4, os.cpu_count() or 1))


def hash_chunk(fd: int, pos: int, n: int, update: Callable[[Any], object]) -> None:
    """Feed `n` bytes of `fd` at `pos` to `update` from the page cache (hashlib releases
    the GIL for them), by a mapping where the filesystem has one, else by a read."""
    try:
        with mmap.mmap(fd, n, mmap.MAP_SHARED, mmap.PROT_READ, offset=pos) as view:
            update(view)
            return
    except (OSError, ValueError):
        pass  # no mmap on this filesystem: read the chunk instead
    buffer = bytearray(n)
    if os.preadv(fd, [buffer], pos) != n:
        raise OSError(f"read less than {n} bytes at {pos}: the file changed size")
    update(buffer)


def hash_file(path: Path, kind: str = TREE, chunk: int = CHUNK) -> str:
    """The `kind` hex of a file the guard just wrote: a tree of `chunk`-byte leaves on every
    CPU, a plain sha256 on one."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    leaves = Leaves(fd, kind)
    try:
        size = os.fstat(fd).st_size
        for pos in range(0, size, chunk):
            leaves.add(pos, min(chunk, size - pos))
        out = leaves.hex()
        if os.fstat(fd).st_size != size:
            raise OSError(f"{path} changed size while it was hashed")
        return out
    finally:
        leaves.stop()
        os.close(fd)


def copy_range(fin: int, fout: int, pos: int, want: int, kernel: bool) -> tuple[int, bool]:
    """Copy `want` bytes at `pos` (fewer only where the source ends): (bytes copied,
    whether the kernel's copy_file_range still serves; else reads and writes)."""
    n = 0
    while n < want:  # copy_file_range may copy less than asked
        done = 0
        if kernel:
            try:
                done = os.copy_file_range(fin, fout, want - n, pos + n, pos + n)
            except OSError:
                kernel = False  # another filesystem on an older kernel: copy bytes
        if not kernel:
            data = os.pread(fin, want - n, pos + n)
            done = os.pwrite(fout, data, pos + n) if data else 0
        if done == 0:
            break
        n += done
    return n, kernel


def copy_checked(
    fin: int, fout: int, dst: Path, size: int, meter: Meter | None, kind: str, chunk: int
) -> str:
    """Copy `size` bytes of `fin` into `fout` (the new file `dst`): the hex of `kind` (TREE
    with `chunk`, or PLAIN) of what was written, hashed from the copy, not the source, so
    the bytes hashed are the bytes put in place."""
    back = os.open(dst, os.O_RDONLY | os.O_CLOEXEC)
    leaves = Leaves(back, kind)
    kernel, pos = hasattr(os, "copy_file_range"), 0
    try:
        while pos < size:
            n, kernel = copy_range(fin, fout, pos, min(chunk, size - pos), kernel)
            if n == 0:
                break
            leaves.add(pos, n)
            pos += n
            if meter:
                meter.update(pos)
        out = leaves.hex()
    finally:
        leaves.stop()
        os.close(back)
    if pos != size:
        raise OSError(f"copied {pos} of {size} bytes: the source changed size")
    return out


class Leaves:
    """Chunks of a file being written, hashed by worker threads from the page cache as they
    land: a tree's on `threads` CPUs (0: `workers()`), a plain sha256's in order on one. The
    writer runs a few chunks ahead at most, so what is hashed is still cached."""

    def __init__(self, fd: int, kind: str = TREE, threads: int = 0) -> None:
        from concurrent.futures import ThreadPoolExecutor  # only a backup or restore

        self.fd, self.plain, self.whole = fd, kind == PLAIN, hashlib.sha256()
        self.threads = 1 if self.plain else threads or workers()
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="preflight-sha256")
        self.jobs: list[Future[bytes]] = []

    def _hash(self, pos: int, n: int) -> bytes:
        part = self.whole if self.plain else hashlib.sha256()  # plain: one worker, in order
        hash_chunk(self.fd, pos, n, part.update)
        return b"" if self.plain else part.digest()

    def add(self, pos: int, n: int) -> None:
        with signals.deferred():  # a worker it starts inherits the mask (`signals.start`)
            self.jobs.append(self.pool.submit(self._hash, pos, n))
        if len(self.jobs) > self.threads * 4:
            self.jobs[-self.threads * 4 - 1].result()  # the hashing keeps up, or the writer waits

    def hex(self) -> str:
        """The hex of every chunk added, once the workers are done."""
        leaves = b"".join(job.result() for job in self.jobs)  # an empty file: one empty chunk
        root = hashlib.sha256(leaves or hashlib.sha256().digest())
        return self.whole.hexdigest() if self.plain else root.hexdigest()

    def stop(self) -> None:
        self.pool.shutdown(cancel_futures=True)
