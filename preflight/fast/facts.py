"""The cheap facts of a start, each defined once: the quick start and the pipeline share them.
It imports only what a no-op start may (tests/package/test_layers.py checks)."""

import fcntl
import os
import stat  # loaded by os already
import sys
import time
from _collections_abc import Callable, Iterable, Mapping  # loaded by os already: costs nothing
from os import PathLike

from preflight.core import (
    TYPE_CHECKING,
    names,  # imports nothing
)
from preflight.core.errors import EnvironmentProblem, LockTimeout, UsageError  # no imports

# The C modules that hashlib and sqlite3 wrap, when present: the wrappers import OpenSSL,
# datetime and collections (~5 ms, a quarter of a quick start). Same functions, same results.
try:
    from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]  # Python <= 3.11
except ImportError:
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]  # Python >= 3.12
    except ImportError:
        from hashlib import sha256


def _lru_cache(*args: object) -> Callable[[Callable[[str], object]], object]:
    """`functools.lru_cache` as `_sqlite3` asks for it once per connection (its statement
    cache): the real one once functools is loaded (the full pipeline), else no cache."""

    def wrap(factory: Callable[[str], object]) -> object:
        real = sys.modules.get("functools")
        if real is None or real.__name__ != "functools" or getattr(real, "_stub", False):
            return factory  # the quick start runs a handful of statements: nothing to cache
        return real.lru_cache(*args)(factory)

    return wrap


def _import_sqlite3() -> object:
    """Import `_sqlite3` without its import of functools and what that loads (4-5 ms of a
    15 ms quick start): it takes `functools.lru_cache` once, at import; it gets `_lru_cache`."""
    if "functools" in sys.modules or "_sqlite3" in sys.modules:
        import _sqlite3

        return _sqlite3
    stub = type(sys)("functools")
    setattr(stub, "lru_cache", _lru_cache)  # noqa: B010
    setattr(stub, "_stub", True)  # noqa: B010
    sys.modules["functools"] = stub
    try:
        import _sqlite3
    finally:
        if sys.modules.get("functools") is stub:
            del sys.modules["functools"]
    return _sqlite3


if TYPE_CHECKING:
    import sqlite3
else:
    sqlite3 = _import_sqlite3()

FORMAT = 2  # of the cache key; bump when what a verification means changes
HEADER = b"SQLite format 3\x00"

# (setting, flag, variable, default as text, switch). config builds its parser from these
# rows (each default is parsed by the option's own parser; "" is no value).
OPTIONS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("db", "--db", "PREFLIGHT_DB", "/data/app.db", False),
    ("migrations", "--migrations", "PREFLIGHT_MIGRATIONS", "migrations", False),
    ("backup_dir", "--backup-dir", "PREFLIGHT_BACKUP_DIR", "", False),
    ("backup", "--backup", "PREFLIGHT_BACKUP", "on-change", False),
    ("keep_backups", "--keep-backups", "PREFLIGHT_KEEP_BACKUPS", "10", False),
    ("lock_timeout", "--lock-timeout", "PREFLIGHT_LOCK_TIMEOUT", "300", False),
    ("smoke", "--smoke", "PREFLIGHT_SMOKE", "", False),
    ("smoke_timeout", "--smoke-timeout", "PREFLIGHT_SMOKE_TIMEOUT", "300", False),
    ("strict", "--strict", "PREFLIGHT_STRICT", "0", True),
    ("accept_loss", "--accept-loss", "PREFLIGHT_ACCEPT_LOSS", "", False),
    ("integrity", "--integrity", "PREFLIGHT_INTEGRITY", "24h", False),
    ("log_format", "--log-format", "PREFLIGHT_LOG_FORMAT", "text", False),
    ("log_level", "--log-level", "PREFLIGHT_LOG_LEVEL", "info", False),
    ("json", "--json", "PREFLIGHT_JSON", "0", True),
    ("functions", "--functions", "PREFLIGHT_FUNCTIONS", "", False),
    ("tool", "--tool", "PREFLIGHT_TOOL", "files", False),
    ("app_dir", "--app-dir", "PREFLIGHT_APP_DIR", "", False),
    ("tool_cmd", "--tool-cmd", "PREFLIGHT_TOOL_CMD", "", False),
    ("litestream_config", "--litestream-config", "PREFLIGHT_LITESTREAM_CONFIG", "", False),
    ("litestream", "--litestream", "PREFLIGHT_LITESTREAM", "litestream", False),
    ("litestream_timeout", "--litestream-timeout", "PREFLIGHT_LITESTREAM_TIMEOUT", "600", False),
    ("downgrade", "--downgrade", "PREFLIGHT_DOWNGRADE", "refuse", False),
)
FLAGS = {flag: (dest, env) for dest, flag, env, _, switch in OPTIONS if not switch}
SWITCHES = {flag: (dest, env) for dest, flag, env, _, switch in OPTIONS if switch}
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
EVERY_START, BEFORE_WRITES = "every-start", "before-writes"
DOWNGRADES = ("refuse", "apply")  # --downgrade: what an image older than the database does
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BACKUP_REASONS = ("pre-migrate", "manual", "pre-restore", "always")
Hashes = dict[str, tuple[tuple[int, ...], str]]  # path -> (identity, sha256)


