"""Ocean Node (v0.2.x, `C2DEngineOPFK8`) as a caller: its requests, built here the way its
TypeScript builds them, with signatures made by eth-account exactly as its `sign()` makes them
(keccak256 of the UTF-8 message, through ethers' toBeArray, which drops leading zero bytes,
then an EIP-191 personal signature; v is 27 or 28), and millisecond nonces (`Date.now()`).
Not through the project's own signing code: that is the Python Provider's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak
from flask.testing import FlaskClient

from common.config import Settings
from common.db import Database
from tests.provider import OWNER, PROVIDER, PROVIDER_KEY, stage

URL = "/api/v1/operator/compute"
NODE = Account.from_key("0x" + "5e" * 32)


def ocean_node_sign(message: str) -> str:
    """`sign()` of ocean-node's nonceHandler, with eth-account."""
    digest = keccak(message.encode()).lstrip(b"\0")  # ethers.toBeArray
    signed = NODE.sign_message(encode_defunct(primitive=digest))
    return "0x" + bytes(signed.signature).hex()


def now_ms() -> int:
    return time.time_ns() // 10**6


@pytest.fixture
def settings(base_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The node allowed; an Ocean Node signer unless a test says `settings` False."""
    node = NODE.address.lower()
    return base_settings.replace(
        allowed_providers=base_settings.allowed_providers | {node},
        ocean_node_signers=frozenset({node} if getattr(request, "param", True) else ()),
    )


def node_start(start: FlaskClient, nonce: int | None = None, agreement: str = "a1") -> Any:
    nonce = nonce or now_ms()
    body = {  # as startComputeJob sends it: URL inputs without id
        "workflow": {"stages": [stage(input=[{"index": 0, "url": ["https://example.org/d.csv"]}])]},
        "owner": OWNER,
        "providerSignature": ocean_node_sign(str(nonce)),
        "providerAddress": NODE.address,
        "environment": "ocean-compute",
        "validUntil": int(time.time()) + 3600,
        "nonce": nonce,
        "agreementId": agreement,
        "chainId": 1,
    }
    return start.post(URL, json=body)


def node_status(status: FlaskClient, job_id: str | None, nonce: int | None = None) -> Any:
    nonce = nonce or now_ms()
    body = {
        "providerSignature": ocean_node_sign(f"{nonce}{OWNER}{job_id or 'undefined'}"),
        "providerAddress": NODE.address,
        "nonce": nonce,
        "owner": OWNER,
    }
    if job_id is not None:
        body["jobId"] = job_id
    return status.get(URL, json=body)


def with_leading_zero(message: Callable[[int], str]) -> int:
    """A millisecond nonce near now whose message hashes to a leading zero byte, so that
    Ocean Node signs 31 bytes (one nonce in 256 does)."""
    nonce = now_ms()
    while keccak(message(nonce).encode())[0] != 0:
        nonce += 1
    return nonce


def test_every_call_of_ocean_node_passes(
    start: FlaskClient,
    status: FlaskClient,
    stop: FlaskClient,
    result: FlaskClient,
    db: Database,
    env_announced: dict[str, Any],
) -> None:
    started = node_start(start)
    assert started.status_code == 200, started.json
    job = started.json[0]
    assert job["inputDID"] == []  # an input without id is in no DID list

    shown = node_status(status, job["jobId"])
    assert shown.status_code == 200 and shown.json[0]["jobId"] == job["jobId"]
    every = node_status(status, None)
    assert every.status_code == 200 and len(every.json) == 1

    nonce = now_ms()
    stopped = stop.put(
        URL,
        json={
            "owner": OWNER,
            "providerSignature": ocean_node_sign(str(nonce)),
            "providerAddress": NODE.address,
            "nonce": nonce,
            "jobId": job["jobId"],
            "agreementId": "a1",
        },
    )
    assert stopped.status_code == 200 and stopped.json[0]["stopreq"] == 1

    outputs = [{"filename": "o.txt", "filesize": 1, "url": "https://x/o.txt", "type": "output"}]
    db.execute(
        "UPDATE jobs SET status = 70, datefinished = NOW(), outputsurl = :o", o=json.dumps(outputs)
    )
    signed = {
        "providerSignature": ocean_node_sign(f"{OWNER}{job['jobId']}"),
        "providerAddress": NODE.address,
        "nonce": now_ms(),
        "owner": OWNER,
        "jobId": job["jobId"],
        "index": 9,
    }
    # Signed, and so past authentication: the index is what is wrong. Ocean Node signs no
    # nonce for getResult, so the same request passes again (a bearer token for the job).
    for _ in range(2):
        answer = result.get("/api/v1/operator/getResult", json=signed)
        assert (answer.status_code, answer.json) == (
            404,
            {"error": "No such index 9 in this compute job"},
        )


def test_the_31_byte_form_of_ocean_nodes_signature_passes(
    start: FlaskClient, status: FlaskClient, env_announced: dict[str, Any]
) -> None:
    nonce = with_leading_zero(str)
    assert node_start(start, nonce).status_code == 200
    job_id = node_start(start, agreement="a2").json[0]["jobId"]
    nonce = with_leading_zero(lambda n: f"{n}{OWNER}{job_id}")
    assert node_status(status, job_id, nonce).status_code == 200


def test_a_replayed_call_is_refused_but_same_millisecond_calls_for_other_jobs_pass(
    start: FlaskClient, status: FlaskClient, env_announced: dict[str, Any]
) -> None:
    first = node_start(start, agreement="a1").json[0]["jobId"]
    second = node_start(start, agreement="a2").json[0]["jobId"]
    nonce = now_ms()
    assert node_status(status, first, nonce).status_code == 200
    assert node_status(status, second, nonce).status_code == 200
    replayed = node_status(status, first, nonce)
    assert (replayed.status_code, replayed.json) == (
        401,
        {"error": f"Nonce {nonce} was already used"},
    )
    assert node_start(start, nonce=nonce - 1, agreement="a3").status_code == 200
    replayed = node_start(start, nonce=nonce - 1, agreement="a3")
    assert (replayed.status_code, replayed.json) == (
        401,
        {"error": f"Nonce {nonce - 1} was already used"},
    )


def test_a_signature_in_the_other_format_never_passes(
    start: FlaskClient, status: FlaskClient, env_announced: dict[str, Any]
) -> None:
    job_id = node_start(start).json[0]["jobId"]

    def status_signed(key: Any, address: str, message: Callable[[int], str]) -> Any:
        nonce = now_ms()
        digest = keccak(message(nonce).encode())
        if key is NODE:  # Ocean Node's sign(): the hash through toBeArray
            digest = digest.lstrip(b"\0")
        signature = "0x" + bytes(key.sign_message(encode_defunct(primitive=digest)).signature).hex()
        body = {"providerSignature": signature, "providerAddress": address, "nonce": nonce}
        return status.get(URL, json={**body, "owner": OWNER, "jobId": job_id})

    # Ocean Node's key signing the Provider's message: refused, saying what it must sign.
    answer = status_signed(NODE, NODE.address, lambda nonce: f"{OWNER}{job_id}{nonce}")
    assert answer.status_code == 401
    assert answer.json == {
        "error": f"The signature does not match providerAddress {NODE.address}: it must sign "
        "Ocean Node's message for this call, String(nonce + owner + jobId)"
    }
    # The Python Provider, not an Ocean Node signer, signing Ocean Node's message: refused.
    provider = Account.from_key(PROVIDER_KEY)
    answer = status_signed(provider, PROVIDER.address, lambda nonce: f"{nonce}{OWNER}{job_id}")
    assert answer.status_code == 401
    assert "owner + jobId + nonce" in answer.json["error"]
    # And the Provider's own format still passes for the Provider.
    assert status.get(URL, json=PROVIDER.signed(job_id=job_id)).status_code == 200


@pytest.mark.parametrize("settings", [False], indirect=True)
def test_without_ocean_node_signers_its_calls_are_verified_as_the_providers(
    start: FlaskClient, env_announced: dict[str, Any]
) -> None:
    answer = node_start(start)
    assert answer.status_code == 401
    assert "owner + jobId + nonce" in answer.json["error"]
