"""Progress of long work (a backup copy, a migration) on stderr: nothing for work that ends
within `after` seconds, then one line per `every` seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("preflight")

MIB = 1 << 20


@dataclass
class Meter:
    """Logs '<label>: 45% 512.0/1024.0 MiB at 410 MiB/s' now and then; without a `total`
    (bytes), how long it has run and what it is doing."""

    label: str
    total: int | None = None
    after: float = 2.0  # seconds of silence before the first line
    every: float = 1.0  # seconds between lines
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    last: float = -1.0
    lines: int = 0

    def __post_init__(self) -> None:
        self.started = self.clock()

    def update(self, done: int = 0, doing: str = "") -> None:
        """Report `done` bytes (or what is being done) if it is time for a line."""
        now = self.clock()
        elapsed = now - self.started
        if elapsed < self.after or (self.last >= 0 and now - self.last < self.every):
            return
        self.last = now
        self.lines += 1
        if self.total:
            rate = done / elapsed / MIB if elapsed > 0 else 0.0
            log.info(
                "%s: %d%% %.1f/%.1f MiB at %.0f MiB/s%s",
                self.label,
                min(100, done * 100 // self.total),
                done / MIB,
                self.total / MIB,
                rate,
                f" ({doing})" if doing else "",
            )
        else:
            log.info("%s: %s, running for %.0f s", self.label, doing or "working", elapsed)
