"""Fault points for the crash tests: `PREFLIGHT_FAULT=before-commit` SIGKILLs the guard the
first time that point is reached, `statement@3` the third time, `NAME:stop` SIGSTOPs it
instead (until SIGCONT); a comma list arms several. Unset, a point is one lookup.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "PREFLIGHT_FAULT"
POINTS = tuple(
    "backup-temp-written backup-before-rename statement before-commit after-commit "
    "restore-temp-written restore-before-rename before-exec".split()
)


def point(name: str) -> None:
    """SIGKILL (or SIGSTOP) this process if PREFLIGHT_FAULT arms `name` and its count is reached."""
    armed = os.environ.get(VARIABLE)
    if not armed:
        return
    entries = [e.strip() for e in armed.split(",")]
    for i, entry in enumerate(entries):
        armed_point, colon, action = entry.partition(":")
        target, _, count = armed_point.partition("@")
        if target != name or count == "fired":  # a stopped process fires once
            continue
        remaining = int(count) if count.isdigit() else 1
        # The countdown lives in the variable itself: no module state to reset.
        entries[i] = f"{name}@{remaining - 1 if remaining > 1 else 'fired'}{colon}{action}"
        os.environ[VARIABLE] = ",".join(entries)
        if remaining <= 1:
            os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)
        return
