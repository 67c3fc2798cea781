"""SIGTERM and SIGINT during the guard's own phase: stop cleanly instead of being ignored.

As PID 1 in a container a signal with its default disposition is ignored, so `docker
stop` during a migration would wait and then SIGKILL. While the guard runs, both raise
`Interrupted`: the open transaction rolls back, the lock is released, exit 12. Right
before exec the defaults come back, so the app receives its signals as usual.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from preflight.core.errors import Interrupted

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
    """True once a signal reached `_interrupt`, even if its exception was then swallowed
    (SQLite turns one raised in a Python function into 'user-defined function raised
    exception'; a migration may catch it). The dispositions it left are the record."""
    return all(signal.getsignal(sig) == signal.SIG_IGN for sig in SIGNALS)


def swallowed() -> Interrupted:
    """The Interrupted to raise when `received` says a signal's exception got lost."""
    return Interrupted(
        "interrupted by SIGTERM or SIGINT before the app started (inside a migration)",
        "nothing was left half-done; start again",
    )


def install() -> dict[int, Handler]:
    """Make SIGTERM/SIGINT raise Interrupted; returns the previous handlers for `restore`."""
    previous: dict[int, Handler] = {}
    try:
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, _interrupt)
    except ValueError:  # not the main thread: leave signals alone
        pass
    return previous


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
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
