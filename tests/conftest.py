"""Shared factories: real SQLite files in tmp_path, the real CLI, real subprocesses."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from preflight.cli import main  # noqa: E402

MIGRATIONS = REPO / "migrations"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
STATES = ("v0.3.0", "v0.4.0", "v0.9.5", "rc1-crashed", "rc3-partial")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PREFLIGHT_* variable from the outside leaks into a test."""
    for key in list(os.environ):
        if key.startswith("PREFLIGHT_"):
            monkeypatch.delenv(key)


def load_fixture(name: str, db: Path) -> Path:
    """Build `db` from tests/fixtures/<name>.sql (a StarPunk database at that release)."""
    conn = sqlite3.connect(db)
    conn.executescript((FIXTURES / f"{name}.sql").read_text())
    conn.close()
    return db


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@pytest.fixture
def make_db(data_dir: Path) -> Callable[[str], Path]:
    """make_db('v0.9.5') -> data/app.db in that state; make_db('fresh') -> a path with no file."""

    def make(state: str) -> Path:
        db = data_dir / "app.db"
        if state != "fresh":
            load_fixture(state, db)
        return db

    return make


@pytest.fixture
def make_migrations(tmp_path: Path) -> Callable[..., Path]:
    """make_migrations({'001_a.sql': '...'}, base=True): a migrations folder in tmp_path.

    With base=True it starts from a copy of the application's migrations/.
    """
    count = [0]

    def make(files: dict[str, str | bytes], base: bool = False) -> Path:
        count[0] += 1
        folder = tmp_path / f"migrations{count[0]}"
        folder.mkdir()
        if base:
            for path in MIGRATIONS.glob("[0-9]*"):
                (folder / path.name).write_bytes(path.read_bytes())
        for name, text in files.items():
            target = folder / name
            if isinstance(text, bytes):
                target.write_bytes(text)
            else:
                target.write_text(text)
        return folder

    return make


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, err={self.err[-2000:]!r})"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """cli('migrate', '--db', db) -> Result(code, stdout, stderr), through cli.main."""

    def run(*args: object) -> Result:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the caller's PREFLIGHT_* options, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFLIGHT_")}
    env.update(extra or {})
    return env


def spawn(
    *args: object,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`python -m preflight ARGS` in a real subprocess, in a clean environment plus `env`."""
    full_env = clean_env(env)
    full_env.setdefault("PYTHONPATH", str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "preflight", *map(str, args)],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def started(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`spawn`, started and not waited for (stdout and stderr piped)."""
    full_env = clean_env(env)
    full_env.setdefault("PYTHONPATH", str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "preflight", *map(str, args)],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sha(path: Path) -> str:
    """The sha256 of a file's bytes: "byte-identical" in one word."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_sha(path: Path, chunk: int = 8 << 20) -> str:
    """A backup record's sha256 tree, computed here as the README's shell line does it
    (`split -b 8388608 --filter=sha256sum FILE | cut -c1-64 | xxd -r -p | sha256sum`):
    the sha256 of every 8 MiB chunk's sha256, in order."""
    data = path.read_bytes()
    parts = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()


def folder_state(folder: Path, strict: bool = False) -> dict[str, str]:
    """Every file under `folder` with its sha256: proves 'nothing changed'.

    The guard's own marker files are left out unless `strict`: the lock (empty once
    released), the one a running app and a restore flock, and the database's backup id
    (written once, by the first backup): commands that take the lock create them;
    `check` and `status` must not even do that.
    """
    state = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and (
            strict
            or not path.name.endswith((".preflight.lock", ".preflight.running", ".preflight-id"))
        ):
            state[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def dump(db: Path) -> list[str]:
    """The logical content (iterdump) without the guard's own tables."""
    conn = sqlite3.connect(db)
    try:
        return [line for line in conn.iterdump() if "_preflight" not in line]
    finally:
        conn.close()


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., Path]]:
    """tmpfs(folder, size='1m', options='') mounts a small real filesystem there (root only).

    Real ENOSPC and EROFS, with no mocks; every mount is undone when the test ends.
    """
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "1m", options: str = "") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        opts = f"size={size}" + (f",{options}" if options else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], check=True)
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount_read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root (CI runs as root)")


def wait_until_blocked_on_lock(pid: int, lock: Path, timeout: float = 10) -> None:
    """The guard opened the lock file (and so passed its environment checks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(
                os.readlink(f"/proc/{pid}/fd/{fd}") == str(lock)
                for fd in os.listdir(f"/proc/{pid}/fd")
            ):
                time.sleep(0.05)
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise AssertionError("the guard never reached the lock")


def plant_foreign_wal(db: Path, scratch: Path, payload: bool = False) -> None:
    """Put another database's live -wal beside `db`, as a hand-copied restore leaves one."""
    import shutil

    other = scratch / "other.db"
    conn = sqlite3.connect(other, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE intruder (x)")
        if payload:
            conn.execute("INSERT INTO intruder VALUES (randomblob(3000))")
        shutil.copy(f"{other}-wal", f"{db}-wal")
    finally:
        conn.close()


def hold_lock(lock_path: Path) -> subprocess.Popen[str]:
    """Another guard holding the lock: a real process, returned once it holds it."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from pathlib import Path; from preflight.storage import lock;"
            "cm = lock.hold(Path(sys.argv[2]), 5, 'test-holder'); cm.__enter__();"
            "print('held', flush=True); time.sleep(60)",
            str(REPO),
            str(lock_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


# One app over each migration source (`sourcekit`): a module picks its sources by defining
# the `source` fixture (parametrised by sourcekit.SOURCES or TOOLS).


@pytest.fixture
def fresh(source: str, tmp_path: Path) -> Any:
    """A source's app whose database is not there yet."""
    from sourcekit import make_kit  # it imports this module

    return make_kit(source, tmp_path)


@pytest.fixture(scope="session")
def at_head(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    """A source at head with one user and one post, built once per run (`kit` copies it)."""
    from functools import cache

    from sourcekit import kit_at_head

    return cache(lambda name: kit_at_head(name, tmp_path_factory.mktemp(name)))


@pytest.fixture
def kit(source: str, at_head: Callable[[str], Any], tmp_path: Path) -> Any:
    """A source at head with one user and one post (a private copy)."""
    from sourcekit import copy_kit

    return copy_kit(at_head(source), tmp_path)


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """Messages the 'preflight' logger emits (whatever the CLI did to its handlers)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("preflight")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
