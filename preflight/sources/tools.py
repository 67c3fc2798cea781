"""Migration tools the guard wraps instead of its own files: what a tool is, and running one.

The app keeps its own tool; the guard runs it as a subprocess in the app's folder
(`--app-dir`). Every run of a tool (on the live database or on a private scratch one) gets PREFLIGHT_DB
(the path) and PREFLIGHT_DATABASE_URL (`sqlite:///` + absolute path) in its environment;
the app's tool configuration must honour them (README, "Alembic", "Django").

Every step runs through the migrate command's own program (`Tool.base`: `alembic -c X`,
`flask --app X db`, `python manage.py`), so `--tool-cmd` reaches heads, history, the
scratch upgrades and the stamps too; the default commands run under the guard's own
interpreter when it has the tool (`command`). Heads and history are parsed from stdout
only, in the tool's own format; failures are reported by `proc.meaningful_line`.

How to add a tool:
1. In `toolfiles.LIGHT`, add `name: files`: the function listing the
   files of its migration set (app folder, database, --tool-cmd -> paths; their hash is
   the cache key: a no-op start compares it without starting the tool), and in
   `facts.RECORDED` the SQL reading its recorded version. Keep both light (os and sqlite3
   only): the quick start imports them.
2. Here, add a `Tool` to TOOLS: the default command and the Python module running it,
   `base` (and `tail`) cutting a migrate command down to its program, the words listing
   its heads and its revisions (and their parsers), building a scratch database up to a
   version, the stamp (or None), and the names of the leftovers a half-finished run
   leaves behind.
   A tool whose table records every applied migration (Django) sets `cumulative`: its
   version is that set, its revisions the plan, and `toolscratch` builds every plan
   prefix (and a recorded set that is no prefix) in one run (`tooldjango`); `stamp_steps`
   gives the commands recording exactly the plan up to one entry.
3. Add the name to NAMES and config's TOOL_NAMES, and tests with the real tool (tests/).
The start around it (lock, inspect, drift, backup, tool, verify, restore) is the one
`commands.guard` runs for every source, over `toolsource.ToolSource`.
"""

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

# --tool choices; "files" is the guard's own migrations
NAMES = ("files", "alembic", "flask-migrate", "django")


@dataclass(frozen=True)
class Tool:
    """One migration tool, as the guard sees it (all parts are plain functions)."""

    name: str
    table: str  # its version table: never drift, read for the recorded version
    # the default command that migrates to head (--tool-cmd overrides); a first word
    # `python` or the tool's own program runs under the guard's interpreter when that
    # interpreter has `module` (see `command`)
    command: tuple[str, ...]
    files: Callable[[str, str, str], list[str]]  # (app dir, db, --tool-cmd) -> its files
    heads_cmd: tuple[str, ...]  # after `base`: prints its heads (on stdout)
    parse_heads: Callable[[str], tuple[str, ...]]
    history_cmd: tuple[str, ...]  # after `base`: prints its revisions (on stdout)
    parse_history: Callable[[str], tuple[str, ...]]  # -> revisions from base to head
    upgrade_cmd: Callable[[str], list[str]]  # after `base`: builds a database up to one version
    stamp_cmd: Callable[[str], list[str]] | None  # after `base`: records a version, runs nothing
    # the program and options of a migrate command ([]: not this tool's, e.g. a wrapper
    # script: the other steps then use the default command's program)
    base: Callable[[list[str]], list[str]] = lambda argv: []
    tail: Callable[[list[str]], list[str]] = lambda argv: []  # options after a step's words
    module: str = ""  # the Python package that must be importable to run it as `-m`
    leftovers: tuple[str, ...] = ()  # name prefixes a half-finished run leaves (always drift)
    fix_line: str = ""  # the one line that makes the app honour PREFLIGHT_DATABASE_URL
    # Django: the table records every applied migration, not one head; a version is that
    # set, the revisions are the plan, and `toolscratch` builds them in one run (tooldjango).
    cumulative: bool = False
    # several commands recording exactly the revisions up to one (revisions, rev, command)
    stamp_steps: Callable[[tuple[str, ...], str, list[str]], list[list[str]]] | None = None
    merge_hint: str = ""  # how to merge several heads


def _rev_word(word: str) -> str | None:
    """An Alembic revision id as it prints one (hex or the app's own ids: word characters)."""
    word = word.rstrip(",")
    return word if word and all(c.isalnum() or c in "_-" for c in word) else None


