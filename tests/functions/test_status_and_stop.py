"""GET, PUT and DELETE /compute: status objects, stop and remove, for the signed owner only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.db import Database
from tests.conftest import ADMIN_SECRET
from tests.jobrows import unplaced
from tests.provider import OWNER, PROVIDER, STRANGER, start_body

URL = "/api/v1/operator/compute"
OTHER_OWNER = "0x" + "ab" * 20


@pytest.fixture
def job(start: FlaskClient, env_announced: dict[str, Any]) -> dict[str, Any]:
    response = start.post(URL, json=start_body("agreement-1"))
    assert response.status_code == 200
    job: dict[str, Any] = response.json[0]
    return job


def test_status_by_job_id_as_the_provider_sends_it(
    status: FlaskClient, job: dict[str, Any]
) -> None:
    response = status.get(URL, query_string=PROVIDER.signed(job_id=job["jobId"]))
    assert response.status_code == 200
    assert unplaced(response.json) == [job]
    assert response.json[0]["queuePosition"] == 1  # waiting, first in its queue


def test_status_by_agreement_and_owner_from_a_json_body(
    status: FlaskClient, job: dict[str, Any]
) -> None:
    response = status.get(URL, json={**PROVIDER.signed(), "agreementId": "agreement-1"})
    assert unplaced(response.json) == [job]


def test_status_shows_results_without_their_urls(
    status: FlaskClient, db: Database, job: dict[str, Any]
) -> None:
    outputs = [
        {"filename": "out.csv", "filesize": 12, "url": "https://store/out.csv", "type": "output"}
    ]
    db.execute(
        "UPDATE jobs SET status = 70, statustext = 'Job finished', datefinished = NOW(), "
        "outputsurl = :o",
        o=json.dumps(outputs),
    )
    [shown] = status.get(URL, query_string=PROVIDER.signed(job_id=job["jobId"])).json
    assert shown["results"] == [{"filename": "out.csv", "filesize": 12, "type": "output"}]
    assert float(shown["dateFinished"]) >= float(shown["dateCreated"])


def test_a_caller_sees_only_the_owner_it_signed_for(
    status: FlaskClient, job: dict[str, Any]
) -> None:
    signed_other = PROVIDER.signed(owner=OTHER_OWNER, job_id=job["jobId"])
    assert status.get(URL, query_string=signed_other).json == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"owner": "x", "nonce": "1", "providerSignature": "0x00"},
            "You have to specify one of agreementId, jobId or owner",
        ),
        ({"jobId": "a"}, "You have to specify one of agreementId, jobId or owner"),
        (
            {"owner": OWNER, "providerSignature": "0x00"},
            '"nonce" is required in the call to GET:/compute',
        ),
        ({"owner": OWNER, "nonce": "12"}, "`providerSignature` of agreementId is required."),
        (
            {"owner": OWNER, "nonce": "-12", "providerSignature": "0x"},
            "Invalid nonce: expected a non-negative number such as time.time_ns()",
        ),
    ],
)
def test_status_errors(
    status: FlaskClient, db: Database, query: dict[str, str], message: str
) -> None:
    response = status.get(URL, query_string=query)
    assert (response.status_code, response.json) == (400, {"error": message})


def test_status_without_any_data(status: FlaskClient, db: Database) -> None:
    response = status.get(URL)
    assert (response.status_code, response.json) == (
        400,
        {"error": "You have to specify one of agreementId, jobId or owner"},
    )


def test_status_from_a_stranger_is_401(status: FlaskClient, job: dict[str, Any]) -> None:
    assert status.get(URL, query_string=STRANGER.signed(job_id=job["jobId"])).status_code == 401


def test_stop_finishes_a_job_no_engine_picked_up(
    stop: FlaskClient, db: Database, job: dict[str, Any]
) -> None:
    response = stop.put(URL, query_string=PROVIDER.signed(job_id=job["jobId"]))

    assert response.status_code == 200
    [stopped] = response.json
    assert (stopped["status"], stopped["statusText"], stopped["stopreq"]) == (70, "Job finished", 1)
    assert stopped["dateFinished"] is not None
    assert db.query("SELECT * FROM announce('ocean-compute', '{}', 10)") == []


def test_stop_of_a_running_job_leaves_it_to_the_engine(
    stop: FlaskClient, db: Database, job: dict[str, Any]
) -> None:
    db.execute("UPDATE jobs SET status = 40, statustext = 'Running algorithm '")
    [stopped] = stop.put(URL, json=PROVIDER.signed(job_id=job["jobId"])).json
    assert (stopped["status"], stopped["stopreq"], stopped["dateFinished"]) == (40, 1, None)


def test_stop_leaves_finished_jobs_alone(
    stop: FlaskClient, db: Database, job: dict[str, Any]
) -> None:
    db.execute("UPDATE jobs SET status = 70, datefinished = NOW()")
    [shown] = stop.put(URL, query_string=PROVIDER.signed(job_id=job["jobId"])).json
    assert shown["stopreq"] == 0


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "payload seems empty."),
        ({"jobId": "abc"}, '"owner" is required in the call to PUT:/compute'),
        (
            {"owner": OWNER, "nonce": "1"},
            '"providerSignature" is required in the call to PUT:/compute',
        ),
        (
            {"owner": OWNER, "providerSignature": "0x"},
            '"nonce" is required in the call to PUT:/compute',
        ),
        (
            {"owner": "x", "providerSignature": "0x", "nonce": "1"},
            "You have to specify one of agreementId, jobId or owner",
        ),
    ],
)
def test_stop_errors(stop: FlaskClient, db: Database, query: dict[str, str], message: str) -> None:
    response = stop.put(URL, query_string=query)
    assert (response.status_code, response.json) == (400, {"error": message})


def test_stop_by_a_stranger_changes_nothing(
    stop: FlaskClient, db: Database, job: dict[str, Any]
) -> None:
    assert stop.put(URL, query_string=STRANGER.signed(job_id=job["jobId"])).status_code == 401
    assert db.query("SELECT status, stopreq FROM jobs") == [[1, 0]]


def test_delete_stops_and_marks_removed(
    stop: FlaskClient, db: Database, job: dict[str, Any]
) -> None:
    response = stop.delete(URL, query_string=PROVIDER.signed(job_id=job["jobId"]))
    assert response.status_code == 200
    [removed] = response.json
    assert (removed["status"], removed["stopreq"], removed["removed"]) == (70, 1, 1)


def test_delete_errors(stop: FlaskClient, db: Database) -> None:
    response = stop.delete(URL)
    assert (response.status_code, response.json) == (
        400,
        {"error": "You have to specify one of agreementId, jobId or owner"},
    )


def test_running_jobs_lists_unfinished_jobs_for_admins(
    status: FlaskClient, db: Database, job: dict[str, Any]
) -> None:
    response = status.get("/api/v1/operator/runningjobs", headers={"Admin": ADMIN_SECRET})
    assert response.status_code == 200
    assert unplaced(response.json) == [{**job, "namespace": "ocean-compute"}]
    assert list(response.json[0])[-3:] == ["queuePosition", "estimatedStart", "namespace"]


@pytest.mark.parametrize(
    ("headers", "code", "message"),
    [({}, 400, "The Admin header is required"), ({"Admin": "wrong"}, 401, "Invalid Admin header")],
)
def test_running_jobs_needs_the_admin_header(
    status: FlaskClient, db: Database, headers: dict[str, str], code: int, message: str
) -> None:
    response = status.get("/api/v1/operator/runningjobs", headers=headers)
    assert (response.status_code, response.json) == (code, {"error": message})


def test_environments_as_announced_with_a_chain_filter(
    status: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    db.execute("SELECT * FROM announce('other-env', :s, 0)", s=json.dumps({"allowedChainId": [5]}))

    everything = status.get("/api/v1/operator/environments").json
    assert [env["id"] for env in everything] == ["ocean-compute", "other-env"]
    assert everything[0]["cpuNumber"] == 2 and float(everything[0]["lastSeen"]) > 1.7e9
    on_chain_5 = status.get("/api/v1/operator/environments", query_string={"chainId": "5"}).json
    assert [env["id"] for env in on_chain_5] == ["other-env"]
    bad = status.get("/api/v1/operator/environments", query_string={"chainId": "x"})
    assert (bad.status_code, bad.json) == (400, {"error": "Invalid chainId: expected an integer"})
    # Ocean Node asks with chain_id.
    as_ocean_node = status.get("/api/v1/operator/environments", query_string={"chain_id": 5})
    assert [env["id"] for env in as_ocean_node.json] == ["other-env"]
