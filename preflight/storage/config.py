"""Settings: every option has a flag and a PREFLIGHT_* variable; flag > environment > default.

The OPTIONS table is the single source: `cli` builds its parser from it, `resolve` reads
it, and a test checks that the README documents every variable in it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from preflight.core import TYPE_CHECKING, targets
from preflight.core.errors import EnvironmentProblem, UsageError
from preflight.core.targets import Target
from preflight.fast.facts import (
    CACHE,
    DOWNGRADES,
    FAILURE,
    LOCK,
    backup_folder,
    boolean,
    integrity_policy,
)
from preflight.fast.facts import OPTIONS as ROWS

if TYPE_CHECKING:
    import argparse
    from typing import Any

TOOL_NAMES = ("files", "alembic", "flask-migrate", "django")  # tools.TOOLS' keys, not imported


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return parse


def _non_negative(kind: Callable[[str], float], what: str) -> Callable[[str], object]:
    def parse(text: str) -> object:
        value = kind(text)
        if not value >= 0:  # also rejects nan
            raise ValueError(f"expected {what} >= 0")
        return value

    return parse


_seconds = _non_negative(float, "a number of seconds")


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


# setting -> (parser, help); flag, variable and default come from `facts.OPTIONS`, the rows
# the quick start reads too. A default is its text parsed by the option's own parser.
PARSERS: dict[str, tuple[Callable[[str], object], str]] = {
    "db": (str, "the SQLite database file"),
    "migrations": (str, "folder of NNN_name.sql / NNN_name.py migrations"),
    "backup_dir": (str, "where backups go (default: a 'backups' folder beside the database)"),
    "backup": (
        _choice("on-change", "always", "never"),
        "on-change: only before a write; always: every run/migrate; never",
    ),
    "keep_backups": (
        _non_negative(int, "a whole number"),
        "backups to keep (0 keeps all); the newest pre-migration backup is never pruned",
    ),
    "lock_timeout": (_seconds, "seconds to wait for another guard's lock"),
    "smoke": (str, "shell command run against the migrated database; must exit 0"),
    "smoke_timeout": (_seconds, "seconds the smoke command may take (0: no limit)"),
    "strict": (
        boolean,
        "extra tables/indexes/views/triggers are errors, not warnings; every loss an upgrade "
        "causes must be declared or accepted",
    ),
    "accept_loss": (
        targets.option,
        "TABLE[.COLUMN],...: losses this start accepts (rows or values the upgrade would "
        "destroy there), once",
    ),
    "integrity": (
        integrity_policy,
        "full PRAGMA quick_check on a start with nothing to write: every-start, "
        "before-writes, or an interval (24h, 7d, 30m, 3600s) since the last one",
    ),
    "log_format": (_choice("text", "json"), "log lines on stderr as text or json"),
    "log_level": (_choice("debug", "info", "warning", "error"), "least important log level shown"),
    "json": (boolean, "check/status: print a JSON report on stdout"),
    "functions": (
        str,
        "a .py file or module defining register(conn): the app's SQL functions for migrations",
    ),
    "tool": (
        _choice(*TOOL_NAMES),
        "whose migrations: files (the guard's NNN_name files), alembic, flask-migrate or django",
    ),
    "app_dir": (
        str,
        "with --tool: the app's folder, where the tool runs (default: the working directory)",
    ),
    "tool_cmd": (str, "with --tool: the command that migrates to head (default: the tool's own)"),
    "litestream_config": (
        str,
        "Litestream mode: its config file; a missing or empty database is restored from "
        "the replica before anything is built",
    ),
    "litestream": (str, "the litestream command (Litestream mode)"),
    "litestream_timeout": (
        _seconds,
        "seconds a restore from the replica may take (0: no limit); then exit 13",
    ),
    "downgrade": (
        _choice(*DOWNGRADES),
        "an image older than the database: refuse (exit 5), or apply the down steps the "
        "newer image stored (files only)",
    ),
}

OPTIONS: tuple[Option, ...] = tuple(
    Option(dest, flag, env, parse(default) if default else None, parse, text, switch)
    for dest, flag, env, default, switch in ROWS
    for parse, text in [PARSERS[dest]]
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
    smoke_timeout: float
    functions: str | None  # --functions spec (see `functions`)
    integrity: str | int  # see facts.integrity_policy
    tool: str  # see `tools`
    app_dir: Path  # where the tool runs (absolute)
    tool_cmd: str | None
    litestream_config: Path | None  # Litestream mode (see `litestream`)
    litestream: str
    litestream_timeout: float
    downgrade: str  # see sources/downgrade.py
    accept_loss: tuple[Target, ...]  # PREFLIGHT_ACCEPT_LOSS (see `live.loss`)

    @property
    def lock_path(self) -> Path:
        """The flock lock file beside the database (never the database itself)."""
        return self.db.with_name(self.db.name + LOCK)

    @property
    def failure_path(self) -> Path:
        """The failure record beside the database; it survives a restore."""
        return self.db.with_name(self.db.name + FAILURE)

    @property
    def cache_path(self) -> Path:
        """The verified-state cache beside the database (see `cache`)."""
        return self.db.with_name(self.db.name + CACHE)

    @property
    def backups(self) -> Path | None:
        """The backup folder, or None under PREFLIGHT_BACKUP=never."""
        return self.backup_dir if self.backup != "never" else None


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add every common option to `parser`, with None as the 'not given' default."""
    import argparse  # a `run` the fast parser read never builds argparse's parser

    for opt in OPTIONS:
        how: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction}
            if opt.is_switch
            else {"metavar": opt.dest.upper()}
        )
        parser.add_argument(
            opt.flag, dest=opt.dest, default=None, help=f"{opt.help} [{opt.env}]", **how
        )


def resolve(args: object, environ: Mapping[str, str]) -> Settings:
    """Settings from parsed flags (argparse's Namespace, or `cli`'s reading of a plain
    `run`: an attribute per setting, None when not given), then the environment, then the
    defaults."""
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
    if values["downgrade"] == "apply" and values["tool"] != "files":
        raise UsageError(
            f"--downgrade apply (PREFLIGHT_DOWNGRADE) works with the guard's own migration "
            f"files, not --tool {values['tool']}: its downgrades need the newer revision "
            f"files, which an older image lacks",
            "unset PREFLIGHT_DOWNGRADE; to roll back, restore the pre-migrate backup "
            "(README, Rollback runbook)",
        )
    # Each parser gave its field's type; a setting not given and without a default is None.
    for name in ("smoke", "functions", "tool_cmd", "litestream_config"):
        values[name] = values[name] or None
    config, backups = values["litestream_config"], values["backup_dir"]
    values.update(
        db=db,
        migrations=Path(os.path.abspath(str(values["migrations"]))),
        backup_dir=Path(backup_folder(str(db), str(backups) if backups else None)),
        app_dir=Path(os.path.abspath(str(values["app_dir"] or "."))),
        litestream_config=Path(os.path.abspath(str(config))) if config else None,
        litestream=values["litestream"] or "litestream",
        accept_loss=values["accept_loss"] or (),
    )
    typed: dict[str, Any] = values  # each parser gave its field's type (above)
    return Settings(**typed)
