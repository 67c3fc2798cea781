"""StarPunk v1.0.0: tokens are stored hashed, and authorization codes get a table.

StarPunk's own migration dropped every token here, logging every client out. We keep
them: each old token survives as token_hash = lowercase hex SHA-256 of the token (what
the application computes from the Authorization header), with its me, client_id, scope,
created_at and expires_at; a token that never expired gets created_at + 90 days.

Databases that ran rc.3's published hotfix already have an authorization_codes table
and a nullable tokens.token_hash column; both are rebuilt to the exact v1.0.0 shape and
their rows kept.
"""
import hashlib
import sqlite3

AUTHORIZATION_CODES = """CREATE TABLE authorization_codes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code_hash TEXT UNIQUE NOT NULL,
    me TEXT NOT NULL,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    scope TEXT,
    state TEXT,
    code_challenge TEXT,
    code_challenge_method TEXT,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP
)"""


def _sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'PRAGMA table_xinfo("{table}")')]


def migrate(conn: sqlite3.Connection) -> None:
    conn.create_function("preflight_sha256_hex", 1, _sha256_hex, deterministic=True)

    conn.execute(
        """CREATE TABLE tokens_new (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            token_hash TEXT UNIQUE NOT NULL,
            me TEXT NOT NULL,
            client_id TEXT,
            scope TEXT DEFAULT 'create',
            created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            expires_at TIMESTAMP NOT NULL,
            last_used_at TIMESTAMP,
            revoked_at TIMESTAMP
        )"""
    )
    # datetime() returns NULL for a created_at it cannot parse; NOT NULL then fails the
    # migration (and the guard restores) instead of inventing an expiry.
    conn.execute(
        """INSERT INTO tokens_new (token_hash, me, client_id, scope, created_at, expires_at)
           SELECT preflight_sha256_hex(token), me, client_id, scope, created_at,
                  COALESCE(expires_at, datetime(created_at, '+90 days'))
           FROM tokens ORDER BY created_at, rowid"""
    )
    conn.execute("DROP TABLE tokens")
    conn.execute("ALTER TABLE tokens_new RENAME TO tokens")
    conn.execute("CREATE INDEX idx_tokens_hash ON tokens(token_hash)")
    conn.execute("CREATE INDEX idx_tokens_me ON tokens(me)")
    conn.execute("CREATE INDEX idx_tokens_expires ON tokens(expires_at)")

    existing = _columns(conn, "authorization_codes")
    if existing:
        conn.execute("ALTER TABLE authorization_codes RENAME TO authorization_codes_old")
        conn.execute(AUTHORIZATION_CODES)
        wanted = _columns(conn, "authorization_codes")
        common = ", ".join(f'"{c}"' for c in wanted if c in existing)
        conn.execute(
            f"INSERT INTO authorization_codes ({common}) SELECT {common} FROM authorization_codes_old"
        )
        conn.execute("DROP TABLE authorization_codes_old")
    else:
        conn.execute(AUTHORIZATION_CODES)
    conn.execute("CREATE INDEX idx_auth_codes_hash ON authorization_codes(code_hash)")
    conn.execute("CREATE INDEX idx_auth_codes_expires ON authorization_codes(expires_at)")
