"""The service through PgBouncer in transaction pooling mode (Debian's 1.18, which carries no
named prepared statement from one transaction to the next), with POSTGRES_POOLER=transaction.

The functions' and the hardening suites run again, whole, against a PgBouncer in front of a
PostgreSQL of its own: the same tests, the same results as direct. PgBouncer is started here as
the database is, and refuses to run as root, so both run as Debian's `postgres` user."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from common.config import Settings
from common.db import Database
from local import pgbouncer
from tests import debian_postgres
from tests.local.test_run import ROOT

TIER = "REQUIRE_POOLER_TIER"
# What a request may take before PostgreSQL cancels it: the service sends it as a startup
# parameter, which PgBouncer refuses, so through a pooler it is the role's (docs/deploying.md: PgBouncer).
ROLE_SETUP = "ALTER ROLE postgres SET statement_timeout = '15s'"
SUITES = ("tests/functions", "tests/hardening", "tests/common/test_nonces.py")


def through(bouncer: pgbouncer.Bouncer) -> Settings:
    return Settings.from_env({**bouncer.env(), "SIGNATURE_REQUIRED": "0"})


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgbouncer.Bouncer]:
    debian_postgres.require(pgbouncer.BINARY, package="pgbouncer", tier=TIER)
    folder = tmp_path_factory.mktemp("pooler")
    server = debian_postgres.initdb(folder, tier=TIER)
    with server.serving() as database_port:
        server.run(
            str(server.binaries / "psql"), "-h", "127.0.0.1", "-p", str(database_port),
            "-U", "postgres", "-c", ROLE_SETUP,
        )  # fmt: skip
        with pgbouncer.running(
            folder / "pgbouncer",
            server="127.0.0.1",
            server_port=database_port,
            user=server.user,
            round_robin=True,  # each transaction on the next server connection
        ) as bouncer:
            yield bouncer


def test_each_statement_may_run_on_another_server_connection(pooled: pgbouncer.Bouncer) -> None:
    """What the pooled session is for: with three server connections open and PgBouncer
    handing them out in turn (server_round_robin), one client's statements land on each of
    them, and every result comes back whole. A statement prepared on one of them would not
    exist on the next."""
    holders = [Database(through(pooled)) for _ in range(3)]
    with ExitStack() as stack:  # three transactions at once: three server connections
        opened = {
            stack.enter_context(db.transaction()).run("SELECT pg_backend_pid()")[0][0]
            for db in holders
        }
    assert len(opened) == 3
    client = Database(through(pooled))
    seen = set()
    for n in range(12):
        ((pid, doubled),) = client.query("SELECT pg_backend_pid(), :n::int * 2", n=n)
        assert doubled == n * 2
        seen.add(pid)
    assert len(seen) > 1
    for db in (*holders, client):
        db.close()


def test_the_role_carries_the_statement_limit(pooled: pgbouncer.Bouncer) -> None:
    db = Database(through(pooled))
    assert db.query("SHOW statement_timeout") == [["15s"]]
    db.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_functions_and_hardening_suites_pass_through_pgbouncer(
    pooled: pgbouncer.Bouncer, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTGRES_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'run'}",
            *SUITES,
        ],
        cwd=ROOT,
        env={**env, **pooled.env()},
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " skipped" not in result.stdout


def test_the_engine_refuses_a_pooler(tmp_path: Path) -> None:
    """It LISTENs for new jobs and stops, which a pooler in transaction mode would drop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTGRES_")}
    pooler = {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_POOLER": "transaction"}
    argv = [sys.executable, "-m", "engine", "--work-root", str(tmp_path)]
    ended = subprocess.run(argv, cwd=ROOT, env={**env, **pooler}, capture_output=True, text=True)
    assert ended.returncode == 2
    assert "POSTGRES_POOLER: the engine connects to PostgreSQL directly" in ended.stderr
