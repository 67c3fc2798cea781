"""The verified-state cache: what the last verified start proved, so the next need not redo it.

After a start that proved the live schema equal to the head of a migration set, the guard
writes `app.db.preflight-cache.json` beside the database: a key (the migration set's
fingerprint, --strict, the guard's own code, the SQLite version) and a hash of the
database's schema text (every row of sqlite_master). A later start whose key and schema
hash both match (the key holds the version the database records), skips the in-memory
replay and the structural diff: everything a snapshot reads (PRAGMA table_xinfo,
index_list, foreign_key_list) is derived by SQLite from that text, so an identical text
is an identical schema. Any change to the schema changes the hash, and the full check
runs. A missing, unreadable or mismatched cache is ignored; it never skips the cheap
integrity checks, the history check, the lock or the busy check, and the database itself
is never written. `checked_at` is when the last full `PRAGMA quick_check` passed (Unix
seconds, 0 for none): under an interval policy (--integrity) a start with nothing to
write runs the full check only when that is older than the interval. `checked_on` names
the file that check read (`file_id`: device and inode): a start that migrates, backed by
a backup, may rely on that check instead of its own before writing (`vouching`), but only
for that very file, with the schema it had then; a restore or a copy is another file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from preflight.core.files import write_atomic
from preflight.fast.facts import key, schema_hash

__all__ = ["Verified", "file_id", "key", "read", "schema_hash", "vouching", "write"]

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
    """When the last full check of `db` passed (Unix seconds), as the cache at `path`
    records it for this very file with this very schema; 0 when it cannot vouch.

    Any key: a start that brings new migrations has a new key, yet the check read the
    same pages. The file (device and inode) and the schema text must be the ones it read.
    """
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
