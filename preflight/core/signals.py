"""SIGTERM and SIGINT raise `Interrupted` (exit 12) while the guard runs: as PID 1 their
default disposition is to be ignored. Right before exec the defaults come back."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from preflight.core import TYPE_CHECKING
from preflight.core.errors import Interrupted

if TYPE_CHECKING:
    import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
Handler = Callable[[int, FrameType | None], object] | int | None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Once is enough: a second signal must not break the rollback or restore it started.
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(
        f"interrupted by {signal.Signals(signum).name} before the app started",
        "nothing was left half-done; start again",
    )


def received() -> bool:
    """True once a signal reached `_interrupt`, even if its exception was then swallowed (by
    SQLite around a Python function, or a migration): the dispositions it left say so."""
    return all(signal.getsignal(sig) == signal.SIG_IGN for sig in SIGNALS)


def swallowed() -> Interrupted:
    """The Interrupted to raise when `received` says a signal's exception got lost."""
    return Interrupted(
        "interrupted by SIGTERM or SIGINT before the app started (inside a migration)",
        "nothing was left half-done; start again",
    )


def install() -> dict[int, Handler]:
    """Make SIGTERM/SIGINT raise Interrupted; returns the previous handlers for `restore`."""
    return {sig: signal.signal(sig, _interrupt) for sig in SIGNALS}  # cli.main: the main thread


def restore(previous: dict[int, Handler]) -> None:
    """Put back the handlers `install` replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def defaults() -> None:
    """Default dispositions for the exec'd app (handlers do not survive exec anyway)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT back for the block (COMMIT and recording that it happened)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def start(thread: threading.Thread) -> None:
    """Start a helper thread with SIGTERM/SIGINT blocked in it for good (a thread inherits
    its creator's mask). The kernel hands a process's signal to any thread not blocking it,
    and only the main thread runs Python's handlers: a signal a helper took left the main
    thread asleep in its wait (a `.py` migration's sleep, a join) until that wait ended."""
    with deferred():
        thread.start()
