"""The README's local command, run for real: a gunicorn server on loopback, the embedded
PostgreSQL in a fresh data folder, requests signed like the Provider's with the key it made."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from common.config import Settings
from common.db import Database
from local.ports import free_port
from tests import storage
from tests.jobrows import unplaced
from tests.provider import OWNER, STRANGER, Provider, start_body

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LocalRun:
    url: str
    data: Path
    provider: Provider
    admin: str
    output: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, _json(raw), raw
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, _json(raw), raw

    def database(self) -> Database:
        """The embedded server the run started, reached through its socket in the data folder."""
        socket_dir = self.data / "postgres"
        return Database(Settings(postgres_host=str(socket_dir), signature_required=False))

    def engine_finishes(self, job_id: str, url: str, size: int) -> None:
        """What the engine's publishing stage writes: the job done, its one output at `url`."""
        outputs = [{"filename": "out.csv", "filesize": size, "url": url, "type": "output"}]
        db = self.database()
        db.execute(
            "UPDATE jobs SET status = 70, statustext = 'Job finished', datefinished = NOW(), "
            "outputsurl = :o WHERE workflowid = :j",
            o=json.dumps(outputs),
            j=job_id,
        )
        db.close()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


@contextmanager
def launch(
    data: Path,
    *,
    control_plane: str,
    env: dict[str, str] | None = None,
    engine: str = "off",
    workers: int | None = None,
) -> Iterator[LocalRun]:
    """`python -m local.run` as a process, until its banner is out and it answers. Its output
    goes to <data>/../run.log; `env` adds variables (by default none of POSTGRES_* and the
    allowlists are passed, so the run makes its own). The engine is off unless asked for: the
    tests that play the engine's part write its rows themselves."""
    port = free_port()
    child = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "ALLOWED_"))}
    child.pop("SIGNATURE_REQUIRED", None)
    child.update(env or {})
    data.parent.mkdir(parents=True, exist_ok=True)
    log_path = data.parent / "run.log"
    argv = [
        sys.executable,
        "-m",
        "local.run",
        "--port",
        str(port),
        "--data",
        str(data),
        "--control-plane",
        control_plane,
        "--engine",
        engine,
        *(("--workers", str(workers)) if workers else ()),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=child, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(url + "/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    while time.monotonic() < deadline and "API docs:" not in log_path.read_text():
        time.sleep(0.05)  # the banner's last line
    keys = data / "provider.key"
    run = LocalRun(
        url=url,
        data=data,
        provider=Provider(keys.read_text().strip() if keys.exists() else "0x" + "11" * 32),
        admin=(data / "admin-secret").read_text().strip()
        if (data / "admin-secret").exists()
        else "",
        output=log_path.read_text(),
        log_path=log_path,
    )
    run.process = process
    try:
        yield run
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_it_prints_where_it_listens_and_what_it_uses(local_run: LocalRun) -> None:
    assert f"listening on {local_run.url}/" in local_run.output
    assert "database: embedded PostgreSQL" in local_run.output
    assert f"admin secret (header 'Admin'): kept in {local_run.data / 'admin-secret'}" in (
        local_run.output
    )
    assert local_run.admin not in local_run.output  # the banner never shows the secret
    assert f"provider allowlist: {local_run.provider.address}" in local_run.output
    status, about, _ = local_run.call("GET", "/")
    assert (status, about["cluster"], about["signatureRequired"]) == (200, "off", True)


def test_its_worker_processes_count_requests_together(tmp_path: Path) -> None:
    """Two workers answer; /metrics, whichever answers it, counts the requests of both."""
    counts = tmp_path / "metrics"
    counts.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(counts)}
    with launch(tmp_path / ".data", control_plane="off", env=env, workers=2) as run:
        assert "server: 2 worker process(es) x 8 threads" in run.output
        before = answered_at_root(run)
        with ThreadPoolExecutor(16) as pool:  # a connection each: both workers accept some
            answered = list(pool.map(lambda _: run.call("GET", "/")[0], range(200)))
        assert answered == [200] * 200
        assert answered_at_root(run) - before == 200
        assert run.process is not None
        master = str(run.process.pid)  # its files hold the zeros made at import
    workers = {path.stem.rsplit("_", 1)[1] for path in counts.glob("counter_*.db")} - {master}
    assert len(workers) == 2


def answered_at_root(run: LocalRun) -> float:
    _, _, scraped = run.call("GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(scraped.decode())}
    (count,) = [
        sample.value
        for sample in families["operator_requests"].samples
        if sample.name == "operator_requests_total" and sample.labels["route"] == "/"
    ]
    return count


def test_start_status_stop_status_and_get_result(local_run: LocalRun) -> None:
    provider = local_run.provider
    body = start_body("local-1", provider=provider)
    status, started, _ = local_run.call("POST", "/api/v1/operator/compute", body=body)
    assert status == 200, started
    job_id = started[0]["jobId"]

    status, shown, _ = local_run.call(
        "GET", "/api/v1/operator/compute", query=provider.signed(job_id=job_id)
    )
    assert (status, unplaced(shown)) == (200, started)  # waiting: its place besides

    # The engine picks the job up and runs it; the service only sees the rows it writes.
    with storage.serve({"out.csv": b"a,b\n1,2\n"}) as store:
        db = local_run.database()
        db.execute(
            "UPDATE jobs SET status = 40, statustext = 'Running algorithm ' WHERE workflowid = :j",
            j=job_id,
        )

        status, stopped, _ = local_run.call(
            "PUT", "/api/v1/operator/compute", query=provider.signed(job_id=job_id)
        )
        assert (status, stopped[0]["stopreq"], stopped[0]["status"]) == (200, 1, 40)

        db.close()
        local_run.engine_finishes(job_id, f"{store.url}/out.csv", 8)

        status, finished, _ = local_run.call(
            "GET", "/api/v1/operator/compute", query=provider.signed(job_id=job_id)
        )
        assert (finished[0]["status"], finished[0]["results"]) == (
            70,
            [{"filename": "out.csv", "filesize": 8, "type": "output"}],
        )

        query = {**provider.signed(owner=OWNER, job_id=job_id), "index": 0}
        status, _, raw = local_run.call("GET", "/api/v1/operator/getResult", query=query)
        assert (status, raw) == (200, b"a,b\n1,2\n")


def test_a_signer_outside_the_allowlist_gets_401_and_stores_nothing(local_run: LocalRun) -> None:
    body = start_body("local-stranger", provider=STRANGER)
    status, answer, _ = local_run.call("POST", "/api/v1/operator/compute", body=body)
    assert status == 401, answer
    db = local_run.database()
    assert db.query("SELECT count(*) FROM jobs WHERE agreementid = 'local-stranger'") == [[0]]
    db.close()


def test_admin_routes_take_the_printed_secret(local_run: LocalRun) -> None:
    status, running, _ = local_run.call(
        "GET", "/api/v1/operator/runningjobs", headers={"Admin": local_run.admin}
    )
    assert status == 200 and isinstance(running, list)
    assert local_run.call("GET", "/api/v1/operator/runningjobs", headers={"Admin": "x"})[0] == 401


def raw_exchange(run: LocalRun, request: bytes) -> tuple[int, str, Any]:
    """Send bytes no HTTP client would, and read the status, content type and JSON body."""
    host, port = run.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"Content-Length: (\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    content_type = re.search(rb"Content-Type: ([^\r\n]+)", head)
    return status, content_type.group(1).decode() if content_type else "", json.loads(body)


def test_errors_the_http_server_answers_itself_are_json_too(local_run: LocalRun) -> None:
    many_headers = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    for request, status in (
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + many_headers + b"\r\n", 431),
        (b"GET /api/v1/operator/compute%0d%0aX HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ):
        code, content_type, body = raw_exchange(local_run, request)
        assert (code, content_type) == (status, "application/json"), request[:40]
        assert isinstance(body["error"], str) and body["error"]
