"""The sandbox tier's rule: the engine's tests need bubblewrap. Without it they are skipped,
saying how to install it; with REQUIRE_SANDBOX_TIER=1 (as CI sets it) that is a failure."""

from __future__ import annotations

import os
import shutil

import pytest


def require_bubblewrap() -> None:
    if shutil.which("bwrap") is not None:
        return
    why = (
        "bubblewrap is not installed (`make test` installs it as root; apt-get install bubblewrap)"
    )
    if os.environ.get("REQUIRE_SANDBOX_TIER") == "1":
        pytest.fail(f"sandbox tier required but {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)
