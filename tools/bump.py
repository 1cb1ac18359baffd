"""Bump the project's version, the one in pyproject.toml, and everything derived from it.

    python tools/bump.py major|minor|patch     (make bump PART=...)

`GET /`, the OpenAPI document and `opctl --version` read the installed package's version, which
`make` reinstalls whenever pyproject.toml changes; the manifests' image tag is written by
deploy/knative/generate.py, which this runs. A dirty tree is refused, so that the bump is a
commit of its own (the original's bumpversion.sh did the same).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("major", "minor", "patch")
# The [project] table's version line; the first `version = ` in the file is that one.
VERSION_LINE = re.compile(r'^version = "(\d+)\.(\d+)\.(\d+)"$', re.MULTILINE)


def bumped(version: tuple[int, int, int], part: str) -> tuple[int, int, int]:
    major, minor, patch = version
    if part == "major":
        return major + 1, 0, 0
    if part == "minor":
        return major, minor + 1, 0
    return major, minor, patch + 1


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in PARTS:
        print(f"usage: bump.py {'|'.join(PARTS)}", file=sys.stderr)
        return 2
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    if dirty:
        print(
            "bump.py: the tree has uncommitted changes; commit or stash them first", file=sys.stderr
        )
        return 1
    pyproject = ROOT / "pyproject.toml"
    text = pyproject.read_text()
    found = VERSION_LINE.search(text)
    if found is None:
        print('bump.py: no `version = "X.Y.Z"` line in pyproject.toml', file=sys.stderr)
        return 1
    major, minor, patch = (int(n) for n in found.groups())
    old = (major, minor, patch)
    new = ".".join(str(n) for n in bumped(old, argv[0]))
    pyproject.write_text(text[: found.start()] + f'version = "{new}"' + text[found.end() :])
    subprocess.run([sys.executable, str(ROOT / "deploy/knative/generate.py")], check=True)
    print(f"{'.'.join(map(str, old))} -> {new}: pyproject.toml and deploy/knative updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
