"""What holds for every migration tool (Alembic, Flask-Migrate, Django) and not for the
guard's own files: the tool's own program, the app's configuration, the scratch build and
`prepare`. One app over each tool (`sourcekit`), the real tools, real subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, clean_env, folder_state, sha
from sourcekit import FIX, TOOL_CMD, TOOLS, Kit, execute


@pytest.fixture(params=TOOLS)
def source(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def without_tool_cache(state: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in state.items() if "preflight-tool" not in k}


def test_a_no_op_start_runs_neither_the_tool_nor_the_app(kit: Kit, tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    marker = tmp_path / "started"
    # --tool-cmd as given: the program from PATH (empty here), not the guard's interpreter
    cmd = ("--tool-cmd", TOOL_CMD[kit.name])
    result = kit.guard("run", *cmd, "--", "/bin/sh", "-c", f"echo ok > {marker}", path=str(empty))
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "ok\n"
    assert "as verified before (cache)" in result.stderr
    # Without the caches the guard needs the tool (and says so): the no-op start did not.
    (kit.db.parent / "app.db.preflight-cache.json").unlink()
    (kit.db.parent / "app.db.preflight-tool.json").unlink()
    blind = kit.guard("run", *cmd, "--", "/bin/true", path=str(empty))
    assert blind.returncode == 7 and TOOL_CMD[kit.name].split()[0] in blind.stderr


def test_a_migration_failing_on_an_empty_database_never_touches_the_live_one(kit: Kit) -> None:
    kit.add("bad", "INSERT INTO nowhere VALUES (1)")
    before = folder_state(kit.db.parent)
    result = kit.guard("migrate")
    assert result.returncode == 9, result.stderr
    assert "live one was not touched" in result.stderr
    after = folder_state(kit.db.parent)
    assert after.pop("app.db.preflight-failure.json")
    assert without_tool_cache(after) == without_tool_cache(before)


def test_a_fresh_database_stops_at_a_scratch_failure_before_any_live_run(fresh: Kit) -> None:
    """A migration that fails on the empty scratch database fails a fresh volume too: exit
    9 before the tool ever runs on the live path, the error line naming the cause."""
    fresh.add("bad", "INSERT INTO nowhere VALUES (1)")
    result = fresh.guard("migrate")
    assert result.returncode == 9, result.stderr
    assert "no such table" in result.stderr and "live one was not touched" in result.stderr
    assert fresh.runs not in result.stderr  # never run on the live path
    assert not fresh.db.exists()


def test_a_tool_ignoring_the_database_it_is_given_is_refused_with_the_line_to_add(
    fresh: Kit,
) -> None:
    fresh.ignore_database()
    result = fresh.guard("migrate")
    assert result.returncode == 2, result.stderr
    assert FIX[fresh.name] in result.stderr
    assert not fresh.db.exists()
    assert not (fresh.folder / "db.sqlite3").exists()  # Django's default: not made either


def test_an_app_writing_its_own_configured_file_on_a_fresh_volume_leaves_nothing(
    fresh: Kit,
) -> None:
    """The app ignores the database it is given and its own URL is the live path: the
    scratch build writes the live database; refused (exit 2), and the file it made is
    removed, so the volume is as it was (empty) and the next, fixed start builds it."""
    originals = fresh.ignore_database(own=str(fresh.db))
    result = fresh.guard("migrate")
    assert result.returncode == 2, result.stderr
    assert "did not write the database it was given" in result.stderr or (
        "did not use the database it was given" in result.stderr  # Django: its NAME, read first
    )
    assert folder_state(fresh.db.parent) == {} and not fresh.db.exists()
    for path, text in originals.items():
        path.write_text(text)
    again = fresh.guard("migrate")
    assert again.returncode == 0, again.stderr
    assert fresh.recorded() == fresh.head


def test_prepare_builds_the_expected_schemas_into_the_image_and_a_start_uses_them(
    fresh: Kit,
) -> None:
    """`RUN preflight prepare` in the Dockerfile: the scratch build moves to the image build;
    a start then builds nothing, and one without that step builds exactly once."""
    done = fresh.guard("prepare")
    assert done.returncode == 0, done.stderr
    assert (fresh.folder / ".preflight-scratch.json").is_file()
    assert not fresh.db.exists() and list(fresh.db.parent.iterdir()) == []  # no database
    first = fresh.guard("migrate")
    assert first.returncode == 0, first.stderr
    assert "expected schemas from the image" in first.stderr
    assert "on an empty database" not in first.stderr
    assert fresh.recorded() == fresh.head
    (fresh.folder / ".preflight-scratch.json").unlink()
    other = fresh.db.parent / "other.db"
    second = fresh.guard("migrate", PREFLIGHT_DB=str(other))
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("on an empty database") == 1
    assert fresh.recorded(other) == fresh.head


def test_prepare_for_the_guards_own_files_has_nothing_to_build(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "preflight", "prepare", "--db", str(tmp_path / "app.db")],
        env=clean_env({"PYTHONPATH": str(REPO)}),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "nothing to build" in done.stderr and not (tmp_path / "app.db").exists()


@pytest.mark.parametrize("source", ["alembic", "flask-migrate"])
def test_a_half_migrated_database_is_drift(kit: Kit) -> None:
    """A batch operation's table copy left behind by a killed run."""
    execute(kit.db, "CREATE TABLE _alembic_tmp_posts (id INTEGER)")
    before = sha(kit.db)
    result = kit.guard("migrate")
    assert result.returncode == 4 and "_alembic_tmp_posts" in result.stderr
    assert sha(kit.db) == before


@pytest.mark.parametrize("source", ["flask-migrate", "django"])
def test_an_app_that_migrates_itself_when_imported_is_named(fresh: Kit) -> None:
    """create_app() or AppConfig.ready() running the upgrade: a read-only command of the
    tool changed the database (exit 2 naming it), the live one is untouched."""
    fresh.at(2)
    recorded = fresh.recorded()
    fresh.migrate_on_import()
    before = sha(fresh.db)
    result = fresh.guard("migrate")
    assert result.returncode == 2, result.stderr
    assert "the app migrates its database when it is imported" in result.stderr
    assert "create_app()" in result.stderr and " heads (" not in result.stderr
    assert sha(fresh.db) == before and fresh.recorded() == recorded


def test_a_tool_with_no_stamp_refuses_to_record_a_version_and_says_why(source: str) -> None:
    """docs/tools.md allows adding a tool with no stamp: recording a version (an adoption,
    `preflight stamp`) is then refused with the reason (exit 2), never an internal error."""
    from dataclasses import replace

    from preflight.core.errors import UsageError
    from preflight.sources import tools

    tool = tools.TOOLS[source]
    revisions = ("notes.0001_initial", "notes.0002_tags")
    steps = tools.stamp_commands(tool, revisions, revisions[0], list(tool.command))
    assert steps and all(steps)  # the real tools record a version with their own command
    stampless = replace(tool, stamp_cmd=None, stamp_steps=None)
    with pytest.raises(UsageError, match=f"^{source} has no command recording a version") as e:
        tools.stamp_commands(stampless, revisions, revisions[0], list(tool.command))
    assert e.value.code == 2 and revisions[0] in e.value.message and e.value.hint
