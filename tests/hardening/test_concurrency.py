"""Parallel stop, status and start on one owner: no deadlock, no lost update, no 5xx."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.db import Database
from tests.conftest import function_client
from tests.provider import PROVIDER, start_body

URL = "/api/v1/operator/compute"
REQUESTS = 150


def test_mixed_load_on_one_owner(rt: object, db: Database, env_announced: dict[str, Any]) -> None:
    seeded = [
        function_client("start").post(URL, json=start_body(f"seed-{i}")).json[0]["jobId"]
        for i in range(10)
    ]

    def call(i: int) -> tuple[str, int, Any]:
        kind = ("start", "stop", "status")[i % 3]
        if kind == "start":
            response = function_client("start").post(URL, json=start_body(f"mixed-{i}"))
        elif kind == "stop":
            # every stop names all the owner's jobs: the rows they lock overlap each other's
            response = function_client("stop").put(URL, query_string=PROVIDER.signed())
        else:
            response = function_client("status").get(
                URL, query_string=PROVIDER.signed(job_id=seeded[i % 10])
            )
        return kind, response.status_code, response.json

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(call, range(REQUESTS)))

    print(json.dumps({"mixed_concurrency": {"requests": len(results), "threads": 50}}))
    assert [code for _, code, _ in results] == [200] * REQUESTS
    started = {body[0]["jobId"] for kind, _, body in results if kind == "start"}
    rows = dict(db.query("SELECT workflowid, agreementid FROM jobs"))
    assert started <= set(rows)  # every accepted start is stored
    assert len(rows) == 10 + REQUESTS // 3
    # A final stop leaves no job of the owner unstopped: no update was lost to a race.
    function_client("stop").put(URL, query_string=PROVIDER.signed())
    assert db.query("SELECT count(*) FROM jobs WHERE stopreq = 0 OR datefinished IS NULL") == [[0]]
