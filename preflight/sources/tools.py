"""Migration tools the guard wraps instead of its own files: what a tool is, and running one.
Every step runs through the migrate command's own program (`Tool.base`), so `--tool-cmd`
reaches every step. docs/tools.md, "Adding a tool"."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from preflight.core import proc
from preflight.core.errors import EnvironmentProblem, HistoryError, UsageError
from preflight.fast import toolfiles
from preflight.fast.facts import RECORDED


@dataclass(frozen=True)
class Tool:
    name: str
    table: str  # its version table: never drift, read for the recorded version
    command: tuple[str, ...]  # migrates to head (--tool-cmd overrides; see `command`)
    files: Callable[[str, str, str], list[str]]  # (app dir, db, --tool-cmd) -> its files
    # The scratch build's steps, after `base` (a `cumulative` tool's: one run of `tooldjango`)
    heads_cmd: tuple[str, ...] = ()  # prints its heads (on stdout)
    parse_heads: Callable[[str], tuple[str, ...]] = lambda out: ()
    history_cmd: tuple[str, ...] = ()  # prints its revisions (on stdout)
    parse_history: Callable[[str], tuple[str, ...]] = lambda out: ()  # base to head
    upgrade_cmd: Callable[[str], list[str]] = lambda rev: []  # builds up to one version
    stamp_cmd: Callable[[str], list[str]] | None = None  # records a version, runs nothing
    # a migrate command's program and options ([]: not this tool's, e.g. a wrapper script)
    base: Callable[[list[str]], list[str]] = lambda argv: []
    tail: Callable[[list[str]], list[str]] = lambda argv: []  # options after a step's words
    module: str = ""  # the Python package that must be importable to run it as `-m`
    leftovers: tuple[str, ...] = ()  # name prefixes a half-finished run leaves (always drift)
    fix_line: str = ""  # the one line that makes the app honour PREFLIGHT_DATABASE_URL
    cumulative: bool = False  # Django: the table records every applied migration, not a head
    # (revisions, rev, command) -> the commands recording exactly the revisions up to rev
    stamp_steps: Callable[[tuple[str, ...], str, list[str]], list[list[str]]] | None = None
    merge_hint: str = ""  # how to merge several heads


def _rev_word(word: str) -> str | None:
    word = word.rstrip(",")
    return word if word and all(c.isalnum() or c in "_-" for c in word) else None


def _alembic_heads(out: str) -> tuple[str, ...]:
    """`REV [(label)] (head)` or `REV (effective head)` lines only: a warning, a log line or
    an app's print is no head."""
    heads = (
        _rev_word(line.split()[0])
        for line in out.splitlines()
        if len(line.split()) >= 2 and line.rstrip().endswith(("(head)", "(effective head)"))
    )
    return tuple(rev for rev in heads if rev is not None)


def _alembic_history(out: str) -> tuple[str, ...]:
    """The revisions oldest first from `DOWN -> REV (head), message` lines, newest first
    (`<base> -> REV`, `A, B -> REV (mergepoint)`, `DOWN (DEP) -> REV`); other lines skipped."""
    revs: list[str] = []
    for line in out.splitlines():
        left, arrow, right = line.partition(" -> ")
        if not arrow:
            continue
        downs = [d.strip() for d in left.split(" (", 1)[0].split(",")]
        if not all(d == "<base>" or _rev_word(d) for d in downs):
            continue
        words = right.split(",", 1)[0].split()
        rev = _rev_word(words[0]) if words else None
        if rev is not None and all(w[:1] == "(" or w[-1:] == ")" for w in words[1:]):
            revs.append(rev)
    return tuple(reversed(revs))


def _flask_tail(argv: list[str]) -> list[str]:
    """`db upgrade`'s own `-d DIR` (Flask-Migrate's folder), for every step."""
    rest = argv[argv.index("db") + 1 :] if "db" in argv else []
    value = toolfiles.option(rest, "-d", "--directory")
    return ["--directory", value] if value is not None else []


TOOLS: dict[str, Tool] = {
    "alembic": Tool(
        name="alembic",
        table=RECORDED["alembic"][1],
        command=("alembic", "upgrade", "head"),
        files=toolfiles.LIGHT["alembic"],
        heads_cmd=("heads",),
        parse_heads=_alembic_heads,
        history_cmd=("history",),
        parse_history=_alembic_history,
        upgrade_cmd=lambda rev: ["upgrade", rev],
        stamp_cmd=lambda rev: ["stamp", rev],
        base=lambda argv: argv[: argv.index("upgrade")] if "upgrade" in argv else [],
        module="alembic",
        leftovers=("_alembic_tmp_",),
        merge_hint="alembic merge heads",
        fix_line='config.set_main_option("sqlalchemy.url", os.environ["PREFLIGHT_DATABASE_URL"])'
        " in env.py (before it connects)",
    ),
}
# Flask-Migrate: Alembic inside the Flask app (its env.py needs the app context), run as
# `flask db ...` with the app's FLASK_APP (or `--app` in --tool-cmd) for every step.
TOOLS["flask-migrate"] = replace(
    TOOLS["alembic"],
    name="flask-migrate",
    command=("flask", "db", "upgrade"),
    files=toolfiles.LIGHT["flask-migrate"],
    base=lambda argv: argv[: argv.index("db") + 1] if "db" in argv else [],
    tail=_flask_tail,
    module="flask_migrate",
    merge_hint="flask db merge heads",
    fix_line="the app's SQLALCHEMY_DATABASE_URI = "
    'os.environ.get("PREFLIGHT_DATABASE_URL", ...) (read when create_app() configures it)',
)


