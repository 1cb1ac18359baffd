"""A file system of its own for each job folder: an ext4 image of `diskGB` bytes with `maxFiles`
inodes, on a loop device, mounted at the job's folder (nosuid, nodev).

The kernel then enforces the job's disk whatever its algorithm does: files unlinked but held
open, sparse files, a million empty files, all count against the job's own file system and end
in ENOSPC, never on the host's disk. Making one costs about 11 ms and removing it 6 ms here.
Where the engine cannot mount (not root, no loop devices, no mkfs.ext4), `Volumes.find()` is
None, job folders are plain folders, and the runner polls their size instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

CALL_SECONDS = 30


class VolumeError(Exception):
    """A job's file system could not be made."""


class Volumes:
    def __init__(self, mkfs: str) -> None:
        self.mkfs = mkfs

    @classmethod
    def find(cls) -> Volumes | None:
        mkfs = shutil.which("mkfs.ext4")
        usable = os.geteuid() == 0 and os.path.exists("/dev/loop-control") and shutil.which("mount")
        return cls(mkfs) if mkfs and usable else None

    def make(self, folder: Path, *, size_bytes: int, files: int, owner: int) -> None:
        """`folder`, which must not exist, made with a file system of `size_bytes` bytes and
        `files` inodes."""
        image = image_of(folder)
        folder.mkdir(parents=True)
        try:
            with image.open("wb") as made:
                made.truncate(size_bytes)  # sparse: the host's disk holds what is written
            self._run(
                self.mkfs,
                "-q",
                "-F",
                "-N",
                str(files),
                "-m",
                "0",
                "-O",
                "^has_journal,^resize_inode",  # a job's scratch space: nothing to replay
                "-E",
                f"nodiscard,root_owner={owner}:{owner}",
                str(image),
            )
            self._run("mount", "-o", "loop,nosuid,nodev,noatime", str(image), str(folder))
        except (OSError, VolumeError):
            self.remove(folder)
            raise
        with contextlib.suppress(OSError):
            (folder / "lost+found").rmdir()

    def remove(self, folder: Path) -> None:
        """Unmount the job's file system (its loop device goes with it) and delete the image;
        the folder itself is the caller's to delete."""
        if folder.is_mount():
            # Lazy: every process of the job is dead by now, but an engine's own open
            # descriptor (a log being published) must not keep the file system alive.
            try:
                self._run("umount", "--lazy", str(folder))
            except VolumeError:
                if folder.is_mount():  # not unmounted by another at the same time
                    raise
        image_of(folder).unlink(missing_ok=True)

    def _run(self, *argv: str) -> None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=CALL_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise VolumeError(f"{argv[0]}: {exc}") from None
        if done.returncode != 0:
            raise VolumeError(f"{os.path.basename(argv[0])}: {done.stderr.strip()}")


def image_of(folder: Path) -> Path:
    return folder.with_name(f"{folder.name}.img")
