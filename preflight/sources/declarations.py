"""Loss declarations in migration files: `-- preflight: loses TABLE[.COLUMN], ...`. Any
comment line starting `preflight:` must be one: a misspelled one would declare nothing."""

from __future__ import annotations

import functools
import os
import re

from preflight.core import targets
from preflight.core.errors import HistoryError
from preflight.core.targets import Target

_DIRECTIVE = re.compile(r"^[ \t]*(?:--|#)[ \t]*preflight[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_VERB = r"[ \t]*loses\b(.*)$"  # compiled once a file has a directive (re's cache)
EXAMPLE = "-- preflight: loses TABLE[.COLUMN], ..."


def parse(text: str, name: str, start: int = 0, end: int | None = None) -> tuple[Target, ...]:
    """What text[start:end] (the part of the file that runs) declares."""
    found: list[Target] = []
    for match in _DIRECTIVE.finditer(text, start, len(text) if end is None else end):
        line = text.count("\n", 0, match.start()) + 1
        verb = re.match(_VERB, match[1], re.IGNORECASE)
        if verb is None:
            raise HistoryError(
                f"{name}: line {line}: '{match[0].strip()}' is not a preflight declaration",
                f"write it as '{EXAMPLE}' (the only one there is), or reword the comment",
            )
        try:
            found.extend(targets.parse(verb[1]))
        except ValueError as exc:
            raise HistoryError(
                f"{name}: line {line}: malformed loss declaration ({exc})",
                f"write it as '{EXAMPLE}'",
            ) from None
    return tuple(dict.fromkeys(found))


def in_files(paths: list[str], revisions: tuple[str, ...]) -> dict[str, tuple[Target, ...]]:
    """A tool's pending migrations' declarations: revision -> what its file declares. A
    revision's file is the one named after it (Django: `0005_x.py` for `notes.0005_x`, under
    the app's folder) or the one defining it (Alembic's `revision = "x5"`)."""
    found: dict[str, tuple[Target, ...]] = {}
    text = functools.cache(_read)  # a file defining no revision is read once, not per revision
    for rev in revisions:
        app, _, stem = rev.rpartition(".")
        mine = [
            p
            for p in paths
            if p.endswith(".py")
            and os.path.basename(p)[:-3] == stem
            and (not app or os.path.basename(os.path.dirname(os.path.dirname(p))) == app)
        ]
        if not mine:
            defining = re.compile(
                rf"""^\s*revision\s*(?::\s*str\s*)?=\s*['"]{re.escape(rev)}['"]""", re.M
            )
            mine = [p for p in paths if p.endswith(".py") and defining.search(text(p))]
        declared = [t for p in mine for t in parse(text(p), os.path.basename(p))]
        if declared:
            found[rev] = tuple(dict.fromkeys(declared))
    return found


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
