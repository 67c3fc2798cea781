"""Named fault points: a testing aid that makes the guard SIGKILL itself at a chosen moment.

`PREFLIGHT_FAULT=before-commit` kills the process the first time that point is reached;
`statement@3` the third time; a comma list arms several. The crash tests use this to
prove that a kill at any step leaves the old database or the new one, never a mix.
`NAME:stop` (`NAME@N:stop`) SIGSTOPs instead, until a SIGCONT: a test runs another
process at exactly that moment (two guards sharing a backup folder).
Unset (always, in production), a point costs one dictionary lookup.
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
