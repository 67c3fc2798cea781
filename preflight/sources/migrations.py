"""Migration files: discovered and validated before the database is touched, and run."""

from __future__ import annotations

import os
import sqlite3
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from preflight.core import TYPE_CHECKING, names
from preflight.core.errors import HistoryError, UsageError
from preflight.core.progress import Meter
from preflight.core.targets import Target
from preflight.fast import facts
from preflight.schema.statements import (
    RUN,
    Statement,
    classify,
    head,
    line_counter,
    split_statements,
)
from preflight.schema.statements import tokens as tokens
from preflight.sources import declarations

if TYPE_CHECKING:
    from preflight.sources.functions import AppFunctions

PROGRESS_EVERY = 200_000  # SQLite VM instructions between progress ticks (cheap: ~ms apart)
# Connection state a migration may set (legacy_alter_table for a rebuild); restored after
# each migration so that it cannot leak into the next file or the verification.
CONNECTION_PRAGMAS = (
    "legacy_alter_table",
    "recursive_triggers",
    "ignore_check_constraints",
    "reverse_unordered_selects",
    "writable_schema",
    "query_only",
)


@dataclass(frozen=True)
class Migration:
    """`sha256` is of the exact bytes of the file that defines it."""

    version: int
    name: str  # the file name (the folder name in a folder-per-migration layout)
    path: Path  # the file that runs
    kind: str
    sha256: str
    statements: tuple[Statement, ...]  # empty for .py migrations
    source: str = field(default="", repr=False, compare=False)  # exactly what was hashed
    functions: AppFunctions | None = field(default=None, repr=False, compare=False)
    loses: tuple[Target, ...] = ()  # `-- preflight: loses TABLE[.COLUMN]` (`declarations`)

    @property
    def executes_nothing(self) -> bool:
        """A .sql migration that runs no statement (comments, skipped brackets)."""
        return self.kind == "sql" and not any(s.action == RUN for s in self.statements)


def _marker(line: str) -> str:
    """'up'/'down' for a dbmate or goose section marker line, 'envsub' for goose's, else ''."""
    words = line.lower().split()
    if words[:1] == ["--"] and len(words) > 1:
        words = ["--" + words[1]] + words[2:]
    if words[:1] in (["--migrate:up"], ["--migrate:down"]):
        return words[0][len("--migrate:") :]
    if words[:1] == ["--+goose"] and words[1:2] in (["up"], ["down"], ["envsub"]):
        return words[1]
    return ""


def up_section(text: str, name: str) -> tuple[int, int]:
    """(start, end) of what runs: the whole text, or the up section of a dbmate/goose file
    (a marker counts only as a whole line; the down section never runs)."""
    if "migrate:" not in text and "+goose" not in text:
        return 0, len(text)
    line = line_counter(text)
    up = down = -1
    pos = 0
    while pos < len(text):
        nl = text.find("\n", pos)
        nl = len(text) if nl < 0 else nl
        if text.startswith("--", pos):
            mark = _marker(text[pos:nl])
            if mark == "envsub":
                raise HistoryError(
                    f"{name}: line {line(pos)}: -- +goose ENVSUB is not supported "
                    f"(the guard runs the bytes it hashed)",
                    "write the values",
                )
            if mark and (up >= 0 if mark == "up" else down >= 0):
                raise HistoryError(
                    f"{name}: line {line(pos)}: a second {mark} section marker",
                    "keep one up and at most one down section",
                )
            if mark == "up":
                if down >= 0:
                    raise HistoryError(
                        f"{name}: line {line(pos)}: the up section follows the down section",
                        "put the up section first",
                    )
                if split_statements(text, name, 0, pos):
                    raise HistoryError(
                        f"{name}: SQL before the up section marker on line "
                        f"{line(pos)} (its runner would not run it)",
                        "move it into the up section",
                    )
                up = nl
            elif mark == "down":
                down = pos
        pos = nl + 1
    if up < 0 and down >= 0:
        raise HistoryError(
            f"{name}: line {line(down)}: a down section without an up section",
            "mark the up section (-- migrate:up or -- +goose Up)",
        )
    if up < 0:
        return 0, len(text)
    return up, down if down >= 0 else len(text)


Known = dict[str, tuple[tuple[int, ...], str]]  # path -> (facts.identity, sha256)


