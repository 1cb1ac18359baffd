"""A job as its row in PostgreSQL says it is, and waiting for it: shared by every tier that
runs jobs (the sandbox engine's tests and the Kubernetes engine's)."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.db import Database

__all__ = ["job_row", "log_of", "published_path", "wait_finished", "wait_for"]


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def job_row(db: Database, job_id: str) -> dict[str, Any]:
    rows = db.query(
        """SELECT status, statustext, stopreq, datefinished IS NOT NULL, outputsurl, engine
           FROM jobs WHERE workflowid = :j""",
        j=job_id,
    )
    status, text, stopreq, finished, outputs, engine = rows[0]
    return {
        "status": status,
        "statusText": text,
        "stopreq": stopreq,
        "finished": finished,
        "outputs": json.loads(outputs) if outputs else None,
        "engine": engine,
    }


def wait_finished(db: Database, job_id: str, timeout: float = 60) -> dict[str, Any]:
    wait_for(lambda: job_row(db, job_id)["finished"], timeout, f"job {job_id} to finish")
    return job_row(db, job_id)


def published_path(entry: dict[str, Any]) -> Path:
    """Where an outputsurl entry's file:// URL points."""
    return Path(urllib.parse.unquote(urllib.parse.urlparse(entry["url"]).path))


def log_of(row: dict[str, Any], kind: str) -> str:
    """A published log's text, read from where its outputsurl entry points."""
    for entry in row["outputs"] or []:
        if entry["type"] == kind:
            return published_path(entry).read_text()
    raise AssertionError(f"no {kind} published")


def unplaced(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Status objects without a waiting job's place and likely start (the fair queue's keys,
    which the original lacks and which move with time), each checked for its type first."""
    for shown in objects:
        if shown.get("status") == 1 and "queuePosition" in shown:
            assert isinstance(shown["queuePosition"], int) and shown["queuePosition"] >= 1
            assert float(shown["estimatedStart"]) > 0
    return [
        {k: v for k, v in shown.items() if k not in ("queuePosition", "estimatedStart")}
        for shown in objects
    ]
