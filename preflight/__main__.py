"""`python -m preflight ...`: the quick start (a proven no-op `run` execs at once), else the CLI."""

import sys

from .quickstart import start

start(sys.argv[1:])

from .cli import main  # noqa: E402  (only when the quick start handed over)

sys.exit(main())
