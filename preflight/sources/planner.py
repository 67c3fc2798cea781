"""From a read-only inspection, prove the database's state and decide what to write."""

from __future__ import annotations

import logging

from preflight import schema
from preflight.core import TYPE_CHECKING
from preflight.core.errors import DriftError
from preflight.live import history
from preflight.live.database import Inspection
from preflight.sources.migrations import Migration, set_fingerprint
from preflight.sources.source import Plan

if TYPE_CHECKING:
    from preflight.live.records import Applied
    from preflight.schema import drift

log = logging.getLogger("preflight")


def history_key(applied: tuple[Applied, ...] | None) -> tuple[tuple[int, str], ...] | None:
    return None if applied is None else tuple((a.version, a.sha256) for a in applied)


def _drift(
    message: str,
    hint: str,
    diffs: list[drift.Difference],
    migrations: tuple[Migration, ...],
    upto: int,
) -> DriftError:
    """A DriftError listing each difference with the migration that made the expected object
    (snapshots only after the migrations that changed a differing object: not quadratic)."""
    from preflight.schema import drift
    from preflight.sources import evidence  # only for a drift error
    from preflight.sources.replay import replay

    objects = {d.key[1] for d in diffs if d.key}  # a column's: its table's
    stops = evidence.changes_of(migrations[:upto], objects) | {upto}
    steps = replay(migrations[:upto], stops - {0})  # versions 1..upto
    named = drift.with_origins(diffs, [(migrations[i - 1].name, steps[i]) for i in sorted(steps)])
    return DriftError(message, hint, (f"drift: {d.message()}" for d in named))


def accepted_part(
    diffs: list[drift.Difference], accepted: tuple[drift.Difference, ...]
) -> tuple[list[drift.Difference], list[drift.Difference]]:
    """(not accepted, accepted by a forced stamp)"""
    known = {history.difference_key(d) for d in accepted}
    rest = [d for d in diffs if history.difference_key(d) not in known]
    return rest, [d for d in diffs if history.difference_key(d) in known]


def plan(insp: Inspection, migrations: tuple[Migration, ...], strict: bool) -> Plan:
    n = len(migrations)
    fingerprint = set_fingerprint(migrations)
    based_on = history_key(insp.applied)
    head = migrations[-1].name if migrations else None
    if insp.fresh:
        # No replay: there is nothing to protect in a fresh database, so building it is
        # the proof that every migration works from empty, and a failure deletes it.
        return Plan(fingerprint, (), names(migrations), None, head, based_on=based_on)
    if insp.applied is None:
        return _adopt(insp, migrations, strict)
    pending = history.pending(insp.applied, migrations)
    done = n - len(pending)
    from preflight.schema import drift  # nothing to compare a fresh build with
    from preflight.sources.replay import replay  # not for a fresh build (nor the schema reader)

    snaps = replay(migrations, {done, n})
    diffs = drift.diff(snaps[done], insp.live_schema)
    errors, accepted = accepted_part(drift.errors(diffs, strict), insp.accepted)
    _warn_extras(diffs, strict)
    for d in accepted:
        log.info("accepted (stamp --force): %s", d.message())
    if errors:
        raise _drift(
            f"schema drift in {insp.path}: {len(errors)} difference(s) from what "
            f"{migrations[done - 1].name if done else 'no migration'} should have produced",
            "fix the listed objects by hand or restore a backup; nothing was changed",
            errors,
            migrations,
            done,
        )
    warnings = tuple(d.message() for d in diffs if d.kind == "extra" and d not in accepted)
    return Plan(
        fingerprint, (), names(pending), snaps[n], head, warnings, insp.accepted, based_on=based_on
    )


def names(migrations: tuple[Migration, ...]) -> tuple[str, ...]:
    return tuple(m.name for m in migrations)


def _warn_extras(diffs: list[drift.Difference], strict: bool) -> None:
    """Extra objects are warnings (logged even when drift then refuses); --strict makes them drift."""
    if not strict:
        for d in diffs:
            if d.kind == "extra":
                log.warning("extra: %s", d.message())


def _adopt(insp: Inspection, migrations: tuple[Migration, ...], strict: bool) -> Plan:
    """A database with tables but no history: find the one version its schema is at."""
    from preflight.schema import drift

    n = len(migrations)
    fingerprint = set_fingerprint(migrations)
    live = insp.live_schema
    if n == 0:
        extras = drift.diff(schema.Schema(), live)
        _warn_extras(extras, strict)
        return Plan(fingerprint, (), (), schema.Schema(), None, tuple(d.message() for d in extras))
    from preflight.sources import evidence  # adoption only: a fresh build never needs it

    found = evidence.rank(live, migrations)
    if not found.matches:
        k = found.tier[-1]  # the closest
        errs = drift.errors(found.diffs[k], strict)
        _warn_extras(found.diffs[k], strict)
        raise _drift(
            f"{insp.path} has tables but no preflight history, and its schema matches no "
            f"migration; closest is {migrations[k - 1].name} with "
            f"{len(errs)} difference(s)",
            evidence.stamp_hint(migrations, k),
            errs,
            migrations,
            k,
        )
    k = evidence.choose(insp, migrations, found)
    diffs = found.diffs[k]
    _warn_extras(diffs, strict)
    if strict and drift.errors(diffs, True):
        raise _drift(
            f"{insp.path}: extra objects beside {migrations[k - 1].name} (--strict)",
            "drop them or run without --strict",
            drift.errors(diffs, True),
            migrations,
            k,
        )
    log.info(
        "adopt: no history; schema matches %s, recording 1..%d as adopted",
        migrations[k - 1].name,
        migrations[k - 1].version,
    )
    warnings = tuple(d.message() for d in diffs if d.kind == "extra")
    head = migrations[-1].name
    return Plan(
        fingerprint, names(migrations[:k]), names(migrations[k:]), found.head, head, warnings
    )
