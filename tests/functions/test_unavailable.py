"""With PostgreSQL out of reach, every data route answers 503 with a plain message."""

from __future__ import annotations

import socket

import pytest
from flask.testing import FlaskClient

from common.config import Settings
from tests.conftest import ADMIN_SECRET
from tests.provider import PROVIDER, start_body


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connecting to it is refused at once


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings.replace(
        postgres_host="127.0.0.1",
        postgres_port=closed_port(),
        postgres_password="db-password-value",
    )


def test_every_data_route_answers_503(
    start: FlaskClient,
    status: FlaskClient,
    stop: FlaskClient,
    admin_init: FlaskClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    responses = [
        start.post("/api/v1/operator/compute", json=start_body("a")),
        status.get("/api/v1/operator/compute", query_string=PROVIDER.signed(job_id="j")),
        stop.put("/api/v1/operator/compute", query_string=PROVIDER.signed(job_id="j")),
        status.get("/api/v1/operator/environments"),
        status.get("/api/v1/operator/runningjobs", headers={"Admin": ADMIN_SECRET}),
        admin_init.post("/api/v1/operator/pgsqlinit", headers={"Admin": ADMIN_SECRET}),
    ]
    for response in responses:
        assert (response.status_code, response.json) == (503, {"error": "database unavailable"})
    assert "Traceback" not in caplog.text and "db-password-value" not in caplog.text


def test_the_root_needs_no_database_and_health_says_it_is_gone(status: FlaskClient) -> None:
    assert status.get("/").status_code == 200
    health = status.get("/healthz")
    assert (health.status_code, health.json) == (503, {"error": "database unavailable"})
