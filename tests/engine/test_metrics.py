"""The engine's GET /metrics and GET /healthz: `python -m engine --listen` scraped over HTTP
while it runs jobs that end each way, parsed with prometheus-client's own parser."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from common.config import Settings
from common.db import Database
from engine.config import EngineConfig
from engine.engine import Engine
from engine.sandbox import SandboxRunner
from engine.server import StatusServer
from local.ports import free_port
from tests.conftest import ENVIRONMENT
from tests.engine.conftest import (
    Dirs,
    algorithm_stage,
    engine_process,
    engine_yaml,
    start_job,
)
from tests.engine.test_stops_and_timeouts import stop_job
from tests.jobrows import job_row, wait_finished, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        assert answer.headers.get_content_type() == "text/plain"
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def health(url: str, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + path, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except urllib.error.URLError:  # not listening yet
        return 0, {}


def test_the_engine_reports_its_jobs_stages_and_queue(
    start: FlaskClient, stop: FlaskClient, db: Database, dirs: Dirs, pg_env: dict[str, str]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with engine_process(
        dirs, pg_env, args=("--listen", f"127.0.0.1:{port}"), maxJobs=1, maxJobDuration=3
    ):
        wait_for(lambda: health(url)[0] == 200, what="the engine's /healthz")
        # Ready means announced: a start for its environment passes from now on.
        assert db.query("SELECT 1 FROM envs WHERE namespace = :n", n=ENVIRONMENT)
        # One slot: the first job runs into its deadline while the other three wait.
        timeout = start_job(start, algorithm_stage("import time\ntime.sleep(600)"))
        failing = start_job(start, algorithm_stage("import sys\nsys.exit(3)"))
        fine = start_job(start, algorithm_stage("print('fine')"))
        stopped = start_job(start, algorithm_stage("import time\ntime.sleep(600)"))
        wait_for(lambda: job_row(db, timeout)["status"] == 40, what="the first job to run")
        running = wait_for(
            lambda: (
                (s := scrape(url))
                and value(s, "engine_queue_length", environment=ENVIRONMENT) == 3
                and s
            ),
            what="the heartbeat to see three jobs waiting",
        )
        assert value(running, "engine_jobs", environment=ENVIRONMENT, status="40") == 1
        assert value(running, "engine_queue_oldest_age_seconds", environment=ENVIRONMENT) > 0

        wait_for(lambda: job_row(db, stopped)["status"] == 40, timeout=60, what="the last job")
        stop_job(stop, stopped)
        for job_id in (timeout, failing, fine, stopped):
            wait_finished(db, job_id)
        done = wait_for(
            lambda: (
                (s := scrape(url))
                and value(s, "engine_queue_length", environment=ENVIRONMENT) == 0
                and s
            ),
            what="the heartbeat to see the queue empty",
        )
        status, body = health(url)

    finished = "engine_jobs_finished_total"
    outcomes = ("completed", "algorithm_failed", "timeout", "stopped", "data_failed")
    assert {o: value(done, finished, environment=ENVIRONMENT, outcome=o) for o in outcomes} == {
        "completed": 1,
        "algorithm_failed": 1,
        "timeout": 1,
        "stopped": 1,
        "data_failed": 0,
    }
    assert value(done, "engine_jobs_claimed_total", environment=ENVIRONMENT, kind="new") == 4
    stages = "engine_stage_duration_seconds_count"
    assert value(done, stages, stage="configure", ending="succeeded") == 4
    for ending in ("succeeded", "failed", "timeout", "stopped"):
        assert value(done, stages, stage="algorithm", ending=ending) == 1, ending
    # The deadline was 3 s: the histogram's buckets place that run between 2.5 and 5 s.
    timed_out = {"stage": "algorithm", "ending": "timeout"}
    assert value(done, "engine_stage_duration_seconds_bucket", **timed_out, le="2.5") == 0
    assert value(done, "engine_stage_duration_seconds_bucket", **timed_out, le="5.0") == 1
    assert value(done, "engine_queue_oldest_age_seconds", environment=ENVIRONMENT) == 0
    # What the stages' control groups counted, as the receipts say it.
    assert value(done, "engine_stage_cpu_seconds_total", stage="algorithm") > 0
    assert value(done, "engine_stage_peak_memory_bytes_count", stage="algorithm") == 4
    assert not any(name == "engine_jobs" for name, _ in done)  # it holds nothing now
    assert value(done, "process_resident_memory_bytes") > 0  # the process's own, too
    assert status == 200 and body["loop"] == "turning" and body["database"] == "ok"


def test_healthz_fails_once_the_loop_stops_turning(
    settings: Settings, dirs: Dirs, db: Database
) -> None:
    """An engine built, never run: not ready before its first announcement, then its loop
    does not turn, as if stuck in a stage call."""
    config = EngineConfig.parse(engine_yaml(dirs), settings, work_root=dirs.work)
    engine = Engine(config, db, SandboxRunner())
    server = StatusServer(engine.snapshot, "127.0.0.1", 0, stale_after=0.5)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        status, body = health(url)
        assert (status, body["announced"]) == (503, False)
        assert health(url, "/livez")[0] == 200  # alive all the same
        engine.heartbeat()
        assert health(url)[0] == 200
        wait_for(lambda: health(url)[0] == 503, timeout=5, what="/healthz to say stuck")
        assert health(url)[1]["loop"] == "stuck"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/nothing-here", timeout=5)
        assert refused.value.code == 404
        refused.value.close()
    finally:
        server.close()