def _alembic_heads(out: str) -> tuple[str, ...]:
    """`alembic heads` prints `REV (head)` per head, `REV (effective head)` for one that
    depends on another branch, and with a branch label `REV (label) (head)`: only such
    lines count (a warning, a log line or an app's print is no head)."""
    found: list[str] = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and line.rstrip().endswith(("(head)", "(effective head)")):
            rev = _rev_word(parts[0])
            if rev is not None:
                found.append(rev)
    return tuple(found)


def _alembic_history(out: str) -> tuple[str, ...]:
    """`alembic history` prints `DOWN -> REV (head), message` newest first (`<base> -> REV`
    for the first, `A, B -> REV (mergepoint)` for a merge, `DOWN (DEP) -> REV` with a
    dependency): the revisions oldest first. Other lines (warnings, prints) are skipped."""
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


def _alembic_base(argv: list[str]) -> list[str]:
    """`alembic [-c X]`: the command up to its `upgrade`."""
    return argv[: argv.index("upgrade")] if "upgrade" in argv else []


def _flask_base(argv: list[str]) -> list[str]:
    """`flask [--app X] db`: the command up to its `db` group."""
    return argv[: argv.index("db") + 1] if "db" in argv else []


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
        base=_alembic_base,
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
    base=_flask_base,
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
    heads_cmd=(),  # tooldjango reads heads and the plan from one run of Django itself
    parse_heads=lambda out: (),
    history_cmd=(),
    parse_history=lambda out: (),
    upgrade_cmd=lambda rev: ["migrate", *rev.split(".", 1), "--no-input"],
    stamp_cmd=None,
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
    """The commands recording `rev` (and, for Django, exactly the revisions before it)."""
    if tool.stamp_steps is not None:
        return tool.stamp_steps(revisions, rev, command)
    assert tool.stamp_cmd is not None
    return [step_command(tool, command, tool.stamp_cmd(rev))]


def program(tool: Tool, argv: list[str]) -> list[str]:
    """The program every step runs: the migrate command's, else the default command's."""
    return tool.base(argv) or tool.base(command(tool, None))


def step_command(tool: Tool, argv: list[str], words: Sequence[str]) -> list[str]:
    """One step (`heads`, `history`, `upgrade REV`, `stamp REV`) through the program of the
    migrate command `argv`, with its options after the step's words (`tail`)."""
    return program(tool, argv) + list(words) + tool.tail(argv)


def get(name: str) -> Tool:
    """The tool called `name`; EnvironmentProblem if this guard does not have it yet."""
    try:
        return TOOLS[name]
    except KeyError:
        raise EnvironmentProblem(
            f"--tool {name} is not available in this guard",
            f"use --tool {', '.join(NAMES[:-1])} or {NAMES[-1]}",
        ) from None


def command(tool: Tool, tool_cmd: str | None) -> list[str]:
    """The command migrating the database to head: --tool-cmd (split like a shell, run as
    given), else the tool's default under the guard's own interpreter when that has the
    tool (`python manage.py` is this Python, `alembic` is `python -m alembic`): another
    `python` first on PATH may lack Django. Without the tool here, the default as written
    (found on PATH, as the app's image has it)."""
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


def environment(db: Path) -> dict[str, str]:
    """The tool's environment: ours, plus where the database is."""
    path = os.path.abspath(db)
    return dict(os.environ, PREFLIGHT_DB=path, PREFLIGHT_DATABASE_URL=f"sqlite:///{path}")


def run_split(
    app_dir: Path, argv: Sequence[str], db: Path, timeout: float | None = None
) -> tuple[int, str, str]:
    """Run one tool command in `app_dir` against `db` (`proc.run`): (exit code, stdout,
    stderr); 127 when the command is not found, -1 at the timeout."""
    done = proc.run(argv, env=environment(db), cwd=app_dir, timeout=timeout)
    return (-1 if done.code is None else done.code), done.out, done.err


def run(
    app_dir: Path, argv: Sequence[str], db: Path, timeout: float | None = None
) -> tuple[int, str]:
    """Run one tool command: (exit code, its stdout then its stderr, for `proc.meaningful_line`)."""
    code, out, err = run_split(app_dir, argv, db, timeout)
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
