"""Settings: every option has a flag and a PREFLIGHT_* variable; flag > environment > default.

The OPTIONS table is the single source: `cli` builds its parser from it, `resolve` reads
it, and a test checks that the README documents every variable in it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from .errors import EnvironmentProblem, UsageError
from .quickstart import integrity_policy

BACKUP_MODES = ("on-change", "always", "never")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
TOOL_NAMES = ("files", "alembic", "django")  # tools.NAMES (not imported: a start stays light)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return parse


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("expected a whole number >= 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise ValueError("expected a number of seconds >= 0")
    return value


@dataclass(frozen=True)
class Option:
    """One setting: its flag, its PREFLIGHT_* variable, default and parser."""

    dest: str
    flag: str
    env: str
    default: object
    parse: Callable[[str], object]
    help: str
    is_switch: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("db", "--db", "PREFLIGHT_DB", "/data/app.db", str, "the SQLite database file"),
    Option(
        "migrations",
        "--migrations",
        "PREFLIGHT_MIGRATIONS",
        "migrations",
        str,
        "folder of NNN_name.sql / NNN_name.py migrations",
    ),
    Option(
        "backup_dir",
        "--backup-dir",
        "PREFLIGHT_BACKUP_DIR",
        None,
        str,
        "where backups go (default: a 'backups' folder beside the database)",
    ),
    Option(
        "backup",
        "--backup",
        "PREFLIGHT_BACKUP",
        "on-change",
        _choice(BACKUP_MODES),
        "on-change: only before a write; always: every run/migrate; never",
    ),
    Option(
        "keep_backups",
        "--keep-backups",
        "PREFLIGHT_KEEP_BACKUPS",
        10,
        _non_negative_int,
        "backups to keep (0 keeps all); the newest pre-migration backup is never pruned",
    ),
    Option(
        "lock_timeout",
        "--lock-timeout",
        "PREFLIGHT_LOCK_TIMEOUT",
        300.0,
        _non_negative_float,
        "seconds to wait for another guard's lock",
    ),
    Option(
        "smoke",
        "--smoke",
        "PREFLIGHT_SMOKE",
        None,
        str,
        "shell command run against the migrated database; must exit 0",
    ),
    Option(
        "smoke_timeout",
        "--smoke-timeout",
        "PREFLIGHT_SMOKE_TIMEOUT",
        300.0,
        _non_negative_float,
        "seconds the smoke command may take (0: no limit)",
    ),
    Option(
        "strict",
        "--strict",
        "PREFLIGHT_STRICT",
        False,
        _bool,
        "extra tables/indexes/views/triggers are errors, not warnings",
        is_switch=True,
    ),
    Option(
        "integrity",
        "--integrity",
        "PREFLIGHT_INTEGRITY",
        86400,
        integrity_policy,
        "full PRAGMA quick_check on a start with nothing to write: every-start, "
        "before-writes, or an interval (24h, 7d, 30m, 3600s) since the last one",
    ),
    Option(
        "log_format",
        "--log-format",
        "PREFLIGHT_LOG_FORMAT",
        "text",
        _choice(LOG_FORMATS),
        "log lines on stderr as text or json",
    ),
    Option(
        "log_level",
        "--log-level",
        "PREFLIGHT_LOG_LEVEL",
        "info",
        _choice(LOG_LEVELS),
        "least important log level shown",
    ),
    Option(
        "json",
        "--json",
        "PREFLIGHT_JSON",
        False,
        _bool,
        "check/status: print a JSON report on stdout",
        is_switch=True,
    ),
    Option(
        "functions",
        "--functions",
        "PREFLIGHT_FUNCTIONS",
        None,
        str,
        "a .py file or module defining register(conn): the app's SQL functions for migrations",
    ),
    Option(
        "tool",
        "--tool",
        "PREFLIGHT_TOOL",
        "files",
        _choice(TOOL_NAMES),
        "whose migrations: files (the guard's NNN_name files), alembic or django",
    ),
    Option(
        "app_dir",
        "--app-dir",
        "PREFLIGHT_APP_DIR",
        None,
        str,
        "with --tool: the app's folder, where the tool runs (default: the working directory)",
    ),
    Option(
        "tool_cmd",
        "--tool-cmd",
        "PREFLIGHT_TOOL_CMD",
        None,
        str,
        "with --tool: the command that migrates to head (default: the tool's own)",
    ),
    Option(
        "litestream_config",
        "--litestream-config",
        "PREFLIGHT_LITESTREAM_CONFIG",
        None,
        str,
        "Litestream mode: its config file; a missing or empty database is restored from "
        "the replica before anything is built",
    ),
    Option(
        "litestream",
        "--litestream",
        "PREFLIGHT_LITESTREAM",
        "litestream",
        str,
        "the litestream command (Litestream mode)",
    ),
    Option(
        "litestream_timeout",
        "--litestream-timeout",
        "PREFLIGHT_LITESTREAM_TIMEOUT",
        600.0,
        _non_negative_float,
        "seconds a restore from the replica may take (0: no limit); then exit 13",
    ),
)


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one invocation (passed explicitly, never global)."""

    db: Path
    migrations: Path
    backup_dir: Path
    backup: str
    keep_backups: int
    lock_timeout: float
    smoke: str | None
    strict: bool
    log_format: str
    log_level: str
    json: bool
    smoke_timeout: float = 300.0
    functions: str | None = None  # --functions spec (see `functions`)
    integrity: str | int = 86400  # see quickstart.integrity_policy
    tool: str = "files"  # see `tools`
    app_dir: Path = Path(".")  # where the tool runs (absolute once resolved)
    tool_cmd: str | None = None
    litestream_config: Path | None = None  # Litestream mode (see `litestream`)
    litestream: str = "litestream"
    litestream_timeout: float = 600.0

    @property
    def lock_path(self) -> Path:
        """The flock lock file beside the database (never the database itself)."""
        return self.db.with_name(self.db.name + ".preflight.lock")

    @property
    def failure_path(self) -> Path:
        """The failure record beside the database; it survives a restore."""
        return self.db.with_name(self.db.name + ".preflight-failure.json")

    @property
    def cache_path(self) -> Path:
        """The verified-state cache beside the database (see `cache`)."""
        return self.db.with_name(self.db.name + ".preflight-cache.json")


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add every common option to `parser`, with None as the 'not given' default."""
    for opt in OPTIONS:
        help_text = f"{opt.help} [{opt.env}]"
        if opt.is_switch:
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                opt.flag, dest=opt.dest, default=None, metavar=opt.dest.upper(), help=help_text
            )


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Settings from parsed flags, then the environment, then the defaults."""
    values: dict[str, object] = {}
    for opt in OPTIONS:
        given = getattr(args, opt.dest, None)
        if given is not None and not isinstance(given, str):
            values[opt.dest] = given  # a switch already parsed to bool by argparse
            continue
        if given is not None:
            source, text = opt.flag, given
        elif environ.get(opt.env) is not None:
            source, text = opt.env, environ[opt.env]
        else:
            values[opt.dest] = opt.default
            continue
        try:
            values[opt.dest] = opt.parse(text)
        except ValueError as exc:
            raise UsageError(
                f"{source}={text!r} is not valid: {exc}", f"fix {opt.flag} or {opt.env}"
            ) from None
    if not values["db"]:
        raise UsageError("no database given", "set --db or PREFLIGHT_DB")
    # Resolve symlinks: the lock, the backups and an atomic restore (os.replace) must act
    # on the real file; replacing a symlink would leave its target untouched.
    given = str(values["db"])
    if os.path.islink(given) and not os.path.exists(given):
        # A dangling link is a volume that is not mounted, not a fresh install: building a
        # new database at its target would start the app on an empty one.
        raise EnvironmentProblem(
            f"{given} is a symlink to {os.readlink(given)}, which does not exist",
            "mount the volume that holds it, or fix the link",
        )
    db = Path(os.path.realpath(given))
    backup_dir = values["backup_dir"]
    return Settings(
        db=db,
        migrations=Path(os.path.abspath(str(values["migrations"]))),
        backup_dir=Path(os.path.abspath(str(backup_dir))) if backup_dir else db.parent / "backups",
        backup=str(values["backup"]),
        keep_backups=int(str(values["keep_backups"])),
        lock_timeout=float(str(values["lock_timeout"])),
        smoke=str(values["smoke"]) if values["smoke"] else None,
        strict=bool(values["strict"]),
        log_format=str(values["log_format"]),
        log_level=str(values["log_level"]),
        json=bool(values["json"]),
        smoke_timeout=float(str(values["smoke_timeout"])),
        functions=str(values["functions"]) if values["functions"] else None,
        integrity=cast("str | int", values["integrity"]),
        tool=str(values["tool"]),
        app_dir=Path(os.path.abspath(str(values["app_dir"] or "."))),
        tool_cmd=str(values["tool_cmd"]) if values["tool_cmd"] else None,
        litestream_config=Path(os.path.abspath(str(values["litestream_config"])))
        if values["litestream_config"]
        else None,
        litestream=str(values["litestream"]) or "litestream",
        litestream_timeout=float(str(values["litestream_timeout"])),
    )
