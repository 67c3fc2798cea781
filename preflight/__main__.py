"""`python -m preflight ...`: see `entry.main`."""

from preflight.entry import main

main()
