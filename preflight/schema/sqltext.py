"""SQL text in the canonical spelling drift compares: what SQLite means, not how it is
written (the rules: docs/drift.md)."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)

# Compiled on first use (re's own cache): drift tokenizes, a fresh build never does, and
# compiling this costs 5 M instructions (~1 ms) at every start that imports the module.
_TOKEN = (
    r"""'(?:[^']|'')*'?|[xX]'[^']*'?|"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?"""
    r"""|--[^\n]*|/\*.*?(?:\*/|\Z)"""
    r"""|0[xX][0-9A-Fa-f_]+|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?"""
    # A word ([A-Za-z_] or non-ASCII, then those, digits and $) as negated ASCII ranges: a
    # class up to U+10FFFF takes the regex compiler ~10 ms.
    r"""|[^\x00-@\[-^`{-\x7f][^\x00-#%-/:-@\[-^`{-\x7f]*"""
    r"""|\|\||<<|>>|<=|>=|==|!=|<>|->>|->|\S"""
)
_OPERATORS = {"<>": "!=", "==": "="}
# After these a double-quoted token names an object or a new name, never a string.
_NAMING = frozenset(
    "as from join into update table view index trigger references of exists collate set".split()
)
# Words that start a clause; in a FROM or JOIN clause every name is a table or an alias.
_CLAUSES = frozenset(
    "select from join on using where group having order limit window values set "
    "returning union except intersect".split()
)
_SUBQUERY = {"select", "values", "with"}
# Words after which an expression starts (so a name there is not an alias).
_KEYWORDS = frozenset(
    "select where and or not when then else case in is like glob match regexp between "
    "escape by on set having distinct all values returning exists default check as from "
    "join using limit offset cast collate union except intersect filter over partition "
    "begin group order do isnull notnull asc desc to within".split()
)


def fold(name: str) -> str:
    """An identifier as SQLite compares it: ASCII letters folded, every other one kept."""
    return name.lower() if name.isascii() else name.translate(ASCII_LOWER)  # as `upper`


def upper(word: str) -> str:
    # str.upper is the same on ASCII and many times faster than translate (a dict per character)
    return word.upper() if word.isascii() else word.translate(ASCII_UPPER)


def tokens(sql: str) -> list[str]:
    return [
        t
        for t in (m.group() for m in re.finditer(_TOKEN, sql, re.DOTALL))
        if not t.startswith(("--", "/*"))
    ]


def unquote(tok: str) -> str:
    """The name a (possibly quoted) identifier token spells, unfolded."""
    close = {'"': '"', "`": "`", "[": "]", "'": "'"}.get(tok[:1])
    if close is None or len(tok) < 2 or not tok.endswith(close):
        return tok
    return tok[1:-1] if close == "]" else tok[1:-1].replace(close * 2, close)


def name(tok: str) -> str:
    return fold(unquote(tok))


def is_word(tok: str) -> bool:
    """A bare word or a quoted identifier: anything that can name something."""
    return bool(tok) and (tok[0] in '"`[' or tok[0].isalpha() or tok[0] == "_" or tok[0] >= "\x80")


def number(tok: str) -> str:
    """A numeric literal by value and type: '1.00' -> '1.0', '0x10' -> '16', '1' stays '1'."""
    text = tok.replace("_", "")
    try:
        if text[:2] in ("0x", "0X"):
            value = int(text, 16)
            return str(value - (1 << 64) if value >= 1 << 63 else value)
        if not any(c in text for c in ".eE"):
            value = int(text)
            return str(value) if value < 1 << 63 else repr(float(value))
        return repr(float(text))
    except ValueError:
        return tok


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def trigger_head(toks: list[str]) -> list[str]:
    """A CREATE TRIGGER's tokens with its defaults written out: no timing means BEFORE,
    and FOR EACH ROW is the only kind SQLite has, so it is left out."""
    words = [fold(t) for t in toks]
    if words[:2] != ["create", "trigger"] or "begin" not in words:
        return toks
    body = words.index("begin")
    head, rest, low = list(toks[:body]), toks[body:], words[:body]
    for i in range(len(low) - 2):
        if low[i : i + 3] == ["for", "each", "row"]:
            del head[i : i + 3]
            break
    low = [fold(t) for t in head]
    event = next(
        (i for i, w in enumerate(low) if w in ("delete", "insert", "update") and i > 2), None
    )
    if event is not None and low[event - 1] not in ("before", "after", "of"):
        head.insert(event, "BEFORE")
    return head + rest


def _redundant_parens(toks: list[str]) -> set[int]:
    """Positions of parentheses that wrap exactly what an enclosing pair wraps: ((x > 0)); not
    a row value or a subquery (`x IN ((1, 2))`, `x IN ((SELECT ...))`)."""
    match: dict[int, int] = {}
    stack: list[int] = []
    commas: set[int] = set()
    for i, tok in enumerate(toks):
        if tok == "(":
            stack.append(i)
        elif tok == ")" and stack:
            match[stack.pop()] = i
        elif tok == "," and stack:
            commas.add(stack[-1])
    drop: set[int] = set()
    for i, j in match.items():
        inner = i + 1
        if (
            toks[inner : inner + 1] == ["("]
            and match.get(inner) == j - 1
            and inner not in commas
            and fold(toks[inner + 1] if inner + 1 < len(toks) else "") not in _SUBQUERY
        ):
            drop.update((inner, j - 1))
    return drop


