#!/usr/bin/env python3
"""Container ENTRYPOINT: `preflight run -- <CMD>`; the app replaces this process on success."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from preflight.entry import main  # noqa: E402

main(["run", "--", *sys.argv[1:]])
