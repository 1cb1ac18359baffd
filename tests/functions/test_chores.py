"""python -m common.chores: the chores run once, outside any function, as the CronJob runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from common.db import Database
from tests.conftest import ROOT
from tests.provider import PROVIDER


def test_the_chores_run_without_any_request(db: Database, pg_env: dict[str, str]) -> None:
    old = time.time_ns() - 3600 * 10**9  # far outside any window
    fresh = time.time_ns()
    for nonce in (old, fresh):
        db.execute(
            "INSERT INTO provider_nonces (signer, nonce) VALUES (:s, :n)",
            s=PROVIDER.address.lower(),
            n=nonce,
        )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTGRES_")},
        **pg_env,
        "ALLOWED_PROVIDERS": f'["{PROVIDER.address}"]',
        "CLUSTER": "off",
    }
    done = subprocess.run(
        [sys.executable, "-m", "common.chores"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    left = [row[0] for row in db.query("SELECT nonce FROM provider_nonces")]
    assert left == [fresh]
