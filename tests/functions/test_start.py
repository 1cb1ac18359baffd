"""POST /compute through functions-framework, on real PostgreSQL, signed like the Provider."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.db import Database
from tests.conftest import function_client
from tests.provider import OWNER, PROVIDER, STRANGER, stage, start_body

URL = "/api/v1/operator/compute"


def post_at_once(bodies: list[dict[str, Any]]) -> list[int]:
    """Every body posted to start from its own thread, all at once; the status codes."""
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(
            pool.map(lambda body: function_client("start").post(URL, json=body).status_code, bodies)
        )


def job_count(db: Database) -> int:
    return int(db.query("SELECT count(*) FROM jobs")[0][0])


def test_start_stores_the_job_and_answers_its_status(
    start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    response = start.post(URL, json=start_body("agreement-1", chainId=137))

    assert response.status_code == 200, response.json
    [job] = response.json
    assert job["agreementId"] == "agreement-1"
    assert job["owner"] == OWNER
    assert (job["status"], job["statusText"], job["stopreq"], job["removed"]) == (
        1,
        "Warming up",
        0,
        0,
    )
    assert job["results"] == "" and job["dateFinished"] is None
    assert float(job["dateCreated"]) > 1.7e9
    assert (job["algoDID"], job["inputDID"]) == ("did:op:algo", ["did:op:input0"])
    assert len(job["jobId"]) == 32

    [[owner, status, text, namespace, provider, chain, workflow]] = db.query(
        "SELECT owner, status, statustext, namespace, provider, chainid, workflow FROM jobs "
        "WHERE workflowid = :job",
        job=job["jobId"],
    )
    assert (owner, status, text, namespace, chain) == (
        OWNER,
        1,
        "Warming up",
        "ocean-compute",
        "137",
    )
    assert provider == PROVIDER.address
    document = json.loads(workflow)
    assert document["kind"] == "WorkFlow" and document["apiVersion"] == "oceanprotocol.com/v1alpha"
    assert document["metadata"]["name"] == job["jobId"]
    assert document["metadata"]["labels"] == {"workflow": job["jobId"]}
    assert len(document["metadata"]["secret"]) == 32
    assert document["spec"]["metadata"] == {"stages": [stage()], "chainId": 137}


def test_the_engine_announce_call_picks_the_new_job(
    start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    first = start.post(URL, json=start_body("agreement-1")).json[0]["jobId"]
    second = start.post(URL, json=start_body("agreement-2")).json[0]["jobId"]

    rows = db.query("SELECT * FROM announce('ocean-compute', '{}', 10)")
    assert [r[0] for r in rows] == [first, second]
    assert [r[0] for r in db.query("SELECT * FROM announce('ocean-compute', '{}')")] == [
        first,
        second,
    ]


def test_algorithm_without_id_is_stored_with_an_empty_id_and_shown_as_raw(
    start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    raw_stage = stage(algorithm={"rawcode": "print(1)", "container": {"image": "python"}})
    response = start.post(URL, json=start_body("a-raw", workflow={"stages": [raw_stage]}))

    assert response.status_code == 200
    assert response.json[0]["algoDID"] == "raw"
    [[workflow]] = db.query("SELECT workflow FROM jobs")
    assert json.loads(workflow)["spec"]["metadata"]["stages"][0]["algorithm"]["id"] == ""


def test_ethers_style_signature_is_accepted(
    start: FlaskClient, env_announced: dict[str, Any]
) -> None:
    body = start_body("agreement-1")
    body["providerSignature"] = PROVIDER.sign(f"{OWNER}{body['nonce']}", ethers_v=True)
    assert start.post(URL, json=body).status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "payload seems empty."),
        ({"workflow": {}}, '"agreementId" is required in the call to POST:/compute'),
        (
            {k: v for k, v in start_body("a").items() if k != "nonce"},
            '"nonce" is required in the call to POST:/compute',
        ),
        (
            {k: v for k, v in start_body("a").items() if k != "environment"},
            '"environment" is required in the call to POST:/compute',
        ),
        (
            {**start_body("a"), "workflow": {}},
            "`workflow` is required in the payload and must include workflow stages",
        ),
        (
            {**start_body("a"), "workflow": []},
            "`workflow` is required in the payload and must include workflow stages",
        ),
        ({**start_body("a"), "workflow": 5}, "`workflow` must be a JSON object"),
        (
            {**start_body("a"), "nonce": {"n": 1}},
            "Invalid nonce: expected a non-negative number such as time.time_ns()",
        ),
        ({**start_body("a"), "owner": "x" * 256}, '"owner" is too long (at most 255 characters)'),
        ({**start_body("a"), "agreementId": 7}, '"agreementId" must be a string'),
        ({**start_body("a"), "chainId": "1e9"}, "Invalid chainId: expected an integer"),
    ],
)
def test_malformed_starts_get_the_contract_message_and_store_nothing(
    start: FlaskClient,
    db: Database,
    env_announced: dict[str, Any],
    body: dict[str, Any],
    message: str,
) -> None:
    response = start.post(URL, json=body)
    assert (response.status_code, response.json) == (400, {"error": message})
    assert job_count(db) == 0


@pytest.mark.parametrize(
    ("workflow", "message"),
    [
        ({"stages": []}, "Missing stages"),
        ({"stages": [stage(), stage()]}, "Multiple stages are not supported yet"),
        ({"stages": "x"}, "`stages` must be a list"),
        *[
            (
                {"stages": [{k: v for k, v in stage().items() if k != attr}]},
                f"Missing {attr} in stage 0",
            )
            for attr in ("algorithm", "compute", "input", "output")
        ],
        (
            {"stages": [stage(input=[{"id": "", "url": ["x"]}])]},
            "`id` of input 0 of stage 0 must be a DID, when given",
        ),
        ({"stages": [stage(input="x")]}, "`input` of stage 0 must be a list of JSON objects"),
    ],
)
def test_bad_stages_are_refused_after_authentication(
    start: FlaskClient,
    db: Database,
    env_announced: dict[str, Any],
    workflow: dict[str, Any],
    message: str,
) -> None:
    response = start.post(URL, json=start_body("a", workflow=workflow))
    assert (response.status_code, response.json) == (400, {"error": message})
    assert job_count(db) == 0


def test_unknown_environment_or_chain_is_refused(
    start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    for body in (start_body("a", environment="nowhere"), start_body("a", chainId=5)):
        response = start.post(URL, json=body)
        assert (response.status_code, response.json) == (
            400,
            {"error": "Environment invalid or does not exist"},
        )
    assert job_count(db) == 0


def test_a_replayed_start_is_refused_as_a_replay_whatever_environment_it_names(
    start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    body = start_body("a")
    assert start.post(URL, json=body).status_code == 200
    replayed = start.post(URL, json={**body, "environment": "nowhere"})
    assert (replayed.status_code, replayed.json) == (
        401,
        {"error": f"Nonce {body['nonce']} was already used"},
    )
    assert job_count(db) == 1


def test_signer_outside_the_allowlist_gets_401_and_stores_nothing(
    start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    response = start.post(URL, json=start_body("a", provider=STRANGER))

    assert response.status_code == 401
    assert response.json == {
        "error": f"The signing ethereum account {STRANGER.address} is not "
        "authorized to use this service."
    }
    assert job_count(db) == 0
    # The stranger's failed call burned none of the nonces the real Provider might use.
    assert db.query("SELECT count(*) FROM provider_nonces")[0][0] == 0


def test_signature_over_owner_alone_is_refused(
    start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    """The original recovered over the owner without the nonce; that signature is not ours."""
    body = start_body("a")
    body["providerSignature"] = PROVIDER.sign(OWNER)
    assert start.post(URL, json=body).status_code == 401
    assert job_count(db) == 0


@pytest.mark.parametrize("signature", ["", "0x1234", "not hex", "0x" + "00" * 65])
def test_unreadable_signatures_are_400(
    start: FlaskClient, db: Database, env_announced: dict[str, Any], signature: str
) -> None:
    response = start.post(URL, json={**start_body("a"), "providerSignature": signature})
    assert response.status_code == (401 if len(signature) == 132 else 400)
    assert response.json["error"] in (
        "Failed to recover address",
        "`providerSignature` of agreementId is required.",
    )


def test_a_replayed_start_is_refused(
    start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    body = start_body("agreement-1")
    assert start.post(URL, json=body).status_code == 200
    replay = start.post(URL, json={**body, "agreementId": "agreement-1"})
    assert replay.status_code == 401
    assert replay.json == {"error": f"Nonce {body['nonce']} was already used"}
    assert job_count(db) == 1


def test_one_unfinished_job_per_agreement(
    start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    assert start.post(URL, json=start_body("agreement-1")).status_code == 200
    again = start.post(URL, json=start_body("agreement-1"))
    assert (again.status_code, again.json) == (
        400,
        {"error": "`agreementId` already in use for other job."},
    )
    db.execute("UPDATE jobs SET datefinished = NOW(), status = 70")
    assert start.post(URL, json=start_body("agreement-1")).status_code == 200
    assert job_count(db) == 2


def test_fifty_concurrent_starts_with_one_agreement_create_exactly_one_job(
    start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    codes = post_at_once([start_body("contested", nonce=time.time_ns() + i) for i in range(50)])

    assert sorted(codes) == [200] + [400] * 49
    assert db.query("SELECT count(*) FROM jobs WHERE agreementid = 'contested'")[0][0] == 1


def test_fifty_concurrent_replays_are_accepted_once(
    start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    """Same signer and nonce, fifty times at once, each with its own agreement: one job."""
    nonce = time.time_ns()
    codes = post_at_once([start_body(f"replay-{i}", nonce=nonce) for i in range(50)])

    assert sorted(codes) == [200] + [401] * 49
    assert job_count(db) == 1
