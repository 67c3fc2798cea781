"""The verified-state cache: what the last verified start proved, so the next need not redo it.

After a start that proved the live schema equal to the head of a migration set, the guard
writes `app.db.preflight-cache.json` beside the database: a key (the migration set's
fingerprint, --strict, the guard's own code, the SQLite version) and a hash of the
database's schema text (every row of sqlite_master). A later start whose key and schema
hash both match, and whose history lists exactly the migration files, skips the in-memory
replay and the structural diff: everything a snapshot reads (PRAGMA table_xinfo,
index_list, foreign_key_list) is derived by SQLite from that text, so an identical text
is an identical schema. Any change to the schema changes the hash, and the full check
runs. A missing, unreadable or mismatched cache is ignored; it never skips quick_check,
the history check, the lock or the busy check, and the database itself is never written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from .backup import write_atomic
from .history import Applied
from .migrations import Migration

log = logging.getLogger("preflight")

FORMAT = 1  # bump when the file's meaning changes


@dataclass(frozen=True)
class Verified:
    """A schema the guard proved equal to the head of a migration set."""

    key: str
    schema_hash: str
    warnings: tuple[str, ...] = ()  # extra objects, logged again on every start


def key(fingerprint: str, strict: bool) -> str:
    """What a verification depends on besides the schema: migrations, mode, code, SQLite."""
    digest = hashlib.sha256(f"{FORMAT}\0{fingerprint}\0{strict}\0{sqlite3.sqlite_version}\0".encode())
    # The guard's own code decides what "no drift" means: a new guard re-verifies.
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def schema_hash(conn: sqlite3.Connection) -> str:
    """sha256 of every row of sqlite_master (type, name, table, SQL) except rootpage.

    rootpage is left out: VACUUM moves tables without changing the schema.
    """
    digest = hashlib.sha256()
    for row in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                            "ORDER BY type, name, tbl_name"):
        digest.update("\0".join("\1" if v is None else str(v) for v in row).encode() + b"\n")
    return digest.hexdigest()


def read(path: Path, expected_key: str) -> Verified | None:
    """The cache at `path` if it is readable and made for `expected_key`, else None."""
    try:
        data = json.loads(path.read_bytes())
        found = Verified(str(data["key"]), str(data["schema_hash"]),
                         tuple(str(w) for w in data.get("warnings", ())))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.debug("cache: ignoring unreadable %s (%s)", path, exc)
        return None
    return found if found.key == expected_key else None


def write(path: Path, verified: Verified) -> None:
    """Write the cache atomically; failing to is not an error (the next start just re-checks)."""
    try:
        write_atomic(path, json.dumps(asdict(verified), indent=1).encode() + b"\n")
    except OSError as exc:
        log.debug("cache: not written (%s)", exc)


def at_head(applied: tuple[Applied, ...] | None, migrations: tuple[Migration, ...]) -> bool:
    """True when the history lists exactly these files, in order, with their hashes."""
    return applied is not None and \
        [(a.version, a.name, a.sha256) for a in applied] == \
        [(m.version, m.name, m.sha256) for m in migrations]
