"""The one entry function: `python -m preflight`, the `preflight` console script,
entrypoint.py and the image's launcher all call `main`.

The quick start comes first (a proven no-op `run` execs the app from inside it, having
imported almost nothing); otherwise the full command line takes over, handed what the
quick start already proved (see `facts.Proof`).
"""

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
