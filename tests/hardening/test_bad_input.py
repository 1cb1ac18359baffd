"""The bad-input catalogue: for every route, malformed requests each get a 4xx with a clear
{"error": ...} message, never a 5xx, and the jobs and environments stay as they were.

(A request whose signature passes has its nonce consumed before later checks, by design of
contract section 2; the nonce store is replay state, not data, and is left out of the check.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.db import Database
from tests.conftest import ADMIN_SECRET, function_client
from tests.provider import OWNER, PROVIDER, stage, start_body

API = "/api/v1/operator"
ADMIN = {"Admin": ADMIN_SECRET}
INJECTION = "x'); DROP TABLE jobs; --"
TRAVERSAL = "../../../../etc/passwd"
BIG = "x" * (1024 * 1024)


def case(function: str, method: str, path: str, **request: Any) -> Any:
    return pytest.param(function, method, path, request, id=f"{method} {path} {len(CASES)}")


CASES: list[Any] = []


def add(function: str, method: str, path: str, **request: Any) -> None:
    CASES.append(case(function, method, path, **request))


# Every route: not JSON, the wrong content type, a JSON body that is not an object, bytes that
# are not UTF-8, a body over the limit, a method it does not have.
for fn, method, path in (
    ("start", "POST", "/compute"),
    ("stop", "PUT", "/compute"),
    ("stop", "DELETE", "/compute"),
    ("status", "GET", "/compute"),
    ("result", "GET", "/getResult"),
    ("admin_init", "POST", "/pgsqlinit"),
):
    add(fn, method, API + path, data="{not json", content_type="application/json")
    add(fn, method, API + path, data="workflow=1", content_type="application/x-www-form-urlencoded")
    add(fn, method, API + path, data="[1, 2]", content_type="application/json")
    add(fn, method, API + path, data=b'{"owner": "\xff\xfe"}', content_type="application/json")
    add(
        fn,
        method,
        API + path,
        data="{" + " " * (5 * 1024 * 1024) + "}",
        content_type="application/json",
    )
    add(fn, method, API + path, data=b"\x00" * (10 * 1024 * 1024), content_type="application/json")
for fn, path in (
    ("status", "/runningjobs"),
    ("status", "/environments"),
    ("list", "/list"),
    ("list", "/info"),
    ("result", "/logs"),
    ("result", "/getResult"),
):
    add(fn, "PATCH", API + path)
    add(fn, "POST", API + path, json={})
add("start", "GET", API + "/pgsqlinit")

# POST /compute: wrong types, missing and empty fields, huge values.
for bad in (
    {"nonce": {"n": 1}},
    {"nonce": [1]},
    {"nonce": "1e9"},
    {"nonce": -5},
    {"nonce": True},
    {"nonce": ""},
    {"owner": 5},
    {"owner": BIG},
    {"owner": None},
    {"agreementId": ""},
    {"agreementId": ["a"]},
    {"environment": {"x": 1}},
    {"environment": INJECTION},
    {"environment": TRAVERSAL},
    {"chainId": "1e9"},
    {"chainId": 1.5},
    {"chainId": "x"},
    # Digits that are not ASCII: int() would take them, the contract does not.
    {"nonce": "\uff11\uff17\uff10\uff10"},  # fullwidth
    {"nonce": "\u0661\u0667\u0660\u0660"},  # Arabic-Indic
    {"chainId": "\uff11"},
    {"chainId": "\u0661\u0663\u0667"},
    {"providerSignature": 12},
    {"providerSignature": ""},
    {"workflow": "not json"},
    {"workflow": 3},
    {"workflow": {"stages": "x"}},
    {"workflow": {"stages": [1]}},
    {"workflow": {"stages": [stage(input=[{"id": 5}])]}},
    {"workflow": {"stages": [stage(input=[{"id": ""}])]}},
    {"workflow": {"stages": [stage(algorithm="x")]}},
    {"workflow": {"stages": [stage(algorithm={"id": 7})]}},
    {"workflow": {"stages": [stage(input={"id": "x"})]}},
    # Each part of stage 0 the engine reads, of another type than the document gives it.
    {"workflow": {"stages": [stage(output=5)]}},
    {"workflow": {"stages": [stage(compute=[])]}},
    {"workflow": {"stages": [stage(index=True)]}},
    {"workflow": {"stages": [stage(algorithm={"id": "", "url": 5})]}},
    {"workflow": {"stages": [stage(algorithm={"id": "", "container": "python"})]}},
    {"workflow": {"stages": [stage(algorithm={"id": "", "container": {"entrypoint": []}})]}},
    {"workflow": {"stages": [stage(input=[{"id": "did:x", "url": "https://a.example"}])]}},
    {"workflow": {"stages": [stage(input=[{"id": "did:x", "index": "0"}])]}},
    {"workflow": {"stages": [stage(input=[{"id": f"did:{i}"} for i in range(10_000)])]}},
):
    add("start", "POST", API + "/compute", body=bad)
for missing in ("workflow", "agreementId", "owner", "providerSignature", "environment", "nonce"):
    add("start", "POST", API + "/compute", body={"drop": missing})

# GET/PUT/DELETE /compute and getResult: wrong types and strings that must stay strings.
for method, fn in (("GET", "status"), ("PUT", "stop"), ("DELETE", "stop")):
    add(fn, method, API + "/compute", json={"owner": 5, "nonce": 1, "providerSignature": "0x"})
    add(
        fn,
        method,
        API + "/compute",
        json={"owner": OWNER, "nonce": {"a": 1}, "providerSignature": "0x"},
    )
    add(fn, method, API + "/compute", json={"jobId": BIG, "owner": OWNER, "nonce": 1})
    add(
        fn,
        method,
        API + "/compute",
        query_string={"owner": OWNER, "nonce": "1", "providerSignature": "0xzz"},
    )
    add(
        fn,
        method,
        API + "/compute",
        query_string={"owner": INJECTION, "nonce": "1", "providerSignature": "0x" + "1" * 130},
    )
for query in (
    {"index": "\uff10"},
    {"index": "\u0660"},
    {"index": "1e9"},
    {"index": "[1]"},
    {"index": ""},
    {"index": "0x10"},
    {"jobId": TRAVERSAL},
    {"jobId": INJECTION},
    {"nonce": "NaN"},
):
    add("result", "GET", API + "/getResult", query={"index": "0", **query})
add(
    "result",
    "GET",
    API + "/getResult",
    json={"owner": OWNER, "jobId": "j", "index": [0], "nonce": 1, "providerSignature": "0x"},
)

# Admin routes: no header, a wrong one, wrong parameters.
for fn, method, path in (
    ("status", "GET", "/runningjobs"),
    ("list", "GET", "/list"),
    ("list", "GET", "/info"),
    ("result", "GET", "/logs"),
    ("admin_init", "POST", "/pgsqlinit"),
):
    add(fn, method, API + path)
    add(fn, method, API + path, headers={"Admin": "wrong"})
    add(fn, method, API + path, headers={"Admin": ADMIN_SECRET + "x"})
add("list", "GET", API + "/info", headers=ADMIN)
add("list", "GET", API + "/info", headers=ADMIN, json={"jobId": 5})
add(
    "result",
    "GET",
    API + "/logs",
    headers=ADMIN,
    query_string={"jobId": "j", "component": TRAVERSAL},
)
add(
    "result",
    "GET",
    API + "/logs",
    headers=ADMIN,
    query_string={"jobId": BIG[:300], "component": "algorithm"},
)
add("status", "GET", API + "/environments", query_string={"chainId": INJECTION})


# Text that is not printable: NUL (PostgreSQL cannot store it) and lone UTF-16 surrogates
# (nothing can encode them), in every text field of every route that takes one. Surrogates
# travel in JSON bodies only: a query string cannot carry them as UTF-8.
NUL = "ab\x00cd"
SURROGATE = "ab\ud800cd"
for field in ("owner", "agreementId", "environment", "providerSignature"):
    add("start", "POST", API + "/compute", body={field: NUL})
    add("start", "POST", API + "/compute", body={field: SURROGATE})
for method, fn in (("GET", "status"), ("PUT", "stop"), ("DELETE", "stop")):
    for field in ("owner", "jobId", "agreementId"):
        add(fn, method, API + "/compute", query={field: NUL})
        add(fn, method, API + "/compute", json={field: SURROGATE, "owner": OWNER, "nonce": 1})
for field in ("owner", "jobId"):
    add("result", "GET", API + "/getResult", query={"index": "0", field: NUL})
for path, query in (("/info", {"jobId": NUL}), ("/logs", {"jobId": NUL, "component": "algorithm"})):
    add(
        "list" if path == "/info" else "result",
        "GET",
        API + path,
        headers=ADMIN,
        query_string=query,
    )
# The Swagger UI's asset names: a NUL, and a name longer than any file name may be.
add("status", "GET", "/api/v1/docs/%00")
add("status", "GET", "/api/v1/docs/" + "a" * 300)


def snapshot(db: Database) -> Any:
    return (
        db.query("SELECT workflowid, status, stopreq, removed FROM jobs ORDER BY workflowid"),
        db.query("SELECT namespace, status FROM envs ORDER BY namespace"),
    )


def build(request: dict[str, Any]) -> dict[str, Any]:
    """Turn a case's shorthand into test-client arguments, signing where the case wants."""
    request = dict(request)
    if "body" in request:
        body = start_body("catalogue")
        change = request.pop("body")
        if "drop" in change:
            body.pop(change["drop"])
        else:
            body.update(change)
        request["json"] = body
    if "query" in request:
        request["query_string"] = {**PROVIDER.signed(job_id="j" * 32), **request.pop("query")}
    return request


