"""What a loss declaration or PREFLIGHT_ACCEPT_LOSS names: TABLE or TABLE.COLUMN, separated
by commas or white space, quoted as SQLite quotes ("a b", [a b], `a b`), ASCII-folded.
"""

from __future__ import annotations

import re

Target = tuple[str, str | None]  # (table, column or None), ASCII-folded

# A bare name's first character ([A-Za-z_] or any non-ASCII one) and the rest ([\w$] or
# any non-ASCII one), written as negated ASCII ranges: a class up to U+10FFFF takes the
# regex compiler ~8 ms at import (sqltext's tokenizer does the same).
WORD_START = r"[^\x00-@\[-^`{-\x7f]"
WORD = r"[^\x00-#%-/:-@\[-^`{-\x7f]"
_BARE = WORD_START + WORD + "*"
_NAME = rf'(?:{_BARE}|"(?:[^"]|"")+"|\[[^\]]+\]|`(?:[^`]|``)+`)'
# Compiled on first use (re's own cache): only a loss declaration or PREFLIGHT_ACCEPT_LOSS
# is parsed, and compiling it costs 4.5 M instructions at every start that imports this.
_TARGET = rf"\s*({_NAME})(?:\s*\.\s*({_NAME}))?\s*(?:,|\s|$)"
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _unquote(tok: str) -> str:
    if tok[0] in '"`':  # a doubled quote inside stands for one
        return tok[1:-1].replace(tok[0] * 2, tok[0])
    return tok[1:-1] if tok[0] == "[" else tok


def fold(name: str) -> str:
    """A name as SQLite compares it: ASCII letters folded, every other one kept."""
    return name.translate(_LOWER)


def parse(text: str) -> tuple[Target, ...]:
    """The targets `text` names; ValueError naming what is wrong (nothing named, a stray
    character, an unfinished quote)."""
    found: list[Target] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        if text[pos] in ", \t":
            pos += 1
            continue
        match = re.compile(_TARGET).match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"expected TABLE or TABLE.COLUMN at {text[pos : pos + 20]!r}")
        table, column = match[1], match[2]
        found.append((fold(_unquote(table)), fold(_unquote(column)) if column else None))
        pos = match.end()
    if not found:
        raise ValueError("names no table: expected TABLE or TABLE.COLUMN, comma-separated")
    return tuple(found)


def option(text: str) -> tuple[Target, ...]:
    """PREFLIGHT_ACCEPT_LOSS / --accept-loss: `parse`, with an empty value meaning none."""
    return parse(text) if text.strip() else ()


def show(target: Target) -> str:
    """'notes' or 'notes.body', as an operator writes it back (a name that is no bare
    identifier in double quotes: '"order items".note')."""
    table, column = target
    return _spell(table) if column is None else f"{_spell(table)}.{_spell(column)}"


def _spell(name: str) -> str:
    if re.fullmatch(_BARE, name):
        return name
    return '"' + name.replace('"', '""') + '"'


def covers(given: tuple[Target, ...], table: str, column: str | None) -> bool:
    """Whether `given` accepts a loss in `table` (a whole table covers its columns)."""
    table = fold(table)
    return any(
        t == table and (c is None or (column is not None and c == fold(column))) for t, c in given
    )
