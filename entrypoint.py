#!/usr/bin/env python3
"""Container ENTRYPOINT: `preflight run -- <CMD>`; the app replaces this process on success."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from preflight.quickstart import start  # noqa: E402

start(["run", "--", *sys.argv[1:]])  # a proven no-op start execs the app here

from preflight.cli import main  # noqa: E402

sys.exit(main(["run", "--", *sys.argv[1:]]))
