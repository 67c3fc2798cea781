"""Command line: parse, configure logging, dispatch, and turn errors into exit codes (the
only place for either). `run` ends in os.execvp: the app keeps the guard's pid (PID 1)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace

from preflight import __version__
from preflight.commands.outcome import Ready, Result
from preflight.core import TYPE_CHECKING, errors, faults, signals
from preflight.core.errors import PreflightError
from preflight.fast import facts
from preflight.fast.facts import Proof
from preflight.storage.config import Settings, add_options, resolve

if TYPE_CHECKING:
    import argparse

    Parsed = argparse.Namespace | SimpleNamespace

log = logging.getLogger("preflight")

COMMANDS = {
    "run": "the whole pipeline, then exec the command after --",
    "migrate": "the whole pipeline without exec (a Job or one-shot service)",
    "check": "read-only: what run would do, rehearsed on a private copy",
    "status": "read-only: applied, pending, drift, backups, failure record",
    "backup": "take a verified backup now",
    "restore": "restore a backup (newest by default), saving the current state first",
    "stamp": "record migrations up to VERSION as applied without running them",
    "clear-failure": "remove the failure record so the same migrations may try again",
    "init": "adopt a database made without preflight: write migration 001 from its schema",
    "prepare": "at image build time: build what starts need from the image alone (a tool's "
    "expected schemas)",
}


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser: every command, each with every common option."""
    import argparse  # not for a `run` the fast parser read (`plain_run`)

    common = argparse.ArgumentParser(add_help=False)
    add_options(common)
    parser = argparse.ArgumentParser(
        prog="preflight",
        description="Start-up guard for SQLite-backed apps: lock, inspect, "
        "verify, back up, migrate, verify, then exec the app.",
        epilog="Exit codes: " + "; ".join(f"{k} {v}" for k, v in errors.EXIT_CODES.items()),
    )
    parser.add_argument("--version", action="version", version=f"preflight {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        if name == "run":
            p.add_argument(
                "cmd",
                nargs=argparse.REMAINDER,
                metavar="-- CMD ARGS",
                help="the command to exec once the database is ready",
            )
        elif name == "restore":
            p.add_argument(
                "backup_file",
                nargs="?",
                metavar="BACKUP",
                help="a backup file or its name in the backup folder (default: newest)",
            )
            p.add_argument(
                "--version",
                dest="at_version",
                type=int,
                metavar="N",
                help="the newest backup holding migration N (see 'preflight status')",
            )
            p.add_argument(
                "--force",
                action="store_true",
                help="restore even while another process has the database open "
                "(its later writes are lost; no environment variable)",
            )
        elif name == "stamp":
            p.add_argument(
                "version",
                type=_stamp_version,
                metavar="VERSION",
                help="the migration number the database is at (0 clears the history); "
                "with --tool, the tool's revision",
            )
            p.add_argument(
                "--force",
                action="store_true",
                help="stamp even if the schema does not match (no environment variable)",
            )
        elif name == "init":
            p.add_argument(
                "--number",
                type=int,
                metavar="N",
                help="write the migration as N (below every file already there)",
            )
    return parser


def escape(text: str) -> str:
    """`text` on one line, non-printable characters as Python escapes: a newline in a
    table's name must not start a forged log line ('preflight: exec: ...')."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        line = f"preflight: {level}{escape(record.getMessage())}"
        if record.exc_info:
            # Several lines by nature: each is marked, so none can pass for a log line.
            trace = self.formatException(record.exc_info)
            line += "".join(f"\npreflight: {level}| {escape(t)}" for t in trace.splitlines())
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        for key in ("step", "ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(settings: Settings | None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    json_logs = settings is not None and settings.log_format == "json"
    handler.setFormatter(_JsonFormatter() if json_logs else _TextFormatter())
    log.handlers = [handler]  # the only one, however often a process configures it
    log.propagate = False
    log.setLevel((settings.log_level if settings else "info").upper())


def _stamp_version(text: str) -> int | str:
    """A migration number, or (with --tool) a revision id such as Alembic's."""
    try:
        return int(text)
    except ValueError:
        if not text or not text.isprintable():
            raise
        return text


SWITCHED = {dest for dest, _ in facts.SWITCHES.values()}  # argparse makes these bools


def plain_run(argv: list[str]) -> SimpleNamespace | None:
    """`run` with only plain flags as argparse would parse it, read by `facts.run_flags`
    without building argparse's parser. None: argparse reads it."""
    if argv[:1] != ["run"]:
        return None
    try:
        given, command = facts.run_flags(argv[1:])
    except facts.Unproven:
        return None
    parsed: dict[str, object] = {dest: None for dest, *_ in facts.OPTIONS}
    for dest, text in given.items():
        parsed[dest] = text == "1" if dest in SWITCHED else text
    return SimpleNamespace(command="run", cmd=["--", *command], **parsed)


def _dispatch(args: Parsed, settings: Settings, proof: Proof | None) -> Result:
    command = args.command
    if command in ("run", "migrate"):
        from preflight.commands import guard  # the operator commands' own imports are lighter

        argv = None
        if command == "run":
            argv = list(args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd)
        guard.start(settings, command, argv, proof)
        return Ready(argv=tuple(argv or ()))
    if command in ("backup", "restore"):
        from preflight.commands import backups  # without the pipeline's modules

        if command == "backup":
            return backups.take_backup(settings)
        return backups.restore(settings, args.backup_file, args.at_version, args.force)
    # Imported here: a start (`run`) never needs the operator commands' modules.
    from preflight.commands import operations

    if command in ("check", "status"):
        return operations.assess(settings, command)
    if command == "stamp":
        return operations.stamp(settings, args.version, args.force)
    if command == "clear-failure":
        return operations.clear_failure(settings)
    if command == "prepare":
        return operations.prepare(settings)
    if settings.tool != "files":
        raise errors.UsageError(
            f"'preflight {command}' is for --tool files",
            f"{settings.tool} keeps its own history; see 'preflight status'",
        )
    from preflight.commands import adopt

    return adopt.init(settings, args.number)


def main(argv: Sequence[str] | None = None, proof: Proof | None = None) -> int:
    """Run one command; returns its exit code (`run` execs instead of returning on success).
    `proof`: what the quick start proved before handing this `run` over."""
    given = list(sys.argv[1:] if argv is None else argv)
    args: Parsed | None = plain_run(given)
    if args is None:
        try:
            args = build_parser().parse_args(given)
        except SystemExit as exc:  # argparse reports usage errors itself, with code 2
            return int(exc.code or 0)
    previous = signals.install()
    try:
        return _main(args, proof)
    except errors.Interrupted as exc:  # arrived after the work, while reporting
        log.error("%s (exit %d)", exc, exc.code)
        return exc.code
    finally:
        signals.restore(previous)


def _main(args: Parsed, proof: Proof | None) -> int:
    settings = None
    report: dict[str, object] = {"command": args.command}
    argv: tuple[str, ...] = ()
    try:
        settings = resolve(args, os.environ)
        _configure_logging(settings)
        report["database"] = str(settings.db)
        result = _dispatch(args, settings, proof)
        report.update(result.report())
        if result.error is not None:
            raise result.error
        code = result.code
        argv = result.argv if isinstance(result, Ready) else ()
    except PreflightError as exc:
        if settings is None:
            _configure_logging(None)
        for line in exc.details:
            log.error("%s", line)
        log.error("%s (exit %d)", exc, exc.code)
        report.update(error=exc.message, hint=exc.hint, details=list(exc.details))
        code = exc.code
    except Exception as exc:  # a bug: say so plainly, with the traceback at debug level
        log.error("internal error: %s: %s (exit 1)", type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        report["error"] = f"internal error: {exc}"
        code = errors.INTERNAL
    report["exit_code"] = code
    if settings is not None and settings.json:
        print(json.dumps(report, indent=2, default=str))
    if code == errors.OK and argv:
        log.info("exec: %s", " ".join(argv), extra={"step": "exec"})  # a StreamHandler flushes
        sys.stdout.flush()
        sys.stderr.flush()
        signals.defaults()  # the app gets SIGTERM with its usual meaning
        faults.point("before-exec")
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            log.error("exec %s failed: %s (exit %d)", argv[0], exc.strerror, errors.ENVIRONMENT)
            return errors.ENVIRONMENT
    return code
