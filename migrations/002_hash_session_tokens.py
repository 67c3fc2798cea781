"""StarPunk v0.4.0: sessions store a SHA-256 of the token, never the token.

StarPunk made this change without a migration; this is it. Existing sessions keep
working: session_token_hash is the lowercase hex SHA-256 of the old session_token,
which is exactly what the application computes from the cookie it receives.
"""
import hashlib
import sqlite3


def _sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def migrate(conn: sqlite3.Connection) -> None:
    conn.create_function("preflight_sha256_hex", 1, _sha256_hex, deterministic=True)
    # SQLite cannot rename or retype a UNIQUE column in place: build the new table,
    # copy, drop, rename (the documented 12-step table rebuild, inside our transaction).
    conn.execute(
        """CREATE TABLE sessions_new (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_token_hash TEXT UNIQUE NOT NULL,
            me TEXT NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            expires_at TIMESTAMP NOT NULL,
            last_used_at TIMESTAMP,
            user_agent TEXT,
            ip_address TEXT
        )"""
    )
    conn.execute(
        """INSERT INTO sessions_new (id, session_token_hash, me, created_at, expires_at, last_used_at)
           SELECT id, preflight_sha256_hex(session_token), me, created_at, expires_at, last_used_at
           FROM sessions"""
    )
    conn.execute("DROP TABLE sessions")
    conn.execute("ALTER TABLE sessions_new RENAME TO sessions")
    conn.execute("CREATE INDEX idx_sessions_token_hash ON sessions(session_token_hash)")
    conn.execute("CREATE INDEX idx_sessions_expires ON sessions(expires_at)")
    conn.execute("CREATE INDEX idx_sessions_me ON sessions(me)")
