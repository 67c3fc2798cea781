"""A tiny notes app: the example of guarding an arbitrary Python app with preflight."""
