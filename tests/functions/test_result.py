"""GET /getResult streams a job's output; GET /logs reads a stage's log (admin)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.config import Settings
from common.db import Database
from tests import storage
from tests.conftest import ADMIN_SECRET
from tests.provider import OWNER, PROVIDER, start_body

URL = "/api/v1/operator/getResult"
CONTENT = b"id,value\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(20000))


@pytest.fixture(scope="module")
def store_server() -> Iterator[storage.Storage]:
    with storage.serve({"out.csv": CONTENT}) as server:
        yield server


@pytest.fixture
def settings(base_settings: Settings, tmp_path: Path) -> Settings:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "local.txt").write_bytes(b"0123456789")
    (tmp_path / "secret.txt").write_text("not yours")
    return base_settings.replace(
        ipfs_api_key="ipfs-key-value",
        ipfs_client_id="ipfs-client-value",
        results_root=(tmp_path / "results").resolve(),
    )


@pytest.fixture
def job_id(
    start: FlaskClient,
    db: Database,
    env_announced: dict[str, Any],
    store_server: storage.Storage,
    tmp_path: Path,
) -> str:
    job: str = start.post("/api/v1/operator/compute", json=start_body("a1")).json[0]["jobId"]
    outputs = [
        {
            "filename": "out.csv",
            "filesize": len(CONTENT),
            "url": f"{store_server.url}/out.csv",
            "type": "output",
        },
        {
            "filename": "local.txt",
            "filesize": 10,
            "url": f"file://{tmp_path}/results/local.txt",
            "type": "log",
        },
        {
            "filename": "escape.txt",
            "filesize": 9,
            "url": f"file://{tmp_path}/results/../secret.txt",
            "type": "log",
        },
        {
            "filename": "gone.csv",
            "filesize": 1,
            "url": f"{store_server.url}/gone.csv",
            "type": "output",
        },
        {
            "filename": "x\r\nSet-Cookie: a=b",
            "filesize": 1,
            "url": f"{store_server.url}/out.csv",
            "type": "output",
        },
        {  # as another engine might store it: no file can have this name
            "filename": "nul.txt",
            "filesize": 1,
            "url": f"file://{tmp_path}/results/local.txt%00.png",
            "type": "output",
        },
    ]
    db.execute(
        "UPDATE jobs SET status = 70, datefinished = NOW(), outputsurl = :o", o=json.dumps(outputs)
    )
    return job


def fetch(result: FlaskClient, job_id: str, index: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("buffered", True)  # read and close the body, as a WSGI server would
    return result.get(
        URL, query_string={**PROVIDER.signed(job_id=job_id), "index": index}, **kwargs
    )


def test_streams_the_file_with_ipfs_headers_only_on_the_way_out(
    result: FlaskClient, job_id: str, store_server: storage.Storage
) -> None:
    response = fetch(result, job_id, 0)

    assert response.status_code == 200
    assert response.data == CONTENT
    assert response.headers["Content-Disposition"] == "attachment;filename=out.csv"
    assert response.headers["Content-Length"] == str(len(CONTENT))
    sent = store_server.seen_headers[-1]
    assert (sent["X-API-KEY"], sent["CLIENT-ID"]) == ("ipfs-key-value", "ipfs-client-value")
    assert "X-API-KEY" not in response.headers and "CLIENT-ID" not in response.headers


def test_the_body_is_relayed_in_chunks_not_buffered_whole(result: FlaskClient, job_id: str) -> None:
    response = fetch(result, job_id, 0, buffered=False)
    chunks = [len(chunk) for chunk in response.response]
    response.close()
    assert sum(chunks) == len(CONTENT)
    assert len(chunks) > 1 and max(chunks) <= 64 * 1024


def test_range_is_passed_through(
    result: FlaskClient, job_id: str, store_server: storage.Storage
) -> None:
    response = fetch(result, job_id, 0, headers={"Range": "bytes=3-8"})
    assert response.status_code == 206
    assert response.data == CONTENT[3:9]
    assert response.headers["Content-Range"] == f"bytes 3-8/{len(CONTENT)}"
    assert store_server.seen_headers[-1]["Range"] == "bytes=3-8"


def test_file_urls_are_served_from_inside_the_results_root(
    result: FlaskClient, job_id: str
) -> None:
    whole = fetch(result, job_id, 1)
    assert (whole.status_code, whole.data) == (200, b"0123456789")
    assert whole.content_type == "application/octet-stream"  # as the API document says
    part = fetch(result, job_id, 1, headers={"Range": "bytes=2-4"})
    assert (part.status_code, part.data) == (206, b"234")


@pytest.mark.parametrize(
    ("wanted", "status", "body", "content_range"),
    [
        ("bytes=5-100", 206, b"56789", "bytes 5-9/10"),
        ("bytes=-3", 206, b"789", "bytes 7-9/10"),
        ("bytes=20-30", 416, b"", "bytes */10"),  # beyond the file
        ("bytes=4-2", 200, b"0123456789", None),  # malformed: ignored, as RFC 9110 allows
        ("bytes=abc", 200, b"0123456789", None),
        ("items=0-1", 200, b"0123456789", None),  # another unit
        ("bytes=0-1,3-4", 200, b"0123456789", None),  # several ranges: the whole file instead
    ],
)
def test_ranges_on_file_results_are_answered_as_rfc_9110_says(
    result: FlaskClient,
    job_id: str,
    wanted: str,
    status: int,
    body: bytes,
    content_range: str | None,
) -> None:
    answer = fetch(result, job_id, 1, headers={"Range": wanted})
    assert (answer.status_code, answer.headers.get("Content-Range")) == (status, content_range)
    if status == 416:
        assert answer.json == {"error": "Requested range not satisfiable"}
    else:
        assert answer.data == body


def test_ranges_remote_storage_cannot_answer_alone_are_not_forwarded(
    result: FlaskClient, job_id: str, store_server: storage.Storage
) -> None:
    answer = fetch(result, job_id, 0, headers={"Range": "bytes=0-1,3-4"})
    assert (answer.status_code, answer.data) == (200, CONTENT)
    assert "Range" not in store_server.seen_headers[-1]


def test_file_urls_cannot_escape_the_results_root(result: FlaskClient, job_id: str) -> None:
    response = fetch(result, job_id, 2)
    assert (response.status_code, response.json) == (404, {"error": "Result file not found"})


def test_a_file_missing_from_storage_is_404(result: FlaskClient, job_id: str) -> None:
    response = fetch(result, job_id, 3)
    assert (response.status_code, response.json) == (
        404,
        {"error": "Result file not found in storage"},
    )


def test_file_names_cannot_inject_headers(result: FlaskClient, job_id: str) -> None:
    response = fetch(result, job_id, 4)
    assert response.headers["Content-Disposition"] == "attachment;filename=x__Set-Cookie__a_b"
    assert "Set-Cookie" not in response.headers


def test_a_stored_url_no_file_can_have_is_404_not_500(result: FlaskClient, job_id: str) -> None:
    response = fetch(result, job_id, 5)
    assert (response.status_code, response.json) == (404, {"error": "Result file not found"})


@pytest.mark.parametrize(
    ("index", "message"),
    [("9", "No such index 9 in this compute job"), ("-1", "Negative index -1")],
)
def test_index_errors(result: FlaskClient, job_id: str, index: str, message: str) -> None:
    response = fetch(result, job_id, index)
    assert (response.status_code, response.json) == (404, {"error": message})


def test_a_bad_index_is_400(result: FlaskClient, job_id: str) -> None:
    response = fetch(result, job_id, "1e9")
    assert (response.status_code, response.json) == (
        400,
        {"error": "Invalid index: expected an integer"},
    )


def test_another_owner_or_unknown_job_is_404(result: FlaskClient, job_id: str) -> None:
    other = "0x" + "cd" * 20
    query = {**PROVIDER.signed(owner=other, job_id=job_id), "index": 0}
    response = result.get(URL, query_string=query)
    assert (response.status_code, response.json) == (
        404,
        {"error": f"Owner {other} mismatch for job {job_id}"},
    )
    query = {**PROVIDER.signed(job_id="f" * 32), "index": 0}
    response = result.get(URL, query_string=query)
    assert response.json == {"error": f"Owner {OWNER} mismatch for job {'f' * 32}"}


def test_a_job_without_results_is_404(
    result: FlaskClient, start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    job = start.post("/api/v1/operator/compute", json=start_body("a2")).json[0]["jobId"]
    response = fetch(result, job, 0)
    assert (response.status_code, response.json) == (404, {"error": f"No results for job {job}"})


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "Both index & job_id are required"),
        ({"jobId": "x"}, '"owner" is required in the call to GET:/getResult'),
        (
            {"owner": OWNER, "jobId": "x", "providerSignature": "0x", "nonce": "1"},
            '"index" is required in the call to GET:/getResult',
        ),
    ],
)
def test_request_errors(
    result: FlaskClient, db: Database, query: dict[str, str], message: str
) -> None:
    response = result.get(URL, query_string=query)
    assert (response.status_code, response.json) == (400, {"error": message})


def test_logs_need_the_admin_header_and_a_component(result: FlaskClient, db: Database) -> None:
    logs = "/api/v1/operator/logs"
    assert (
        result.get(logs, query_string={"jobId": "x", "component": "algorithm"}).status_code == 400
    )
    response = result.get(logs, query_string={"jobId": "x"}, headers={"Admin": ADMIN_SECRET})
    assert response.json == {"error": '"component" is required in the call to GET:/logs'}
    response = result.get(
        logs, query_string={"jobId": "x", "component": "evil"}, headers={"Admin": ADMIN_SECRET}
    )
    assert response.json == {
        "error": "component must be one of configure, algorithm, filter, publish"
    }


def test_logs_without_a_cluster_say_so(result: FlaskClient, db: Database) -> None:
    response = result.get(
        "/api/v1/operator/logs",
        query_string={"jobId": "x", "component": "algorithm"},
        headers={"Admin": ADMIN_SECRET},
    )
    assert (response.status_code, response.json) == (
        503,
        {"error": "no Kubernetes cluster is configured for this service"},
    )


def test_logs_are_served_with_their_control_characters_escaped(
    result: FlaskClient, settings: Settings
) -> None:
    assert settings.results_root is not None
    logs = settings.results_root / "job1" / "logs"
    logs.mkdir(parents=True)
    (logs / "algorithm.log").write_bytes(
        b"ok\tline\n\x1b[2J\x1b]0;owned\x07 \xc2\x9b6n caf\xc3\xa9\n"
    )
    response = result.get(
        "/api/v1/operator/logs",
        query_string={"jobId": "job1", "component": "algorithm"},
        headers={"Admin": ADMIN_SECRET},
    )
    assert response.status_code == 200
    assert response.text == "ok\tline\n\\x1b[2J\\x1b]0;owned\\x07 \\x9b6n café\n"


def test_logs_of_a_job_id_no_file_can_have_are_not_a_500(result: FlaskClient) -> None:
    response = result.get(
        "/api/v1/operator/logs",
        query_string={"jobId": "a\x00b", "component": "algorithm"},
        headers={"Admin": ADMIN_SECRET},
    )
    assert response.status_code in (400, 404, 503)
