"""Migration files: discovery, validation, statement splitting, and running one body.

Everything here is validated before the database is touched: names, duplicate numbers,
encoding, statements that would break the guard's transaction, Python syntax.
"""
from __future__ import annotations

import hashlib
import re
import sqlite3
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import HistoryError, UsageError
from .progress import Meter

PROGRESS_EVERY = 200_000  # SQLite VM instructions between progress ticks (cheap: ~ms apart)

NAME = re.compile(r"^(?P<version>\d+)_(?P<label>[A-Za-z0-9][A-Za-z0-9_.-]*)\.(?P<kind>sql|py)$")

# A token: string/identifier literal, comment, word, number, or a single other character.
_TOKEN = re.compile(
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?"""
    r"""|--[^\n]*|/\*.*?(?:\*/|\Z)|[A-Za-z_][A-Za-z0-9_$]*|\d[\w.]*|\S""",
    re.DOTALL,
)


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a .sql migration and the line it starts on."""

    sql: str
    line: int


@dataclass(frozen=True)
class Migration:
    """One validated migration file; `sha256` is of its exact bytes."""

    version: int
    name: str
    path: Path
    kind: str
    sha256: str
    statements: tuple[Statement, ...]  # empty for .py migrations
    source: str = field(default="", repr=False, compare=False)  # exactly what was hashed

    @property
    def executes_nothing(self) -> bool:
        """True for a .sql migration with no statements (comments only)."""
        return self.kind == "sql" and not self.statements


def tokens(sql: str) -> list[str]:
    """SQL tokens without comments or white space (enough to compare and classify SQL)."""
    return [t for t in _TOKEN.findall(sql) if not t.startswith(("--", "/*"))]


def _first_token_at(text: str, start: int, end: int) -> int | None:
    """Offset of the first token that is not a comment in text[start:end], or None."""
    for match in _TOKEN.finditer(text, start, end):
        if not match.group().startswith(("--", "/*")):
            return match.start()
    return None


def split_statements(text: str, name: str = "<sql>") -> tuple[Statement, ...]:
    """Split a script into statements the way SQLite's parser sees them.

    A ';' ends a statement only where sqlite3.complete_statement agrees, so semicolons
    inside strings, comments and trigger bodies (BEGIN ... END;) stay put.
    """
    found: list[Statement] = []
    start = 0
    for i, ch in enumerate(text):
        if ch == ";" and sqlite3.complete_statement(text[start:i + 1]):
            _keep(found, text, start, i + 1)
            start = i + 1
    tail = text[start:]
    first = _first_token_at(text, start, len(text))
    if first is not None:
        if not sqlite3.complete_statement(tail + ";"):
            raise HistoryError(f"{name}: line {_line_of(text, first)}: incomplete SQL statement "
                               f"(unterminated string, comment or trigger)", "finish the statement")
        _keep(found, text, start, len(text))
    return tuple(found)


def _keep(found: list[Statement], text: str, start: int, end: int) -> None:
    chunk = text[start:end]
    if [t for t in tokens(chunk) if t != ";"]:
        first = _first_token_at(text, start, end)
        found.append(Statement(chunk.strip(), _line_of(text, first if first is not None else start)))


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


_FORBIDDEN = {
    "BEGIN": "preflight runs all pending migrations in one transaction of its own",
    "COMMIT": "preflight commits all pending migrations together with their history rows",
    "END": "preflight commits all pending migrations together with their history rows",
    "ROLLBACK": "a failing statement already rolls the whole run back",
    "VACUUM": "VACUUM cannot run inside a transaction",
}
_FORBIDDEN_PRAGMAS = {
    "foreign_keys": "PRAGMA foreign_keys is a no-op inside a transaction; preflight runs "
                    "migrations with it off and checks PRAGMA foreign_key_check before COMMIT",
    "journal_mode": "the journal mode cannot change inside a transaction",
}


def _check_statement(name: str, stmt: Statement) -> None:
    words = [t.upper() for t in tokens(stmt.sql)[:4]]
    head = words[0] if words else ""
    if head == "ROLLBACK" and "TO" in words[1:]:
        return  # ROLLBACK TO a savepoint stays inside the migration's transaction
    reason = _FORBIDDEN.get(head)
    if head == "PRAGMA" and len(words) > 1:
        # PRAGMA [schema.]name, any identifier quoting: PRAGMA main."foreign_keys" = ON
        name_tok = words[3] if len(words) > 3 and words[2] == "." else words[1]
        words = ["PRAGMA", name_tok.strip('"`[]').lower()]
        reason = _FORBIDDEN_PRAGMAS.get(words[1])
    if reason:
        shown = " ".join(words[:2]) if head == "PRAGMA" else head
        raise HistoryError(f"{name}: line {stmt.line}: {shown} is not "
                           f"allowed in a migration ({reason})", "remove that statement")


def load(path: Path) -> Migration:
    """Read and validate one migration file (name already matched NAME)."""
    match = NAME.match(path.name)
    assert match, path
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HistoryError(f"{path.name}: not UTF-8 text (byte {exc.start})",
                           "save the file as UTF-8") from None
    if "\x00" in text:
        raise HistoryError(f"{path.name}: line {_line_of(text, text.index(chr(0)))}: contains a NUL "
                           f"byte (not text)", "save the file as plain UTF-8 text")
    kind = match["kind"]
    statements: tuple[Statement, ...] = ()
    if kind == "sql":
        statements = split_statements(text, path.name)
        for stmt in statements:
            _check_statement(path.name, stmt)
    else:
        import ast  # only .py migrations need parsing

        try:
            tree = ast.parse(text, filename=path.name)
        except SyntaxError as exc:
            raise HistoryError(f"{path.name}: line {exc.lineno}: Python syntax error: {exc.msg}",
                               "fix the migration") from None
        if not any(isinstance(n, ast.FunctionDef) and n.name == "migrate" for n in tree.body):
            raise HistoryError(f"{path.name}: has no top-level 'def migrate(conn)'",
                               "define migrate(conn); it runs inside the guard's transaction")
    return Migration(int(match["version"]), path.name, path, kind,
                     hashlib.sha256(raw).hexdigest(), statements, text)


def discover(folder: Path) -> tuple[Migration, ...]:
    """All migrations in `folder`, ordered by number; invalid names and duplicates are errors."""
    if not folder.is_dir():
        raise UsageError(f"migrations folder {folder} does not exist or is not a folder",
                         "set --migrations or PREFLIGHT_MIGRATIONS")
    found: dict[int, Migration] = {}
    for path in sorted(folder.iterdir()):
        # .SQL/.PY too: a migration skipped for its spelling would be silently missing.
        if path.suffix.lower() not in (".sql", ".py") or path.name.startswith((".", "__")):
            continue  # other files (README, __init__.py, editor files) are not migrations
        if not path.is_file():
            raise HistoryError(f"{path.name}: is not a regular file", "remove it from the folder")
        if not NAME.match(path.name):
            raise HistoryError(f"{path.name}: not a migration name",
                               "rename it NNN_description.sql or NNN_description.py")
        migration = load(path)
        if migration.version in found:
            raise HistoryError(f"{found[migration.version].name} and {path.name} share number "
                               f"{migration.version}", "renumber one of them")
        found[migration.version] = migration
    return tuple(found[v] for v in sorted(found))


def set_fingerprint(migrations: tuple[Migration, ...]) -> str:
    """One hash for the whole migration set (names and contents)."""
    digest = hashlib.sha256()
    for m in migrations:
        digest.update(f"{m.name}\0{m.sha256}\n".encode())
    return digest.hexdigest()


def _deny_transaction_control(action: int, arg1: str | None, *_: object) -> int:
    # Also catches conn.commit()/rollback() from a .py migration: both go through COMMIT.
    if action == sqlite3.SQLITE_TRANSACTION:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def run_body(conn: sqlite3.Connection, migration: Migration, label: str = "migrate",
             meter: Meter | None = None,
             after_statement: Callable[[], None] | None = None) -> None:
    """Execute one migration's statements on `conn`, inside the caller's open transaction.

    The caller owns BEGIN/COMMIT; anything in the migration that tries to end the
    transaction is refused by an authorizer, so it fails instead of committing. A
    migration that runs for more than a couple of seconds reports progress (`meter`).
    `after_statement` runs after each SQL statement (and after a .py migration's
    `migrate`): the pipeline's crash-test fault point.
    """
    meter = meter or Meter(f"{label}: {migration.name}")
    doing = ["running migrate(conn)" if migration.kind == "py" else "starting"]

    def tick() -> int:
        meter.update(doing=doing[0])
        return 0  # 0: carry on (non-zero would interrupt the statement)

    conn.set_authorizer(_deny_transaction_control)
    # Called by SQLite every N virtual-machine instructions, also inside one long
    # statement (an UPDATE of a big table), so a slow migration is visibly alive.
    conn.set_progress_handler(tick, PROGRESS_EVERY)
    try:
        if migration.kind == "sql":
            for n, stmt in enumerate(migration.statements, start=1):
                doing[0] = f"statement {n}/{len(migration.statements)} (line {stmt.line})"
                try:
                    conn.execute(stmt.sql)
                except sqlite3.Error as exc:
                    raise sqlite3.Error(f"line {stmt.line}: {exc}") from exc
                if after_statement:
                    after_statement()
        else:
            # Compiled from source by hand: importing would write __pycache__ into the
            # migrations folder (the image's files, possibly read-only).
            module = types.ModuleType(f"preflight_migration_{migration.version}")
            module.__file__ = str(migration.path)
            try:
                exec(compile(migration.source, str(migration.path), "exec"), module.__dict__)
                module.migrate(conn)
            except SystemExit as exc:
                # sys.exit() in a migration must fail it, not end the guard mid-transaction.
                raise RuntimeError(f"called sys.exit({exc.code!r})") from None
            if after_statement:
                after_statement()
    finally:
        try:
            conn.set_progress_handler(None, 0)
            conn.set_authorizer(None)
        except sqlite3.ProgrammingError:
            pass  # closed by the migration: reported just below
    try:
        ended = not conn.in_transaction
    except sqlite3.ProgrammingError:
        raise sqlite3.Error("the migration closed the guard's connection (which rolled back "
                            "its transaction)") from None
    if ended:
        raise sqlite3.Error("the migration ended the guard's transaction")
