"""Every finished job publishes a receipt signed by the operator: checked here as a consumer
would, with eth-account and hashlib against the files getResult serves, for a completed, a
failed, a stopped and a timed-out job."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak
from flask.testing import FlaskClient

from common.db import Database
from engine.engine import Engine
from engine.receipts import OperatorKey
from tests import storage
from tests.engine.conftest import OPERATOR_KEY, algorithm_stage, get_result, start_job
from tests.engine.test_stops_and_timeouts import stop_job
from tests.jobrows import job_row, wait_finished, wait_for

OPERATOR = OperatorKey.from_hex(OPERATOR_KEY).address
BUSY_SECOND = (
    "import os, time\n"
    "end = time.process_time() + 1\n"
    "while time.process_time() < end:\n"
    "    pass\n"
    "open(os.path.join(os.environ['OUTPUTS'], 'done.txt'), 'w').write('done')\n"
)


def receipt_of(result: FlaskClient, row: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The receipt as getResult serves it, its signature checked as anyone would check it."""
    entries = row["outputs"]
    assert entries[-1]["type"] == "receipt" and entries[-1]["filename"] == "receipt.json"
    served = get_result(result, job_id, len(entries) - 1)
    assert served.status_code == 200
    assert hashlib.sha256(served.data).hexdigest() == entries[-1]["sha256"]
    signed: dict[str, Any] = json.loads(served.data)
    body = json.dumps(signed["receipt"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = keccak(body.encode())
    signer = Account.recover_message(
        encode_defunct(primitive=digest), signature=signed["signature"]
    )
    assert signer == signed["signer"] == OPERATOR
    receipt: dict[str, Any] = signed["receipt"]
    return receipt


def test_a_completed_job_receipt_holds_what_ran_on_what_and_what_came_out(
    start: FlaskClient, result: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine()
    data = b"name,value\na,1\n"
    with storage.serve({"data.csv": data}) as server:
        stage = algorithm_stage(BUSY_SECOND, inputs=[f"{server.url}/data.csv"])
        job_id = start_job(start, stage, agreement="receipt-agreement")
        row = wait_finished(db, job_id)
    receipt = receipt_of(result, row, job_id)

    assert (receipt["jobId"], receipt["agreementId"]) == (job_id, "receipt-agreement")
    assert receipt["outcome"] == "completed" and receipt["takenOver"] is False
    assert receipt["algorithm"]["code"] == {
        "sha256": hashlib.sha256(BUSY_SECOND.encode()).hexdigest(),
        "size": len(BUSY_SECOND.encode()),
    }
    [item] = receipt["inputs"]
    assert item["did"] == "did:op:in0"
    assert item["files"] == [{"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}]
    assert receipt["downloadedBytes"] == len(data)
    # Every output and log it lists is what getResult serves, byte for byte.
    listed = receipt["outputs"] + receipt["logs"]
    assert [e["filename"] for e in listed] == [e["filename"] for e in row["outputs"][:-1]]
    for index, entry in enumerate(listed):
        served = get_result(result, job_id, index)
        assert hashlib.sha256(served.data).hexdigest() == entry["sha256"]
    assert receipt["publishedBytes"] == 4
    # Usage as the kernel counted it: about one second of CPU for one busy second.
    algorithm = receipt["stages"]["algorithm"]
    assert 700 <= algorithm["cpuMs"] <= 3000, algorithm
    assert algorithm["peakMemoryBytes"] > 1024**2
    assert algorithm["ending"] == "exited" and algorithm["exitCode"] == 0
    assert set(receipt["stages"]) == {"configure", "algorithm", "publish"}
    assert receipt["environment"]["ramBytes"] == 1024**3


def test_failed_stopped_and_timed_out_jobs_have_receipts_too(
    start: FlaskClient,
    stop: FlaskClient,
    result: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    run_engine(maxJobDuration=2, maxJobs=3)
    failed = start_job(start, algorithm_stage("raise SystemExit(3)"))
    timed_out = start_job(start, algorithm_stage("import time\ntime.sleep(60)"))
    stopped = start_job(start, algorithm_stage("import time\ntime.sleep(60)"))
    wait_for(lambda: job_row(db, stopped)["status"] == 40, what="the job to run")
    stop_job(stop, stopped)
    outcomes = {}
    for job_id in (failed, timed_out, stopped):
        receipt = receipt_of(result, wait_finished(db, job_id), job_id)
        outcomes[job_id] = (receipt["outcome"], receipt["stages"]["algorithm"]["ending"])
    assert outcomes == {
        failed: ("algorithm_failed", "exited"),
        timed_out: ("timeout", "timeout"),
        stopped: ("stopped", "stopped"),
    }
