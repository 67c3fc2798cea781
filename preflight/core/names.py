"""Which entries of a migrations folder are migrations: the one rule every path uses.

`migrations.discover` and the quick start (`quickstart.files`) both ask `classify`, so a
file that `migrate` refuses can never be skipped by the quick start. This module imports
nothing: the quick start's import budget is a handful of C modules.

Layouts (docs/writing-migrations.md):
- `VERSION_name.sql` / `VERSION_name.py`; `VERSION_name.up.sql` (golang-migrate, sqlx);
  `VERSION_name.down.sql` is no migration (the down step of its `.up.sql` or `.sql`);
- a folder `VERSION_name/` holding `migration.sql` (Prisma) or `up.sql` (diesel; its
  `down.sql` is the down step).
VERSION is digits, optionally with `-` separators that are dropped
(`2017-11-23-064236` is 20171123064236). The recorded name is the file name, or the
folder name for a folder.
"""

SQL, PY, FOLDER, IGNORED, REFUSED = "sql", "py", "folder", "ignored", "refused"
FOLDER_FILES = ("migration.sql", "up.sql")  # what runs in a folder-per-migration layout
_LABEL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_FIX = (
    "not a migration name; rename it VERSION_name.sql, VERSION_name.py or "
    "VERSION_name.up.sql, or move it out of the folder"
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
    """(what, version, detail) of one folder entry; `what` is one of the constants above.

    SQL/PY/FOLDER: a migration (detail: its recorded name). IGNORED: detail says why.
    REFUSED: it looks like a migration but is not one (detail: "what; the fix"); a
    migration skipped for its spelling would be silently missing.
    """
    if name.startswith((".", "__")):
        return IGNORED, 0, "hidden or Python-internal"
    if is_dir and name.lower().endswith((".sql", ".py")):
        return REFUSED, 0, "is not a regular file; remove it from the folder"
    if is_dir:
        version = version_of(name)
        if version is not None:
            return FOLDER, version, name
        if name[:1].isdigit():
            return (
                REFUSED,
                0,
                (
                    "not a migration name (a folder starting with a digit); name it "
                    "VERSION_name, or move it out of the folder"
                ),
            )
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
