"""Planning: from a read-only inspection, prove the database's state and decide what to write.

Nothing here writes. A database with history must match what its applied migrations
produce; one without history is adopted at the one version its schema matches.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import drift, history, schema
from .database import Inspection
from .errors import DriftError
from .migrations import Migration, set_fingerprint

log = logging.getLogger("preflight")


@dataclass(frozen=True)
class Plan:
    """What a run will do, decided from a read-only inspection."""

    fingerprint: str  # of the whole migration set, for the failure record
    adopt: tuple[Migration, ...]
    pending: tuple[Migration, ...]
    expected_head: schema.Schema | None  # None: fresh (built from empty), or a cache hit
    warnings: tuple[drift.Difference, ...] = field(default=())

    @property
    def writes(self) -> bool:
        """True when the plan changes the database (adoption or pending migrations)."""
        return bool(self.adopt or self.pending)


def _drift(message: str, hint: str, diffs: list[drift.Difference],
           migrations: tuple[Migration, ...], upto: int,
           steps: dict[int, schema.Schema] | None = None) -> DriftError:
    """A DriftError listing each difference with the migration that made the expected object."""
    if steps is None:
        steps = schema.replay(migrations[:upto], set(range(1, upto + 1)))
    steps = {i: steps[i] for i in range(1, upto + 1)}
    named = drift.with_origins(diffs, [(migrations[i - 1], steps[i]) for i in sorted(steps)])
    error = DriftError(message, hint)
    error.details = tuple(f"drift: {d.message()}" for d in named)
    return error


def plan(insp: Inspection, migrations: tuple[Migration, ...], strict: bool) -> Plan:
    """Decide what to do, proving the database's state first. Reads only."""
    n = len(migrations)
    fingerprint = set_fingerprint(migrations)
    if insp.live is None:
        # inspect was told this schema text was verified at the head of this exact
        # migration set (cache.at_head checked the history): nothing to replay or diff.
        return Plan(fingerprint, (), (), None)
    if insp.fresh:
        # No replay: there is nothing to protect in a fresh database, so building it is
        # the proof that every migration works from empty, and a failure deletes it.
        return Plan(fingerprint, (), migrations, None)
    if insp.applied is None:
        return _adopt(insp, migrations, strict)
    pending = history.pending(insp.applied, migrations)
    done = n - len(pending)
    snaps = schema.replay(migrations, {done, n})
    diffs = drift.diff(snaps[done], insp.live)
    errors = drift.errors(diffs, strict)
    _warn_extras(diffs, strict)
    if errors:
        raise _drift(f"schema drift in {insp.path}: {len(errors)} difference(s) from what "
                     f"{migrations[done - 1].name if done else 'no migration'} should have produced",
                     "fix the listed objects by hand or restore a backup; nothing was changed",
                     errors, migrations, done)
    warnings = tuple(d for d in diffs if d.kind == "extra")
    return Plan(fingerprint, (), pending, snaps[n], warnings)


def _warn_extras(diffs: list[drift.Difference], strict: bool) -> None:
    """Extra objects are warnings (logged even when drift then refuses); --strict makes them drift."""
    if not strict:
        for d in diffs:
            if d.kind == "extra":
                log.warning("extra: %s", d.message())


def _adopt(insp: Inspection, migrations: tuple[Migration, ...], strict: bool) -> Plan:
    """A database with tables but no history: find the one version its schema is at."""
    n = len(migrations)
    fingerprint = set_fingerprint(migrations)
    snaps = schema.replay(migrations, set(range(n + 1)))
    diffs = {k: drift.diff(snaps[k], insp.live) for k in range(1, n + 1)}
    matches = [k for k in range(1, n + 1) if not drift.errors(diffs[k], False)]
    if n == 0:
        extras = drift.diff(snaps[0], insp.live)
        _warn_extras(extras, strict)
        return Plan(fingerprint, (), (), snaps[0], tuple(extras))
    if not matches:
        closest = min(range(1, n + 1), key=lambda k: (len(drift.errors(diffs[k], False)), -k))
        raise _drift(f"{insp.path} has tables but no preflight history, and its schema matches no "
                     f"migration; closest is {migrations[closest - 1].name} with "
                     f"{len(drift.errors(diffs[closest], False))} difference(s)",
                     f"fix the listed objects by hand, or if you know it is at that version, "
                     f"record it with 'preflight stamp {migrations[closest - 1].version} --force'",
                     drift.errors(diffs[closest], False), migrations, closest, snaps)
    k = matches[-1]
    if len(matches) > 1:
        between = migrations[matches[0]:matches[-1]]
        names = ", ".join(migrations[i - 1].name for i in matches)
        if not all(m.executes_nothing for m in between):
            raise DriftError(f"{insp.path} has no preflight history and its schema matches several "
                             f"versions equally ({names}); the migrations between them change "
                             f"data or drop objects that may not exist, so the choice matters",
                             "say which version it is at with 'preflight stamp VERSION'")
        log.warning("adopt: schema matches %s equally; the migrations between them execute no "
                    "statement, so choosing %s makes no difference", names, migrations[k - 1].name)
    _warn_extras(diffs[k], strict)
    if strict and drift.errors(diffs[k], True):
        raise _drift(f"{insp.path}: extra objects beside {migrations[k - 1].name} (--strict)",
                     "drop them or run without --strict", drift.errors(diffs[k], True),
                     migrations, k, snaps)
    log.info("adopt: no history; schema matches %s, recording 1..%d as adopted",
             migrations[k - 1].name, migrations[k - 1].version)
    warnings = tuple(d for d in diffs[k] if d.kind == "extra")
    return Plan(fingerprint, migrations[:k], migrations[k:], snaps[n], warnings)
