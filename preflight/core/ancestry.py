"""Is the guard running under `litestream replicate`? Litestream gives an -exec child no
variable of its own, so the only sign is the process tree. Imports only os (the quick start)."""

import os

MAX_DEPTH = 64  # a shell or two between Litestream and the guard; never an endless walk


def is_replicate(argv: list[str]) -> bool:
    """`litestream replicate ...` (any path to the binary, any flags)."""
    return (
        bool(argv)
        and os.path.basename(argv[0]).startswith("litestream")
        and ("replicate" in argv[1:])
    )


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def replicating() -> str | None:
    """The command line of an ancestor (up to PID 1) that is `litestream replicate`, or None
    (also where /proc cannot be read: not Linux, hidepid)."""
    current = os.getppid()
    for _ in range(MAX_DEPTH):
        if current <= 0:
            return None
        try:
            argv = [
                a.decode("utf-8", "replace") for a in _read(f"/proc/{current}/cmdline").split(b"\0")
            ]
            stat = _read(f"/proc/{current}/stat")
        except OSError:
            return None
        argv = argv[:-1] if argv and argv[-1] == "" else argv
        if is_replicate(argv):
            return " ".join(argv)
        fields = stat.rpartition(b")")[2].split()
        parent = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
        if parent == current:
            return None
        current = parent
    return None