@pytest.mark.parametrize(("function", "method", "path", "request_"), CASES)
def test_bad_input_is_a_clear_4xx_that_changes_nothing(
    rt: object,
    db: Database,
    env_announced: dict[str, Any],
    existing_job: str,
    function: str,
    method: str,
    path: str,
    request_: dict[str, Any],
) -> None:
    before = snapshot(db)
    response = function_client(function).open(path, method=method, **build(request_))

    assert 400 <= response.status_code < 500, (response.status_code, response.data[:300])
    assert set(response.json) == {"error"} and response.json["error"]
    assert "Traceback" not in response.get_data(as_text=True)
    assert snapshot(db) == before


@pytest.fixture
def existing_job(rt: object, db: Database, env_announced: dict[str, Any]) -> str:
    response = function_client("start").post(API + "/compute", json=start_body("existing"))
    assert response.status_code == 200
    return str(response.json[0]["jobId"])


def test_injection_strings_are_only_data(
    status: FlaskClient, start: FlaskClient, db: Database, env_announced: dict[str, Any]
) -> None:
    """Quoted SQL in a value is stored and matched as the text it is."""
    created = start.post(API + "/compute", json=start_body(INJECTION))
    assert created.status_code == 200
    assert db.query("SELECT agreementid FROM jobs") == [[INJECTION]]
    found = status.get(
        API + "/compute", query_string={**PROVIDER.signed(), "agreementId": INJECTION}
    )
    assert [job["agreementId"] for job in found.json] == [INJECTION]
    assert db.query("SELECT count(*) FROM pg_tables WHERE tablename = 'jobs'") == [[1]]


def test_the_catalogue_is_large() -> None:
    assert len(CASES) > 120
    print(json.dumps({"bad_input_cases": len(CASES)}))