# The files the guard keeps beside the database (suffixes of its path), SQLite's own, and
# the default backup folder: each named here once.
LOCK = ".preflight.lock"
RUNNING = ".preflight.running"
FAILURE = ".preflight-failure.json"
LOSS = ".preflight-loss.json"  # what a tool's last run lost (a tool's database is the app's)
CACHE = ".preflight-cache.json"
TOOL_CACHE = ".preflight-tool.json"
IMAGE_TOOL_CACHE = ".preflight-scratch.json"  # in the app folder: built by `prepare`
SQLITE_TMP = ".preflight-tmp"  # SQLite's temp files while a start writes (a folder)
TOOL_PATHS = ".preflight-tool-paths"  # migration folders a tool reported outside the app
ID = ".preflight-id"
SIDECARS = ("-wal", "-shm", "-journal")
DATA_SIDECARS = ("-wal", "-journal")  # those that may hold committed data
BACKUPS = "backups"


def backup_folder(db: str, given: str | None) -> str:
    """The backup folder: `given` (absolute), else `backups` beside the database."""
    return os.path.abspath(given) if given else os.path.join(os.path.dirname(db), BACKUPS)


class Unproven(Exception):
    """A fact the quick start cannot vouch for: the full pipeline decides (and explains)."""


def boolean(text: str) -> bool:
    """A switch's value: 1/0, true/false, yes/no, on/off ("" is off); ValueError otherwise."""
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def integrity_policy(text: str) -> str | int:
    """--integrity: 'every-start', 'before-writes' or an interval in seconds (24h, 7d, 30m,
    3600s, 3600); ValueError otherwise."""
    value = text.strip().lower()
    if value in (EVERY_START, BEFORE_WRITES):
        return value
    number, unit = (value[:-1], value[-1]) if value[-1:] in UNITS else (value, "s")
    if not (number.isascii() and number.isdigit()) or int(number) == 0:
        raise ValueError(
            "expected every-start, before-writes or an interval > 0 such as 24h, 7d, 30m or 3600s"
        )
    return int(number) * UNITS[unit]


def check_due(policy: str | int, checked_at: int, now: float) -> bool:
    """Whether a start with nothing to write runs the full `PRAGMA quick_check`; a last
    check (`checked_at`, 0: none) in the future (a clock set back) counts as none."""
    if isinstance(policy, str):
        return policy == EVERY_START
    return not 0 < checked_at <= now < checked_at + policy


