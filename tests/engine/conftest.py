"""Our engine on the real database with the real sandbox: jobs are started through the real
start function, run by an `Engine` in a thread (or `python -m engine` as a process where a
test kills it), and read back through the real status and getResult functions."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from common.config import Settings
from common.db import Database
from engine.config import EngineConfig
from engine.engine import Engine
from engine.receipts import OperatorKey
from engine.results import remove_tree
from engine.sandbox import SandboxRunner
from engine.volumes import Volumes
from tests.conftest import ENVIRONMENT, ROOT
from tests.jobrows import wait_for
from tests.provider import OWNER, PROVIDER, stage, start_body
from tests.sandbox import require_bubblewrap

require_bubblewrap()

# Each test's engine: short leases and polls, so takeovers and fallbacks happen in test time.
LOOPBACK = ["127.0.0.0/8", "::1/128"]
OPERATOR_KEY = "0x" + "0c" * 32  # the test operator's: it signs the engine's receipts
ENGINE_TUNING = {"leaseSeconds": 2, "heartbeatSeconds": 1, "pollSeconds": 1, "sweepSeconds": 1}


@pytest.fixture(scope="session")
def engine_base() -> Iterator[Path]:
    """A folder the sandbox's unprivileged user can pass through (pytest's own temporary
    folders are private to root, and bubblewrap binds by path as that user)."""
    base = Path(tempfile.mkdtemp(prefix="engine-tests-"))
    base.chmod(0o711)
    yield base
    remove_tree(base)


@dataclass(frozen=True)
class Dirs:
    work: Path
    results: Path
    inputs: Path


@pytest.fixture
def dirs(engine_base: Path, request: pytest.FixtureRequest) -> Iterator[Dirs]:
    # Unique per test and parameter, short enough for the sandbox's paths.
    name = request.node.name
    folder = engine_base / f"{name[:48]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    made = Dirs(work=folder / "work", results=folder / "results", inputs=folder / "inputs")
    for path in (folder, made.work, made.results, made.inputs):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o711)
    yield made
    # A job the test's engines let go of unfinished keeps its folder for a takeover, its own
    # file system still mounted: unmounted here, as the sweep of a next engine would.
    volumes = Volumes.find()
    if volumes is not None:
        for job in made.work.iterdir():
            volumes.remove(job)


@pytest.fixture
def settings(base_settings: Settings, dirs: Dirs) -> Settings:
    """The service serves the engine's results folder, as `make run` sets it up; the
    operator's key signs receipts."""
    return base_settings.replace(
        results_root=dirs.results.resolve(),
        operator_private_key=OPERATOR_KEY,
        operator_address=OperatorKey.from_hex(OPERATOR_KEY).address,
    )


def engine_yaml(
    dirs: Dirs, engine: dict[str, Any] | None = None, **environment: Any
) -> dict[str, Any]:
    # The tests' stand-in storage serves on loopback, as on-premises data serves on an internal
    # network: allowed here, as an operator would allow it; the SSRF tests take it away.
    # Algorithms run with the host's interpreters unless a test asks for their image (the
    # container tests): no registry serves python:3.11 here.
    env = {
        "id": ENVIRONMENT,
        "runtime": "host",
        "maxJobs": 2,
        "ramGB": 1,
        "diskGB": 0.25,
        "allowNetworks": LOOPBACK,
        **environment,
    }
    return {
        "environments": [env],
        "engine": {
            **ENGINE_TUNING,
            **(engine or {}),
            "workRoot": str(dirs.work),
            "resultsRoot": str(dirs.results),
            "inputRoots": [str(dirs.inputs)],
        },
    }


@pytest.fixture
def sandbox_tool() -> str:
    """What builds the sandboxes: bubblewrap here; the isolation and kill tests also run
    with util-linux's unshare, the fallback where bubblewrap is not installed."""
    return "bwrap"