def aliases(toks: list[str]) -> set[int]:
    """Indexes of names a statement gives its own columns: after AS, right after an
    expression (`count(*) "n"`), or in a column list that AS follows (`VIEW v("a") AS`)."""
    found: set[int] = set()
    opened: list[int] = []
    for i, tok in enumerate(toks):
        if tok == "(":
            opened.append(i)
        elif tok == ")" and opened:
            start = opened.pop()
            if (
                i + 1 < len(toks)
                and fold(toks[i + 1]) == "as"
                and all(
                    is_word(t) if k % 2 == 0 else t == ","
                    for k, t in enumerate(toks[start + 1 : i])
                )
            ):
                found.update(range(start + 1, i, 2))
        elif (
            is_word(tok)
            and i
            and toks[i + 1 : i + 2] not in ([")"], ["("], ["."])
            and (fold(toks[i - 1]) == "as" or (tok[0] == '"' and _ends_expression(toks[i - 1])))
        ):
            found.add(i)
    return found


def identifier_positions(toks: list[str]) -> set[int]:
    """Indexes of name tokens that stand where only an identifier can: aliases, after FROM,
    ON, a dot..., before a dot or an opening parenthesis."""
    found = aliases(toks)
    clause = [""]  # the clause being read, per parenthesis depth
    for i, tok in enumerate(toks):
        if tok == "(":
            clause.append("")
        elif tok == ")" and len(clause) > 1:
            clause.pop()
        elif tok == ";":
            clause[-1] = ""
        elif is_word(tok):
            word = fold(tok) if tok[0] not in '"`[' else ""
            before = fold(toks[i - 1]) if i else ""
            after = toks[i + 1] if i + 1 < len(toks) else ""
            if word in _CLAUSES:
                clause[-1] = word
            elif (
                before in _NAMING
                or before == "."
                or after in (".", "(")
                or clause[-1] in ("from", "join")
                # ON a table (trigger, index), not ON an expression (join)
                or (before == "on" and fold(after) in ("begin", "for", "when", ""))
            ):
                found.add(i)
    return found


def _ends_expression(tok: str) -> bool:
    """Whether `tok` can end an expression, so a name right after it is an alias."""
    if tok == ")" or tok[0] in "'`[\"" or tok[0].isdigit():
        return True
    return is_word(tok) and fold(tok) not in _KEYWORDS


def local_names(toks: list[str]) -> set[str]:
    """Names a statement gives its own columns (aliases) or spells only as identifiers
    (`[x]`, `` `x` ``): a double-quoted token with such a name is that name."""
    return {name(toks[i]) for i in aliases(toks)} | {name(t) for t in toks if t[:1] in "`["}


def canonical(
    toks: Iterable[str],
    known: set[str] | frozenset[str] = frozenset(),
    idents: set[int] | frozenset[int] | None = None,
) -> str:
    """The canonical text of `toks`: a double-quoted token is an identifier when its name is
    in `known` (or its index in `idents`), else a string literal."""
    toks = list(toks)
    if idents is None:
        idents = identifier_positions(toks)
    drop = _redundant_parens(toks)
    out: list[str] = []
    for i, tok in enumerate(toks):
        if i in drop:
            continue
        first = tok[0]
        if first == "'":
            word = tok
        elif first == '"':
            text = unquote(tok)
            word = fold(text) if i in idents or fold(text) in known else _string(text)
        elif first in "`[":
            word = fold(unquote(tok))
        elif first in "xX" and tok[1:2] == "'":
            word = "x" + tok[1:].lower()
        elif first.isdigit() or (first == "." and len(tok) > 1):
            word = number(tok)
        else:
            word = _OPERATORS.get(tok, fold(tok))
        if out and not (word in (",", ")", ".", "(") or out[-1] in ("(", ".")):
            out.append(" ")
        out.append(word)
    return "".join(out)


def default(text: str) -> str:
    """A column DEFAULT as PRAGMA table_info gives it, as the value it stands for: no column
    is in scope there, so "draft" and a bare draft are the string 'draft'; TRUE is 1."""
    toks = tokens(text)
    if len(toks) == 1 and is_word(toks[0]) and toks[0][0] not in "`[":
        word = fold(toks[0]) if toks[0][0] != '"' else None
        if word in ("true", "false"):
            return "1" if word == "true" else "0"
        if word in ("null", "current_time", "current_date", "current_timestamp"):
            return word
        return _string(unquote(toks[0]))
    if len(toks) == 2 and toks[0] in "+-" and (toks[1][:1].isdigit() or toks[1][:1] == "."):
        value = number(toks[1])
        return value if toks[0] == "+" else ("-" + value).replace("--", "")
    return canonical(toks, frozenset(), set())
