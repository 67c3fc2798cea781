"""The quick start: a no-op `run` proven with a handful of imports, then exec.

A container whose database is already at head should start in about the interpreter's
own start-up time. The full pipeline imports argparse, logging, dataclasses and pathlib
(~40 ms on a small VM) before doing any work; this module imports only os, sys, time,
fcntl and the C modules under hashlib and sqlite3. It proceeds only when every check of a no-op start passes
exactly as on the last verified start, and otherwise hands over to the full pipeline
(`cli.main`), which decides and explains. It never reports an error itself.

What it proves, in the full pipeline's order: the options are valid (it knows the same
flags and PREFLIGHT_* variables as `config`, a test keeps them equal); the environment
(folders, permissions, free space for a backup, the command on PATH); the migration
files' names and sha256 and the guard's own code give the cache key of the last
verified start; the lock; no failure record; the SQLite header, no hot journal, the
file as long as its header says (`probe`), `PRAGMA quick_check` when the integrity
policy wants one this start (`check_due`); the history lists exactly these files; the
schema text hashes to what the cache vouches for (see `cache`); no backup needs pruning.
Anything else, or any exception: hand over. A full check that falls due under an
interval policy is handed over too: the full pipeline runs it and records its time.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

from . import ancestry, names  # import only os

# The C modules that hashlib and sqlite3 wrap, when present: the wrappers import OpenSSL,
# datetime and collections (~5 ms, a quarter of a quick start). Same functions, same results.
try:
    from _sha256 import sha256  # Python <= 3.11
except ImportError:
    try:
        from _sha2 import sha256  # Python >= 3.12
    except ImportError:
        from hashlib import sha256
try:
    import _sqlite3 as sqlite3
except ImportError:
    import sqlite3  # type: ignore[no-redef]

FORMAT = 1  # of the cache key; bump when what a verification means changes
HEADER = b"SQLite format 3\x00"

# flag -> (setting, variable); switches have no value. Must match config.OPTIONS (tested).
FLAGS = {
    "--db": ("db", "PREFLIGHT_DB"),
    "--migrations": ("migrations", "PREFLIGHT_MIGRATIONS"),
    "--backup-dir": ("backup_dir", "PREFLIGHT_BACKUP_DIR"),
    "--backup": ("backup", "PREFLIGHT_BACKUP"),
    "--keep-backups": ("keep_backups", "PREFLIGHT_KEEP_BACKUPS"),
    "--lock-timeout": ("lock_timeout", "PREFLIGHT_LOCK_TIMEOUT"),
    "--smoke": ("smoke", "PREFLIGHT_SMOKE"),
    "--smoke-timeout": ("smoke_timeout", "PREFLIGHT_SMOKE_TIMEOUT"),
    "--integrity": ("integrity", "PREFLIGHT_INTEGRITY"),
    "--log-format": ("log_format", "PREFLIGHT_LOG_FORMAT"),
    "--log-level": ("log_level", "PREFLIGHT_LOG_LEVEL"),
    "--functions": ("functions", "PREFLIGHT_FUNCTIONS"),
    "--tool": ("tool", "PREFLIGHT_TOOL"),
    "--app-dir": ("app_dir", "PREFLIGHT_APP_DIR"),
    "--tool-cmd": ("tool_cmd", "PREFLIGHT_TOOL_CMD"),
    "--litestream-config": ("litestream_config", "PREFLIGHT_LITESTREAM_CONFIG"),
    "--litestream": ("litestream", "PREFLIGHT_LITESTREAM"),
    "--litestream-timeout": ("litestream_timeout", "PREFLIGHT_LITESTREAM_TIMEOUT"),
}
SWITCHES = {"--strict": ("strict", "PREFLIGHT_STRICT"), "--json": ("json", "PREFLIGHT_JSON")}
DEFAULTS = {
    "db": "/data/app.db",
    "migrations": "migrations",
    "backup_dir": "",
    "backup": "on-change",
    "keep_backups": "10",
    "lock_timeout": "300",
    "smoke": "",
    "smoke_timeout": "300",
    "integrity": "24h",
    "log_format": "text",
    "log_level": "info",
    "strict": "0",
    "json": "0",
    "functions": "",
    "tool": "files",
    "app_dir": "",
    "tool_cmd": "",
    "litestream_config": "",
    "litestream": "litestream",
    "litestream_timeout": "600",
}
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
EVERY_START, BEFORE_WRITES = "every-start", "before-writes"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class HandOver(Exception):
    """Not provably a no-op start: the full pipeline takes over."""


def _options(args: list[str], environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """`run [options] -- CMD...` as settings (flag > environment > default) and the command."""
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
            raise HandOver(arg)  # --db=x, abbreviations, anything argparse would judge
    if i >= len(args) or i + 1 == len(args):
        raise HandOver("no command after --")
    values = {}
    for setting, variable in list(FLAGS.values()) + list(SWITCHES.values()):
        values[setting] = given.get(setting, environ.get(variable, DEFAULTS[setting]))
    values["strict"] = _flag(values["strict"])
    if (
        _flag(values["json"]) == "1"
        or values["backup"] not in ("on-change", "never")
        or values["log_format"] != "text"
        or values["log_level"] not in ("debug", "info", "warning", "error")
        or not values["keep_backups"].isascii()
        or not values["keep_backups"].isdigit()
        or not values["db"]
    ):
        raise HandOver("options")  # json output, backup=always, or a value to be judged
    try:
        integrity_policy(values["integrity"])
    except ValueError:
        raise HandOver("integrity") from None
    for name in ("lock_timeout", "smoke_timeout", "litestream_timeout"):
        try:
            timeout = float(values[name])
        except ValueError:
            raise HandOver(name) from None
        if not timeout >= 0:
            raise HandOver(name)
    return values, args[i + 1 :]


def integrity_policy(text: str) -> str | int:
    """--integrity: 'every-start', 'before-writes' or an interval in seconds (24h, 7d, 30m,
    3600s, 3600); ValueError otherwise. config parses the option with this very function."""
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
    """Whether a start with nothing to write runs the full `PRAGMA quick_check`.

    `checked_at`: when the last full check passed (Unix seconds; 0: none recorded). A
    time in the future (a clock set back) counts as none: better one check too many.
    """
    if isinstance(policy, str):
        return policy == EVERY_START
    return not 0 < checked_at <= now < checked_at + policy


def _flag(text: str) -> str:
    value = text.strip().lower()
    if value in TRUE:
        return "1"
    if value in FALSE:
        return "0"
    raise HandOver("boolean")


def _which(command: str) -> bool:
    """shutil.which(command) is not None, without importing shutil."""

    def runnable(path: str) -> bool:
        return (
            os.path.exists(path) and os.access(path, os.F_OK | os.X_OK) and not os.path.isdir(path)
        )

    if os.path.dirname(command):
        return runnable(command)
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if runnable(os.path.join(folder or os.curdir, command)):
            return True
    return False


def _environment(db: str, backup_dir: str | None, command: list[str]) -> None:
    """database.check_environment(writes=True) passes (else the full pipeline says why)."""
    folder = os.path.dirname(db)
    os.listdir(folder)
    if (
        not os.path.isfile(db)
        or not os.access(db, os.R_OK | os.W_OK)
        or not os.access(folder, os.W_OK)
    ):
        raise HandOver("database")
    if backup_dir is not None:
        existing = backup_dir
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
            raise HandOver("backup folder")
        size = os.stat(db).st_size + (
            os.stat(f"{db}-wal").st_size if os.path.exists(f"{db}-wal") else 0
        )
        st = os.statvfs(existing)
        if st.f_bavail * st.f_frsize < size * 11 // 10 + (1 << 20):
            raise HandOver("free space")
    if not _which(command[0]):
        raise HandOver("command")


def _sha256_of(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        digest = sha256()
        while block := os.read(fd, 1 << 20):
            digest.update(block)
    finally:
        os.close(fd)
    return digest.hexdigest()


def files(folder: str) -> list[tuple[int, str, str]]:
    """(version, name, sha256) of every migration, by version; HandOver if any is odd.

    The same rule as `migrations.discover` (`names.classify`): anything it would refuse,
    or anything that is not plainly a migration, goes to the full pipeline to decide.
    """
    found: dict[int, tuple[int, str, str]] = {}
    with os.scandir(folder) as entries:  # d_type: no stat per file
        listed = sorted((e.name, e.is_dir(), e.is_file()) for e in entries)
    for name, is_dir, regular in listed:
        what, version, _ = names.classify(name, is_dir)
        if what == names.IGNORED:
            continue
        if what not in (names.SQL, names.PY, names.FOLDER) or version in found:
            raise HandOver(name)
        path = os.path.join(folder, name)
        if what == names.FOLDER:
            inner, problem = names.folder_file(sorted(os.listdir(path)), name)
            if problem:
                raise HandOver(name)
            path = os.path.join(path, inner)
            regular = os.path.isfile(path)
        if not regular:
            raise HandOver(name)
        found[version] = (version, name, _sha256_of(path))
    return [found[v] for v in sorted(found)]


def set_fingerprint(named: list[tuple[str, str]]) -> str:
    """One hash for a migration set: (name, sha256) in order (migrations.set_fingerprint)."""
    digest = sha256()
    for name, sha in named:
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()


def key(fingerprint: str, strict: bool) -> str:
    """The cache key: what a verification depends on besides the schema (see `cache`)."""
    digest = sha256(f"{FORMAT}\0{fingerprint}\0{strict}\0{sqlite3.sqlite_version}\0".encode())
    # The guard's own code decides what "no drift" means: a new guard re-verifies.
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(n for n in os.listdir(here) if n.endswith(".py")):
        with open(os.path.join(here, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()


def schema_hash(conn: sqlite3.Connection) -> str:
    """sha256 of every row of sqlite_master (type, name, table, SQL) except rootpage.

    rootpage is left out: VACUUM moves tables without changing the schema.
    """
    digest = sha256()
    for row in conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name, tbl_name"
    ):
        digest.update("\0".join("\1" if v is None else str(v) for v in row).encode() + b"\n")
    return digest.hexdigest()


def cache_text(cache_key: str, schema: str, checked_at: int) -> bytes:
    """The cache file `cache.write` writes for a schema with no extra objects (tested)."""
    return (
        f'{{\n "key": "{cache_key}",\n "schema_hash": "{schema}",\n "warnings": [],\n'
        f' "checked_at": {checked_at}\n}}\n'
    ).encode()


def cache_checked_at(text: bytes) -> int:
    """The `checked_at` of a cache file in `cache_text`'s format; HandOver if it has none."""
    digits = text.rpartition(b'\n "checked_at": ')[2]
    digits = digits[:-3] if digits.endswith(b"\n}\n") else b""
    if not digits.isdigit():  # bytes.isdigit: ASCII digits only
        raise HandOver("cache")
    return int(digits)


