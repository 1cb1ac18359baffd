"""engine.results.remove_tree, which every runner uses to delete a job's folder: whatever the
algorithm did to the permissions inside goes, and nothing outside the folder is touched, even
where the folder itself cannot be removed (it once made its parent, the work root, 0700: in CI
that parent was /tmp)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.results import remove_tree


def test_a_folder_whose_algorithm_locked_itself_out_is_removed(tmp_path: Path) -> None:
    folder = tmp_path / "job"
    locked = folder / "outputs" / "locked"
    locked.mkdir(parents=True)
    (locked / "file").write_text("x")
    locked.chmod(0)
    (folder / "outputs").chmod(0o500)
    remove_tree(folder)
    assert not folder.exists()


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A job folder holding a mount point (as a job's loop-mounted folder does): it can be
    emptied, never removed."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / "work" / "job" / "mnt"
    point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_a_folder_that_cannot_go_leaves_its_parent_as_it_was(mounted: Path) -> None:
    work = mounted.parent.parent
    work.chmod(0o711)  # what the engine makes its work root: the sandbox user passes through
    (mounted / "inside").write_text("x")
    remove_tree(mounted.parent)
    assert mounted.parent.exists() and not (mounted / "inside").exists()
    assert work.stat().st_mode & 0o777 == 0o711