def _django_stamp_steps(
    revisions: tuple[str, ...], rev: str, command: list[str]
) -> list[list[str]]:
    """`migrate APP NAME --fake` per app so that exactly the plan up to `rev` is recorded:
    apps with nothing in it to zero first, then each app to its last migration in it."""
    last: dict[str, str] = {}
    for item in revisions[: revisions.index(rev) + 1]:
        app, name = item.split(".", 1)
        last[app] = name
    apps = dict.fromkeys(item.split(".", 1)[0] for item in revisions)
    base = django_base(command)
    zero = [[*base, "migrate", a, "zero", "--fake", "--no-input"] for a in apps if a not in last]
    return zero + [[*base, "migrate", a, n, "--fake", "--no-input"] for a, n in last.items()]


def django_base(command: list[str]) -> list[str]:
    """The interpreter and manage.py of a Django migrate command (--tool-cmd or the default)."""
    for i, part in enumerate(command):
        if os.path.basename(part) == "manage.py":
            return command[: i + 1]
    return [sys.executable if _importable("django") else "python", "manage.py"]


TOOLS["django"] = Tool(
    name="django",
    table=RECORDED["django"][1],
    command=("python", "manage.py", "migrate", "--no-input"),
    files=toolfiles.LIGHT["django"],
    base=django_base,
    module="django",
    fix_line='DATABASES["default"]["NAME"] = os.environ.get("PREFLIGHT_DB", '
    'DATABASES["default"]["NAME"]) in settings.py (after DATABASES)',
    cumulative=True,
    stamp_steps=_django_stamp_steps,
    merge_hint="python manage.py makemigrations --merge",
)


def stamp_commands(
    tool: Tool, revisions: tuple[str, ...], rev: str, command: list[str]
) -> list[list[str]]:
    """The commands recording `rev` as applied without running anything."""
    if tool.stamp_steps is not None:
        return tool.stamp_steps(revisions, rev, command)
    if tool.stamp_cmd is None:
        raise UsageError(
            f"{tool.name} has no command recording a version without running migrations "
            f"(needed to record {rev})",
            f"record it with {tool.name}'s own means, then start again",
        )
    return [step_command(tool, command, tool.stamp_cmd(rev))]


def step_command(tool: Tool, argv: list[str], words: Sequence[str]) -> list[str]:
    """One step (`heads`, `upgrade REV`...) through the program of the migrate command `argv`
    (else the default command's)."""
    return (tool.base(argv) or tool.base(command(tool, None))) + list(words) + tool.tail(argv)


def command(tool: Tool, tool_cmd: str | None) -> list[str]:
    """--tool-cmd, else the default under the guard's own interpreter when that has the tool
    (another `python` first on PATH may lack Django), else as written (found on PATH)."""
    if tool_cmd:
        return shlex.split(tool_cmd)
    argv = list(tool.command)
    if tool.module and _importable(tool.module):
        head = [sys.executable] if argv[0] == "python" else [sys.executable, "-m", argv[0]]
        return head + argv[1:]
    return argv


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def run_split(app_dir: Path, argv: Sequence[str], db: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one tool command on `db`; 127: not found."""
    path = os.path.abspath(db)
    env = dict(os.environ, PREFLIGHT_DB=path, PREFLIGHT_DATABASE_URL=f"sqlite:///{path}")
    done = proc.run(argv, env=env, cwd=app_dir)
    return (-1 if done.code is None else done.code), done.out, done.err


def run(app_dir: Path, argv: Sequence[str], db: Path) -> tuple[int, str]:
    """(exit code, its stdout then its stderr, for `proc.meaningful_line`)"""
    code, out, err = run_split(app_dir, argv, db)
    return code, out + ("\n" if out and err else "") + err


def output(app_dir: Path, argv: Sequence[str], db: Path) -> str:
    """A read-only tool command's stdout (heads, history); HistoryError if it fails."""
    code, out, err = run_split(app_dir, argv, db)
    if code == 127:
        raise EnvironmentProblem(
            f"{argv[0]}: command not found (in {app_dir})",
            "install the app's tool in the image, or set PREFLIGHT_TOOL_CMD / PATH",
        )
    if code != 0:
        raise HistoryError(
            f"'{' '.join(argv)}' failed in {app_dir}: {proc.meaningful_line(out + chr(10) + err)}",
            "fix the migration scripts (or PREFLIGHT_APP_DIR)",
        )
    return out


def self_migrated(tool: Tool, argv: Sequence[str], what: str) -> UsageError:
    """A read-only command of the tool changed a database: the app migrates at import."""
    return UsageError(
        f"the app migrates its database when it is imported: '{' '.join(argv)}' only reads, "
        f"yet {what}",
        "remove the upgrade (or create_all) from create_app() / import time: the guard runs "
        f"{tool.name} before the app starts (README, 'Use it in your app')",
    )
