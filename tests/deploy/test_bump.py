"""`make bump`: tools/bump.py on a clone of the repository, as a maintainer would run it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bump(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "tools/bump.py", *args], cwd=clone, capture_output=True, text=True
    )


def version(clone: Path) -> str:
    return str(tomllib.loads((clone / "pyproject.toml").read_text())["project"]["version"])


def test_bump_changes_the_version_and_the_image_tag_and_refuses_a_dirty_tree(
    tmp_path: Path,
) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    major, minor, _ = (int(n) for n in version(clone).split("."))

    done = bump(clone, "minor")

    assert done.returncode == 0, done.stderr
    assert version(clone) == f"{major}.{minor + 1}.0"
    services = (clone / "deploy/knative/services.yaml").read_text()
    tags = set(re.findall(r"image: \S+:(\S+)", services))
    assert tags == {f"{major}.{minor + 1}.0"}
    changed = subprocess.run(
        ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "pyproject.toml" in changed and "deploy/knative/services.yaml" in changed

    refused = bump(clone, "patch")  # the first bump is not committed yet
    assert refused.returncode == 1 and "uncommitted" in refused.stderr
    assert version(clone) == f"{major}.{minor + 1}.0"
    assert bump(clone, "huge").returncode == 2