def span(seconds: int) -> str:
    """A duration as the log says it: '45s', '12m', '3h', '2d' (whole units, rounded down)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(0, seconds)}s"


def show_policy(policy: int) -> str:
    """An interval of PREFLIGHT_INTEGRITY as an operator would write it: '24h', '90m'."""
    if policy % 86400 == 0 and policy > 86400:
        return f"{policy // 86400}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if policy % size == 0:
            return f"{policy // size}{unit}"
    return f"{policy}s"


def run_flags(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """`run [options] -- CMD...`: the flags as given (setting -> text, a switch "1" or "0")
    and the command, read as argparse reads them; anything but the plain spellings
    (`--db=x`, abbreviations, a value starting with '-', no `--`, no command) is Unproven."""
    given: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i] != "--":
        arg = args[i]
        if arg in FLAGS and i + 1 < len(args) and not args[i + 1].startswith("-"):
            given[FLAGS[arg][0]] = args[i + 1]
            i += 2
        elif arg in SWITCHES or arg.replace("--no-", "--") in SWITCHES:
            given[SWITCHES[arg.replace("--no-", "--")][0]] = "0" if arg.startswith("--no-") else "1"
            i += 1
        else:
            raise Unproven(arg)
    if i + 1 >= len(args):
        raise Unproven("no command after --")
    return given, args[i + 1 :]


def run_options(args: list[str], environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """`run [options] -- CMD...` as settings (flag > environment > default) and the command;
    anything a no-op start does not need or argparse would have to judge is Unproven."""
    given, command = run_flags(args)
    values = {
        dest: given.get(dest, environ.get(env, default)) for dest, _, env, default, _ in OPTIONS
    }
    try:
        values["strict"] = "1" if boolean(values["strict"]) else "0"
        json_output = boolean(values["json"])
        integrity_policy(values["integrity"])
        timeouts = [
            float(values[name]) for name in ("lock_timeout", "smoke_timeout", "litestream_timeout")
        ]
    except ValueError:
        raise Unproven("a value to judge") from None
    if (
        json_output
        or values["backup"] not in ("on-change", "never")
        or values["log_format"] != "text"
        or values["log_level"] not in ("debug", "info", "warning", "error")
        or not values["keep_backups"].isascii()
        or not values["keep_backups"].isdigit()
        or not values["db"]
        or not all(t >= 0 for t in timeouts)  # also nan
        or values["downgrade"] not in DOWNGRADES
        or (values["downgrade"] == "apply" and values["tool"] != "files")  # refused (exit 2)
        or values["accept_loss"].strip()  # validated against the tables, and logged
    ):
        raise Unproven("options")
    return values, command


class Proof:
    """What a quick start proved before it handed over, so the pipeline does not redo it:
    the held lock, the migration files' hashes by path and identity, and whether
    `PRAGMA quick_check` passed under that lock."""

    __slots__ = ("db", "migrations", "_lock", "hashed", "checked")

    def __init__(self, db: str, migrations: str, lock: int, hashed: Hashes, checked: bool) -> None:
        self.db, self.migrations, self._lock = db, migrations, lock
        self.hashed, self.checked = hashed, checked and lock >= 0

    def take_lock(self) -> int:
        """The held lock's descriptor (-1: none), once: the taker owns it from now on."""
        fd, self._lock = self._lock, -1
        return fd

    def release(self) -> None:
        """Let go of what nobody took."""
        fd = self.take_lock()
        if fd >= 0:
            let_go(fd)


def identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file's bytes may have: a hash taken at one is valid at the other."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_of(path: str) -> tuple[str, tuple[int, ...]]:
    """(hex sha256, identity) of a file, both from one open descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        before, digest = identity(os.fstat(fd)), sha256()
        while block := os.read(fd, 1 << 20):
            digest.update(block)
        after = identity(os.fstat(fd))
    finally:
        os.close(fd)
    return str(digest.hexdigest()), after if after == before else ()  # (): changed while read


def sha256_bytes(data: bytes) -> str:
    return str(sha256(data).hexdigest())


def files(folder: str, seen: Hashes | None = None) -> list[tuple[int, str, str]]:
    """(version, name, sha256) of every migration, by version; Unproven for anything not
    plainly a migration (`names.classify`). `seen` gets path -> (identity, sha256)."""
    found: dict[int, tuple[int, str, str]] = {}
    with os.scandir(folder) as entries:  # d_type: no stat per file
        listed = sorted((e.name, e.is_dir(), e.is_file()) for e in entries)
    for name, is_dir, regular in listed:
        what, version, _ = names.classify(name, is_dir)
        if what == names.IGNORED:
            continue
        if what not in (names.SQL, names.PY, names.FOLDER) or version in found:
            raise Unproven(name)
        path = os.path.join(folder, name)
        if what == names.FOLDER:
            inner, problem = names.folder_file(sorted(os.listdir(path)), name)
            if problem:
                raise Unproven(name)
            path = os.path.join(path, inner)
            regular = os.path.isfile(path)
        if not regular:
            raise Unproven(name)
        sha, ident = sha256_of(path)
        if seen is not None and ident:
            seen[path] = (ident, sha)
        found[version] = (version, name, sha)
    return [found[v] for v in sorted(found)]


def set_fingerprint(named: Iterable[tuple[str, str]]) -> str:
    """One hash for a migration set: (name, sha256) in order, the functions module last."""
    digest = sha256()
    for name, sha in named:
        digest.update(f"{name}\0{sha}\n".encode())
    return str(digest.hexdigest())


def cache_key(source: str, fingerprint: str, recorded: tuple[str, ...] | None, strict: bool) -> str:
    """The verified-state cache key of a start, all a verification depends on besides the
    schema: the source, its migration set's fingerprint, the version the database records
    (its rows as text), --strict, SQLite's version and the guard's code (see `cache`)."""
    mark = "<none>" if recorded is None else "\n".join(recorded)
    named = set_fingerprint([("<source>", source), ("<files>", fingerprint), ("<recorded>", mark)])
    digest = sha256(f"{FORMAT}\0{named}\0{strict}\0{sqlite3.sqlite_version}\0".encode())
    digest.update(code_identity().encode())
    return str(digest.hexdigest())


# The SQL reading the version a database records, as rows of text, and its table.
ALEMBIC = ("SELECT version_num FROM alembic_version ORDER BY version_num", "alembic_version")
RECORDED = {
    "files": (
        "SELECT version || ' ' || name || ' ' || sha256 FROM _preflight_history ORDER BY version",
        "_preflight_history",
    ),
    "alembic": ALEMBIC,
    "flask-migrate": ALEMBIC,
    "django": (
        "SELECT app || '.' || name FROM django_migrations ORDER BY app, name",
        "django_migrations",
    ),
}


def recorded_in(conn: sqlite3.Connection, source: str) -> tuple[str, ...] | None:
    """The version `source` records in the database, as text rows; None without its table."""
    sql, table = RECORDED[source]
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)
    ).fetchone():
        return None
    return tuple(str(r[0]) for r in conn.execute(sql))


def code_identity() -> str:
    """The guard's own code decides what "no drift" means: a new guard re-verifies. Its
    files' identities stand for their bytes (writing a file changes its ctime, which nobody
    can set back); hashing every source cost a millisecond of a quick start's few."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found: list[str] = []
    with os.scandir(package) as entries:  # the package and its layer folders, one level
        for e in entries:
            if e.name.endswith(".py"):
                found.append(f"{e.name}\0{identity(e.stat())}")
            elif e.is_dir() and e.name != "__pycache__":
                with os.scandir(e.path) as inner:
                    found.extend(
                        f"{e.name}/{f.name}\0{identity(f.stat())}"
                        for f in inner
                        if f.name.endswith(".py")
                    )
    return "\n".join(sorted(found))


def cache_text(cache_key: str, schema: str, checked_at: int, checked_on: str) -> bytes:
    """The cache file `cache.write` writes for a schema with no extra objects (tested)."""
    return (
        f'{{\n "key": "{cache_key}",\n "schema_hash": "{schema}",\n "warnings": [],\n'
        f' "checked_on": "{checked_on}",\n "checked_at": {checked_at}\n}}\n'
    ).encode()


