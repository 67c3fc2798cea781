"""A real copy-on-write filesystem for the reflink tests and the bench: XFS on a loop device.

`mounted(folder)` makes a sparse image, `mkfs.xfs -m reflink=1`, loop-mounts it and undoes
it all afterwards. It needs root and mkfs.xfs (scripts/xfs-ready installs xfsprogs);
without them it raises, so a test that needs it fails loudly instead of passing on a
filesystem that cannot clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class NoReflinkFilesystem(RuntimeError):
    """No loop-mounted XFS could be made here (not root, no mkfs.xfs, no loop device)."""


@contextmanager
def mounted(folder: Path, size: str = "1G") -> Iterator[Path]:
    """An XFS filesystem with reflinks mounted at `folder/mnt` (the image beside it)."""
    if os.geteuid() != 0:
        raise NoReflinkFilesystem(
            "the reflink tests loop-mount an XFS image and need root (CI runs as root); "
            "deselect them with -m 'not reflink' where that is impossible"
        )
    ready = subprocess.run(
        [str(REPO / "scripts" / "xfs-ready")], capture_output=True, text=True, timeout=600
    )
    if ready.returncode != 0 or not shutil.which("mkfs.xfs"):
        raise NoReflinkFilesystem(f"scripts/xfs-ready could not provide mkfs.xfs: {ready.stderr}")
    folder.mkdir(parents=True, exist_ok=True)
    image, mnt = folder / "xfs.img", folder / "mnt"
    mnt.mkdir(exist_ok=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    made = subprocess.run(
        ["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)], capture_output=True, text=True
    )
    if made.returncode != 0:
        raise NoReflinkFilesystem(f"mkfs.xfs failed: {made.stderr.strip()}")
    mount = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True
    )
    if mount.returncode != 0:
        raise NoReflinkFilesystem(f"mount -o loop {image} failed: {mount.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        image.unlink(missing_ok=True)
