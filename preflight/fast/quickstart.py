"""The quick start: every fact of a no-op `run` proven with `facts` alone, in the full start's
order, then exec (docs/performance.md, "Quick start"). Anything else, or any exception, hands
over to `cli.main` with the `facts.Proof` of what was proved: the full start decides and
explains. It never reports an error itself."""

import os
import sys
import time

from preflight.core import ancestry  # imports only os
from preflight.fast import facts
from preflight.fast.facts import EVERY_START, Unproven


def _migrations(values: dict[str, str], hashed: facts.Hashes) -> tuple[str, str, int]:
    """(the folder, the fingerprint, how many files) of the migration set: the guard's own
    files (their hashes kept in `hashed` for the hand-over), or the tool's light facts."""
    source = values["tool"]
    if source == "files":
        folder = os.path.abspath(values["migrations"])
        found = facts.files(folder, hashed)
        named = [(n, s) for _, n, s in found]
        spec = values["functions"]
        if spec and found:  # migrations.set_fingerprint adds the functions module's sha256
            if "/" not in spec and not spec.endswith(".py"):
                raise Unproven("functions module")  # a module name: import machinery decides
            named.append(("<functions>", facts.sha256_of(os.path.abspath(spec))[0]))
        return folder, facts.set_fingerprint(named), len(found)
    from preflight.fast import toolfiles  # os and the facts only

    folder = os.path.abspath(values["app_dir"] or ".")
    paths = toolfiles.LIGHT[source](folder, os.path.realpath(values["db"]), values["tool_cmd"])
    return folder, toolfiles.fingerprint(folder, paths), len(paths)


def start(argv: list[str], environ: dict[str, str], hand_on: bool = False) -> facts.Proof | None:
    """Exec the app if `argv` is a provable no-op `run`; return to hand over otherwise: with
    `hand_on`, the `facts.Proof` of what was proved (the caller then owns its lock)."""
    if argv[:1] != ["run"]:
        return None
    fd = running = -1
    held = checked = False
    db = migrations = ""
    hashed: facts.Hashes = {}
    try:
        values, command = facts.run_options(argv[1:], environ)
        db = os.path.realpath(values["db"])
        backup_dir = facts.backup_folder(db, values["backup_dir"])
        t0 = time.perf_counter()
        if not os.path.isfile(db):
            raise Unproven("no database")
        given = backup_dir if values["backup"] != "never" else None
        facts.check_environment(db, given, True, command)  # the full start names a problem
        if ancestry.replicating() is not None:
            raise Unproven("under litestream replicate")  # the full start refuses (exit 2)
        if values["litestream_config"] and not (
            os.path.isfile(values["litestream_config"]) and facts.which(values["litestream"])
        ):
            raise Unproven("litestream")  # the full start names what is missing
        migrations, fingerprint, count = _migrations(values, hashed)
        t1 = time.perf_counter()
        fd = facts.open_lock(db + facts.LOCK)
        facts.take_lock(fd, db)  # busy: BlockingIOError, hand over
        held = True  # only now may the note be written: a waiting guard keeps its hands off
        running = facts.share_running(db)  # held while the app runs: restore refuses then
        facts.write_note(fd, "run")
        t2 = time.perf_counter()
        if os.path.exists(db + facts.FAILURE):
            raise Unproven("failure record")
        with open(db + facts.CACHE, "rb") as f:
            cached = f.read()
        checked_at, checked_on = facts.cache_checked(cached)
        policy = facts.integrity_policy(values["integrity"])
        if policy != EVERY_START and facts.check_due(policy, checked_at, time.time()):
            raise Unproven("integrity check due")  # the full start runs and records it
        full = facts.cheap_checks(db, policy == EVERY_START)
        conn = facts.connect_ro(db)  # closing it cannot checkpoint the WAL: nothing written
        try:
            if full and facts.quick_check(conn) != "ok":
                raise Unproven("quick_check")
            checked = full
            recorded = facts.recorded_in(conn, values["tool"])
            if recorded is None:
                raise Unproven("no history")
            live = facts.schema_hash(conn)
        finally:
            conn.close()
        key = facts.cache_key(values["tool"], fingerprint, recorded, values["strict"] == "1")
        if cached != facts.cache_text(key, live, checked_at, checked_on):
            raise Unproven("cache")
        keep = int(values["keep_backups"])
        if values["backup"] != "never" and keep > 0 and os.path.isdir(backup_dir):
            stem = os.path.splitext(os.path.basename(db))[0]
            if len(facts.recorded_backups(os.listdir(backup_dir), stem)) > keep:
                raise Unproven("prune")
        t3 = time.perf_counter()
        facts.let_go(fd)
        fd = -1
    except Exception:  # anything unexpected, too: the full start decides and explains
        if running >= 0:
            os.close(running)
        if fd >= 0 and not held:
            os.close(fd)
        proof = facts.Proof(db, migrations, fd if held else -1, hashed, checked)
        if hand_on and db:
            return proof
        proof.release()
        return None
    what = "file(s)" if values["tool"] == "files" else f"{values['tool']} file(s)"
    if checked:
        integrity = "quick_check ok"
    elif policy == facts.BEFORE_WRITES:
        integrity = "header and size ok, quick_check only before writes"
    else:
        ago = facts.span(int(time.time()) - checked_at)
        integrity = f"header and size ok, last quick_check {ago} ago"
    lines = [
        f"migrations: {count} {what} as verified before in {(t1 - t0) * 1000:.0f} ms",
        f"lock: acquired in {(t2 - t1) * 1000:.0f} ms",
        f"inspect: {len(recorded)} applied, schema as verified before (cache), "
        f"{integrity} in {(t3 - t2) * 1000:.0f} ms",
        "plan: 0 pending, history and schema verified in 0 ms",
        f"exec: {' '.join(command)}",
    ]
    if values["log_level"] not in ("warning", "error"):
        sys.stderr.write("".join(f"preflight: {line}\n" for line in lines))
        sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError:
        os.close(running)
    return None  # the full start reports it (exit 7)