def cache_checked(text: bytes) -> tuple[int, str]:
    """(`checked_at`, `checked_on`) of a cache file in `cache_text`'s format; Unproven without
    `checked_at`. `checked_on` is the file the check read (`cache.file_id`), "" if none: a
    start with nothing to write keeps it as it is."""
    digits = text.rpartition(b'\n "checked_at": ')[2]
    digits = digits[:-3] if digits.endswith(b"\n}\n") else b""
    if not digits.isdigit():  # bytes.isdigit: ASCII digits only
        raise Unproven("cache")
    on = text.rpartition(b'\n "checked_on": "')[2].partition(b'"')[0]
    return int(digits), on.decode("ascii") if on.replace(b":", b"").isdigit() else ""


def backup_name(name: str, stem: str) -> tuple[str, str] | None:
    """(taken_at, reason) when `name` is `<stem>-<YYYYMMDDTHHMMSS.mmmZ>-<reason>.db`, else None."""
    if not name.startswith(f"{stem}-") or not name.endswith(".db"):
        return None
    taken_at, _, reason = name[len(stem) + 1 : -3].partition("-")
    digits = taken_at[:8] + taken_at[9:15] + taken_at[16:19]
    shape = taken_at[8] + taken_at[15] + taken_at[19:] if len(taken_at) == 20 else ""
    if shape == "T.Z" and digits.isascii() and digits.isdigit() and reason in BACKUP_REASONS:
        return taken_at, reason
    return None


def recorded_backups(listed: Iterable[str], stem: str) -> list[str]:
    """The backups with a side record among the names in a folder: the only ones pruning
    ever counts (catalog.prune then keeps those whose record carries this database's id)."""
    present = set(listed)
    return [n for n in present if backup_name(n, stem) and f"{n}.json" in present]


def uri(path: object, **params: str) -> str:
    """An SQLite URI for `path` ('?' and '#' in a path would otherwise end it early)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    # Only these three end or escape the path part (urllib.parse.quote costs an import).
    quoted = str(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{quoted}?{query}"


def schema_hash(conn: sqlite3.Connection) -> str:
    """sha256 of sqlite_master's rows without rootpage (VACUUM moves tables, not the schema)."""
    digest = sha256()
    for row in conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name, tbl_name"
    ):
        digest.update("\0".join("\1" if v is None else str(v) for v in row).encode() + b"\n")
    return str(digest.hexdigest())


def connect_ro(path: object) -> sqlite3.Connection:
    """A read-only connection: closing it cannot checkpoint a WAL, so nothing is written."""
    return sqlite3.connect(uri(path, mode="ro"), uri=True, isolation_level=None)


def quick_check(conn: sqlite3.Connection) -> str:
    """`PRAGMA quick_check` (reads every page): "ok", or SQLite's findings on one line."""
    return "; ".join(str(r[0]) for r in conn.execute("PRAGMA quick_check"))


def probe(db: str) -> tuple[str, str]:
    """The cheap integrity facts of the main file, O(1) in its size: (verdict, why). 'bad': not
    SQLite; 'short': shorter than its header says, nothing could hold the rest; 'unsure':
    shorter, but a hot journal or a WAL with frames may hold the rest (a crash during a commit
    or a checkpoint writes page 1 first); 'ok': every page it counts is there (a longer file
    is fine: SQLite ignores the tail)."""
    with open(db, "rb") as f:
        head = f.read(100)
        size = os.fstat(f.fileno()).st_size
    if head[: len(HEADER)] != HEADER:
        return "bad", f"is not an SQLite database (header {head[:16]!r})"
    if len(head) < 100:
        return "bad", f"is truncated: {size} bytes, shorter than SQLite's 100-byte header"
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1):
        return "bad", f"is not a usable SQLite database (page size {page} in its header)"
    count = int.from_bytes(head[28:32], "big")
    if count == 0 or head[24:28] != head[92:96] or size >= count * page:
        # A zero or stale count (written by SQLite < 3.7.0): SQLite sizes it by the file.
        return "ok", ""
    why = (
        f"is truncated: its header counts {count} pages of {page} bytes "
        f"({count * page} bytes), the file has {size}"
    )
    if (head[18:20] == b"\x02\x02" and size_of(f"{db}-wal") > 32) or size_of(f"{db}-journal") > 0:
        return "unsure", why
    return "short", why


