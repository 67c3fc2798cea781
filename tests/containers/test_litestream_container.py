"""The Litestream image variant in real containers: the volume is lost, the guard restores the
database from a file replica on a second volume, then execs `litestream replicate`, which
runs gunicorn; the app serves the restored data."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerkit import FAST_HEALTH, LABEL, REPO, Docker, engine, http_get, logs, wait_healthy
from litestreamkit import binary, restored_rows, wait_for

pytestmark = pytest.mark.docker

LITESTREAM_VERSION = "0.5.17"  # pyproject's test extras pin the same for the host's binary
CONFIG = """dbs:
  - path: /data/app.db
    replicas:
      - type: file
        path: /replica/app
        sync-interval: 100ms
"""
COMMAND = [
    "litestream",
    "replicate",
    "-config",
    "/etc/litestream/litestream.yml",
    "-exec",
    "gunicorn --bind 0.0.0.0:8000 --workers 2 --worker-tmp-dir /dev/shm app.wsgi:application",
]


@pytest.fixture(scope="module")
def litestream_image() -> Iterator[tuple]:
    client, base = engine()
    tag = "preflight-app-litestream:test"
    client.images.build(
        path=str(REPO),
        buildargs={"BASE_IMAGE": base, "LITESTREAM_VERSION": LITESTREAM_VERSION},
        tag=tag,
        rm=True,
        forcerm=True,
    )
    yield client, tag


@pytest.fixture
def dk(litestream_image: tuple) -> Iterator[Docker]:
    kit = Docker(*litestream_image)
    yield kit
    kit.cleanup()


def start(dk: Docker, data, replica, config: Path):
    c = dk.client.containers.run(
        dk.image,
        COMMAND,
        detach=True,
        volumes={
            data.name: {"bind": "/data", "mode": "rw"},
            replica.name: {"bind": "/replica", "mode": "rw"},
            str(config.parent): {"bind": "/etc/litestream", "mode": "ro"},
        },
        environment={"PREFLIGHT_LITESTREAM_CONFIG": "/etc/litestream/litestream.yml"},
        labels={LABEL: "1"},
        healthcheck=FAST_HEALTH,
        read_only=True,
        tmpfs={"/tmp": ""},
    )
    dk.containers.append(c)
    return c


def test_volume_lost_is_restored_from_the_replica_volume_and_served(dk: Docker, tmp_path):
    config = tmp_path / "etc" / "litestream.yml"
    config.parent.mkdir()
    config.write_text(CONFIG)
    config.parent.chmod(0o755)
    data, replica = dk.volume(), dk.volume()
    # An empty named volume takes /replica's owner (the app user) from the image on first use.
    first = start(dk, data, replica, config)
    wait_healthy(first)
    assert "no replica" in logs(first) and "exec: litestream replicate" in logs(first)
    conn = sqlite3.connect(data.db, timeout=10)
    with conn:
        conn.execute(
            "INSERT INTO notes (slug, file_path, published) VALUES ('kept-note', 'k.md', 1)"
        )
    conn.close()
    # The replica as the host sees it: Litestream (the same version) reads it from here.
    host = tmp_path / "host.yml"
    host.write_text(CONFIG.replace("/replica/app", str(replica.path / "app")))
    exe = binary("0.5")
    wait_for(
        "the note in the replica",
        lambda: (
            ("kept-note",)
            in (restored_rows(exe, host, Path("/data/app.db"), "SELECT slug FROM notes") or [])
        ),
    )
    first.stop(timeout=30)

    lost = dk.volume()  # the data volume is gone; a new, empty one is mounted
    second = start(dk, lost, replica, config)
    wait_healthy(second)
    text = logs(second)
    assert "litestream: restored /data/app.db from the replica" in text, text[-3000:]
    status, body = http_get(second, "/")
    assert status == 200 and b"kept-note" in body
    assert lost.query("SELECT slug FROM notes") == [("kept-note",)]
