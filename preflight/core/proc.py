"""The one way the guard runs another program: the smoke command, a migration tool, Litestream.

Each child runs in its own process group, killed when the command ends or times out, so
nothing it started outlives it with the lock held. Its output goes to an anonymous file,
never a pipe: a background child it leaves behind (`sleep 60 & echo ok`) would hold a pipe
open and a wait for EOF would hang.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

NOT_FOUND = 127


@dataclass(frozen=True)
class Finished:
    """How a child ended: its exit code (None: killed at the timeout), stdout and stderr."""

    code: int | None
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


PR_SET_PDEATHSIG = 1


@cache
def _prctl() -> Any:
    """Linux's prctl, looked up once: a child dies with the guard (a SIGKILLed guard must
    not leave a tool writing the database while the next start restores it)."""
    if os.uname().sysname != "Linux":
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, ImportError):
        return None


def _die_with_parent() -> None:
    _prctl()(PR_SET_PDEATHSIG, signal.SIGKILL)


def _sink() -> int:
    if hasattr(os, "memfd_create"):  # Linux: no temp folder needed (it may be read-only)
        return os.memfd_create("preflight-child", os.MFD_CLOEXEC)
    import tempfile

    with tempfile.TemporaryFile() as f:
        return os.dup(f.fileno())


def _read(fd: int, limit: int | None) -> str:
    size = os.fstat(fd).st_size
    keep = size if limit is None else min(size, limit)
    return os.pread(fd, keep, size - keep).decode("utf-8", "replace")


def run(
    argv: Sequence[str] | str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    limit: int | None = None,
) -> Finished:
    """Run `argv` (a string: through the shell) to its end or `timeout` (None/0: none); 127
    when the program is not found. `limit`: keep only the last bytes of each stream."""
    out, err = _sink(), _sink()
    try:
        try:
            proc = subprocess.Popen(
                argv,
                shell=isinstance(argv, str),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=_die_with_parent if _prctl() is not None else None,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            name = argv if isinstance(argv, str) else argv[0]
            return Finished(NOT_FOUND, "", f"{name}: {exc.strerror or 'command not found'}")
        try:
            code: int | None = proc.wait(timeout=timeout or None)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers, or the whole command
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        return Finished(code, _read(out, limit), _read(err, limit))
    finally:
        os.close(out)
        os.close(err)


# Lines an error message ends with that say nothing about the error itself (SQLAlchemy's).
NOISE = ("(Background on this error at:", "[SQL:", "[parameters:", "(This is a ")


def meaningful_line(text: str) -> str:
    """The line of a program's output that says what failed: the exception line of the last
    traceback, else the last line that is not NOISE; at most 300 characters."""
    lines = text.splitlines()
    start = max((i for i, line in enumerate(lines) if line.startswith("Traceback (")), default=-1)
    chosen = ""
    if start >= 0:
        chosen = next(
            (line for line in lines[start + 1 :] if line.strip() and not line[:1].isspace()),
            "",
        )
    if not chosen:
        kept = [
            line.strip() for line in lines if line.strip() and not line.strip().startswith(NOISE)
        ]
        chosen = kept[-1] if kept else "(no output)"
    return _unwrap(chosen.strip())[:300]


def _unwrap(line: str) -> str:
    """`sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) no such table: x` ->
    `sqlite3.OperationalError: no such table: x` (the driver's own exception)."""
    name, sep, rest = line.partition(": (")
    inner, close, message = rest.partition(") ")
    if sep and close and _dotted(name) and _dotted(inner):
        return f"{inner}: {message}"
    return line


def _dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))
