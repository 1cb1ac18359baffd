"""Shared fixtures: a real PostgreSQL (embedded, or the one POSTGRES_* names), the real schema,
and each function served by functions-framework from its real main.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from functions_framework import create_app

from common import runtime, store
from common.config import Settings
from common.db import Database
from common.runtime import Runtime
from local import postgres
from tests.provider import PROVIDER

ROOT = Path(__file__).resolve().parent.parent
ADMIN_SECRET = "test-admin-secret"
ENVIRONMENT = "ocean-compute"


@pytest.fixture(scope="session")
def pg_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """POSTGRES_* of the server the tests use: the one the environment names, else embedded."""
    if os.environ.get("POSTGRES_HOST"):
        return {k: v for k, v in os.environ.items() if k.startswith("POSTGRES_")}
    server = postgres.start(tmp_path_factory.mktemp("pg") / "data", delete_on_exit=True)
    return server.env()


@pytest.fixture(scope="session")
def base_settings(pg_env: dict[str, str]) -> Settings:
    return Settings.from_env(
        {
            **pg_env,
            "SIGNATURE_REQUIRED": "1",
            "ALLOWED_PROVIDERS": json.dumps([PROVIDER.address]),
            "ALLOWED_ADMINS": json.dumps([ADMIN_SECRET]),
            "OPERATOR_ADDRESS": "0x0000000000000000000000000000000000000001",
            "ALGO_POD_TIMEOUT": "3600",
            "STORAGE_EXPIRY": "604800",
            "CLUSTER": "off",
        }
    )


@pytest.fixture(scope="session")
def schema_db(base_settings: Settings) -> Iterator[Database]:
    db = Database(base_settings)
    store.apply_schema(db)
    yield db
    db.close()


@pytest.fixture
def db(schema_db: Database) -> Database:
    """The schema'd database, emptied before each test."""
    schema_db.execute("TRUNCATE jobs, envs, provider_nonces, queue_owners")
    return schema_db


@pytest.fixture
def status_history(db: Database) -> Iterator[Callable[[str], list[int]]]:
    """Every status a job's row went through, recorded by a trigger on the real table."""
    db.execute(
        """CREATE TABLE IF NOT EXISTS status_history (
               workflowid varchar(255), status int, at timestamp DEFAULT clock_timestamp())"""
    )
    db.execute("TRUNCATE status_history")
    db.execute(
        """CREATE OR REPLACE FUNCTION record_status() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               INSERT INTO status_history (workflowid, status) VALUES (NEW.workflowid, NEW.status);
               RETURN NULL;
           END $$"""
    )
    db.execute("DROP TRIGGER IF EXISTS record_status ON jobs")
    db.execute(
        """CREATE TRIGGER record_status AFTER UPDATE OF status ON jobs FOR EACH ROW
           WHEN (NEW.status IS DISTINCT FROM OLD.status) EXECUTE FUNCTION record_status()"""
    )

    def history(job_id: str) -> list[int]:
        rows = db.query(
            "SELECT status FROM status_history WHERE workflowid = :j ORDER BY at", j=job_id
        )
        return [row[0] for row in rows]

    yield history
    db.execute("DROP TRIGGER IF EXISTS record_status ON jobs")


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings


@pytest.fixture
def rt(db: Database, settings: Settings) -> Iterator[Runtime]:
    """The runtime the functions use for this test, on the test's settings."""
    built = Runtime.build(settings)
    runtime.install(built)
    yield built
    built.db.close()
    runtime.install(None)


@pytest.fixture
def env_announced(db: Database) -> dict[str, Any]:
    """An environment as an engine announces it, through the engine's own SQL function."""
    status = {"id": ENVIRONMENT, "cpuNumber": 2, "allowedChainId": [1, 137], "maxJobs": 10}
    db.execute(
        "SELECT * FROM announce(:env, :status, 0)", env=ENVIRONMENT, status=json.dumps(status)
    )
    return status


_apps: dict[str, Any] = {}


def function_client(name: str) -> FlaskClient:
    """A test client of function `name`, loaded by functions-framework from its main.py."""
    if name not in _apps:
        _apps[name] = create_app(target=name, source=str(ROOT / "functions" / name / "main.py"))
    client: FlaskClient = _apps[name].test_client()
    return client


@pytest.fixture
def start(rt: Runtime) -> FlaskClient:
    return function_client("start")


@pytest.fixture
def stop(rt: Runtime) -> FlaskClient:
    return function_client("stop")


@pytest.fixture
def status(rt: Runtime) -> FlaskClient:
    return function_client("status")


@pytest.fixture
def result(rt: Runtime) -> FlaskClient:
    return function_client("result")


@pytest.fixture
def listing(rt: Runtime) -> FlaskClient:
    return function_client("list")


@pytest.fixture
def admin_init(rt: Runtime) -> FlaskClient:
    return function_client("admin_init")
