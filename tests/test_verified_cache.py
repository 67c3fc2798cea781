"""The verified-state cache is written from what verify proved AFTER migrating."""

from __future__ import annotations

import json
import sqlite3

from conftest import MIGRATIONS, folder_state, spawn

CACHE = "app.db.preflight-cache.json"


def test_after_an_upgrade_that_drops_a_warned_about_table_the_next_start_is_quick_and_quiet(
    cli, make_db
):
    db = make_db("v0.9.5")  # StarPunk's schema_migrations: an extra table, dropped by 005
    first = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert first.code == 0, first
    assert "extra: table schema_migrations" in first.err  # true before migrating
    assert json.loads((db.parent / CACHE).read_text())["warnings"] == []
    state = folder_state(db.parent)
    again = spawn("run", "--db", db, "--migrations", MIGRATIONS, "--", "true")
    assert again.returncode == 0, again.stderr
    assert "schema as verified before (cache)" in again.stderr and "exec: true" in again.stderr
    assert "extra" not in again.stderr and "warning" not in again.stderr
    assert folder_state(db.parent) == state


def test_an_extra_object_still_there_after_migrating_is_still_cached_as_a_warning(
    cli, make_db, make_migrations
):
    db = make_db("v0.9.5")
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE app_notes_archive (id INTEGER PRIMARY KEY)")
    conn.close()
    assert cli("migrate", "--db", db, "--migrations", MIGRATIONS).code == 0
    warnings = json.loads((db.parent / CACHE).read_text())["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("table app_notes_archive")
    second = cli("migrate", "--db", db, "--migrations", MIGRATIONS)
    assert second.code == 0 and "(cache)" in second.err
    assert "extra: table app_notes_archive" in second.err
    assert "schema_migrations" not in second.err
