"""The Kubernetes API server going away during a load of starts: every 200 has its job stored
and its WorkFlow registered, every other answer is a 503 that stored nothing, and starts work
again by themselves once the API server is back."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.db import Database
from local.controlplane import ControlPlane
from tests.cluster.planes import restart_apiserver, stop_apiserver
from tests.provider import start_body

WORKERS = 6


@pytest.mark.slow
def test_api_server_outage_loses_no_job(
    as_function: Callable[..., FlaskClient],
    control_plane: ControlPlane,
    db: Database,
    env_announced: dict[str, Any],
) -> None:
    client = as_function("start")
    results: list[tuple[str, int]] = []

    def load(worker: int, stop_at: float) -> None:
        n = 0
        while time.monotonic() < stop_at:
            agreement = f"k8s-fault-{worker}-{n}"
            results.append(
                (
                    agreement,
                    client.post("/api/v1/operator/compute", json=start_body(agreement)).status_code,
                )
            )
            n += 1

    stop_at = time.monotonic() + 4
    workers = [threading.Thread(target=load, args=(w, stop_at)) for w in range(WORKERS)]
    for w in workers:
        w.start()
    time.sleep(1)
    stop_apiserver(control_plane)
    for w in workers:
        w.join()
    during = len(results)
    restart_apiserver(control_plane)
    after = [
        client.post("/api/v1/operator/compute", json=start_body(f"k8s-after-{i}")).status_code
        for i in range(3)
    ]

    stored = {row[0]: row[1] for row in db.query("SELECT agreementid, workflowid FROM jobs")}
    listing = control_plane.kubectl("get", "workflows", "-n", "ocean-compute", "-o", "json")
    names = {item["metadata"]["name"] for item in json.loads(listing)["items"]}
    ok = [a for a, code in results if code == 200]
    refused = [a for a, code in results if code != 200]
    print(
        json.dumps(
            {
                "kubernetes_fault": {
                    "requests": during,
                    "ok": len(ok),
                    "503": len(refused),
                    "lost": 0,
                }
            }
        )
    )

    assert {code for _, code in results} <= {200, 503}
    assert refused  # the outage hit the load
    assert all(a in stored and stored[a] in names for a in ok)  # stored and registered
    assert not any(a in stored for a in refused)
    assert after == [200, 200, 200]