def _read(path: Path, known: Known | None) -> tuple[bytes, str]:
    """The file's bytes and their sha256 (the quick start's when provably unchanged since)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        before = facts.identity(os.fstat(fd))
        raw = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
    finally:
        os.close(fd)
    ident, sha = (known or {}).get(str(path), ((), ""))
    return raw, sha if ident and ident == before else facts.sha256_bytes(raw)


def load(
    path: Path,
    name: str | None = None,
    functions: AppFunctions | None = None,
    known: Known | None = None,
) -> Migration:
    name = name or path.name
    what, version, _ = names.classify(name, name != path.name)  # a migration's (`discover`)
    raw, sha = _read(path, known)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HistoryError(
            f"{name}: not UTF-8 text (byte {exc.start})", "save the file as UTF-8"
        ) from None
    if "\x00" in text:
        raise HistoryError(
            f"{name}: line {text.count(chr(10), 0, text.index(chr(0))) + 1}: "
            f"contains a NUL byte (not text)",
            "save the file as plain UTF-8 text",
        )
    kind = "py" if what == names.PY else "sql"
    statements: tuple[Statement, ...] = ()
    start, end = 0, len(text)
    if kind == "sql":
        start, end = up_section(text, name)
        statements = classify(name, split_statements(text, name, start, end))
    else:
        import ast  # only .py migrations need parsing

        try:
            tree = ast.parse(text, filename=name)
        except SyntaxError as exc:
            raise HistoryError(
                f"{name}: line {exc.lineno}: Python syntax error: {exc.msg}", "fix the migration"
            ) from None
        if not any(isinstance(n, ast.FunctionDef) and n.name == "migrate" for n in tree.body):
            raise HistoryError(
                f"{name}: has no top-level 'def migrate(conn)'",
                "define migrate(conn); it runs inside the guard's transaction",
            )
    loses = declarations.parse(text, name, start, end)
    return Migration(version, name, path, kind, sha, statements, text, functions, loses)


def discover(
    folder: Path, functions: str | None = None, known: Known | None = None
) -> tuple[Migration, ...]:
    """All migrations in `folder`, ordered by version; odd names and duplicates are errors."""
    if not folder.is_dir():
        raise UsageError(
            f"migrations folder {folder} does not exist or is not a folder",
            "set --migrations or PREFLIGHT_MIGRATIONS",
        )
    found: dict[int, Migration] = {}
    entries = []
    for path in sorted(folder.iterdir()):
        what, version, detail = names.classify(path.name, path.is_dir())
        if what == names.IGNORED:
            continue
        if what == names.REFUSED:
            problem, fix = detail.split("; ", 1)
            raise HistoryError(f"{path.name}: {problem}", fix)
        if what == names.FOLDER:
            inner, problem = names.folder_file(sorted(p.name for p in path.iterdir()), path.name)
            if problem:
                raise HistoryError(
                    problem, "a migration folder holds up.sql (and down.sql) or migration.sql"
                )
            entries.append((path / inner, path.name))
        else:
            entries.append((path, path.name))
    loaded = None
    if functions and entries:
        from preflight.sources.functions import load as load_functions  # only with --functions

        loaded = load_functions(functions)
    for path, name in entries:
        if not path.is_file():
            raise HistoryError(f"{name}: is not a regular file", "remove it from the folder")
        migration = load(path, name, loaded, known)
        if migration.version in found:
            raise HistoryError(
                f"{found[migration.version].name} and {name} share number {migration.version}",
                "renumber one of them",
            )
        found[migration.version] = migration
    return tuple(found[v] for v in sorted(found))


def set_fingerprint(migrations: tuple[Migration, ...]) -> str:
    named = [(m.name, m.sha256) for m in migrations]
    if migrations and migrations[0].functions:
        from preflight.sources.functions import FINGERPRINT_NAME

        named.append((FINGERPRINT_NAME, migrations[0].functions.sha256))
    return facts.set_fingerprint(named)


def _deny_transaction_control(action: int, *_: object) -> int:
    # Also catches conn.commit()/rollback() from a .py migration: both go through COMMIT.
    return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_TRANSACTION else sqlite3.SQLITE_OK


def run_body(
    conn: sqlite3.Connection,
    migration: Migration,
    label: str = "migrate",
    meter: Meter | None = None,
    after_statement: Callable[[], None] | None = None,
) -> None:
    """One migration inside the caller's open transaction; ending it is refused by an
    authorizer. `after_statement` (the crash tests' fault point) runs after each statement."""
    meter = meter or Meter(f"{label}: {migration.name}")
    doing = ["running migrate(conn)" if migration.kind == "py" else "starting"]

    def tick() -> int:
        meter.update(doing=doing[0])
        return 0  # 0: carry on (non-zero would interrupt the statement)

    # Only a PRAGMA, a .py migration or the app's register(conn) changes them: a plain SQL
    # file is spared saving and restoring them (12 statements per migration).
    plain = migration.kind == "sql" and not migration.functions
    if plain and not any(
        s.action == RUN and head(s.sql, 1) == ["PRAGMA"] for s in migration.statements
    ):
        saved = []
    else:
        saved = [(p, conn.execute(f"PRAGMA {p}").fetchone()[0]) for p in CONNECTION_PRAGMAS]
    conn.set_authorizer(_deny_transaction_control)
    if migration.functions:
        try:
            migration.functions.register(conn)
        except Exception as exc:
            raise RuntimeError(f"the --functions module's register(conn) failed: {exc}") from exc
    # Called by SQLite every N virtual-machine instructions, also inside one long
    # statement (an UPDATE of a big table), so a slow migration is visibly alive.
    conn.set_progress_handler(tick, PROGRESS_EVERY)
    try:
        if migration.kind == "sql":
            for n, stmt in enumerate(migration.statements, start=1):
                if stmt.action != RUN:
                    continue  # transaction brackets, no-op pragmas
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
            for pragma, value in saved:
                conn.execute(f"PRAGMA {pragma} = {int(value)}")
        except sqlite3.ProgrammingError:
            pass  # closed by the migration: reported just below
    try:
        ended = not conn.in_transaction
    except sqlite3.ProgrammingError:
        raise sqlite3.Error(
            "the migration closed the guard's connection (which rolled back its transaction)"
        ) from None
    if ended:
        raise sqlite3.Error("the migration ended the guard's transaction")
