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
write runs the full check only when that is older than the interval.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from preflight.core.files import write_atomic
from preflight.fast.facts import key, schema_hash

__all__ = ["Verified", "key", "read", "schema_hash", "write"]

log = logging.getLogger("preflight")


@dataclass(frozen=True)
class Verified:
    """A schema the guard proved equal to the head of a migration set."""

    key: str
    schema_hash: str
    warnings: tuple[str, ...] = ()  # extra objects, logged again on every start
    checked_at: int = 0  # Unix seconds of the last full quick_check that passed; 0: none


def read(path: Path, expected_key: str) -> Verified | None:
    """The cache at `path` if it is readable and made for `expected_key`, else None."""
    try:
        data = json.loads(path.read_bytes())
        checked_at = data.get("checked_at", 0)
        found = Verified(
            str(data["key"]),
            str(data["schema_hash"]),
            tuple(str(w) for w in data.get("warnings", ())),
            checked_at if type(checked_at) is int and checked_at > 0 else 0,
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.debug("cache: ignoring unreadable %s (%s)", path, exc)
        return None
    return found if found.key == expected_key else None


def write(path: Path, verified: Verified) -> None:
    """Write the cache atomically; failing to is not an error (the next start just re-checks)."""
    try:
        write_atomic(path, json.dumps(asdict(verified), indent=1).encode() + b"\n")
    except OSError as exc:
        log.debug("cache: not written (%s)", exc)