def probe(db: str) -> tuple[str, str]:
    """The cheap integrity facts of the main file, O(1) in its size: (verdict, why).

    'bad': not an SQLite database; 'short': shorter than its header says, with nothing
    that could hold the rest (SQLite itself calls that 'database disk image is
    malformed'); 'unsure': shorter, but a hot journal or a WAL with frames may hold the
    rest (a crash during a commit or a checkpoint writes page 1 first), so only a full
    check can tell; 'ok': the header is SQLite's and the file holds every page it counts.
    A longer file is fine: SQLite ignores the tail (an app's SQLITE_FCNTL_CHUNK_SIZE
    preallocates one).
    """
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
    if (head[18:20] == b"\x02\x02" and _bytes(f"{db}-wal") > 32) or _bytes(f"{db}-journal") > 0:
        return "unsure", why
    return "short", why


def _bytes(path: str) -> int:
    """Size of `path`, 0 if absent (an app in rollback mode deletes its -journal at will)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _now() -> str:
    """history.now() without importing datetime."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def _inspect(db: str, expected: list[tuple[int, str, str]], full: bool) -> tuple[str, bool]:
    """Header, no hot journal, the size, quick_check if `full` (or if the size cannot vouch),
    history == files; returns the schema hash and whether quick_check ran."""
    with open(db, "rb") as f:
        head = f.read(20)
    if head[: len(HEADER)] != HEADER:
        raise HandOver("header")
    for suffix in ("-wal", "-shm", "-journal"):
        side = f"{db}{suffix}"
        if os.path.lexists(side) and (
            not os.path.isfile(side) or not os.access(side, os.R_OK | os.W_OK)
        ):
            raise HandOver(suffix)  # the full pipeline names it (exit 2 or 7)
    if os.path.exists(f"{db}-wal") and head[18:20] != b"\x02\x02":
        # A -wal beside a database whose header is not in WAL mode is stale, and SQLite
        # would still replay it into the app's first write: the full pipeline refuses it.
        raise HandOver("stale wal")
    if os.path.exists(f"{db}-journal") and os.stat(f"{db}-journal").st_size > 0:
        raise HandOver("hot journal")  # needs a writable connection to roll back
    verdict, _ = probe(db)
    if verdict in ("bad", "short"):
        raise HandOver("probe")  # the full pipeline names it (exit 6)
    full = full or verdict == "unsure"
    quoted = db.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    # Read-only: closing it cannot checkpoint the WAL, so the database stays byte-identical.
    conn = sqlite3.connect(f"file:{quoted}?mode=ro", uri=True, isolation_level=None)
    try:
        if full and [r[0] for r in conn.execute("PRAGMA quick_check")] != ["ok"]:
            raise HandOver("quick_check")
        if not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='_preflight_history'"
        ).fetchone():
            raise HandOver("no history")
        applied = [
            tuple(r)
            for r in conn.execute(
                "SELECT version, name, sha256 FROM _preflight_history ORDER BY version"
            )
        ]
        if applied != expected:
            raise HandOver("history")
        return schema_hash(conn), full
    finally:
        conn.close()


