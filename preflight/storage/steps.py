"""A step of a command as one log line with its duration, and the lock held around steps."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from preflight.storage import lock
from preflight.storage.config import Settings

log = logging.getLogger("preflight")


@contextmanager
def step(name: str, quiet: bool = False) -> Iterator[dict[str, str]]:
    """Log one line for a step when it ends: '<name>: <what> in <n> ms<tail>' (not `quiet`)."""
    start = time.perf_counter()
    info = {"what": "done", "tail": ""}
    yield info
    if quiet:
        return
    ms = (time.perf_counter() - start) * 1000
    log.info(
        "%s: %s in %.0f ms%s",
        name,
        info["what"],
        ms,
        info["tail"],
        extra={"step": name, "ms": round(ms, 1)},
    )


@contextmanager
def locked(settings: Settings, command: str, held: int = -1) -> Iterator[None]:
    """Hold the guard's lock, logging how long it took to get (`held`: see lock.hold)."""
    start = time.perf_counter()
    with lock.hold(settings.lock_path, settings.lock_timeout, command, held):
        ms = (time.perf_counter() - start) * 1000
        log.info("lock: acquired in %.0f ms", ms, extra={"step": "lock", "ms": round(ms, 1)})
        yield
