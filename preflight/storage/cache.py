"""The verified-state cache: what the last verified start proved (docs/performance.md,
"Verified-state cache": the key, and why an equal schema text is an equal schema)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from preflight.core.files import write_atomic
from preflight.fast.facts import schema_hash

__all__ = ["Verified", "file_id", "read", "schema_hash", "vouching", "write"]

log = logging.getLogger("preflight")


@dataclass(frozen=True)
class Verified:
    """A schema the guard proved equal to the head of a migration set."""

    key: str
    schema_hash: str
    warnings: tuple[str, ...] = ()  # extra objects, logged again on every start
    checked_at: int = 0  # Unix seconds of the last full quick_check that passed; 0: none
    checked_on: str = ""  # the file that check read (file_id); "": not known


def file_id(db: Path) -> str:
    """Which file `db` is: its device and inode ("" if it cannot be read). A restore
    renames a new file into place and a copy is a new inode: neither carries the check."""
    try:
        st = os.stat(db)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}"


def read(path: Path, expected_key: str | None) -> Verified | None:
    """The cache at `path` if it is readable and made for `expected_key` (None: any), else None."""
    try:
        data = json.loads(path.read_bytes())
        checked_at = data.get("checked_at", 0)
        found = Verified(
            str(data["key"]),
            str(data["schema_hash"]),
            tuple(str(w) for w in data.get("warnings", ())),
            checked_at if type(checked_at) is int and checked_at > 0 else 0,
            str(data.get("checked_on", "")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.debug("cache: ignoring unreadable %s (%s)", path, exc)
        return None
    return found if expected_key is None or found.key == expected_key else None


def vouching(path: Path, db: Path, live_hash: str) -> int:
    """When the last full check of this very file with this very schema passed (Unix
    seconds; 0: it cannot vouch). Any key: new migrations change it, not the pages read."""
    found = read(path, None)
    if found is None or not found.checked_at or not live_hash:
        return 0
    if found.schema_hash != live_hash or not found.checked_on or found.checked_on != file_id(db):
        return 0
    return found.checked_at


def write(path: Path, verified: Verified) -> None:
    """Write the cache atomically; failing to is not an error (the next start just re-checks)."""
    data = {
        "key": verified.key,
        "schema_hash": verified.schema_hash,
        "warnings": list(verified.warnings),
        # Last, in this order: the quick start reads them from the end (facts.cache_text).
        "checked_on": verified.checked_on,
        "checked_at": verified.checked_at,
    }
    try:
        write_atomic(path, json.dumps(data, indent=1).encode() + b"\n")
    except OSError as exc:
        log.debug("cache: not written (%s)", exc)