def _since(checked_at: int, policy: str | int) -> str:
    """'header and size ok, last quick_check 3h ago' (see --integrity)."""
    age = max(0, int(time.time()) - checked_at)
    ago = (
        f"{age // 86400}d"
        if age >= 86400
        else f"{age // 3600}h"
        if age >= 3600
        else f"{age // 60}m"
        if age >= 60
        else f"{age}s"
    )
    return "header and size ok, " + (
        "quick_check only before writes"
        if policy == BEFORE_WRITES
        else f"last quick_check {ago} ago"
    )


def _say(lines: list[str], quiet: bool) -> None:
    if not quiet:
        sys.stderr.write("".join(f"preflight: {line}\n" for line in lines))
        sys.stderr.flush()


def start(argv: list[str], environ: dict[str, str] | None = None) -> None:
    """Exec the app if `argv` is a provable no-op `run`; return to hand over otherwise."""
    if argv[:1] != ["run"]:
        return
    fd = running = -1
    held = False
    try:
        values, command = _options(argv[1:], dict(os.environ if environ is None else environ))
        if values["tool"] != "files":
            from .toolquick import start as tool_start  # execs, or raises to hand over

            tool_start(values, command)
        db = os.path.realpath(values["db"])
        backup_dir = (
            os.path.abspath(values["backup_dir"])
            if values["backup_dir"]
            else os.path.join(os.path.dirname(db), "backups")
        )
        t0 = time.perf_counter()
        _environment(db, backup_dir if values["backup"] != "never" else None, command)
        if ancestry.replicating() is not None:
            raise HandOver("under litestream replicate")  # the full pipeline refuses (exit 2)
        if values["litestream_config"] and not (
            os.path.isfile(values["litestream_config"]) and _which(values["litestream"])
        ):
            raise HandOver("litestream")  # the full pipeline names what is missing
        found = files(os.path.abspath(values["migrations"]))
        named = [(n, s) for _, n, s in found]
        spec = values["functions"]
        if spec and found:  # migrations.set_fingerprint adds the functions module's sha256
            if "/" not in spec and not spec.endswith(".py"):
                raise HandOver("functions module")  # a module name: import machinery decides
            named.append(("<functions>", _sha256_of(os.path.abspath(spec))))
        cache_key = key(set_fingerprint(named), values["strict"] == "1")
        t1 = time.perf_counter()
        # As lock.open_lock: never through a symlink, never a FIFO, device or hard link
        # (the full pipeline refuses those with exit 7).
        fd = os.open(
            f"{db}.preflight.lock",
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            0o644,
        )
        st = os.fstat(fd)
        if st.st_mode & 0o170000 != 0o100000 or st.st_nlink != 1:
            raise HandOver("lock file")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # busy: BlockingIOError, hand over
        held = True  # only now may the note be written: a waiting guard keeps its hands off
        named = os.lstat(f"{db}.preflight.lock")
        if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
            raise HandOver("lock file replaced")  # see lock.acquire
        # Shared while the app runs (the descriptor survives exec): restore refuses then.
        running = os.open(
            f"{db}.preflight.running",
            os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK,
            0o644,
        )
        if os.fstat(running).st_mode & 0o170000 != 0o100000:
            raise HandOver("running file")  # not a regular file: the full pipeline refuses it
        fcntl.flock(running, fcntl.LOCK_SH | fcntl.LOCK_NB)
        os.set_inheritable(running, True)
        host = os.uname().nodename.replace("\\", "").replace('"', "")
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f'{{"pid": {os.getpid()}, "host": "{host}", "since": "{_now()}", '
            f'"command": "run"}}'.encode(),
            0,
        )
        t2 = time.perf_counter()
        if os.path.exists(f"{db}.preflight-failure.json"):
            raise HandOver("failure record")
        with open(f"{db}.preflight-cache.json", "rb") as f:
            cached = f.read()
        checked_at = cache_checked_at(cached)
        policy = integrity_policy(values["integrity"])
        if policy != EVERY_START and check_due(policy, checked_at, time.time()):
            raise HandOver("integrity check due")  # the full pipeline runs and records it
        live, checked = _inspect(db, found, policy == EVERY_START)
        if cached != cache_text(cache_key, live, checked_at):
            raise HandOver("cache")
        if (
            values["backup"] != "never"
            and int(values["keep_backups"]) > 0
            and os.path.isdir(backup_dir)
        ):
            stem = os.path.splitext(os.path.basename(db))[0]
            names = set(os.listdir(backup_dir))
            # Only backups with a side record are ever pruned (catalog.prune): older ones
            # would otherwise keep every start from being quick.
            mine = [
                n
                for n in names
                if n.startswith(f"{stem}-") and n.endswith(".db") and f"{n}.json" in names
            ]
            if len(mine) > int(values["keep_backups"]):
                raise HandOver("prune")
        t3 = time.perf_counter()
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        fd = -1
    except Exception:  # anything unexpected, too: the full pipeline decides and explains
        if running >= 0:
            os.close(running)
        if fd >= 0:
            if held:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass  # a full disk: the note stays; closing below releases the flock
            os.close(fd)  # closing releases the flock
        return
    _say(
        [
            f"migrations: {len(found)} file(s) as verified before in {(t1 - t0) * 1000:.0f} ms",
            f"lock: acquired in {(t2 - t1) * 1000:.0f} ms",
            f"inspect: {len(found)} applied, schema as verified before (cache), "
            f"{'quick_check ok' if checked else _since(checked_at, policy)} "
            f"in {(t3 - t2) * 1000:.0f} ms",
            "plan: 0 pending, history and schema verified in 0 ms",
            f"exec: {' '.join(command)}",
        ],
        values["log_level"] in ("warning", "error"),
    )
    try:
        os.execvp(command[0], command)
    except OSError:
        os.close(running)
        return  # the full pipeline reports it (exit 7)


def main() -> None:
    """Console-script entry point (`preflight ...`): the quick start, else the full CLI."""
    start(sys.argv[1:])
    from .cli import main_exit

    main_exit()
