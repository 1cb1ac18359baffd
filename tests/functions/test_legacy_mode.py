"""SIGNATURE_REQUIRED=0, the original's default that deployments still run: open, and loud."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from common.config import Settings
from common.db import Database
from tests.jobrows import unplaced
from tests.provider import STRANGER, start_body


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings.replace(signature_required=False, allowed_admins=())


def test_legacy_mode_is_loud(status: FlaskClient) -> None:
    about = status.get("/").json
    assert about["signatureRequired"] is False
    assert (
        "SIGNATURE_REQUIRED=0: requests are not authenticated and replays pass" in about["warnings"]
    )
    assert "ALLOWED_ADMINS is empty: every admin route answers 401" in about["warnings"]


def test_any_signer_may_start_and_query(
    start: FlaskClient, status: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    job = start.post("/api/v1/operator/compute", json=start_body("a", provider=STRANGER))
    assert job.status_code == 200
    [[provider]] = db.query("SELECT provider FROM jobs")
    assert provider is None  # nothing was verified, so no provider is recorded
    # Filters work as in the original: a jobId alone finds the job.
    found = status.get(
        "/api/v1/operator/compute", query_string={"jobId": job.json[0]["jobId"], "nonce": "1"}
    )
    assert unplaced(found.json) == unplaced(job.json)


def test_admin_routes_are_closed_without_admins(status: FlaskClient, db: Database) -> None:
    response = status.get("/api/v1/operator/runningjobs", headers={"Admin": "anything"})
    assert response.status_code == 401