class EngineThread:
    """An `Engine` serving in a thread of the test process, closed at the end."""

    def __init__(self, config: EngineConfig, settings: Settings, tool: str) -> None:
        self.db = Database(settings)
        key = settings.operator_private_key
        operator = OperatorKey.from_hex(key) if key else None
        self.engine = Engine(config, self.db, SandboxRunner(tool=tool), operator=operator)
        self.thread = threading.Thread(target=self.engine.run, name="engine")

    def __enter__(self) -> Engine:
        self.thread.start()
        return self.engine

    def __exit__(self, *exc: object) -> None:
        self.engine.close()
        self.thread.join(timeout=30)
        self.db.close()


@pytest.fixture
def run_engine(
    settings: Settings, dirs: Dirs, db: Database, sandbox_tool: str
) -> Iterator[Callable[..., Engine]]:
    """Start an engine on this test's folders; `run_engine(maxJobDuration=2, ...)` changes its
    environment, `engine={...}` its engine settings. Every engine started is closed at the end
    of the test."""
    started: list[EngineThread] = []

    def run(engine: dict[str, Any] | None = None, **environment: Any) -> Engine:
        raw = engine_yaml(dirs, engine, **environment)
        config = EngineConfig.parse(raw, settings, work_root=dirs.work)
        thread = EngineThread(config, settings, sandbox_tool)
        started.append(thread)
        engine = thread.__enter__()
        wait_for(lambda: db.query("SELECT 1 FROM envs WHERE namespace = :n", n=ENVIRONMENT))
        return engine

    yield run
    for thread in started:
        thread.__exit__()


def algorithm_stage(
    code: str, *, inputs: list[str] | None = None, **algorithm: Any
) -> dict[str, Any]:
    """Stage 0 with `code` as raw Python run by `python $ALGO`."""
    return stage(
        input=[
            {"id": f"did:op:in{i}", "url": [url], "index": i} for i, url in enumerate(inputs or [])
        ],
        algorithm={
            "id": "did:op:algo",
            "rawcode": code,
            "container": {"image": "python", "tag": "3.11", "entrypoint": "python $ALGO"},
            **algorithm,
        },
    )


def start_job(start: FlaskClient, workflow_stage: dict[str, Any], agreement: str = "") -> str:
    body = start_body(agreement or os.urandom(8).hex(), workflow={"stages": [workflow_stage]})
    answer = start.post("/api/v1/operator/compute", json=body)
    assert answer.status_code == 200, answer.json
    job_id: str = answer.json[0]["jobId"]
    return job_id


def signed_status(status: FlaskClient, job_id: str, owner: str = OWNER) -> dict[str, Any]:
    signed = PROVIDER.signed(owner=owner, job_id=job_id)
    answer = status.get("/api/v1/operator/compute", query_string=signed)
    assert answer.status_code == 200, answer.json
    found: dict[str, Any] = answer.json[0]
    return found


@dataclass(frozen=True)
class Answer:
    status_code: int
    data: bytes
    json: Any


def get_result(result: FlaskClient, job_id: str, index: int) -> Answer:
    """getResult's answer, read whole and closed (a streamed file holds its file open)."""
    query = {**PROVIDER.signed(owner=OWNER, job_id=job_id), "index": index}
    response = result.get("/api/v1/operator/getResult", query_string=query)
    try:
        return Answer(
            response.status_code, response.data, response.json if response.is_json else None
        )
    finally:
        response.close()


@contextmanager
def engine_process(
    dirs: Dirs,
    pg_env: dict[str, str],
    engine: dict[str, Any] | None = None,
    *,
    args: tuple[str, ...] = (),
    **environment: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m engine` as its own process, for the tests that kill it or scrape it;
    `args` are more of its command line."""
    config = dirs.work.parent / f"engine-{time.monotonic_ns()}.yaml"
    config.write_text(yaml.safe_dump(engine_yaml(dirs, engine, **environment)))
    env = {**os.environ, **pg_env, "ENGINE_CONFIG": str(config), "LOG_LEVEL": "INFO"}
    log = (dirs.work.parent / "engine.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "--work-root", str(dirs.work), *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log.close()
