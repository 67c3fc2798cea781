"""A real Docker engine for the container tests: the image, volumes, containers, one-shots.

Nothing here is mocked. `engine()` runs scripts/docker-ready (which installs and starts an
engine and builds a base image if the machine has none), the app image is built once per
test session, and every test gets named volumes of its own. Volumes are read and seeded
through their mountpoint on this host, so the tests need a local engine and root, as CI has.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import docker
from docker.models.containers import Container

REPO = Path(__file__).resolve().parent.parent
APP_UID = 10001  # the Dockerfile's APP_UID
LABEL = "preflight-test"
HEALTH_PY = (
    "import sys, urllib.request; sys.exit(urllib.request.urlopen("
    "'http://127.0.0.1:8000/health', timeout=2).status != 200)"
)
# The image's own HEALTHCHECK polls every 10 s; the tests poll every second instead.
FAST_HEALTH = {
    "test": ["CMD", "python3", "-c", HEALTH_PY],
    "interval": 1_000_000_000,
    "timeout": 3_000_000_000,
    "retries": 3,
    "start_period": 60_000_000_000,
}
SECOND = 1.0


def engine() -> tuple[docker.DockerClient, str]:
    """A client for a running engine and the base image name (from scripts/docker-ready)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "docker-ready")], capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/docker-ready failed:\n{done.stderr[-3000:]}")
    return docker.from_env(timeout=300), done.stdout.strip().splitlines()[-1]


def build(client: docker.DockerClient, base: str, tag: str) -> str:
    """Build the repository's Dockerfile on `base`; layers are cached between runs."""
    client.images.build(
        path=str(REPO), buildargs={"BASE_IMAGE": base}, tag=tag, rm=True, forcerm=True
    )
    return tag


def build_derived(
    client: docker.DockerClient,
    parent: str,
    tag: str,
    files: dict[str, str],
    folder: str = "/app/migrations",
) -> str:
    """An image FROM `parent` with extra files copied into `folder`."""
    lines = [f"FROM {parent}"] + [f"COPY {name} {folder}/{name}" for name in files]
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in {"Dockerfile": "\n".join(lines) + "\n", **files}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True)
    return tag


@dataclass
class Volume:
    """A named volume and where its files are on this host."""

    name: str
    path: Path

    @property
    def db(self) -> Path:
        return self.path / "app.db"

    def state(self) -> dict[str, str]:
        """Every file (sha256) and folder in the volume, the lock file's content included."""
        state = {}
        for item in sorted(self.path.rglob("*")):
            rel = str(item.relative_to(self.path))
            state[rel] = hashlib.sha256(item.read_bytes()).hexdigest() if item.is_file() else "dir"
        return state

    def query(self, sql: str) -> list[tuple]:
        """Run a read-only query on the volume's database."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def dump(self) -> list[str]:
        """The logical content without the guard's own tables."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return [line for line in conn.iterdump() if "_preflight" not in line]
        finally:
            conn.close()


@dataclass
class Docker:
    """Per-test access to the engine: volumes and containers, all removed afterwards."""

    client: docker.DockerClient
    image: str
    containers: list[Container] = field(default_factory=list)
    volumes: list[docker.models.volumes.Volume] = field(default_factory=list)

    def volume(self, seed: Path | None = None, owner: int = APP_UID) -> Volume:
        """A new named volume; with `seed`, /data/app.db is a copy of that database file."""
        vol = self.client.volumes.create(
            name=f"{LABEL}-{uuid.uuid4().hex[:12]}", labels={LABEL: "1"}
        )
        self.volumes.append(vol)
        path = Path(vol.attrs["Mountpoint"])
        if seed is not None:
            (path / "app.db").write_bytes(seed.read_bytes())
            # A seeded volume is no longer empty, so Docker will not copy /data's owner
            # from the image into it: set what an existing install would have.
            for item in (path, path / "app.db"):
                os.chown(item, owner, owner)
            os.chmod(path, 0o750)
            os.chmod(path / "app.db", 0o640)
        return Volume(vol.name, path)

    def start(
        self,
        volume: Volume,
        image: str | None = None,
        command: list[str] | None = None,
        health: dict | None = FAST_HEALTH,
        **options: object,
    ) -> Container:
        """Run the image detached on `volume` (at /data)."""
        if health is not None:
            options["healthcheck"] = health
        c = self.client.containers.run(
            image or self.image,
            command,
            detach=True,
            volumes={volume.name: {"bind": "/data", "mode": "rw"}},
            labels={LABEL: "1"},
            **options,
        )
        self.containers.append(c)
        return c

    def oneshot(
        self, volume: Volume, *args: str, image: str | None = None, timeout: float = 120
    ) -> tuple[int, str, str]:
        """`docker run --entrypoint preflight IMAGE ARGS`: (exit code, stdout, stderr)."""
        c = self.start(volume, image, list(args), health=None, entrypoint=["preflight"])
        code = c.wait(timeout=timeout)["StatusCode"]
        return (
            code,
            c.logs(stdout=True, stderr=False).decode(),
            c.logs(stdout=False, stderr=True).decode(),
        )

    def cleanup(self) -> None:
        for c in self.containers:
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
        for vol in self.volumes:
            vol.remove(force=True)


def logs(c: Container) -> str:
    return c.logs(stdout=True, stderr=True).decode(errors="replace")


def wait_healthy(c: Container, timeout: float = 90) -> None:
    """Wait for Docker's health status 'healthy'; fail with the log if it exits or sickens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.reload()
        status = c.attrs["State"].get("Health", {}).get("Status")
        if status == "healthy":
            return
        if c.status == "exited" or status == "unhealthy":
            raise AssertionError(
                f"container {c.status}/{status}, exit "
                f"{c.attrs['State']['ExitCode']}:\n{logs(c)[-3000:]}"
            )
        time.sleep(0.25 * SECOND)
    raise AssertionError(f"not healthy after {timeout} s:\n{logs(c)[-3000:]}")


def wait_exit(c: Container, timeout: float = 60) -> int:
    return int(c.wait(timeout=timeout)["StatusCode"])


def http_get(c: Container, path: str) -> tuple[int, bytes]:
    """GET http://<container ip>:8000<path> from this host: (status, body)."""
    c.reload()
    ip = next(iter(c.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    try:
        with urllib.request.urlopen(f"http://{ip}:8000{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def example_image(
    client: docker.DockerClient,
    base: str,
    example: Path,
    requirements: list[str],
    tag: str,
    work: Path,
    ignore: tuple[str, ...] = ("__pycache__", "*.db", "*.sqlite3"),
) -> str:
    """An example app's image (examples/<name>/Dockerfile) built on `base`, with the guard's
    own wheel and the app's requirements as wheels for the base image's Python (no
    registry is reachable inside the build)."""
    import shutil
    import subprocess
    import sys

    import distkit

    context = work / "context"
    shutil.copytree(example, context, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*ignore))
    wheels = context / "wheels"
    wheels.mkdir()
    wheel = distkit.build(work / "source", work / "dist")
    shutil.copy(wheel["wheel"], wheels)
    py = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            base,
            "python3",
            "-c",
            "import sys; print(f'{sys.version_info[0]}{sys.version_info[1]}')",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--python-version",
            py,
            "--platform",
            "manylinux2014_x86_64",
            "--dest",
            str(wheels),
            *requirements,
        ],
        check=True,
        timeout=600,
    )
    client.images.build(
        path=str(context), buildargs={"BASE_IMAGE": base}, tag=tag, rm=True, forcerm=True
    )
    return tag
