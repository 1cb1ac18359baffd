"""The image installs what the project packages: no image is built on these machines (Docker
is only a client here), so this is what catches a package the Containerfile forgets to copy."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_copied_before_pip_installs_it() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    containerfile = (ROOT / "Containerfile").read_text()
    before_install = containerfile.split("RUN pip install .", 1)[0]
    copied = set(re.findall(r"^COPY (\S+) \./\1$", before_install, re.MULTILINE))
    assert set(packages) <= copied, f"not copied before `pip install .`: {set(packages) - copied}"
