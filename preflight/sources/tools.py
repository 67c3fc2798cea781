"""Migration tools the guard wraps instead of its own files: what a tool is, and running one.

`--tool files` (the default) is the guard's own `NNN_name.sql|.py` migrations. With
`--tool alembic` (or another tool here) the app keeps its own tool; the guard runs it as a
subprocess in the app's environment (`--app-dir`, default the working directory) and adds
the lock, the drift check, the verified backup, the verification and the restore around it.
Every run of a tool (on the live database or on a private scratch one) gets PREFLIGHT_DB
(the path) and PREFLIGHT_DATABASE_URL (`sqlite:///` + absolute path) in its environment;
the app's tool configuration must honour them (README, "Alembic", "Django").

How to add a tool:
1. In `toolfiles.LIGHT`, add `name: (files, recorded_sql, table)`: the function listing the
   files of its migration set under the app folder (their hash is the cache key: a no-op
   start compares it without starting the tool), and in `facts.RECORDED` the SQL reading
   its recorded version. Keep both light (os and sqlite3 only): the quick start imports them.
2. Here, add a `Tool` to TOOLS: the default command, how to list its heads and its
   revisions in order (parsed from a subprocess's output), the command building a scratch
   database up to a version, the stamp command (or None), and the names of the leftovers
   a half-finished run leaves behind.
   A tool whose table records every applied migration (Django) sets `cumulative`: its
   version is that set, its revisions the plan, and `toolscratch` builds every plan
   prefix (and a recorded set that is no prefix) in one run (`tooldjango`); `stamp_steps`
   gives the commands recording exactly the plan up to one entry.
3. Add the name to config's `--tool` choices, and tests with the real tool (tests/).
The start around it (lock, inspect, drift, backup, tool, verify, restore) is the one
`commands.guard` runs for every source, over `toolsource.ToolSource`.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from preflight.core import proc
from preflight.core.errors import EnvironmentProblem, HistoryError
from preflight.fast import toolfiles

NAMES = ("files", "alembic", "django")  # --tool choices; "files" is the guard's own migrations


@dataclass(frozen=True)
class Tool:
    """One migration tool, as the guard sees it (all parts are plain functions)."""

    name: str
    table: str  # its version table: never drift, read for the recorded version
    command: tuple[str, ...]  # the default command that migrates to head (--tool-cmd overrides)
    files: Callable[[str], list[str]]  # its migration set's files under the app folder
    recorded_sql: str  # rows of text: the recorded version(s); no table means no history
    heads_cmd: tuple[str, ...]  # prints its heads
    parse_heads: Callable[[str], tuple[str, ...]]
    history_cmd: tuple[str, ...]  # prints its revisions
    parse_history: Callable[[str], tuple[str, ...]]  # -> revisions from base to head
    upgrade_cmd: Callable[[str], list[str]]  # builds a database up to one version
    stamp_cmd: Callable[[str], list[str]] | None  # records a version without running it
    leftovers: tuple[str, ...] = ()  # name prefixes a half-finished run leaves (always drift)
    fix_line: str = ""  # the one line that makes the app honour PREFLIGHT_DATABASE_URL
    # Django: the table records every applied migration, not one head; a version is that
    # set, the revisions are the plan, and `toolscratch` builds them in one run (tooldjango).
    cumulative: bool = False
    # several commands recording exactly the revisions up to one (revisions, rev, command)
    stamp_steps: Callable[[tuple[str, ...], str, list[str]], list[list[str]]] | None = None
    merge_hint: str = ""  # how to merge several heads


def _alembic_heads(out: str) -> tuple[str, ...]:
    """`alembic heads` prints 'REV (head)' per head (with -v more; we do not pass it)."""
    return tuple(line.split()[0] for line in out.splitlines() if line.strip())


def _alembic_history(out: str) -> tuple[str, ...]:
    """`alembic history` prints 'DOWN -> REV (head), message' newest first; oldest first here."""
    revs: list[str] = []
    for line in out.splitlines():
        if "->" not in line:
            continue
        rev = line.split("->", 1)[1].strip().split()[0].rstrip(",")
        revs.append(rev)
    return tuple(reversed(revs))


TOOLS: dict[str, Tool] = {
    "alembic": Tool(
        name="alembic",
        table=toolfiles.LIGHT["alembic"][2],
        command=("alembic", "upgrade", "head"),
        files=toolfiles.LIGHT["alembic"][0],
        recorded_sql=toolfiles.LIGHT["alembic"][1],
        heads_cmd=("alembic", "heads"),
        parse_heads=_alembic_heads,
        history_cmd=("alembic", "history"),
        parse_history=_alembic_history,
        upgrade_cmd=lambda rev: ["alembic", "upgrade", rev],
        stamp_cmd=lambda rev: ["alembic", "stamp", rev],
        leftovers=("_alembic_tmp_",),
        merge_hint="alembic merge heads",
        fix_line='config.set_main_option("sqlalchemy.url", os.environ["PREFLIGHT_DATABASE_URL"])'
        " in env.py (before it connects)",
    ),
}


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
    return ["python", "manage.py"]


TOOLS["django"] = Tool(
    name="django",
    table=toolfiles.LIGHT["django"][2],
    command=("python", "manage.py", "migrate", "--no-input"),
    files=toolfiles.LIGHT["django"][0],
    recorded_sql=toolfiles.LIGHT["django"][1],
    heads_cmd=(),  # tooldjango reads heads and the plan from one run of Django itself
    parse_heads=lambda out: (),
    history_cmd=(),
    parse_history=lambda out: (),
    upgrade_cmd=lambda rev: ["python", "manage.py", "migrate", *rev.split(".", 1), "--no-input"],
    stamp_cmd=None,
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
    return [tool.stamp_cmd(rev)]


def get(name: str) -> Tool:
    """The tool called `name`; EnvironmentProblem if this guard does not have it yet."""
    try:
        return TOOLS[name]
    except KeyError:
        raise EnvironmentProblem(
            f"--tool {name} is not available in this guard", "use --tool files, alembic or django"
        ) from None


def command(tool: Tool, tool_cmd: str | None) -> list[str]:
    """The command migrating the database to head: --tool-cmd (split like a shell) or the default."""
    return shlex.split(tool_cmd) if tool_cmd else list(tool.command)


def environment(db: Path) -> dict[str, str]:
    """The tool's environment: ours, plus where the database is."""
    path = os.path.abspath(db)
    return dict(os.environ, PREFLIGHT_DB=path, PREFLIGHT_DATABASE_URL=f"sqlite:///{path}")


def run(
    app_dir: Path, argv: Sequence[str], db: Path, timeout: float | None = None
) -> tuple[int, str]:
    """Run one tool command in `app_dir` against `db`: (exit code, its output).

    Through the one runner (`proc`): its own process group, output to memory, not a pipe;
    exit 127 when the command is not found, -1 at the timeout.
    """
    done = proc.run(argv, env=environment(db), cwd=app_dir, timeout=timeout)
    return (-1 if done.code is None else done.code), done.text


def output(app_dir: Path, argv: Sequence[str], db: Path) -> str:
    """A read-only tool command's output (heads, history); HistoryError if it fails."""
    code, text = run(app_dir, argv, db)
    if code == 127:
        raise EnvironmentProblem(
            f"{argv[0]}: command not found (in {app_dir})",
            "install the app's tool in the image, or set PREFLIGHT_TOOL_CMD / PATH",
        )
    if code != 0:
        raise HistoryError(
            f"'{' '.join(argv)}' failed in {app_dir}: {last_line(text)}",
            "fix the migration scripts (or PREFLIGHT_APP_DIR)",
        )
    return text


def last_line(text: str) -> str:
    """The line of a tool's output that says what went wrong (see `proc.meaningful_line`)."""
    return proc.meaningful_line(text)
