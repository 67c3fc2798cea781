"""Foreign-key baseline: a run fails only for violations it introduced and left; orphans
that were already there (SQLite enforces nothing unless asked) are warned about and listed."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import dump, folder_state, rows

from preflight.schema import foreignkeys

BASE = {
    "001_users.sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\n"
    "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER "
    "REFERENCES users(id), body TEXT);",
}


def app_writes(db: Path, sql: str) -> None:
    """The app's own connection: plain sqlite3, foreign keys off (SQLite's default)."""
    conn = sqlite3.connect(db)
    conn.executescript(sql)
    conn.close()


def at_001_with_an_orphan(cli, make_db, make_migrations) -> Path:
    db = make_db("fresh")
    assert cli("migrate", "--db", db, "--migrations", make_migrations(BASE)).code == 0
    app_writes(
        db,
        "INSERT INTO users VALUES (1, 'ann');"
        "INSERT INTO posts VALUES (1, 1, 'ok'), (2, 42, 'orphan');",
    )
    return db


def test_a_pre_existing_orphan_does_not_fail_the_upgrade_and_is_warned_about(
    cli, make_db, make_migrations
):
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    folder = make_migrations({**BASE, "002_tags.sql": "ALTER TABLE posts ADD COLUMN tag TEXT;"})
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert (
        "foreign keys: 1 foreign key violation(s): posts rowid 2 (user_id=42) -> users"
        in result.err
        and "already present before this run" in result.err
    )
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(2,)]


def test_status_and_check_list_pre_existing_violations_in_text_and_json(
    cli, make_db, make_migrations
):
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    folder = make_migrations({**BASE, "002_tags.sql": "ALTER TABLE posts ADD COLUMN tag TEXT;"})
    state = folder_state(db.parent)
    for command in ("status", "check"):
        result = cli(command, "--db", db, "--migrations", folder, "--json")
        assert result.code == 3, result
        report = json.loads(result.out)
        assert report["foreign_key_violation_count"] == 1
        assert report["foreign_key_violations"] == [
            {
                "table": "posts",
                "rowid": 2,
                "parent": "users",
                "columns": ["user_id"],
                "values": [42],
            }
        ]
        assert "posts rowid 2 (user_id=42) -> users" in result.err
    assert folder_state(db.parent) == state


def test_strict_makes_pre_existing_violations_errors_and_changes_nothing(
    cli, make_db, make_migrations
):
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    folder = make_migrations({**BASE, "002_tags.sql": "ALTER TABLE posts ADD COLUMN tag TEXT;"})
    state = folder_state(db.parent)
    result = cli("migrate", "--db", db, "--migrations", folder, "--strict")
    assert result.code == 4, result
    assert "posts rowid 2 (user_id=42) -> users" in result.err and "--strict" in result.err
    assert folder_state(db.parent) == state
    assert cli("check", "--db", db, "--migrations", folder, "--strict").code == 4


def test_an_untracked_database_with_orphans_is_adopted_and_upgraded(cli, make_db, make_migrations):
    db = make_db("fresh")
    app_writes(db, BASE["001_users.sql"] + "INSERT INTO posts VALUES (7, 99, 'orphan');")
    folder = make_migrations({**BASE, "002_tags.sql": "ALTER TABLE posts ADD COLUMN tag TEXT;"})
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT version, how FROM _preflight_history") == [
        (1, "adopted"),
        (2, "applied"),
    ]


def test_a_violation_made_by_one_migration_and_removed_by_a_later_one_is_fine(
    cli, make_db, make_migrations
):
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    folder = make_migrations(
        {
            **BASE,
            "002_staging.sql": "CREATE TABLE staging (id INTEGER PRIMARY KEY, "
            "post_id INTEGER REFERENCES posts(id));\n"
            "INSERT INTO staging VALUES (1, 1000);",
            "003_drop_staging.sql": "DROP TABLE staging;",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(3,)]


def test_a_violation_the_run_introduces_and_leaves_fails_it_naming_the_row(
    cli, make_db, make_migrations
):
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    before = dump(db)
    folder = make_migrations({**BASE, "002_bad.sql": "INSERT INTO posts VALUES (3, 77, 'new');"})
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 9, result
    assert "1 foreign key violation(s): posts rowid 3 (user_id=77) -> users" in result.err
    assert "rowid 2" not in result.err.split("the migrations leave")[1].split("\n")[0]
    assert dump(db) == before


def test_a_rebuilt_table_keeps_its_old_orphans_old(cli, make_db, make_migrations):
    """The 12-step rebuild renumbers rowids: a violation is its row's values, not its rowid."""
    db = make_db("fresh")
    files = {
        "001_c.sql": "CREATE TABLE p (id INTEGER PRIMARY KEY);\n"
        "CREATE TABLE c (name TEXT, p_id INTEGER REFERENCES p(id));"
    }
    assert cli("migrate", "--db", db, "--migrations", make_migrations(files)).code == 0
    app_writes(db, "INSERT INTO p VALUES (1); INSERT INTO c VALUES ('a', 1), ('b', 5), ('c', 1);")
    folder = make_migrations(
        {
            **files,
            "002_rebuild.sql": "CREATE TABLE c_new (name TEXT NOT NULL, p_id INTEGER "
            "REFERENCES p(id));\n"
            "INSERT INTO c_new SELECT name, p_id FROM c ORDER BY name DESC;\n"
            "DROP TABLE c;\nALTER TABLE c_new RENAME TO c;",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT rowid FROM c WHERE p_id = 5") == [(2,)]


def test_without_rowid_rows_are_read_by_their_primary_key(cli, make_db, make_migrations):
    """PRAGMA foreign_key_check names no row in a WITHOUT ROWID table: the guard finds the
    rows by their primary key, so the old one stays old and the new one is named."""
    db = make_db("fresh")
    files = {
        "001_c.sql": "CREATE TABLE p (id INTEGER PRIMARY KEY);\n"
        "CREATE TABLE c (k TEXT PRIMARY KEY, p_id INTEGER REFERENCES p(id)) "
        "WITHOUT ROWID;"
    }
    assert cli("migrate", "--db", db, "--migrations", make_migrations(files)).code == 0
    app_writes(db, "INSERT INTO c VALUES ('old', 5);")
    fine = make_migrations({**files, "002_x.sql": "CREATE TABLE x (id INTEGER PRIMARY KEY);"})
    assert cli("migrate", "--db", db, "--migrations", fine).code == 0
    before = dump(db)
    bad = make_migrations(
        {
            **files,
            "002_x.sql": "CREATE TABLE x (id INTEGER PRIMARY KEY);",
            "003_more.sql": "INSERT INTO c VALUES ('new', 6);",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", bad)
    assert result.code == 9, result
    assert "1 foreign key violation(s): c row k='new' (p_id=6) -> p" in result.err
    assert dump(db) == before


def test_a_foreign_key_sqlite_cannot_check_is_skipped_with_a_warning(cli, make_db, make_migrations):
    """REFERENCES a column that is not unique: PRAGMA foreign_key_check raises 'mismatch'."""
    db = make_db("fresh")
    app_writes(
        db,
        "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE TABLE c (x TEXT REFERENCES p(name)); INSERT INTO c VALUES ('a');",
    )
    folder = make_migrations(
        {
            "001_p.sql": "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT);\n"
            "CREATE TABLE c (x TEXT REFERENCES p(name));",
            "002_q.sql": "CREATE TABLE q (id INTEGER PRIMARY KEY);",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert "cannot check c: foreign key mismatch" in result.err


def test_renaming_the_parent_or_the_child_column_keeps_old_orphans_old(
    cli, make_db, make_migrations
):
    """ALTER TABLE ... RENAME rewrites the child's REFERENCES (and a renamed column keeps its
    values): the orphan moves under new names, the run introduced nothing."""
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    folder = make_migrations(
        {
            **BASE,
            "002_rename.sql": "ALTER TABLE users RENAME TO accounts;\n"
            "ALTER TABLE posts RENAME COLUMN user_id TO account_id;",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert "posts rowid 2 (user_id=42) -> users already present" in result.err  # warned, not blamed
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(2,)]


def test_orphaning_rows_under_new_names_is_still_introduced(cli, make_db, make_migrations):
    """The loose match is by the dangling values: deleting a parent that rows pointed at
    makes values dangle that did not before, renamed or not."""
    db = at_001_with_an_orphan(cli, make_db, make_migrations)
    before = dump(db)
    folder = make_migrations(
        {
            **BASE,
            "002_rename_and_purge.sql": "ALTER TABLE users RENAME TO accounts;\n"
            "DELETE FROM accounts WHERE id = 1;",
        }
    )
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 9, result
    assert "1 foreign key violation(s): posts rowid 1 (user_id=1) -> accounts" in result.err
    assert dump(db) == before


# --- issue 19: old orphans followed through renames and rebuilds, new ones caught --------

BLOG = {
    "001_blog.sql": "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\n"
    "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), "
    "body TEXT);\n"
    "CREATE TABLE comments (id INTEGER PRIMARY KEY, post_id INTEGER REFERENCES posts(id), "
    "body TEXT);"
}
COMMENTS = "(id INTEGER PRIMARY KEY, post_id INTEGER REFERENCES posts(id), body TEXT)"


def blog_with_orphans(cli, make_db, make_migrations) -> Path:
    """users 1; posts 1 (ok) and 2 (user_id=42, an orphan); comments 1 (ok), 2 and 5
    (post_id=7, two orphans), as an app with foreign keys off leaves them."""
    db = make_db("fresh")
    assert cli("migrate", "--db", db, "--migrations", make_migrations(BLOG)).code == 0
    app_writes(
        db,
        "INSERT INTO users VALUES (1, 'ann');"
        "INSERT INTO posts VALUES (1, 1, 'ok'), (2, 42, 'orphan');"
        "INSERT INTO comments VALUES (1, 1, 'ok'), (2, 7, 'orphan'), (5, 7, 'orphan');",
    )
    return db


def rebuild(table: str, create: str, style: str) -> str:
    """The SQL of one table rebuild, the ways real projects write it."""
    if style == "12-step":  # SQLite's documented order; new rowids (copied in reverse)
        cols = "post_id, body" if table == "comments" else "user_id, body"
        return (
            f"CREATE TABLE {table}_new {create};\n"
            f"INSERT INTO {table}_new ({cols}) SELECT {cols} FROM {table} ORDER BY id DESC;\n"
            f"DROP TABLE {table};\nALTER TABLE {table}_new RENAME TO {table};"
        )
    if style == "rename-away":  # authelia's order; legacy_alter_table keeps children's keys
        return (
            f"PRAGMA legacy_alter_table = ON;\nALTER TABLE {table} RENAME TO _bkp_{table};\n"
            f"CREATE TABLE {table} {create};\n"
            f"INSERT INTO {table} SELECT * FROM _bkp_{table};\nDROP TABLE _bkp_{table};"
        )
    assert style == "temp-table"  # the old SQLite FAQ's way
    return (
        f"CREATE TEMP TABLE backup AS SELECT * FROM {table};\nDROP TABLE {table};\n"
        f"CREATE TABLE {table} {create};\n"
        f"INSERT INTO {table} SELECT * FROM backup;\nDROP TABLE backup;"
    )


NEW_ORPHANS = {
    # the case: the old orphan comment goes, a post gets the same dangling value
    "same value, other table and parent": "DELETE FROM comments WHERE post_id = 7;\n"
    "INSERT INTO posts VALUES (3, 7, 'new');",
    "same value and parent, another child table": "CREATE TABLE likes (id INTEGER PRIMARY "
    "KEY, post_id INTEGER REFERENCES posts(id));\n"
    "DELETE FROM comments WHERE id = 2;\nINSERT INTO likes VALUES (1, 7);",
    "same value, a new row in the same table": "DELETE FROM comments WHERE id = 2;\n"
    "INSERT INTO comments VALUES (3, 7, 'new');",
    "same value, another column": "ALTER TABLE comments ADD COLUMN reply_to INTEGER "
    "REFERENCES posts(id);\nUPDATE comments SET post_id = 1, reply_to = 7 WHERE id = 2;",
    "table dropped and created again without its rows": "DROP TABLE comments;\n"
    f"CREATE TABLE comments {COMMENTS};\nINSERT INTO comments VALUES (2, 7, 'new');",
    "a new orphan in a renamed table": "ALTER TABLE comments RENAME TO notes;\n"
    "INSERT INTO notes VALUES (3, 7, 'new');",
    "a rebuild that points the key at another parent": "CREATE TABLE c2 (id INTEGER PRIMARY "
    "KEY, post_id INTEGER REFERENCES users(id), body TEXT);\n"
    "INSERT INTO c2 SELECT * FROM comments;\nDROP TABLE comments;\n"
    "ALTER TABLE c2 RENAME TO comments;",
    "a rebuild that copies in a new dangling value": "CREATE TABLE c2 " + COMMENTS + ";\n"
    "INSERT INTO c2 SELECT * FROM comments;\nINSERT INTO c2 VALUES (9, 8, 'new');\n"
    "DROP TABLE comments;\nALTER TABLE c2 RENAME TO comments;",
    "a rebuild plus a new row with an old orphan's value": rebuild("comments", COMMENTS, "12-step")
    + "\nINSERT INTO comments VALUES (9, 7, 'new');",
    "an INSERT ... SELECT of literals (a CTE) into another child table": "CREATE TABLE "
    "likes (id INTEGER PRIMARY KEY, post_id INTEGER REFERENCES posts(id));\n"
    "WITH v(x) AS (SELECT 7) INSERT INTO likes (post_id) SELECT x FROM v;",
    "an UPDATE that copies a dangling value from another table's orphan": "UPDATE comments "
    "SET post_id = (SELECT user_id FROM posts WHERE id = 2) WHERE id = 1;",
}


@pytest.mark.parametrize("sql", NEW_ORPHANS.values(), ids=NEW_ORPHANS.keys())
def test_a_new_orphan_fails_the_run_whatever_old_orphan_it_resembles(
    cli, make_db, make_migrations, sql
):
    db = blog_with_orphans(cli, make_db, make_migrations)
    state = folder_state(db.parent)
    result = cli(
        "migrate", "--db", db, "--migrations", make_migrations({**BLOG, "002_change.sql": sql})
    )
    assert result.code == 9, result
    assert "the migrations leave" in result.err and "rolled back" in result.err
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(1,)]
    assert dump(db) == dump_of(state, db)


def test_a_fresh_build_that_leaves_an_orphan_fails_and_leaves_no_file(
    cli, make_db, make_migrations
):
    """A fresh build is not traced (no table to follow): every orphan it leaves is its own."""
    db = make_db("fresh")
    orphan = {**BASE, "002_seed.sql": "INSERT INTO posts VALUES (1, 42, 'orphan');"}
    result = cli("migrate", "--db", db, "--migrations", make_migrations(orphan))
    assert result.code == 9, result
    assert "the migrations leave 1 foreign key violation(s): posts rowid 1" in result.err
    assert not db.exists()
    fine = {
        **BASE,
        "002_seed.sql": "INSERT INTO users VALUES (42, 'bo');\n"
        "INSERT INTO posts VALUES (1, 42, 'kept');",
    }
    assert cli("migrate", "--db", db, "--migrations", make_migrations(fine)).code == 0
    assert rows(db, "SELECT user_id FROM posts") == [(42,)]


def dump_of(state: dict[str, str], db: Path) -> list[str]:
    """The database file is byte-identical to before the run (then so is its dump)."""
    assert hashlib.sha256(db.read_bytes()).hexdigest() == state[db.name]
    return dump(db)


POSTS = "(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), body TEXT)"
OLD_ORPHANS_MOVED = {
    "parent renamed": "ALTER TABLE posts RENAME TO articles;",
    "child renamed": "ALTER TABLE comments RENAME TO notes;",
    "child and parent renamed": "ALTER TABLE posts RENAME TO articles;\n"
    "ALTER TABLE comments RENAME TO notes;\nALTER TABLE users RENAME TO accounts;",
    "column renamed": "ALTER TABLE comments RENAME COLUMN post_id TO article_id;",
    **{
        f"child rebuilt ({style})": rebuild("comments", COMMENTS, style)
        for style in ("12-step", "rename-away", "temp-table")
    },
    **{
        f"parent rebuilt ({style})": rebuild("posts", POSTS, style)
        for style in ("12-step", "rename-away", "temp-table")
    },
    "child rebuilt with its key declared twice": "CREATE TABLE c2 (id INTEGER PRIMARY KEY, "
    "post_id INTEGER REFERENCES posts(id), body TEXT, FOREIGN KEY (post_id) REFERENCES "
    "posts(id));\nINSERT INTO c2 SELECT * FROM comments;\nDROP TABLE comments;\n"
    "ALTER TABLE c2 RENAME TO comments;",
    "rows fanned out into a new table": "CREATE TABLE post_tags (post_id INTEGER REFERENCES "
    "posts(id), tag TEXT, PRIMARY KEY (post_id, tag)) WITHOUT ROWID;\n"
    "INSERT INTO post_tags SELECT DISTINCT c.post_id, t.tag FROM comments c "
    "JOIN (SELECT 'a' AS tag UNION SELECT 'b') t;",
    "rebuilt, renamed, then rebuilt again": rebuild("comments", COMMENTS, "12-step")
    + "\nALTER TABLE comments RENAME TO notes;\n"
    + rebuild("notes", COMMENTS, "rename-away"),
    "child rebuilt with quoted names (Django, Prisma)": 'CREATE TABLE "new__comments" '
    '("id" integer NOT NULL PRIMARY KEY, "post_id" integer NULL REFERENCES "posts" ("id"), '
    '"body" text NULL);\nINSERT INTO "new__comments" ("id", "post_id", "body") SELECT "id", '
    '"post_id", "body" FROM main."comments";\nDROP TABLE "comments";\n'
    'ALTER TABLE "new__comments" RENAME TO "comments";',
    "rows copied by INSERT ... WITH into a new table": "CREATE TABLE archive (id INTEGER "
    "PRIMARY KEY, post_id INTEGER REFERENCES posts(id));\nWITH old AS (SELECT id, post_id "
    "FROM [Comments]) INSERT INTO archive SELECT * FROM old;",
    "orphans cleaned up in a renamed table": "ALTER TABLE comments RENAME TO notes;\n"
    "DELETE FROM notes WHERE id = 5;",
}


@pytest.mark.parametrize("sql", OLD_ORPHANS_MOVED.values(), ids=OLD_ORPHANS_MOVED.keys())
def test_old_orphans_carried_through_renames_and_rebuilds_stay_old(
    cli, make_db, make_migrations, sql
):
    db = blog_with_orphans(cli, make_db, make_migrations)
    result = cli(
        "migrate", "--db", db, "--migrations", make_migrations({**BLOG, "002_change.sql": sql})
    )
    assert result.code == 0, result
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(2,)]
    conn = sqlite3.connect(db)
    left = conn.execute("PRAGMA foreign_key_check").fetchall()
    conn.close()
    assert left  # the orphans are still there: the run passed them, did not remove them
    if "cleaned" not in sql:
        assert "carried through its renames or rebuilds (not made by it)" in result.err


def test_a_without_rowid_orphan_does_not_fail_a_parent_rename(cli, make_db, make_migrations):
    """Issue 19, case 3: the orphan's values were read as None, so the renamed parent made
    it look new (exit 9). Read by its primary key, it is the same row."""
    db = make_db("fresh")
    files = {
        "001_c.sql": "CREATE TABLE p (id INTEGER PRIMARY KEY);\n"
        "CREATE TABLE c (k TEXT PRIMARY KEY, p_id INTEGER REFERENCES p(id)) WITHOUT ROWID;"
    }
    assert cli("migrate", "--db", db, "--migrations", make_migrations(files)).code == 0
    app_writes(db, "INSERT INTO p VALUES (1); INSERT INTO c VALUES ('ok', 1), ('old', 5);")
    folder = make_migrations({**files, "002_rename.sql": "ALTER TABLE p RENAME TO parents;"})
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert "c row k='old' (p_id=5) -> parents (was c row k='old' (p_id=5) -> p)" in result.err
    assert rows(db, "SELECT max(version) FROM _preflight_history") == [(2,)]


def test_a_python_migration_s_rename_is_followed_too(cli, make_db, make_migrations):
    """The lineage comes from the connection's trace: a .py migration's SQL counts."""
    db = blog_with_orphans(cli, make_db, make_migrations)
    py = (
        "def migrate(conn):\n"
        "    conn.execute('ALTER TABLE comments RENAME TO notes')\n"
        "    conn.execute('ALTER TABLE posts RENAME TO articles')\n"
    )
    result = cli(
        "migrate", "--db", db, "--migrations", make_migrations({**BLOG, "002_rename.py": py})
    )
    assert result.code == 0, result
    state = folder_state(db.parent)
    bad = "def migrate(conn):\n    conn.execute('INSERT INTO notes VALUES (3, 7, \"new\")')\n"
    result = cli(
        "migrate",
        "--db",
        db,
        "--migrations",
        make_migrations({**BLOG, "002_rename.py": py, "003_bad.py": bad}),
    )
    assert result.code == 9, result
    assert "notes rowid 3 (post_id=7) -> articles" in result.err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == state[db.name]


def test_an_adopted_database_whose_orphan_a_migration_fans_out_upgrades(
    cli, make_db, make_migrations
):
    """The shape of pocket-id adopted at 61: a new WITHOUT ROWID table is filled from a join
    over a table holding an orphan; the copies of its dangling value are old."""
    v1 = (
        "CREATE TABLE apis (id TEXT PRIMARY KEY);\n"
        "CREATE TABLE clients (id TEXT PRIMARY KEY);\n"
        "CREATE TABLE permissions (id TEXT PRIMARY KEY, api_id TEXT NOT NULL "
        "REFERENCES apis(id));\n"
        "CREATE TABLE grants (client_id TEXT REFERENCES clients(id), permission_id TEXT "
        "REFERENCES permissions(id), kind TEXT, PRIMARY KEY (client_id, permission_id, kind));"
    )
    db = make_db("fresh")
    app_writes(
        db,
        v1 + "INSERT INTO apis VALUES ('a1'); INSERT INTO clients VALUES ('c1'), ('c2');"
        "INSERT INTO permissions VALUES ('p1', 'a1'), ('p2', 'dangling-apis');"
        "INSERT INTO grants VALUES ('c1', 'p2', 'user'), ('c2', 'p2', 'client'),"
        "('c1', 'p1', 'user');",
    )
    fan_out = (
        "CREATE TABLE client_apis (client_id TEXT NOT NULL REFERENCES clients(id), "
        "api_id TEXT NOT NULL REFERENCES apis(id), kind TEXT NOT NULL, "
        "PRIMARY KEY (client_id, api_id, kind)) WITHOUT ROWID;\n"
        "INSERT INTO client_apis (client_id, api_id, kind)\n"
        "SELECT DISTINCT g.client_id, p.api_id, g.kind FROM grants g "
        "JOIN permissions p ON p.id = g.permission_id;"
    )
    folder = make_migrations({"001_v1.sql": v1, "002_client_apis.sql": fan_out})
    result = cli("migrate", "--db", db, "--migrations", folder)
    assert result.code == 0, result
    assert rows(db, "SELECT how FROM _preflight_history ORDER BY version") == [
        ("adopted",),
        ("applied",),
    ]
    assert rows(db, "SELECT count(*) FROM client_apis WHERE api_id = 'dangling-apis'") == [(2,)]


def test_check_rehearses_the_same_rule_and_changes_nothing(cli, make_db, make_migrations):
    db = blog_with_orphans(cli, make_db, make_migrations)
    state = folder_state(db.parent)
    bad = make_migrations(
        {**BLOG, "002_change.sql": NEW_ORPHANS["same value, other table and parent"]}
    )
    result = cli("check", "--db", db, "--migrations", bad)
    assert result.code == 9, result
    assert "rehearsal on a private copy" in result.err
    assert "posts rowid 3 (user_id=7) -> users" in result.err
    fine = make_migrations(
        {**BLOG, "002_change.sql": OLD_ORPHANS_MOVED["child and parent renamed"]}
    )
    assert cli("check", "--db", db, "--migrations", fine).code == 3
    assert folder_state(db.parent) == state


def test_status_lists_a_without_rowid_orphan_with_its_primary_key(cli, make_db, make_migrations):
    db = make_db("fresh")
    files = {
        "001_c.sql": "CREATE TABLE p (id INTEGER PRIMARY KEY);\n"
        "CREATE TABLE c (a TEXT, b INTEGER, p_id INTEGER REFERENCES p(id), "
        "PRIMARY KEY (b, a)) WITHOUT ROWID;"
    }
    assert cli("migrate", "--db", db, "--migrations", make_migrations(files)).code == 0
    app_writes(db, "INSERT INTO c VALUES ('x', 2, 5), ('y', 3, NULL);")
    result = cli("status", "--db", db, "--migrations", make_migrations(files), "--json")
    assert json.loads(result.out)["foreign_key_violations"] == [
        {
            "table": "c",
            "rowid": None,
            "parent": "p",
            "columns": ["p_id"],
            "values": [5],
            "primary_key": {"b": 2, "a": "x"},
        }
    ]


def run_unwatched(db: Path, sql: str) -> list[str]:
    """What --tool mode does: the baseline read, then another connection migrates."""
    conn = sqlite3.connect(db)
    before = foreignkeys.baseline(foreignkeys.violations(conn))
    conn.close()
    app_writes(db, sql)
    conn = sqlite3.connect(db)
    try:
        return [v.message() for v in foreignkeys.introduced(before, foreignkeys.violations(conn))]
    finally:
        conn.close()


def test_a_run_nobody_watched_still_tells_a_new_orphan_from_an_old_one(
    cli, make_db, make_migrations
):
    db = blog_with_orphans(cli, make_db, make_migrations)
    copy = db.parent / "copy.db"
    copy.write_bytes(db.read_bytes())
    assert run_unwatched(db, NEW_ORPHANS["same value, other table and parent"]) == [
        "posts rowid 3 (user_id=7) -> users"
    ]
    assert run_unwatched(copy, "ALTER TABLE posts RENAME TO articles;") == []
