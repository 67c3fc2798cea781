"""The distribution: an sdist and a wheel built from the source, installed into a clean virtual
environment and run from there, never from the checkout."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import distkit
import pytest
from conftest import MIGRATIONS, REPO

from preflight import __version__

DIST = "preflight-sqlite"  # `preflight` on PyPI is an unrelated 2015 project


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return distkit.build(tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist"))


def test_the_sdist_holds_the_license_the_changelog_and_the_package(dist: dict[str, Path]) -> None:
    assert dist["sdist"].name == f"preflight_sqlite-{__version__}.tar.gz"
    with tarfile.open(dist["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml"} <= names
    package = {
        str(p.relative_to(REPO))
        for p in (REPO / "preflight").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert {n for n in names if n.startswith("preflight/")} >= package


def test_the_wheel_metadata_names_the_distribution_license_and_version(
    dist: dict[str, Path],
) -> None:
    assert dist["wheel"].name == f"preflight_sqlite-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(dist["wheel"]) as whl:
        info = f"preflight_sqlite-{__version__}.dist-info"
        meta = email.message_from_bytes(whl.read(f"{info}/METADATA"))
        names = whl.namelist()
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    assert meta["Name"] == DIST and meta["Version"] == __version__
    assert meta["License-Expression"] == "MIT"
    assert f"{info}/licenses/LICENSE" in names
    # The guard is standard library only: nothing required outside the test extra.
    assert all('extra == "test"' in r for r in meta.get_all("Requires-Dist") or [])
    assert "preflight = preflight.entry:main" in entry_points
    assert {n.split("/")[0] for n in names} == {"preflight", info}  # no tests, no app


def _venv(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A new virtual environment, and an environment for it with nothing of the checkout."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFLIGHT_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, env


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installed_into_a_clean_venv_the_guard_runs_from_there(
    dist: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    venv, env = _venv(tmp_path)
    work = tmp_path / "elsewhere"  # not the checkout: nothing to import from the cwd
    work.mkdir()
    shutil.copytree(MIGRATIONS, work / "migrations")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), cwd=work, env=env, capture_output=True, text=True, timeout=300
        )

    # The sdist needs setuptools from the index to build; the wheel needs nothing at all.
    offline = ["--no-index"] if kind == "wheel" else []
    done = run(
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        *offline,
        "--no-deps",
        "--quiet",
        str(dist[kind]),
    )
    assert done.returncode == 0, done.stderr
    done = run(
        str(venv / "bin" / "python"),
        "-c",
        "import preflight, sys; print(preflight.__file__); print(sys.path)",
    )
    assert done.stdout.startswith(str(venv)) and str(REPO) not in done.stdout, done.stdout
    done = run(str(venv / "bin" / "preflight"), "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"preflight {__version__}"
    done = run(
        str(venv / "bin" / "preflight"),
        "run",
        "--db",
        "data/app.db",
        "--",
        "python3",
        "-c",
        "print('app started')",
    )
    assert "folder" in done.stderr and done.returncode == 7  # no data folder: refused, exit 7
    (work / "data").mkdir()
    done = run(
        str(venv / "bin" / "preflight"),
        "run",
        "--db",
        "data/app.db",
        "--",
        "python3",
        "-c",
        "print('app started')",
    )
    assert done.returncode == 0 and done.stdout == "app started\n", done.stderr
    assert "plan: 5 pending" in done.stderr
    done = run(
        str(venv / "bin" / "python"), "-m", "preflight", "status", "--db", "data/app.db", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert '"pending": []' in done.stdout and "005_retire_starpunk" in done.stdout