def size_of(path: str) -> int:
    """Size of `path`, 0 if absent (an app in rollback mode deletes its -journal at will)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def now() -> str:
    """UTC time as ISO 8601 with milliseconds, sortable as text (no datetime import)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def which(command: str) -> bool:
    """shutil.which(command) is not None, without importing shutil."""
    search = os.environ.get("PATH", os.defpath).split(os.pathsep)  # "": the current folder
    paths = [os.path.join(f, command) for f in ([""] if os.path.dirname(command) else search)]
    return any(os.access(p, os.F_OK | os.X_OK) and not os.path.isdir(p) for p in paths)


def check_environment(
    db: str | PathLike[str],
    backup_dir: str | PathLike[str] | None,
    writes: bool,
    command: list[str] | None = None,
) -> None:
    """Step 1 of a start: folders, permissions, the command; changes nothing. Room for a
    backup is demanded only where one will be taken."""
    db = os.fspath(db)
    folder, uid = os.path.dirname(db), os.getuid()
    try:
        os.listdir(folder)
    except FileNotFoundError:
        raise EnvironmentProblem(
            f"folder {folder} for the database does not exist",
            "mount the data volume there or set PREFLIGHT_DB",
        ) from None
    except NotADirectoryError:
        raise UsageError(f"{folder} is not a folder", "set PREFLIGHT_DB to a file path") from None
    except PermissionError:
        raise EnvironmentProblem(
            f"folder {folder} is not accessible by uid {uid}",
            "fix the owner or mode of the volume (chown/chmod)",
        ) from None
    if os.path.isdir(db):
        raise UsageError(
            f"{db} is a folder, not a database file",
            "set PREFLIGHT_DB to a file path, e.g. /data/app.db",
        )
    if os.path.exists(db) and not os.path.isfile(db):
        raise UsageError(f"{db} is not a regular file", "set PREFLIGHT_DB to a database file")
    for suffix in SIDECARS:
        side = f"{db}{suffix}"
        try:
            mode = os.stat(side).st_mode
        except FileNotFoundError:
            continue  # not there (or a -journal the app just deleted: as good as absent)
        if not stat.S_ISREG(mode):
            raise UsageError(
                f"{side} is not a regular file, so SQLite cannot use {db}", f"remove {side}"
            )
        # e.g. left by the app once run as root: SQLite would fail half-way with 'unable to
        # open database file'. Looked at thrice: an app deletes and re-creates its -journal
        # at will (vanished is as good as absent); a real permission problem persists.
        mode = os.R_OK | (os.W_OK if writes else 0)
        if not any(os.access(side, mode) or not os.path.lexists(side) for _ in range(3)):
            raise EnvironmentProblem(
                f"{side} is not readable{' and writable' if writes else ''} by uid {uid}",
                "fix its owner or mode (chown/chmod)",
            )
    if os.path.exists(db) and not os.access(db, os.R_OK):
        raise EnvironmentProblem(
            f"{db} is not readable by uid {uid}", "fix its owner or mode (chown/chmod)"
        )
    for path in (folder, db) if writes else ():
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise EnvironmentProblem(
                f"{path} is not writable by uid {uid}",
                "fix the owner or mode of the volume (chown/chmod), or mount it read-write",
            )
    if writes and backup_dir is not None:
        given = existing = os.fspath(backup_dir)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise EnvironmentProblem(
                f"backup folder {given}{'' if existing == given else f': {existing}'} "
                "is not a folder",
                "remove it or set PREFLIGHT_BACKUP_DIR",
            )
        if not os.access(existing, os.W_OK):
            raise EnvironmentProblem(
                f"backup folder {given} is not writable by uid {uid}",
                "fix its owner or mode, or set PREFLIGHT_BACKUP_DIR",
            )
    if command is not None and not command:
        raise UsageError("run needs a command after --", "e.g. preflight run -- gunicorn app:app")
    if command and not which(command[0]):
        raise EnvironmentProblem(
            f"command {command[0]!r} not found on PATH", "install it in the image or fix the CMD"
        )


