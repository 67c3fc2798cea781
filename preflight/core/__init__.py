# As typing.TYPE_CHECKING, which mypy reads the same way by its name; a start imports
# neither typing nor the modules only annotations name (the import budgets, tests/start).
TYPE_CHECKING = False
