"""The one entry function (`python -m preflight`, the console script, entrypoint.py, the
image's launcher): the quick start first, else the command line with what it proved."""

import os
import sys

from preflight.fast import quickstart


def main(argv: list[str] | None = None) -> None:
    """Run `argv` (default: sys.argv[1:]) and exit with its code; `run` execs on success."""
    args = sys.argv[1:] if argv is None else list(argv)
    proof = quickstart.start(args, dict(os.environ), hand_on=True)
    try:
        from preflight import cli  # only when the quick start handed over

        code = cli.main(args, proof)
    finally:
        if proof is not None:
            proof.release()  # whatever the pipeline did not take
    sys.exit(code)
