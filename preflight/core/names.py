"""Which entries of a migrations folder are migrations (layouts: docs/writing-migrations.md).

`migrations.discover` and the quick start both ask `classify`, so a file that `migrate`
refuses is never skipped by the quick start. Imports nothing (the quick start's budget).
"""

SQL, PY, FOLDER, IGNORED, REFUSED = "sql", "py", "folder", "ignored", "refused"
FOLDER_FILES = ("migration.sql", "up.sql")  # what runs in a folder-per-migration layout
_LABEL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_FIX = (
    "not a migration name; rename it VERSION_name.sql, VERSION_name.py or "
    "VERSION_name.up.sql, or move it out of the folder"
)
_FOLDER_FIX = (
    "not a migration name (a folder starting with a digit); name it VERSION_name, or move "
    "it out of the folder"
)


def version_of(stem: str) -> int | None:
    """The version of `VERSION_label`, or None when `stem` is not spelled that way."""
    head, sep, label = stem.partition("_")
    digits = head.replace("-", "")
    if (
        not sep
        or not head[:1].isdigit()
        or not head[-1:].isdigit()
        or not (digits.isascii() and digits.isdigit())
    ):
        return None
    if not label[:1].isalnum() or not label[:1].isascii() or not set(label) <= _LABEL:
        return None
    return int(digits)


def classify(name: str, is_dir: bool) -> tuple[str, int, str]:
    """(what, version, detail) of one folder entry. SQL/PY/FOLDER: a migration (detail: its
    recorded name); IGNORED (detail: why); REFUSED: looks like a migration but is not one
    (detail: "what; the fix"): skipped for its spelling, it would be silently missing."""
    if name.startswith((".", "__")):
        return IGNORED, 0, "hidden or Python-internal"
    if is_dir and name.lower().endswith((".sql", ".py")):
        return REFUSED, 0, "is not a regular file; remove it from the folder"
    if is_dir:
        version = version_of(name)
        if version is not None:
            return FOLDER, version, name
        if name[:1].isdigit():
            return REFUSED, 0, _FOLDER_FIX
        return IGNORED, 0, "a folder that is not VERSION_name (e.g. drizzle's meta/)"
    lower = name.lower()
    if lower.endswith(".down.sql"):
        return IGNORED, 0, "a down step (stored with its up migration, never run by an upgrade)"
    for suffix, kind in ((".sql", SQL), (".py", PY)):
        if name.endswith(suffix):
            version = version_of(name[: -len(suffix)])
            if version is None:
                return REFUSED, 0, _FIX
            return kind, version, name
        if lower.endswith(suffix):
            return REFUSED, 0, f"not a migration name; rename it with a lower-case {suffix} suffix"
    if name[:1].isdigit():
        return REFUSED, 0, _FIX
    return IGNORED, 0, "not a .sql or .py file and not named like a migration"


def folder_file(names: list[str], folder: str) -> tuple[str, str]:
    """(file to run, "") for the names inside a migration folder, or ("", the refusal)."""
    runs = [n for n in names if n in FOLDER_FILES]
    odd = [
        n
        for n in names
        if n.lower().endswith((".sql", ".py"))
        and n not in runs
        and n != "down.sql"
        and not n.startswith(".")
    ]
    if odd:
        return "", f"{folder}/{odd[0]}: not a migration file (only up.sql or migration.sql runs)"
    if len(runs) != 1:
        return "", (
            f"{folder}: holds {' and '.join(runs) if runs else 'neither up.sql nor '}"
            f"{'' if runs else 'migration.sql'}; a migration folder holds exactly one"
        )
    return runs[0], ""
