"""The application's own SQL functions, for migrations that call them (`--functions`): a .py
file or module defining `register(conn)`, called on each connection that runs migrations."""

from __future__ import annotations

import os
import sqlite3
import sys
import types
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field

from preflight.core.errors import UsageError
from preflight.fast.facts import sha256_bytes

FINGERPRINT_NAME = "<functions>"  # its (name, sha256) entry in the set fingerprint


@dataclass(frozen=True)
class AppFunctions:
    sha256: str  # of the file that defines it
    register: Callable[[sqlite3.Connection], None] = field(compare=False, repr=False)


def _fail(spec: str, what: str) -> UsageError:
    return UsageError(
        f"--functions/PREFLIGHT_FUNCTIONS {spec!r}: {what}",
        "name a .py file or an importable module that defines register(conn)",
    )


def load(spec: str) -> AppFunctions:
    """Import `spec` and prove its register(conn) works on a scratch connection."""
    try:
        if "/" in spec or spec.endswith(".py"):  # a path, not a module name
            path = os.path.abspath(spec)
            with open(path, "rb") as f:
                raw = f.read()
            # Compiled by hand, like .py migrations: no __pycache__ beside the app's files.
            module = types.ModuleType("preflight_app_functions")
            module.__file__ = path
            exec(compile(raw, path, "exec"), module.__dict__)
        else:
            import importlib

            here = os.getcwd()
            added = here not in sys.path
            if added:
                sys.path.insert(0, here)
            try:
                module = importlib.import_module(spec)
            finally:
                if added:
                    sys.path.remove(here)
            path = str(getattr(module, "__file__", "") or "")
            if not path:
                raise _fail(spec, "is a module without a source file")
            with open(path, "rb") as f:
                raw = f.read()
    except UsageError:
        raise
    except OSError as exc:
        raise _fail(spec, f"cannot be read ({exc.strerror or exc})") from None
    except SystemExit as exc:
        raise _fail(spec, f"called sys.exit({exc.code!r}) while loading") from None
    except Exception as exc:
        raise _fail(spec, f"failed to load: {type(exc).__name__}: {exc}") from None
    register = getattr(module, "register", None)
    if not callable(register):
        raise _fail(spec, "defines no register(conn) function")
    with closing(sqlite3.connect(":memory:")) as scratch:
        try:
            register(scratch)
        except Exception as exc:
            raise _fail(spec, f"register(conn) failed: {type(exc).__name__}: {exc}") from None
    return AppFunctions(sha256_bytes(raw), register)
