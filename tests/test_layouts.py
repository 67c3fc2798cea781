"""Other runners' file layouts brought over unchanged (issue 9), and ONE file classifier for
every path (issue 10 item 4): the quick start hands over whatever `migrate` would refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import folder_state, rows, sha

from preflight.core import names
from preflight.core.errors import HistoryError
from preflight.fast import facts
from preflight.sources import migrations

CREATE = (
    "CREATE TABLE item (id INTEGER PRIMARY KEY, label TEXT);\nINSERT INTO item VALUES (1, 'a');\n"
)
ADD = "ALTER TABLE item ADD COLUMN price INTEGER NOT NULL DEFAULT 0;\n"
DROP = "DROP TABLE item;\n"  # every down section/file: it must never run


def build(root: Path, files: dict[str, str]) -> Path:
    """A migrations folder from relative paths (folders created as needed)."""
    folder = root / "migrations"
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    folder.mkdir(exist_ok=True)
    return folder


LAYOUTS = {
    "golang-migrate": (
        {
            "000001_create_item.up.sql": CREATE,
            "000001_create_item.down.sql": DROP,
            "000002_add_price.up.sql": ADD,
            "000002_add_price.down.sql": DROP,
            "README.md": "notes",
        },
        [
            (1, "000001_create_item.up.sql", "000001_create_item.up.sql"),
            (2, "000002_add_price.up.sql", "000002_add_price.up.sql"),
        ],
    ),
    "sqlx-timestamps": (
        {
            "20220101120000_create_item.sql": CREATE,
            "20220301090000_add_price.up.sql": ADD,
            "20220301090000_add_price.down.sql": DROP,
        },
        [
            (20220101120000, "20220101120000_create_item.sql", "20220101120000_create_item.sql"),
            (20220301090000, "20220301090000_add_price.up.sql", "20220301090000_add_price.up.sql"),
        ],
    ),
    "dbmate": (
        {
            "20151129054053_create_item.sql": f"-- migrate:up\n{CREATE}\n-- migrate:down\n{DROP}",
            "20151130000000_add_price.sql": f"-- a note\n-- migrate:up transaction:false\n{ADD}-- migrate:down\n{DROP}",
        },
        [
            (20151129054053, "20151129054053_create_item.sql", "20151129054053_create_item.sql"),
            (20151130000000, "20151130000000_add_price.sql", "20151130000000_add_price.sql"),
        ],
    ),
    "goose": (
        {
            "00001_create_item.sql": f"-- +goose Up\n{CREATE}-- +goose Down\n{DROP}",
            "00002_add_price.sql": f"-- +goose Up\n-- +goose StatementBegin\n{ADD}"
            "CREATE TRIGGER item_price AFTER INSERT ON item BEGIN\n"
            "  UPDATE item SET price = 1 WHERE id = new.id;\nEND;\n"
            "-- +goose StatementEnd\n"
            f"-- +goose Down\n-- +goose StatementBegin\n{DROP}"
            "-- +goose StatementEnd\n",
        },
        [
            (1, "00001_create_item.sql", "00001_create_item.sql"),
            (2, "00002_add_price.sql", "00002_add_price.sql"),
        ],
    ),
    "prisma": (
        {
            "20210101000000_init/migration.sql": CREATE,
            "20210202000000_price/migration.sql": ADD,
            "migration_lock.toml": 'provider = "sqlite"\n',
        },
        [
            (20210101000000, "20210101000000_init", "20210101000000_init/migration.sql"),
            (20210202000000, "20210202000000_price", "20210202000000_price/migration.sql"),
        ],
    ),
    "diesel": (
        {
            "2017-11-23-064236_create_item/up.sql": CREATE,
            "2017-11-23-064236_create_item/down.sql": DROP,
            "2017-11-24-000000_add_price/up.sql": ADD,
            "2017-11-24-000000_add_price/down.sql": DROP,
            ".keep": "",
        },
        [
            (
                20171123064236,
                "2017-11-23-064236_create_item",
                "2017-11-23-064236_create_item/up.sql",
            ),
            (20171124000000, "2017-11-24-000000_add_price", "2017-11-24-000000_add_price/up.sql"),
        ],
    ),
    "drizzle": (
        {
            "0000_careful_thor.sql": CREATE.replace(";\n", ";\n--> statement-breakpoint\n", 1),
            "0001_brave_loki.sql": ADD,
            "meta/_journal.json": "{}",
            "meta/0000_snapshot.json": "{}",
        },
        [
            (0, "0000_careful_thor.sql", "0000_careful_thor.sql"),
            (1, "0001_brave_loki.sql", "0001_brave_loki.sql"),
        ],
    ),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_runners_layout_is_brought_over_unchanged(cli, tmp_path, data_dir, layout):
    files, expected = LAYOUTS[layout]
    folder = build(tmp_path, files)
    found = migrations.discover(folder)
    assert [(m.version, m.name, m.sha256) for m in found] == [
        (v, n, sha(folder / f)) for v, n, f in expected
    ]
    assert facts.files(str(folder)) == [(v, n, sha(folder / f)) for v, n, f in expected]
    db = data_dir / "app.db"
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT id, label, price FROM item") == [(1, "a", 0)]  # no down ever ran
    assert rows(db, "SELECT version, name, sha256 FROM _preflight_history ORDER BY version") == [
        (v, n, sha(folder / f)) for v, n, f in expected
    ]
    assert cli("check", "--db", db, "--migrations", folder).code == 0


def test_a_down_file_may_change_without_touching_anything(cli, tmp_path, data_dir):
    files, _ = LAYOUTS["golang-migrate"]
    folder = build(tmp_path, files)
    db = data_dir / "app.db"
    assert cli("migrate", "--db", db, "--migrations", folder).code == 0
    (folder / "000002_add_price.down.sql").write_text("ALTER TABLE item DROP COLUMN price;\n")
    state = folder_state(data_dir)
    assert cli("check", "--db", db, "--migrations", folder).code == 0
    assert folder_state(data_dir) == state


def test_only_the_up_section_runs_and_line_numbers_stay_the_files(tmp_path):
    folder = build(
        tmp_path,
        {"001_x.sql": "-- migrate:up\nCREATE TABLE a (x);\n\nVACUUM;\n-- migrate:down\nVACUUM;\n"},
    )
    with pytest.raises(HistoryError, match=r"001_x.sql: line 4: VACUUM is not allowed"):
        migrations.discover(folder)
    (folder / "001_x.sql").write_text(
        "-- migrate:up\nCREATE TABLE a (x);\n-- migrate:down\nVACUUM;\n"
    )
    (m,) = migrations.discover(folder)
    assert [(s.sql, s.line) for s in m.statements] == [("CREATE TABLE a (x);", 2)]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "CREATE TABLE a (x);\n-- migrate:up\nCREATE TABLE b (x);\n",
            "SQL before the up section marker on line 2",
        ),
        ("-- migrate:down\nDROP TABLE a;\n", "line 1: a down section without an up section"),
        (
            "-- migrate:up\nSELECT 1;\n-- migrate:up\nSELECT 2;\n",
            "line 3: a second up section marker",
        ),
        (
            "-- +goose Down\nSELECT 1;\n-- +goose Up\nSELECT 2;\n",
            "line 3: the up section follows the down section",
        ),
        (
            "-- +goose Up\n-- +goose ENVSUB ON\nSELECT '${X}';\n",
            "line 2: -- +goose ENVSUB is not supported",
        ),
    ],
    ids=["sql-before-up", "down-only", "two-ups", "down-first", "goose-envsub"],
)
def test_odd_section_markers_are_refused(cli, tmp_path, data_dir, text, message):
    folder = build(tmp_path, {"001_x.sql": text})
    result = cli("migrate", "--db", data_dir / "app.db", "--migrations", folder)
    assert result.code == 5, result
    assert f"001_x.sql: {message}" in result.err
    assert folder_state(data_dir) == {}


REFUSED_ENTRIES = {
    "upper-case-suffix": ({"006_x.SQL": "SELECT 1;"}, "006_x.SQL: not a migration name"),
    "upper-case-py": ({"006_x.PY": "def migrate(conn): pass\n"}, "006_x.PY: not a migration name"),
    "go-migration": ({"20200101000000_x.go": "package m"}, "20200101000000_x.go: not a migration"),
    "backup-copy": ({"006_x.sql.orig": "SELECT 1;"}, "006_x.sql.orig: not a migration name"),
    "no-version": ({"schema.sql": "SELECT 1;"}, "schema.sql: not a migration name"),
    "no-label": ({"006.sql": "SELECT 1;"}, "006.sql: not a migration name"),
    "unicode-digit": ({"٠٠٦_x.sql": "SELECT 1;"}, "not a migration name"),
    "empty-folder": (
        {"20210101000000_x/notes.md": ""},
        "20210101000000_x: holds neither up.sql nor migration.sql",
    ),
    "two-files-in-folder": (
        {"20210101000000_x/up.sql": "SELECT 1;", "20210101000000_x/migration.sql": "SELECT 1;"},
        "20210101000000_x: holds migration.sql and up.sql",
    ),
    "odd-file-in-folder": (
        {"20210101000000_x/up.sql": "SELECT 1;", "20210101000000_x/seed.sql": "SELECT 1;"},
        "20210101000000_x/seed.sql: not a migration file",
    ),
    "folder-named-like-a-file": (
        {"006_dir.sql/up.sql": "SELECT 1;"},
        "006_dir.sql: is not a regular",
    ),
    "digit-folder": ({"7days/up.sql": "SELECT 1;"}, "7days: not a migration name"),
    "duplicate-version": (
        {"001_a.sql": "SELECT 1;", "1_b.up.sql": "SELECT 1;"},
        "001_a.sql and 1_b.up.sql share number 1",
    ),
    "duplicate-folder-version": (
        {"001_a.sql": "SELECT 1;", "0-0-1_b/up.sql": "SELECT 1;"},
        "share number 1",
    ),
}


@pytest.mark.parametrize(
    "files, message", list(REFUSED_ENTRIES.values()), ids=list(REFUSED_ENTRIES)
)
def test_an_entry_that_is_neither_a_migration_nor_ignorable_is_refused_by_every_path(
    cli, tmp_path, data_dir, files, message
):
    folder = build(tmp_path, {"000_base.sql": "CREATE TABLE base (x);\n", **files})
    with pytest.raises(facts.Unproven):
        facts.files(str(folder))
    result = cli("migrate", "--db", data_dir / "app.db", "--migrations", folder)
    assert result.code == 5, result
    assert message in result.err and "(exit 5)" in result.err
    assert folder_state(data_dir) == {}


IGNORED = [
    "README.md",
    "notes.txt",
    ".keep",
    ".006_x.sql.swp",
    "__init__.py",
    "migration_lock.toml",
    "meta/_journal.json",
    "meta/0000_snapshot.json",
    "__pycache__/x.pyc",
    "001_a.down.sql",
    "Makefile",
    "embed.go",
]


def test_ignored_entries_are_ignored_by_every_path(tmp_path):
    folder = build(
        tmp_path,
        {"001_a.sql": "CREATE TABLE a (x);\n", **{name: "not a migration; (x" for name in IGNORED}},
    )
    (m,) = migrations.discover(folder)
    assert m.name == "001_a.sql"
    assert facts.files(str(folder)) == [(1, "001_a.sql", m.sha256)]


@pytest.mark.parametrize(
    "name, is_dir",
    [
        ("001_a.sql", False),
        ("001_a.py", False),
        ("001_a.up.sql", False),
        ("001_a.down.sql", False),
        ("001_a.SQL", False),
        ("001_a.Sql", False),
        ("001-a.sql", False),
        ("a_001.sql", False),
        ("001_.sql", False),
        ("001_-x.sql", False),
        ("001_a b.sql", False),
        ("0001_ä.sql", False),
        ("2017-11-23-064236_x", True),
        ("-1_x", True),
        ("1-_x", True),
        ("meta", True),
        ("20210101000000_x", True),
        ("001_a.sql", True),
        ("README", False),
        ("9", False),
        ("001_a.sqlx", False),
        (".git", True),
        ("__pycache__", True),
    ],
)
def test_one_rule_decides_for_discover_and_the_quick_start(tmp_path, name, is_dir):
    """Whatever discover decides, the quick start agrees or hands over: it never skips a
    file discover would run or refuse."""
    folder = tmp_path / "m"
    folder.mkdir()
    target = folder / name
    if is_dir:
        target.mkdir()
        (target / "up.sql").write_text("CREATE TABLE a (x);\n")
    else:
        target.write_text(
            "CREATE TABLE a (x);\n"
            if not name.endswith(".py")
            else "def migrate(conn):\n    pass\n"
        )
    what = names.classify(name, is_dir)[0]
    try:
        found = [(m.version, m.name, m.sha256) for m in migrations.discover(folder)]
    except HistoryError:
        assert what == names.REFUSED or is_dir
        with pytest.raises(facts.Unproven):
            facts.files(str(folder))
        return
    assert facts.files(str(folder)) == found
    assert (what == names.IGNORED) == (found == [])
