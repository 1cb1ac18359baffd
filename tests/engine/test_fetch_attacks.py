"""Every URL is hostile: each test starts real jobs whose inputs or algorithm URL try to reach
what no fetch may reach (this host's loopback, private and link-local networks, other schemes)
or to leak or stall, and checks from outside that nothing was reached and the log says why.

The tests' environment allows loopback (its stand-in storage serves there); these tests take
that away, or allow only 127.0.0.2, which then stands in for a public server."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.db import Database
from engine.engine import Engine
from tests import storage
from tests.engine.conftest import algorithm_stage, start_job
from tests.jobrows import log_of, published_path, wait_finished

PUBLIC_STAND_IN = "127.0.0.2"  # allowed alone, it plays a server on the internet
LOOPBACK_FORMS = ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "[::1]", "localhost"]


@pytest.fixture(params=["bwrap", "unshare"])
def sandbox_tool(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def answering(respond: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A server on the public stand-in address whose every GET `respond` answers."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            respond(self)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((PUBLIC_STAND_IN, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{PUBLIC_STAND_IN}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def redirecting_to(location: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return respond


def trickling(handler: BaseHTTPRequestHandler) -> None:
    """One byte every 0.2 s, for ever: fast enough for any read timeout."""
    handler.send_response(200)
    handler.end_headers()
    try:
        for _ in range(600):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.2)
    except OSError:
        pass  # the fetch gave up, as it should


def finished_jobs(db: Database, job_ids: list[str]) -> list[dict[str, Any]]:
    return [wait_finished(db, job_id, timeout=60) for job_id in job_ids]


def test_no_form_of_the_hosts_loopback_is_fetched(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine(allowNetworks=[])
    with storage.serve({"secret": b"the host's own page"}) as host:
        port = host.url.rsplit(":", 1)[1]
        jobs = [
            start_job(start, algorithm_stage("print(1)", inputs=[f"http://{form}:{port}/secret"]))
            for form in LOOPBACK_FORMS
        ]
        rows = finished_jobs(db, jobs)
        assert host.seen_headers == []
    for form, row in zip(LOOPBACK_FORMS, rows, strict=True):
        text = log_of(row, "configrationLog")
        assert "is a loopback address" in text, (form, text)
        assert not any(entry["type"] == "output" for entry in row["outputs"])


def test_private_and_metadata_addresses_are_refused_before_any_connection(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine(allowNetworks=[])
    cases = {
        "http://169.254.169.254/latest/meta-data/": "a link-local address",
        "http://10.0.0.1/data.csv": "a private address",
        "http://[::ffff:192.168.1.1]/data.csv": "a private address",
        "http://100.64.0.1/data.csv": "a carrier-grade NAT address",
    }
    jobs = [start_job(start, algorithm_stage("", url=url)) for url in cases]
    for (url, why), row in zip(cases.items(), finished_jobs(db, jobs), strict=True):
        text = log_of(row, "configrationLog")
        assert why in text, (url, text)
        assert "algorithm" in text  # the algorithm's URL: status 32


def test_a_redirect_cannot_lead_a_fetch_to_loopback_or_another_scheme(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine(allowNetworks=[f"{PUBLIC_STAND_IN}/32"])
    with storage.serve({"secret": b"the host's own page"}) as host:
        targets = {
            f"{host.url}/secret": "is a loopback address",
            "ftp://example.org/data.csv": "the scheme 'ftp' is not fetched",
            "file:///etc/passwd": "the scheme 'file' is not fetched",
        }
        jobs = []
        for target in targets:
            with answering(redirecting_to(target)) as server:
                jobs.append(start_job(start, algorithm_stage("1", inputs=[f"{server}/data.csv"])))
                wait_finished(db, jobs[-1])
        rows = finished_jobs(db, jobs)
        assert host.seen_headers == []
    for (target, why), row in zip(targets.items(), rows, strict=True):
        assert why in log_of(row, "configrationLog"), target


def test_credentials_and_tokens_in_a_url_never_reach_the_log(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine()
    secret, token = f"pw{os.urandom(6).hex()}", f"tk{os.urandom(6).hex()}"
    with storage.serve({}) as server:
        address = server.url.removeprefix("http://")
        # A space in the path makes http.client raise InvalidURL quoting the path and query.
        urls = [
            f"http://admin:{secret}@{address}/a b?token={token}",
            f"http://admin:{secret}@{address}/missing.csv?token={token}",
        ]
        jobs = [start_job(start, algorithm_stage("1", inputs=[url])) for url in urls]
        rows = finished_jobs(db, jobs)
    for row in rows:
        text = log_of(row, "configrationLog")
        assert secret not in text and token not in text and "admin" not in text
        assert "Traceback" not in text and "input 0" in text


def test_a_trickling_server_cannot_hold_a_job_past_the_download_limit(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine(engine={"fetchSeconds": 2}, allowNetworks=[f"{PUBLIC_STAND_IN}/32"])
    with answering(trickling) as server:
        began = time.monotonic()
        row = wait_finished(db, start_job(start, algorithm_stage("1", inputs=[f"{server}/x"])))
        took = time.monotonic() - began
    assert "the download took more than 2 s" in log_of(row, "configrationLog")
    assert took < 30  # not the 120 s the server would trickle for


def test_the_algorithm_sees_no_url_of_its_inputs(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine()
    token = f"tk{os.urandom(6).hex()}"
    code = (
        "import os\n"
        "seen = [repr(dict(os.environ))]\n"
        "for folder, _, files in os.walk('/data'):\n"
        "    for name in files:\n"
        "        path = os.path.join(folder, name)\n"
        "        seen.append(path + ': ' + open(path, errors='replace').read())\n"
        "open(os.environ['OUTPUTS'] + '/seen.txt', 'w').write('\\n'.join(seen))\n"
    )
    with storage.serve({"data.csv": b"a,b\n"}) as server:
        url = f"{server.url}/data.csv?token={token}"
        row = wait_finished(db, start_job(start, algorithm_stage(code, inputs=[url])))
    assert row["outputs"][0]["filename"] == "seen.txt", log_of(row, "configrationLog")
    seen = published_path(row["outputs"][0]).read_text()
    assert "/data/ddos/workflow.json" in seen and "did:op:in0" in seen  # ids stay
    assert "/data/inputs/0/0: a,b" in seen  # the data itself is there
    assert token not in seen and server.url.removeprefix("http://") not in seen
