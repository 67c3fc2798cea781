"""`python -m preflight ...`: see `entry.main`."""

from .entry import main

main()
