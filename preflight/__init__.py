"""preflight: the start-up guard for SQLite-backed Python web apps in containers."""

__version__ = "0.1.0"
