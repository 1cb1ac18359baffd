"""PostgreSQL stopped in the middle of a load of starts: every 200 has its job stored, every
other answer is a 503 that stored nothing, and the service recovers by itself."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common import runtime, store
from common.config import Settings
from common.db import Database
from common.runtime import Runtime
from local import postgres
from local.postgres import EmbeddedPostgres
from tests.conftest import ENVIRONMENT, function_client
from tests.provider import start_body

WORKERS = 12
URL = "/api/v1/operator/compute"


@pytest.fixture
def own_server(
    tmp_path: Path, base_settings: Settings
) -> Iterator[tuple[EmbeddedPostgres, Settings]]:
    """A server of this test's own, since it will be stopped."""
    server = postgres.start(tmp_path / "pg", delete_on_exit=True)
    settings = base_settings.replace(
        postgres_host=str(server.socket_dir), postgres_port=server.port
    )
    db = Database(settings)
    store.apply_schema(db)
    db.execute("SELECT * FROM announce(:e, '{}', 0)", e=ENVIRONMENT)
    db.close()
    yield server, settings
    server.restart()  # in case the test failed while it was down


def load(stop_at: float, results: list[tuple[str, int, Any]], worker: int) -> None:
    client = function_client("start")
    n = 0
    while time.monotonic() < stop_at:
        agreement = f"fault-{worker}-{n}"
        response = client.post(URL, json=start_body(agreement))
        results.append((agreement, response.status_code, response.json))
        n += 1


@pytest.mark.slow
def test_postgres_outage_loses_no_job_and_needs_no_restart(
    own_server: tuple[EmbeddedPostgres, Settings],
) -> None:
    server, settings = own_server
    rt = Runtime.build(settings)
    runtime.install(rt)
    results: list[tuple[str, int, Any]] = []
    stop_at = time.monotonic() + 8
    workers = [threading.Thread(target=load, args=(stop_at, results, w)) for w in range(WORKERS)]
    try:
        for w in workers:
            w.start()
        time.sleep(2)
        server.stop()
        time.sleep(2)
        server.restart()
        for w in workers:
            w.join()
    finally:
        runtime.install(None)

    db = Database(settings)
    stored = {row[0] for row in db.query("SELECT agreementid FROM jobs")}
    db.close()
    rt.db.close()
    codes = [code for _, code, _ in results]
    ok = [a for a, code, _ in results if code == 200]
    refused = [(a, body) for a, code, body in results if code != 200]
    lost = [a for a in ok if a not in stored]
    phantom = [a for a, _ in refused if a in stored]
    report = {
        "requests": len(results),
        "ok": len(ok),
        "503": codes.count(503),
        "lost": len(lost),
        "stored_after_503": len(phantom),
    }
    print(json.dumps({"postgres_fault": report}))

    assert lost == []
    assert phantom == []
    assert {code for code in codes} <= {200, 503}
    assert all(body == {"error": "database unavailable"} for _, body in refused)
    assert codes.count(503) > 0  # the fault really hit the load
    # Recovered by itself: the requests sent well after the restart all succeeded.
    assert codes[-WORKERS:] == [200] * WORKERS