def open_lock(path: str | PathLike[str]) -> int:
    """Open (creating if needed) the guard's lock file: never through a symlink (it could
    lead to the database), never blocking on a FIFO; exit 7 if it is not a plain file of
    ours (with one link). The caller owns the descriptor."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise EnvironmentProblem(
                f"lock file {path} is a symbolic link; refusing to follow it",
                f"remove {path} (the guard creates it as a plain file)",
            ) from None
        raise EnvironmentProblem(
            f"cannot open lock file {path}: {exc.strerror}",
            f"remove {path} (it must be a plain file)"
            if os.path.isdir(path)
            else "fix its owner or mode (chown/chmod)"
            if os.path.exists(path)
            else "make the database folder writable by this user",
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "has other hard links" if stat.S_ISREG(st.st_mode) else "is not a regular file"
        raise EnvironmentProblem(
            f"lock file {path} {what}; refusing to use it",
            f"remove {path} (the guard creates it as a plain file)",
        )
    return fd


def take_lock(fd: int, db: str) -> None:
    """flock `fd` at once (busy: BlockingIOError) and prove the name still leads to it (see
    `lock.acquire`). Writes nothing: only the holder writes its note."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    st, named = os.fstat(fd), os.lstat(f"{db}{LOCK}")
    if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
        fcntl.flock(fd, fcntl.LOCK_UN)
        raise Unproven("lock file replaced")


def write_note(fd: int, command: str) -> None:
    """The holder's note (only ever by the holder): pid, host, since, command."""
    # os.uname().nodename is what socket.gethostname() returns, without importing socket
    host = os.uname().nodename.replace("\\", "").replace('"', "")
    os.ftruncate(fd, 0)
    os.pwrite(
        fd,
        f'{{"pid": {os.getpid()}, "host": "{host}", "since": "{now()}", '
        f'"command": "{command}"}}'.encode(),
        0,
    )


def let_go(fd: int) -> None:
    """Empty the note and release the lock."""
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass  # a full disk: the note stays; the flock is what counts
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def open_running(db: str | PathLike[str]) -> int:
    """`<db>.preflight.running`, shared-flocked by a guarded app while it runs (a restore
    takes it exclusively): a regular file, never through a symlink or a FIFO."""
    path = f"{os.fspath(db)}{RUNNING}"
    flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        fd, problem = -1, exc.strerror
    else:
        problem = "" if stat.S_ISREG(os.fstat(fd).st_mode) else "not a regular file"
    if problem:
        if fd >= 0:
            os.close(fd)
        raise EnvironmentProblem(
            f"cannot open {path}: {problem}", f"remove {path} (it must be a plain file)"
        )
    return fd


def share_running(db: str | PathLike[str]) -> int:
    """Take the shared flock a running guarded app holds; the descriptor survives exec (the
    app inherits it), so `restore` sees the app."""
    fd = open_running(db)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockTimeout(
            f"{os.fspath(db)}{RUNNING} is held exclusively: a restore is running",
            "start again once it has finished",
        ) from None
    os.set_inheritable(fd, True)
    return fd


def cheap_checks(db: str, full: bool) -> bool:
    """The header, no stale -wal or hot -journal, the size against the header (Unproven for
    anything the full pipeline must judge; `check_environment` judged the sidecars). Returns
    whether the full quick_check must run."""
    with open(db, "rb") as f:
        head = f.read(20)
    if os.path.exists(f"{db}-wal") and head[18:20] != b"\x02\x02":
        # A -wal beside a database whose header is not in WAL mode is stale, and SQLite
        # would still replay it into the app's first write: the full pipeline refuses it.
        raise Unproven("stale wal")
    if size_of(f"{db}-journal") > 0:
        raise Unproven("hot journal")  # needs a writable connection to roll back
    verdict, _ = probe(db)
    if verdict in ("bad", "short"):
        raise Unproven("probe")  # the full pipeline names it (exit 6)
    return full or verdict == "unsure"
